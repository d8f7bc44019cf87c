"""The App Platform manual's procedures, typed as its reader types them (x86_64-vm, 2 CPUs).

Every test logs in with the host's own OpenSSH client as admin, becomes root with `su root`
and the root password, and types the manual's commands as the manual writes them (no
`-U postgres`, no root console). Each docstring quotes the lines of the manual it proves
(../shared/seeds/001_8665742820aca373.txt).
"""

from __future__ import annotations

import dataclasses
import http.server
import re
import ssl
import subprocess
import threading
import time

import pytest
from apbuild.testing import scratch
from apbuild.testing.accounts import ADMIN, ROOT
from apbuild.testing.machine import Machine, scaled
from apbuild.testing.terminal import ReaderTerminal, host_client

pytestmark = pytest.mark.vm

SSH = ReaderTerminal.SSH_OPTIONS
HOST = "10.0.2.2"    # the host, as QEMU's user network shows it to the guest


@pytest.fixture(scope="module")
def vm(request, vm_build, installed, logdir, accel):
    """The VM with two CPUs ("Multiple CPUs are supported"), after its first boot. Under TCG
    QEMU emulates them in turn on one host thread, as ipx13's two (machines/ipx13.toml says
    why: on a host busy with other guests, a thread each costs more); the guest has two."""
    project, _ = vm_build
    board = dataclasses.replace(project.board, cpus=2,
                                qemu=dataclasses.replace(project.board.qemu, tcg_thread="single"))
    with scratch(request, "manual") as tmp, \
            Machine(board, installed(board.name, tmp, "manual"), logdir, name="manual", accel=accel) as m:
        m.expect_boot(f"App Platform {project.board.image_version}")
        m.login(*ROOT, timeout=300)
        m.wait_http("/manager/", 120, auth=ADMIN)
        m.label = project.board.image_version
        m.ok("psql -h /run/postgresql -U postgres -c 'CREATE TABLE nightly (v int); INSERT INTO nightly VALUES (1)'")
        yield m


@pytest.fixture
def root(vm, logdir):
    """A terminal of the reader's: SSH as admin, then `su root` with root's password."""
    term = ReaderTerminal(vm.ports[22], *ADMIN, logdir / "manual.ssh.log")
    said = term.su(ROOT[1])
    assert term.ok("id -u") == "0", said
    yield term
    term.close()


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """A real HTTPS server on the host side (a self-signed certificate made here), serving a
    directory; the guest reaches it at 10.0.2.2:PORT. Yields (directory, port)."""
    tmp = tmp_path_factory.mktemp("https")
    www = tmp / "www"
    www.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=webbuild.example", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_su_root_and_su_dash_root_from_admin(vm, logdir):
    """"root login with root and iplinux (the root login is not directly possible, you have
    to login as admin first and use the command su root)"; rescue: "use this to be root
    su - root (password iplinux)"."""
    term = ReaderTerminal(vm.ports[22], *ADMIN, logdir / "manual.ssh.log")
    try:
        assert "incorrect password" in term.su("not-the-password")
        assert term.ok("id -un") == "admin"           # a wrong password leaves admin as it was
        term.su(ROOT[1])
        assert term.ok("id -u") == "0"
    finally:
        term.close()
    term = ReaderTerminal(vm.ports[22], *ADMIN, logdir / "manual.ssh.log")
    try:
        term.su(ROOT[1], login=True)
        assert term.ok("id -u; pwd") == "0\n/home/root"
    finally:
        term.close()


def test_only_busybox_is_setuid(root):
    """What `su root` needs and nothing more: the one setuid/setgid file is busybox (its
    applets that need no privilege drop it at once)."""
    found = root.ok("find / -xdev \\( -perm -4000 -o -perm -2000 \\) -type f -exec stat -c '%a %U %n' {} +")
    assert found.splitlines() == ["4755 root /usr/bin/busybox"], found


def test_multiple_cpus(root):
    """"Multiple CPUs are supported, default is one CPU" (this VM has two)."""
    assert root.ok("nproc") == "2"
    assert root.ok("grep -c ^processor /proc/cpuinfo") == "2"


