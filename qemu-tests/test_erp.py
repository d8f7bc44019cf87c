"""The erp product (products/erp.toml) on the x86_64 VM and the arm64 gateway, checked the way
the ERP USERSIDE 3.18 installation guide (../shared/seeds/000_8d654b10cd8ac2aa.txt) has its
reader check each step: nginx -t, a PHP page through nginx and PHP-FPM, redis-cli with and
without the password, RabbitMQ's users, queues and Web-STOMP through /ws, supervisorctl status,
the backup and restore commands, the installer's prerequisites (php -m, php -r copy(...))."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from apbuild.testing import scratch
from apbuild.testing.disks import fresh_disk, installation_disk
from apbuild.testing.installed import overlay
from apbuild.testing.accounts import account
from apbuild.testing.machine import Machine, scaled
from apbuild.testing.terminal import ReaderTerminal

pytestmark = pytest.mark.slow

TARGETS = ["erp@x86_64-vm", "erp@ipx13"]
# What the guide asks for (its "PHP extensions" lines). pcntl exists for the CLI only: Debian
# builds it into php-cli, not php-fpm (the USERSIDE installer and workers run on the CLI).
EXTENSIONS = ["ctype", "gd", "json", "libxml", "mbstring", "openssl", "pdo", "pdo_pgsql", "posix",
              "SimpleXML", "snmp", "sockets", "zlib", "ldap", "soap"]
CLI_ONLY = ["pcntl"]
# The ports a client outside reaches: SSH, nginx (the ERP and /ws), RabbitMQ's management
# interface (the guide: http://userside.mycompany.com:15672). The rest is the loopback's.
OPEN = {22, 80, 15672}
CLOSED = {5432, 5672, 6379, 15674, 61613, 4369, 25672}


@pytest.fixture(scope="module", params=TARGETS)
def erp(request, build_board, logdir, accel):
    project, result = build_board(request.param)
    name = request.param.replace("@", "-")
    with scratch(request, name) as tmp:
        gateway = project.board.bootloader == "gateway"
        ports = tuple(sorted(OPEN | CLOSED))
        if gateway:
            disk = installation_disk(result, tmp, name, "8G")
        else:
            # The VM's two devices (see the last test) boot one installed disk, each an overlay of
            # its own: the rescue system's install is the same for both; the first boot, which
            # makes the secrets, is each device's own.
            installed = _installed_not_booted(project, result, tmp, logdir, accel)
            disk = overlay(installed, tmp / f"{name}.qcow2")
        with Machine(project.board, disk, logdir, name=name, guest_ports=ports,
                     accel="tcg" if gateway else accel) as m:
            # The login prompt comes once every service has started: on the first boot that
            # includes the cluster, the PostGIS extension and the broker's start (minutes of TCG).
            if gateway:
                m.install(login=False)
            m.login(timeout=1200)
            m.project, m.result = project, result
            m.installed = None if gateway else installed
            # The broker takes minutes to boot under TCG; its two other users follow it. With
            # three guests and a release's xz on two cores it once took more than 900 s.
            # make-users tries each request until it is taken: if it stopped, it failed, and
            # its log says why.
            _until(m, "test -e /etc/rabbitmq/.users-made || ! kill -0 \"$(cat /run/make-users.pid)\" 2>/dev/null",
                   1800)
            assert m.run("test -e /etc/rabbitmq/.users-made")[1] == 0, \
                m.run("cat /var/log/rabbitmq/make-users.log")[0]
            # The guide's commands are typed where its reader types them: SSH as admin, su root.
            m.term = _reader(m, logdir)
            yield m
            m.term.close()


def _installed_not_booted(project, result, tmp: Path, logdir, accel) -> Path:
    """The VM's qcow2 after the rescue system installed the image, before the first normal
    boot: QEMU leaves (-no-reboot) when the installer reboots."""
    disk = fresh_disk(result, tmp, "installed")
    with Machine(project.board, disk, logdir, name="erp-install", accel=accel) as m:
        m.expect("running install_step1.sh install", 180)
        m.expect(re.compile(rb"^finished", re.M), 600)
        m.wait_exit(300)
    return disk


def _reader(m: Machine, logdir) -> ReaderTerminal:
    term = ReaderTerminal(m.ports[22], *account("admin", m.board.name), logdir / f"{m.name}.ssh.log")
    said = term.su(account("root", m.board.name)[1])
    assert term.ok("id -u") == "0", said
    return term


def _until(m: Machine, cmd: str, seconds: float) -> None:
    deadline = time.monotonic() + scaled(seconds)
    while m.run(cmd)[1] != 0:
        assert time.monotonic() < deadline, f"{m.name}: '{cmd}' still fails after {seconds}s:\n{m.tail()}"
        time.sleep(5)


def _credentials(term: ReaderTerminal) -> dict[str, str]:
    """erp-credentials, as root: 'postgresql userside PW', 'redis PW', 'rabbitmq USER PW'."""
    out = {}
    for line in term.ok("erp-credentials").splitlines():
        *what, password = line.split()
        out[" ".join(what)] = password
    return out


def test_nginx_configuration_is_valid(erp):
    out = erp.term.ok("nginx -t 2>&1")
    assert "syntax is ok" in out and "test is successful" in out
    assert "root   /var/www/userside/userside3;" in erp.term.ok("cat /etc/nginx/conf.d/userside.conf")
    assert "user www-data;" in erp.term.ok("grep '^user' /etc/nginx/nginx.conf")


def test_php_page_through_nginx_loads_the_extensions_and_reaches_postgis(erp):
    password = _credentials(erp.term)["postgresql userside"]
    page = f"""<?php