def test_scp_legacy_and_sftp_into_and_out_of_home_admin(vm, tmp_path, root):
    """"connect to the App Platform using the SCP protocol on port 22 ... use SCP as
    protocol" (WinSCP's SCP mode is the legacy protocol: scp -O); "You can now copy files to
    /home/admin"; SFTP as well."""
    up = tmp_path / "up.bin"
    up.write_bytes(bytes(range(256)) * 400)
    port = str(vm.ports[22])
    host_client(["scp", "-O", "-P", port, *SSH, str(up), "admin@127.0.0.1:/home/admin/legacy.bin"], ADMIN[1])
    host_client(["scp", "-P", port, *SSH, str(up), "admin@127.0.0.1:/home/admin/sftp.bin"], ADMIN[1])
    sums = root.ok("sha256sum /home/admin/legacy.bin /home/admin/sftp.bin | cut -d' ' -f1 | uniq")
    assert sums == subprocess.run(["sha256sum", str(up)], capture_output=True, text=True).stdout.split()[0]
    assert root.ok("stat -c %U /home/admin/legacy.bin /home/admin/sftp.bin | uniq") == "admin"
    host_client(["scp", "-O", "-P", port, *SSH, "admin@127.0.0.1:/home/admin/legacy.bin", str(tmp_path / "down1")], ADMIN[1])
    listing = host_client(["sftp", "-P", port, *SSH, "admin@127.0.0.1"], ADMIN[1],
                          commands=(f"get /home/admin/sftp.bin {tmp_path / 'down2'}", "ls /home/admin"))
    assert "legacy.bin" in listing
    assert (tmp_path / "down1").read_bytes() == up.read_bytes() == (tmp_path / "down2").read_bytes()


def test_log_archive_as_the_howto_writes_it(vm, tmp_path, root):
    """"cd /home/admin / tar -cf - /var/log/* | xz -z - > log.tar.xz / you may want to exclude
    coredumps: tar -cf - --exclude=/var/log/core_dumps/* /var/log/* | xz -z - > log.tar.xz /
    chown admin:admin /home/admin/log.tar.xz / Then copy the files to your local system"."""
    root.ok("mkdir -p /var/log/core_dumps/demo && head -c 4096 /dev/urandom > /var/log/core_dumps/demo/core.1")
    root.ok("cd /home/admin")
    root.ok("tar -cf - /var/log/* | xz -z - > log.tar.xz")
    root.ok("tar -cf - --exclude=/var/log/core_dumps/* /var/log/* | xz -z - > log-small.tar.xz")
    root.ok("chown admin:admin /home/admin/log.tar.xz")
    root.ok("chown admin:admin /home/admin/log-small.tar.xz")
    for name in ("log.tar.xz", "log-small.tar.xz"):
        host_client(["scp", "-O", "-P", str(vm.ports[22]), *SSH, f"admin@127.0.0.1:/home/admin/{name}",
                     str(tmp_path / name)], ADMIN[1])
    full = subprocess.run(["tar", "-tJf", str(tmp_path / "log.tar.xz")], check=True, capture_output=True, text=True).stdout
    small = subprocess.run(["tar", "-tJf", str(tmp_path / "log-small.tar.xz")], check=True, capture_output=True, text=True).stdout
    assert "var/log/ramdisk.log" in full and "var/log/core_dumps/demo/core.1" in full
    assert "var/log/ramdisk.log" in small and "core_dumps/demo/core.1" not in small
    root.ok("rm -rf /var/log/core_dumps/demo /home/admin/log.tar.xz /home/admin/log-small.tar.xz")


def test_database_tools_as_root_as_written(root):
    """"sudo -u postgres reindexdb -a / sudo -u postgres vacuumdb -a -f ... sudo -u postgres
    reindexdb -d dbname / sudo -u postgres vacuumdb -d dbname -f"; "check the free dispace via
    df -h ... du -sh /mnt/sda2/pgsql/"; the manager's "psql -d manager -c ..." as root."""
    root.ok("cd /home/root")
    root.ok("psql -d postgres -c 'CREATE DATABASE dbname'")
    root.ok("sudo -u postgres reindexdb -a", 180)
    root.ok("sudo -u postgres vacuumdb -a -f", 180)
    root.ok("sudo -u postgres reindexdb -d dbname")
    root.ok("sudo -u postgres vacuumdb -d dbname -f")
    assert root.ok("psql -d dbname -tAc 'select current_user'") == "root"
    root.ok("psql -d postgres -c 'DROP DATABASE dbname'")
    df = root.ok("df -h")
    assert re.search(r"^/dev/sda2\s+\d+(\.\d+)?G\s", df, re.M), df
    assert re.match(r"^\d+(\.\d+)?M\s+/mnt/sda2/pgsql/$", root.ok("du -sh /mnt/sda2/pgsql/"))
    # admin has no sudo: the manual's way up is su root.
    out, rc = root.run("su admin -c 'sudo -u postgres vacuumdb -a' 2>&1")
    assert rc != 0 and "su root" in out


def test_manager_database_sql_dump_and_restore(root):
    """"The App Platform Manager itself creates a PostgreSQL database like this: CREATE
    DATABASE "dbname" ENCODING 'UTF8'; CREATE USER "dbuser"; ALTER USER "dbuser" WITH
    PASSWORD 'dbpassword'; GRANT ALL PRIVILEGES ON DATABASE "dbname" TO "dbuser"; ALTER
    DATABASE "dbname" OWNER TO "dbuser"; REVOKE CONNECT ON DATABASE "dbname" FROM public;"
    and a pg_dump -Fc / pg_restore round trip of it."""
    for sql in ("CREATE DATABASE \"dbname\" ENCODING 'UTF8';", 'CREATE USER "dbuser";',
                "ALTER USER \"dbuser\" WITH PASSWORD 'dbpassword';",
                'GRANT ALL PRIVILEGES ON DATABASE "dbname" TO "dbuser";',
                'ALTER DATABASE "dbname" OWNER TO "dbuser";',
                'REVOKE CONNECT ON DATABASE "dbname" FROM public;'):
        escaped = sql.replace('"', '\\"')
        root.ok(f'psql -d postgres -v ON_ERROR_STOP=1 -c "{escaped}"')
    # "REVOKE CONNECT ... FROM public": another role may not connect.
    root.ok("psql -d postgres -c \"CREATE USER other WITH PASSWORD 'other-pw'\"")
    out, rc = root.run("PGPASSWORD=other-pw psql -h 127.0.0.1 -U other -d dbname -c 'select 1' 2>&1")
    assert rc != 0 and "permission denied" in out, out
    root.ok("psql -d dbname -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 1000); ALTER TABLE t OWNER TO dbuser'")
    root.ok("cd /home/root && pg_dump -Fc -d dbname -f dbname.dump")
    root.ok("psql -d postgres -c 'DROP DATABASE dbname'")
    root.ok("psql -d postgres -c 'CREATE DATABASE dbname OWNER dbuser'")
    root.ok("pg_restore -d dbname /home/root/dbname.dump")
    assert root.ok("psql -d dbname -tAc 'select count(*), pg_get_userbyid(relowner) from t, pg_class "
                   "where relname = $$t$$ group by 2'") == "1000|dbuser"
    root.ok("psql -d postgres -c 'DROP DATABASE dbname' -c 'DROP USER dbuser' -c 'DROP USER other'")


def test_memory_dump_of_the_manager(root):
    """"find out the PID of the relevant process, e.g. with ps aux | grep /apps/manager/manager |
    grep -v grep / gdb --pid PID -ex gcore --batch / this creates a core file core.PID"."""
    lines = root.ok("ps aux | grep /apps/manager/manager | grep -v grep").splitlines()
    assert len(lines) == 1, lines
    pid = lines[0].split()[0]
    root.ok("cd /home/admin")
    root.ok(f"gdb --pid {pid} -ex gcore --batch", 180)
    assert int(root.ok(f"stat -c %s /home/admin/core.{pid}")) > 100_000
    root.ok(f"rm /home/admin/core.{pid}")