header('Content-Type: application/json');
$db = new PDO('pgsql:host=127.0.0.1;dbname=userside', 'userside', '{password}');
echo json_encode(['extensions' => get_loaded_extensions(),
                  'postgis' => $db->query('SELECT postgis_version()')->fetchColumn(),
                  'user' => posix_getpwuid(posix_geteuid())['name'],
                  'upload_max_filesize' => ini_get('upload_max_filesize'),
                  'fix_pathinfo' => ini_get('cgi.fix_pathinfo')]);
"""
    # Typed over the serial console as one line (a here-document's end would share a line
    # with the harness's exit-code marker).
    encoded = base64.b64encode(page.encode()).decode()
    erp.term.ok(f"echo {encoded} | base64 -d > /var/www/userside/userside3/check.php")
    erp.term.ok("chown www-data:www-data /var/www/userside/userside3/check.php")
    status, body = erp.http_get("/check.php", timeout=60)
    assert status == 200, body
    got = json.loads(body)
    loaded = {e.lower() for e in got["extensions"]}    # PHP's own spelling: PDO, SimpleXML
    assert {e.lower() for e in EXTENSIONS} <= loaded, {e.lower() for e in EXTENSIONS} - loaded
    assert got["postgis"].startswith("3.3 ")
    assert got["user"] == "www-data"
    assert got["upload_max_filesize"] == "100M" and got["fix_pathinfo"] == "0"
    # The guide's error pages: a missing page goes to /404.php (USERSIDE's, not installed yet).
    assert erp.http_get("/no-such-page", timeout=30)[0] == 404


def test_installer_prerequisites_as_the_guide_runs_them(erp, tmp_path):
    modules = {m.lower() for m in erp.term.ok("php -m").split()}
    wanted = {e.lower() for e in EXTENSIONS + CLI_ONLY}
    assert wanted <= modules, wanted - modules
    # "sudo -u www-data php -r "copy('https://my.userside.eu/install', 'userside_install.phar');""
    # against a server on the host (the guest reaches the host as 10.0.2.2).
    payload = os.urandom(4096)
    (tmp_path / "install").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://10.0.2.2:{server.server_address[1]}/install"
        erp.term.ok("cd /var/www/userside && sudo -u www-data php -r "
               f"\"copy('{url}', 'userside_install.phar');\"", timeout=120)
    finally:
        server.shutdown()
    digest = erp.term.ok("sha256sum /var/www/userside/userside_install.phar").split()[0]
    assert digest == hashlib.sha256(payload).hexdigest()
    assert erp.term.ok("stat -c %U /var/www/userside/userside_install.phar") == "www-data"


def test_redis_wants_its_password(erp):
    password = _credentials(erp.term)["redis"]
    assert len(password) == 64
    assert erp.term.ok(f"redis-cli -h 127.0.0.1 -p 6379 -a {password} ping 2>/dev/null") == "PONG"
    refused = erp.term.run("redis-cli -h 127.0.0.1 -p 6379 ping")[0]
    assert "NOAUTH" in refused
    assert "timeout 0" in erp.term.ok("grep '^timeout' /etc/redis/redis.conf")


def _api(erp, user: str, password: str, method: str, path: str, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{erp.ports[15672]}/api/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as r:
        text = r.read().decode()
        return json.loads(text) if text else None


def test_rabbitmq_users_and_a_message_through_a_queue(erp):
    creds = _credentials(erp.term)
    users = {u["name"]: u["tags"] for u in _api(erp, "admin", creds["rabbitmq admin"], "GET", "users")}
    assert set(users) == {"admin", "userside", "websock-user"}
    assert "administrator" in str(users["admin"]) and "monitoring" in str(users["userside"])
    # The userside account (the one ERP USERSIDE works as) publishes and consumes.
    auth = ("userside", creds["rabbitmq userside"])
    _api(erp, *auth, "PUT", "queues/%2F/erp-test", {"durable": False})
    routed = _api(erp, *auth, "POST", "exchanges/%2F/amq.default/publish",
                  {"routing_key": "erp-test", "payload": "hello erp", "payload_encoding": "string",
                   "properties": {}})
    assert routed == {"routed": True}
    got = _api(erp, *auth, "POST", "queues/%2F/erp-test/get",
               {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert [m["payload"] for m in got] == ["hello erp"]


def _ws_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126
                              else bytes([0x80 | 126]) + len(data).to_bytes(2, "big"))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_web_stomp_answers_through_nginx_ws(erp):
    creds = _credentials(erp.term)
    with socket.create_connection(("127.0.0.1", erp.ports[80]), timeout=60) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: userside.mycompany.com\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: v12.stomp\r\n\r\n").encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 101"), reply
        s.sendall(_ws_frame(f"CONNECT\naccept-version:1.2\nhost:/\nlogin:websock-user\n"
                            f"passcode:{creds['rabbitmq websock-user']}\n\n\x00"))
        data = reply.split(b"\r\n\r\n", 1)[1]
        while b"\x00" not in data[2:]:
            data += s.recv(4096)
        assert b"CONNECTED" in data, data


def test_supervisor_runs_a_program_added_as_the_guide_says(erp):
    # The guide: copy the program's .conf into /etc/supervisor/conf.d, restart supervisor, and
    # "All services must be in the RUNNING state". Here the program is a worker of our own, in
    # a virtualenv made as the guide makes the poller's (python3 -m venv venv).
    # The virtualenv (pure Python: the same on both machines) is made on the VM; on the gateway,
    # where ensurepip takes minutes of TCG, the program runs on the system's Python.
    python = "/usr/bin/python3"
    erp.term.ok("mkdir -p /var/www/userside/worker")
    if erp.project.board.bootloader == "grub-bios":
        erp.term.ok("cd /var/www/userside/worker && python3 -m venv venv", timeout=600)
        assert "pip" in erp.term.ok("/var/www/userside/worker/venv/bin/pip --version", timeout=300)
        python = "/var/www/userside/worker/venv/bin/python"
    erp.term.ok("printf 'import time\\nwhile True:\\n    time.sleep(5)\\n' > /var/www/userside/worker/worker.py")
    erp.term.ok(f"printf '[program:erp-worker]\\ncommand={python} "
           "/var/www/userside/worker/worker.py\\nuser=www-data\\nautorestart=true\\n' "
           "> /etc/supervisor/conf.d/erp-worker.conf")
    erp.term.ok("/etc/init.d/S70supervisor restart", timeout=120)
    deadline = time.monotonic() + scaled(120)
    # supervisorctl is a slow start under TCG (15.7 s on an idle host, the services just
    # started); in CI, three guests on two cores, it once took more than a command's 90 s.
    while "RUNNING" not in (status := erp.term.run("supervisorctl status", timeout=300)[0]):
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert re.search(r"erp-worker\s+RUNNING", status), status


def test_backup_and_restore_round_trip_a_table(erp):
    erp.term.ok("cd / && sudo -u postgres psql -d userside -c "
           "\"CREATE TABLE kept (id int, place geometry(Point, 4326)); "
           "INSERT INTO kept VALUES (1, ST_SetSRID(ST_MakePoint(30.52, 50.45), 4326))\"")
    # The guide's commands, as it types them.
    erp.term.ok("sudo -u postgres pg_dump --no-acl -Fc userside > /backup/userside.dump", timeout=300)
    erp.term.ok("cd / && sudo -u postgres psql -d userside -c 'DELETE FROM kept'")
    erp.term.ok("sudo -u postgres pg_restore --clean --if-exists --create --exit-on-error --dbname=postgres "
           "/backup/userside.dump", timeout=600)
    row = erp.term.ok("cd / && sudo -u postgres psql -tA -d userside -c 'SELECT id, ST_AsText(place) FROM kept'")
    assert row == "1|POINT(30.52 50.45)"
    owner = erp.term.ok("cd / && sudo -u postgres psql -tA -c "
                   "\"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'userside'\"")
    assert owner == "userside"


def test_locale_and_time_zone_are_settable(erp):
    # The database was made with the locale of the settings (the guide's createdb -l ...).
    collate = erp.term.ok("cd / && sudo -u postgres psql -tA -c "
                     "\"SELECT datcollate FROM pg_database WHERE datname = 'userside'\"")
    assert collate == erp.term.ok(". /mnt/sda2/etc/erp.conf && echo $LOCALE")
    assert erp.term.run("erp-settings --timezone Nowhere/City")[1] == 1
    assert erp.term.run("erp-settings --locale xx_XX.UTF-8")[1] == 1
    out = erp.term.ok("erp-settings --locale uk_UA.UTF-8 --timezone Europe/Kyiv", timeout=300)
    assert "LOCALE=uk_UA.UTF-8" in out and "TIMEZONE=Europe/Kyiv" in out
    assert "uk_UA.utf8" in erp.term.ok("locale -a").split()
    assert erp.term.ok("readlink -f /etc/localtime") == "/usr/share/zoneinfo/Europe/Kyiv"
    assert erp.term.ok("php -r 'echo date_default_timezone_get();'") == "Europe/Kyiv"
    # A database made now with the guide's -l uses it.
    erp.term.ok("cd / && sudo -u postgres createdb -E UTF-8 -l uk_UA.UTF-8 -T template0 localetest")


def test_only_the_guides_ports_are_reachable_from_outside(erp):
    listening = erp.term.ok("netstat -tln")
    outside = {int(m.group(2)) for m in re.finditer(r"tcp6?\s+\d+\s+\d+\s+(0\.0\.0\.0|::):(\d+)\s", listening)}
    assert outside == OPEN, listening
    assert "15672" in listening and "127.0.0.1:5672" in listening and "127.0.0.1:15674" in listening


def test_two_devices_from_one_image_have_their_own_secrets(erp, tmp_path, logdir, accel):
    # Every password is made at first boot (openssl rand), never at build time: a second
    # device installed from the same image has none of the first one's. The VM only: what is
    # checked is the image, which the gateway shares with it but for its architecture.
    if erp.project.board.bootloader != "grub-bios":
        pytest.skip("checked on the VM (the same recipes make the gateway's secrets)")
    first = _credentials(erp.term)
    disk = overlay(erp.installed, tmp_path / "second.qcow2")   # installed as the first was
    with Machine(erp.project.board, disk, logdir, name="erp-second", accel=accel) as second:
        second.login(timeout=1200)
        term = _reader(second, logdir)
        other = _credentials(term)
        term.close()
    assert first.keys() == other.keys() and len(first) == 5
    assert all(first[k] != other[k] and len(other[k]) >= 48 for k in first), (first, other)