def test_messages_log_has_programs_and_the_kernel(root):
    """"Sometimes you may find messages in the messages log file (in var/log) like
    initial error at ... ext4_journal_start_sb" (kernel messages reach /var/log/messages)."""
    tag = f"manual-{time.monotonic_ns()}"
    root.ok(f"logger -t test {tag}-user")
    root.ok(f"echo '<3>{tag}-kernel' > /dev/kmsg")
    root.ok(f"i=0; until grep -q {tag}-kernel /var/log/messages; do sleep 1; i=$((i+1)); [ $i -lt 20 ] || exit 1; done")
    messages = root.ok(f"grep {tag} /var/log/messages")
    assert f"{tag}-user" in messages and re.search(rf"kernel: \[ *[0-9.]+\] {tag}-kernel", messages), messages
    # Local socket only: syslogd has no UDP port.
    assert root.ok("cat /proc/net/udp | awk 'NR > 1 && $2 ~ /:0202$/' | wc -l") == "0"


def test_a_crashing_service_leaves_a_core_and_the_manager_comes_back(vm, root):
    """"rm -f /mnt/sda2/log/core_dumps/*/*" (a core dump per service, in its own directory)
    and "If an app service crashes it is restarted, automatically" (the manager too)."""
    pid = root.ok("cat /proc/$(cat /run/manager.pid)/task/*/children 2>/dev/null | tr ' ' '\\n' | "
                  "while read p; do [ -n \"$p\" ] && grep -q /apps/manager/manager /proc/$p/cmdline && echo $p; done | head -1")
    assert pid, "no manager process"
    root.ok(f"kill -SEGV {pid}")
    root.ok(f"i=0; until [ -s /mnt/sda2/log/core_dumps/manager/core.{pid} ]; do sleep 1; i=$((i+1)); [ $i -lt 30 ] || exit 1; done")
    root.ok(f"i=0; until ps aux | grep /apps/manager/manager | grep -v grep | grep -qv '^ *{pid} '; do "
            "sleep 1; i=$((i+1)); [ $i -lt 30 ] || exit 1; done")
    vm.wait_http("/manager/", 60, auth=ADMIN)
    root.ok("rm -f /mnt/sda2/log/core_dumps/*/*")
    assert root.ok("ls /mnt/sda2/log/core_dumps/manager | wc -l") == "0"


def test_manager_stop_database_restart_manager_start(vm, root):
    """"/etc/init.d/S92manager stop / restart the postgresql server (see the output if this
    worked or not) /etc/init.d/S50postgresql restart / /etc/init.d/S92manager start"."""
    assert "stopped" in root.ok("/etc/init.d/S92manager stop")
    assert root.run("ps aux | grep /apps/manager/manager | grep -v grep")[1] == 1
    out = root.ok("/etc/init.d/S50postgresql restart", 180)
    assert "stopped" in out and "started" in out, out
    assert "started" in root.ok("/etc/init.d/S92manager start")
    vm.wait_http("/manager/", 60, auth=ADMIN)


def test_downloaded_manager_runs_and_is_not_overwritten(vm, root, https_server):
    """"/etc/init.d/S92manager stop / wget --no-check-certificate -O /apps/manager/manager
    https://webbuild... / chown root:root /apps/manager/manager / chmod +x /apps/manager/manager
    / echo 110000 > /mnt/sda1/label (this allows the manager to perform an image update again)
    / /etc/init.d/S92manager start"."""
    www, port = https_server
    # "An older build" of the manager: here a vendor-like manager that leaves a mark, then
    # does the reference manager's work.
    (www / "manager").write_text("#!/bin/sh\necho \"$$\" > /tmp/downloaded-manager-ran\n"
                                 "exec /bin/sh /usr/lib/manager/manager\n")
    root.ok("/etc/init.d/S92manager stop")
    root.ok(f"wget --no-check-certificate -O /apps/manager/manager https://{HOST}:{port}/manager")
    root.ok("chown root:root /apps/manager/manager")
    root.ok("chmod +x /apps/manager/manager")
    root.ok("echo 110000 > /mnt/sda1/label")
    root.ok("/etc/init.d/S92manager start")
    root.ok("i=0; until [ -s /tmp/downloaded-manager-ran ]; do sleep 1; i=$((i+1)); [ $i -lt 30 ] || exit 1; done")
    vm.wait_http("/manager/", 60, auth=ADMIN)
    assert root.ok("cmp /apps/manager/manager /usr/lib/manager/manager >/dev/null; echo $?") == "1"
    status, page = vm.http_get("/manager/", auth=ADMIN)
    assert status == 200 and ">110000<" in page
    # The label is no part of sda1's checksums: a reinstall from this sda1 still verifies.
    root.ok("cd /mnt/sda1 && sha256sum -c SHA256SUMS >/dev/null")
    # Back to the reference manager and the image's label for the tests after this one.
    root.ok("/etc/init.d/S92manager stop && rm /apps/manager/manager")
    root.ok(f"echo {vm.label} > /mnt/sda1/label")
    assert "installed the reference manager" in root.ok("/etc/init.d/S92manager start")
    vm.wait_http("/manager/", 60, auth=ADMIN)


def test_postgresql_outside_access_as_the_manual_says(vm, root, tmp_path):
    """"The default configuration decline database request from extern. If you need external
    access you can change the PGSQL configuration (as root) in the file
    /mnt/sda2/pgsql/pg_hba.conf. After editing pg_hba.conf, the database-service has to be
    restarted with the command /etc/init.d/S50postgresql restart"; TLS is on ("SSL is used by
    default if enabled on the server")."""
    url = f"host=127.0.0.1 port={vm.ports[5432]} dbname=postgres user=postgres sslmode=require connect_timeout=20"
    env = {"PGPASSWORD": "outside-pw", "PATH": "/usr/bin:/bin"}

    def outside(sql: str) -> subprocess.CompletedProcess:
        return subprocess.run(["psql", url, "-tAc", sql], capture_output=True, text=True, env=env,
                              timeout=scaled(60))
    refused = outside("select 1")
    assert refused.returncode != 0 and "pg_hba.conf rejects connection" in refused.stderr, refused.stderr
    root.ok("psql -d postgres -c \"ALTER USER postgres WITH PASSWORD 'outside-pw'\"")
    root.ok("cp /mnt/sda2/pgsql/pg_hba.conf /mnt/sda2/pgsql/pg_hba.conf.orig")
    # The line goes ahead of the "reject" lines (first match wins).
    root.ok("awk '/0\\.0\\.0\\.0\\/0 +reject/ && !done { print \"host all all 0.0.0.0/0 scram-sha-256\"; done = 1 } 1' "
            "/mnt/sda2/pgsql/pg_hba.conf > /tmp/hba && cat /tmp/hba > /mnt/sda2/pgsql/pg_hba.conf")
    root.ok("/etc/init.d/S50postgresql restart || { tail -20 /mnt/sda2/log/postgresql.log; exit 1; }", 180)
    opened = outside("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()")
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip().startswith("t|TLSv1."), opened.stdout
    # Back to the default, and nothing else changed on the way.
    # (cp onto the file: it stays postgres's; a root-owned copy moved there would stop the server.)
    root.ok("cp /mnt/sda2/pgsql/pg_hba.conf.orig /mnt/sda2/pgsql/pg_hba.conf && rm /mnt/sda2/pgsql/pg_hba.conf.orig")
    root.ok("psql -d postgres -c 'ALTER USER postgres WITH PASSWORD NULL'")
    root.ok("/etc/init.d/S50postgresql restart", 180)
    assert outside("select 1").returncode != 0
    # One connection per app instance: a quarter of this VM's RAM in MB (512 MB: about 120).
    mem_mb = int(root.ok("grep MemTotal /proc/meminfo").split()[1]) // 1024
    assert int(root.ok("psql -d postgres -tAc 'show max_connections'")) == mem_mb // 4 > 100


def test_wget_https_and_ip_address(root, https_server):
    """"wget --no-check-certificate -O ... https://..."; "To figure out your ip address you can
    use the command: ip address"; "set the network of your VM to NAT (and also add the URL for
    an IP to /etc/hosts)": the name the server's certificate has, reached through that line."""
    www, port = https_server
    (www / "file.bin").write_bytes(bytes(range(256)) * 1000)
    root.ok(f"wget --no-check-certificate -O /tmp/file.bin https://{HOST}:{port}/file.bin")
    assert root.ok("stat -c %s /tmp/file.bin") == "256000"
    root.ok(f"echo '{HOST} webbuild.example' >> /etc/hosts")
    root.ok(f"wget --no-check-certificate -O /tmp/byname.bin https://webbuild.example:{port}/file.bin")
    assert root.ok("cmp /tmp/file.bin /tmp/byname.bin && readlink /etc/hosts") == "/mnt/sda2/etc/hosts"
    assert re.search(r"inet 10\.0\.2\.15/24", root.ok("ip address"))


def test_nightly_analysis_runs_from_crond(vm, root):
    """"Every database is analysed at night to keep indexes in sync with the data. This
    triggers a vacuumdb -a -z" (the shipped crontab line, made due in the minute that starts
    30 to 90 s from now: the other tests of this machine stop the manager, and crond with it,
    and reboot it, so a time set at the start could fall while crond is down)."""
    due = root.ok("date -d @$(( ($(date +%s) + 90) / 60 * 60 )) '+%M %H'")
    root.ok(f"sed 's/^0 3 /{due} /' /etc/crontabs/postgres > /tmp/crontab && crontab -c /etc/crontabs -u postgres /tmp/crontab")
    root.ok("i=0; until grep -q 'USER postgres .*vacuumdb' /mnt/sda2/log/cron.log 2>/dev/null; do sleep 2; i=$((i+1)); [ $i -lt 90 ] || exit 1; done", 240)
    root.ok("i=0; until [ -n \"$(psql -d postgres -tAc 'select last_analyze from pg_stat_user_tables where relname = $$nightly$$')\" ]; "
            "do sleep 2; i=$((i+1)); [ $i -lt 60 ] || exit 1; done", 180)
    out, rc = root.run("cat /mnt/sda2/log/vacuumdb.log")
    assert rc == 0 and "error" not in out.lower(), out


def test_setip_kept_after_a_reboot_and_a_failed_update_returns_to_the_old_image(vm, root, logdir):
    """"static IP address, DNS, Gateway can be configured with the command setip on the
    console ... (Example: setip --addr=x.x.x.x --mask=x.x.x.x --gateway=x.x.x.x
    --dns1=x.x.x.x)" (the user network's own addresses, so the host still reaches it), and
    back to DHCP with the `--dhcp` that "setip --help" lists; and "Boot into the rescue
    partition. The App Platform now either applies the image update or it reboots into the
    old image" (an update that cannot be applied: the old image)."""
    root.ok("setip --addr=10.0.2.15 --mask=255.255.255.0 --gateway=10.0.2.2 --dns1=10.0.2.3")
    assert "MODE=static" in root.ok("cat /mnt/sda2/etc/network.conf")
    # An update left staged that the rescue system cannot read, and the boot set to rescue,
    # as the manager leaves them after a download.
    root.ok("mkdir -p /mnt/sda2/update && echo broken > /mnt/sda2/update/staged.update")
    root.ok("sed -i 's/^set default=1$/set default=0/' /boot/grub/grub.cfg && sync")
    root.child.sendline("reboot")                  # typed in the reader's terminal
    vm.expect("rebooting into the old image", 300)
    vm.expect_boot(f"App Platform {vm.label}")
    vm.login(*ROOT, timeout=300)
    vm.wait_http("/manager/", 120, auth=ADMIN)
    assert "inet 10.0.2.15/24" in vm.ok("ip address show eth0")
    assert "default via 10.0.2.2" in vm.ok("ip route")
    assert vm.ok("cat /etc/resolv.conf") == "nameserver 10.0.2.3"
    assert vm.run("pidof udhcpc")[1] == 1            # static: no DHCP client runs
    assert "set default=1" in vm.ok("grep '^set default' /boot/grub/grub.cfg")
    assert vm.run("test -e /mnt/sda2/update/staged.update")[1] == 1
    assert "the update is abandoned" in vm.ok("cat /mnt/sda2/log/ramdisk.log")
    # The way back, which "setip --help" lists: the reader, in a new terminal after the
    # reboot, asks for DHCP again, and it runs at once.
    back = ReaderTerminal(vm.ports[22], *ADMIN, logdir / "manual.setip.ssh.log")
    back.su(ROOT[1])
    assert "--dhcp" in back.ok("setip --help")
    back.ok("setip --dhcp")
    back.close()
    assert vm.ok("cat /mnt/sda2/etc/network.conf") == "MODE=dhcp"
    deadline = time.monotonic() + scaled(60)
    while not (vm.run("pidof udhcpc")[1] == 0 and "default via 10.0.2.2" in vm.ok("ip route")):
        assert time.monotonic() < deadline, vm.ok("ip address show eth0; ip route; ps")
        time.sleep(1)
    assert "inet 10.0.2.15/24" in vm.ok("ip address show eth0")     # the user network's lease
    vm.wait_http("/manager/", 120, auth=ADMIN)


def _post(vm: Machine, path: str, body: bytes) -> tuple[int, str]:
    import base64
    import urllib.error
    import urllib.request
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"https://127.0.0.1:{vm.ports[443]}{path}", data=body, method="POST")
    request.add_header("Authorization", "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=scaled(60), context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _served(vm: Machine, expected: str | None = None, timeout: float = 60) -> str:
    """The certificate port 443 presents (waiting, while the manager restarts, for the
    expected one)."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            pem = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(
                ssl.get_server_certificate(("127.0.0.1", vm.ports[443]), timeout=scaled(10)))).strip()
        except OSError:
            pem = ""
        if expected is None and pem or pem == expected or time.monotonic() > deadline:
            return pem
        time.sleep(1)


def test_uploaded_certificate_and_the_manuals_way_back(vm, root, tmp_path):
    """"upload a PEM Certificate (chain, RSA key, no password)"; to get the device's own one
    back: "psql -d manager -c "DELETE FROM config WHERE name='webserverCertificate'" /
    /etc/init.d/S92manager restart"; a bad upload is refused and changes nothing."""
    def make(name: str) -> tuple[str, str]:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                        "-subj", f"/CN={name}", "-keyout", str(tmp_path / f"{name}.key"),
                        "-out", str(tmp_path / f"{name}.crt")], check=True, capture_output=True)
        return (tmp_path / f"{name}.crt").read_text(), (tmp_path / f"{name}.key").read_text()
    own = root.ok("cat /mnt/sda2/etc/manager/tls.crt").replace("\r", "").strip()
    assert _served(vm, own) == own
    cert, key = make("appliance.example")
    chain, other_key = make("intermediate.example")
    for bad, why in ((b"not a certificate\n", "no certificate"),
                     ((cert + chain + other_key).encode(), "does not belong"),
                     ((cert + chain).encode(), "no private key")):
        status, text = _post(vm, "/cgi-bin/certificate", bad)
        assert status == 422 and why in text, (status, text)
    assert root.ok("psql -d manager -tAc \"SELECT count(*) FROM config WHERE name='webserverCertificate'\"") == "0"
    status, text = _post(vm, "/cgi-bin/certificate", (cert + chain + key).encode())
    assert status == 200, (status, text)
    root.ok("i=0; until grep -q 'serving the uploaded' /mnt/sda2/log/manager.log; do sleep 1; i=$((i+1)); [ $i -lt 60 ] || exit 1; done")
    vm.wait_http("/manager/", 60, auth=ADMIN)
    assert _served(vm, cert.strip()) == cert.strip()
    root.ok("psql -d manager -c \"DELETE FROM config WHERE name='webserverCertificate'\"")
    root.ok("/etc/init.d/S92manager restart")
    vm.wait_http("/manager/", 60, auth=ADMIN)
    assert _served(vm, own) == own
