"""The manual's App Platform replication (issue 14) between three VMs, each from the run's
installed disk, on a private Ethernet segment of their own (a second NIC each, on QEMU socket
netdevs joined by a hub in the test process on 127.0.0.1: nothing reaches the host's network).

The primary is set up through the manager's Replication settings (HTTP, admin password), the
standbys with the device command typed as the manual's reader types it (SSH as admin, then
su root). Checked, in order:
- a bad standby name and a wrong password are refused and change nothing;
- rows committed on the primary appear on both standbys; a standby refuses writes; the
  replication user cannot open a normal session; pg_stat_ssl shows TLS;
- the alarm e-mail settings (manager, HTTP): a bad address refused, a test e-mail received
  by an SMTP server on the host;
- a standby's link cut: the alarm shows on both sides within seconds and is e-mailed by both
  after the set delay, the primary commits on and keeps the WAL; the link back: the standby
  catches up, no committed row missing, the alarm clears, both e-mail that;
- the standby, then the primary, updated with the signed update: replication comes back
  after each, and the rows committed meanwhile arrive;
- the primary's power cut while it commits row after row: the rows in flight are counted;
  one standby made the primary (the other standby's entry offered by itself), the other
  re-pointed to it, which copies the whole cluster again and follows;
- the manual's instance backup on the new primary (its SQL, pg_dump -Fc, dropped, pg_restore:
  rows and owner intact), and its "Move instance database to external database host" onto
  the third VM, made a standalone with "replication off", reached over TLS;
- a standby removed (its user and slot go), replication off (the hba lines go)."""

from __future__ import annotations

import html
import json
import re
import shlex
import time
import urllib.parse

import pytest
from apbuild.testing.accounts import ADMIN
from apbuild.testing.lifecycle import applied, make_updates, upload
from apbuild.testing.machine import Machine, scaled
from apbuild.testing.network import NIC, Hub
from apbuild.testing.smtp import MailServer
from apbuild.testing.terminal import ReaderTerminal, admin_su_root, host_client

pytestmark = pytest.mark.slow

IP = {"a": "192.168.77.1", "b": "192.168.77.2", "c": "192.168.77.3"}
NAME = {"b": "standby-b.example.com", "c": "standby-c.example.com"}
# The manual's instance database ("Database creation"), with its user.
INSTANCE_SQL = """CREATE DATABASE "exampledb" ENCODING 'UTF8';
CREATE USER "exampleuser";
ALTER USER "exampleuser" WITH PASSWORD 'Example-Pass-1';
GRANT ALL PRIVILEGES ON DATABASE "exampledb" TO "exampleuser";
ALTER DATABASE "exampledb" OWNER TO "exampleuser";
REVOKE CONNECT ON DATABASE "exampledb" FROM public;"""


def reader(m: Machine, logdir) -> ReaderTerminal:
    return admin_su_root(m.ports[22], logdir, m.name)


def manager(m: Machine, form: dict[str, str] | None = None) -> tuple[int, str]:
    """The manager's Replication settings: GET the state, or POST the form."""
    body = urllib.parse.urlencode(form).encode() if form is not None else None
    return m.http_get("/cgi-bin/replication", timeout=scaled(300), auth=ADMIN, post=body)


def alarms(m: Machine, form: dict[str, str] | None = None) -> tuple[int, str]:
    """The manager's "Alarms and events" and "SMTP" settings: GET them, or POST the form."""
    body = urllib.parse.urlencode(form).encode() if form is not None else None
    return m.http_get("/cgi-bin/alarms", timeout=scaled(120), auth=ADMIN, post=body)


def page(m: Machine) -> str:
    return m.http_get("/manager/", auth=ADMIN)[1]


def psql(sql: str, db: str = "app") -> str:
    """psql as the manual runs it as root (no -U)."""
    return f"psql -d {db} -v ON_ERROR_STOP=1 -tAc \"{sql}\""


def count(term) -> int:
    return int(term.ok(psql("SELECT count(*) FROM t")))


def wait_for(what: str, probe, timeout: float) -> float:
    """Seconds until probe() is true; fails naming what it waited for."""
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > scaled(timeout):
            raise AssertionError(f"not within {scaled(timeout):.0f}s: {what}")
        time.sleep(1)
    return time.monotonic() - start


def test_replication_primary_two_standbys_cut_failover_repoint_backup(vm_build, installed, tmp_path,
                                                                       logdir, accel):
    project, _ = vm_build
    board = project.board.name
    figures: dict[str, object] = {}
    updates = make_updates(board, tmp_path)          # the next image version, signed
    with Hub() as hub, MailServer() as smtp, \
            Machine(project.board, installed(board, tmp_path, "repl-a"), logdir, name="repl-a", accel=accel,
                    extra=hub.args("52:54:00:77:00:01", project.board.qemu.nic)) as a, \
            Machine(project.board, installed(board, tmp_path, "repl-b"), logdir, name="repl-b", accel=accel,
                    extra=hub.args("52:54:00:77:00:02", project.board.qemu.nic)) as b, \
            Machine(project.board, installed(board, tmp_path, "repl-c"), logdir, name="repl-c", accel=accel,
                    extra=hub.args("52:54:00:77:00:03", project.board.qemu.nic)) as c:
        vms = {"a": a, "b": b, "c": c}
        for key, m in vms.items():
            m.login(timeout=300)
            # The private segment's address (the test's network: the manual's reader has a LAN).
            m.ok(f"ip addr add {IP[key]}/24 dev eth1 && ip link set eth1 up")
        a.wait_http("/manager/ramdisk.log", 120)
        a.ok(f"psql -d postgres -qc 'CREATE DATABASE app' && {psql('CREATE TABLE t (id int PRIMARY KEY, note text)')}")
        b.ok("psql -d postgres -qc 'CREATE DATABASE mine'")     # b's own, replaced by the copy

        # Alarm e-mails (the manual: after 5 minutes of alarm, to the "Alarms and events"
        # address through the "SMTP" settings) to an SMTP server on the host; 20 s instead of
        # the 5 minutes, a setting of the same page. A bad address changes nothing.
        mail = {"email": "ops@example.com", "server": "10.0.2.2", "port": str(smtp.port), "delay": "20"}
        status, said = alarms(a, {**mail, "email": "not an address", "action": "test"})
        assert status == 422 and "email 'not an address' is not an e-mail address" in said, (status, said)
        assert "alarmEmail" not in alarms(a)[1]
        status, said = alarms(a, {**mail, "action": "test"})
        assert status == 200 and "test e-mail sent" in said, (status, said)
        assert smtp.wait_for("test e-mail", 30).rcpt_tos == ("ops@example.com",)
        assert "alarmEmail=ops@example.com" in alarms(a)[1]
        wait_for("the page's form shows the address",                 # HTML-encoded by busybox
                 lambda: 'value="ops@example.com"' in html.unescape(page(a)), 30)

        # The primary, through the manager's page: a bad name is refused and changes nothing.
        status, said = manager(a, {"mode": "primary", "standby": "not_a_domain!"})
        assert status == 422 and "not a valid standby name" in said, (status, said)
        assert manager(a)[1].startswith("mode off"), manager(a)
        password = {}
        for key in ("b", "c"):
            status, said = manager(a, {"mode": "primary", "standby": NAME[key]})
            assert status == 200, (status, said)
            password[key] = re.search(rf"standby {re.escape(NAME[key])}: password (\w+)", said).group(1)

        # The standbys, with the command: a wrong password is refused and changes nothing.
        term = {key: reader(vms[key], logdir) for key in ("b", "c")}
        assert "replication primary" in term["b"].ok("replication --help")
        # An app installed on b, which the manual says a standby loses.
        term["b"].ok("mkdir -p /apps/example-app /apps/.hidden-app && echo kept > /apps/example-app/data")
        out, rc = term["b"].run(f"replication standby {IP['a']} {NAME['b']} {'x' * 24}", 300)
        assert rc == 1 and "cannot copy the cluster" in out and "authentication failed" in out, out
        assert term["b"].ok(psql("SELECT datname FROM pg_database WHERE datname = 'mine'", "postgres")) == "mine"
        assert term["b"].ok("cat /apps/example-app/data") == "kept"
        for key in ("b", "c"):
            started = time.monotonic()
            out = term[key].ok(f"replication standby {IP['a']}:5432 {NAME[key]} {password[key]}", 600)
            figures[f"copy_{key}_s"] = round(time.monotonic() - started, 1)
            assert "following" in out, out
        # "On a standby, all locally installed apps are removed during installation."
        assert term["b"].ok("ls -A /apps") == ""
        conf = term["b"].ok("cat /home/root/standby.conf")
        assert f'"name": "{NAME["b"]}"' in conf and f'"host": "{IP["a"]}"' in conf, conf

        # Rows committed on the primary appear on the standbys; a standby refuses writes.
        a.ok(psql("INSERT INTO t SELECT g, 'first' FROM generate_series(1, 100) g"))
        for key in ("b", "c"):
            wait_for(f"100 rows on {key}", lambda key=key: count(term[key]) == 100, 60)
        out, rc = term["b"].run(psql("INSERT INTO t VALUES (0, 'standby')"))
        assert rc != 0 and "read-only transaction" in out, out
        assert "mine" not in term["b"].ok(psql("SELECT datname FROM pg_database", "postgres"))
        # TLS on both streams; a replication user has no normal session, neither from a
        # standby nor on the primary's own loopback.
        assert a.ok(psql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)", "postgres")) == "t\nt"
        for m, host in ((b, IP["a"]), (a, "127.0.0.1")):
            out, rc = m.run(f"PGPASSWORD={password['b']} psql 'host={host} user={NAME['b']} dbname=app sslmode=require' -c 'SELECT 1'")
            assert rc != 0 and "pg_hba.conf rejects connection" in out, out
        slot = {key: "standby_" + NAME[key].replace(".", "_").replace("-", "_") for key in NAME}
        wait_for("the manager's page shows both standbys streaming",
                 lambda: all(f"standby {slot[k]} streaming {IP[k]}" in page(a) for k in ("b", "c")), 30)
        assert "id=alarm" not in page(a)
        assert "<form id=replication-settings method=post action=/cgi-bin/replication>" in page(a)

        # b's cable out: both sides raise the alarm; the primary commits on, keeps the WAL.
        # Only the e-mails that follow count: a standby the primary names but that is still
        # being set up is "disconnected" too, and on a slow host that alarm outlasts the 20 s
        # and is e-mailed (with its "back") before the cut.
        earlier = {subject: len(smtp.received(subject)) for subject in ("replication alarm", "replication is back")}
        b.qmp("set_link", name=NIC, up=False)
        cut = time.monotonic()
        wait_for("the primary's alarm", lambda: "id=alarm" in page(a), 90)
        figures["alarm_primary_s"] = round(time.monotonic() - cut, 1)
        wait_for("b's alarm", lambda: "ALARM: replication broken" in term["b"].ok("replication status"), 90)
        figures["alarm_standby_s"] = round(time.monotonic() - cut, 1)
        a.ok(psql("INSERT INTO t SELECT g, 'during the outage' FROM generate_series(101, 5100) g"))
        # Both sides e-mail the alarm once it has lasted the delay (b has a's settings: they are
        # in the manager's database, which b copied); b's own settings are read-only.
        for side, mode in (("a", "mode primary"), ("b", "mode standby")):
            wait_for(f"{side}'s alarm e-mail", lambda mode=mode: any(
                mode in m.message.get_content()
                for m in smtp.received("replication alarm")[earlier["replication alarm"]:]), 120)
        figures["alarm_mail_s"] = round(time.monotonic() - cut, 1)
        status, said = alarms(b, {"email": "other@example.com"})
        assert status == 422 and "is a standby" in said, (status, said)
        kept = int(a.ok(psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots"
                             f" WHERE slot_name = '{slot['b']}'", "postgres")))
        assert kept > 0, "the primary does not keep the WAL for its standby"
        figures["wal_kept_bytes"] = kept
        b.qmp("set_link", name=NIC, up=True)
        back = time.monotonic()
        figures["catch_up_s"] = round(wait_for("b caught up", lambda: count(term["b"]) == 5100, 180), 1)
        wait_for("the alarm cleared", lambda: "alarm none" in term["b"].ok("replication status")
                 and "id=alarm" not in page(a), 90)
        figures["alarm_cleared_s"] = round(time.monotonic() - back, 1)
        wait_for("both sides e-mail that replication is back",
                 lambda: len(smtp.received("replication is back")) >= earlier["replication is back"] + 2, 60)
        # One each (the manager's loop and `replication status` check at once here: two that
        # both cleared the alarm once sent it twice).
        said = [m.message.get_content() for m in smtp.received("replication is back")[earlier["replication is back"]:]]
        assert sorted(next((s for s in ("primary", "standby") if f"mode {s}" in text), text)
                      for text in said) == ["primary", "standby"], said
        assert count(term["c"]) == 5100

        # Signed updates (same PostgreSQL major), the standby's then the primary's, each on its
        # own: the rows committed while a standby or the primary is away arrive afterwards.
        for key in ("c", "a"):
            m = vms[key]
            status, text = upload(m, updates.good)
            assert status == 200 and f"version {updates.new} staged" in text, (status, text)
            if key == "c":
                a.ok(psql("INSERT INTO t SELECT g, 'c away' FROM generate_series(5101, 5200) g"))
            started = time.monotonic()
            applied(m, updates.new)
            figures[f"update_{key}_s"] = round(time.monotonic() - started, 1)
            m.ok(f"ip addr add {IP[key]}/24 dev eth1 && ip link set eth1 up")
            assert m.ok("cat /mnt/sda1/label") == updates.new
            if key == "c":
                term["c"].close()
                term["c"] = reader(c, logdir)
        a.wait_http("/manager/ramdisk.log", 120)
        a.ok(psql("INSERT INTO t SELECT g, 'after the updates' FROM generate_series(5201, 5300) g"))
        for key in ("b", "c"):
            wait_for(f"{key} follows the updated primary", lambda key=key: count(term[key]) == 5300, 120)
        wait_for("no alarm after the updates", lambda: "id=alarm" not in page(a), 60)

        # The primary's power cut while it commits one row after another.
        a.send("(i=6000; while i=$((i+1)); do psql -d app -qc \"INSERT INTO t VALUES ($i, 'load')\" "
               "&& echo \"COMMITTED $i\"; done) &\n")
        a.expect(r"COMMITTED 6030", 120)
        a.qmp("quit")
        a.wait_exit(30)
        committed = max(int(n) for n in re.findall(r"COMMITTED (\d+)", a.log_path.read_text(errors="replace")))
        last = {key: int(term[key].ok(psql("SELECT coalesce(max(id), 0) FROM t"))) for key in ("b", "c")}
        # A standby may hold the one row whose commit the primary did not get to print.
        figures["rows_committed_under_load"] = committed - 6000
        figures["rows_in_flight"] = {key: committed - n for key, n in last.items()}
        assert all(n - committed <= 1 for n in last.values()), (committed, last)

        # b becomes the primary: c's entry is offered by itself (it came with the cluster).
        out = term["b"].ok("replication primary", 120)
        assert "promoted" in out and NAME["c"] in out and NAME["b"] not in out.split("primary for:")[-1], out
        term["b"].ok(psql("INSERT INTO t VALUES (0, 'on the new primary')"))
        # c is re-pointed to b with its password from a: it copies the whole cluster again.
        started = time.monotonic()
        out = term["c"].ok(f"replication standby {IP['b']} {NAME['c']} {password['c']}", 600)
        figures["repoint_copy_s"] = round(time.monotonic() - started, 1)
        assert f"standby of {IP['b']}:5432" in out, out
        term["b"].ok(psql("INSERT INTO t VALUES (-1, 'after the re-pointing')"))
        wait_for("c follows b", lambda: term["c"].ok(psql("SELECT count(*) FROM t WHERE id <= 0")) == "2", 60)
        assert f"standby {slot['c']} streaming {IP['c']}" in term["b"].ok("replication status")

        # The manual's instance backup on the new primary: made with its SQL, dumped, dropped,
        # restored: rows and owner intact.
        tb = term["b"]
        for line in INSTANCE_SQL.splitlines():
            tb.ok(f"psql -d postgres -v ON_ERROR_STOP=1 -c {shlex.quote(line)}")
        tb.ok("psql -d exampledb -v ON_ERROR_STOP=1 -c \"SET ROLE exampleuser; CREATE TABLE notes (id int, body text);"
              " INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 1000) g\"")
        sums = tb.ok(psql("SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM notes", "exampledb"))
        tb.ok("pg_dump -Fc -f /mnt/sda2/backup-exampledb.dump exampledb")
        tb.ok("dropdb exampledb")
        tb.ok("createdb --encoding=UTF-8 exampledb && pg_restore -d exampledb /mnt/sda2/backup-exampledb.dump")
        tb.ok(psql("ALTER DATABASE exampledb OWNER TO exampleuser", "postgres"))
        assert tb.ok(psql("SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM notes", "exampledb")) == sums
        assert tb.ok(psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'exampledb'", "postgres")) \
            == "exampleuser"
        assert tb.ok(psql("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'", "exampledb")) == "exampleuser"

        # "Move instance database to external database host": c, made standalone.
        tc = term["c"]
        assert "promoted" in tc.ok("replication off", 120)
        # The dump goes from b to c the reader's way: into admin's home as root, down to the
        # reader's machine with scp, up to c's admin, into place as root.
        dump = "/mnt/sda2/backup-exampledb.dump"
        tb.ok(f"cp {dump} /home/admin/ && chown admin /home/admin/backup-exampledb.dump")
        local = tmp_path / "backup-exampledb.dump"
        ssh = ReaderTerminal.SSH_OPTIONS
        host_client(["scp", "-P", str(b.ports[22]), *ssh, "admin@127.0.0.1:/home/admin/backup-exampledb.dump",
                     str(local)], ADMIN[1])
        host_client(["scp", "-P", str(c.ports[22]), *ssh, str(local), "admin@127.0.0.1:/home/admin/"], ADMIN[1])
        tc.ok(f"mv /home/admin/backup-exampledb.dump {dump}")
        assert tc.ok(f"md5sum < {dump}") == tb.ok(f"md5sum < {dump}")
        tc.ok("dropdb --if-exists exampledb")            # the copy of b's came with the cluster
        tc.ok("createdb --encoding=UTF-8 exampledb")
        tc.ok("pg_restore -d exampledb /mnt/sda2/backup-exampledb.dump")
        tc.ok(psql("ALTER DATABASE exampledb OWNER TO exampleuser", "postgres"))
        # Outside access for that user, the manual's way: a line above the "reject" lines.
        tc.ok(f"sed -i '/0.0.0.0\\/0 *reject/i host exampledb exampleuser 192.168.77.0/24 scram-sha-256'"
              " /mnt/sda2/pgsql/pg_hba.conf && /etc/init.d/S50postgresql restart", 120)
        out = tb.ok(f"PGPASSWORD=Example-Pass-1 psql 'host={IP['c']} dbname=exampledb user=exampleuser sslmode=prefer'"
                    " -tAc 'SELECT count(*), bool_and(ssl) FROM notes, pg_stat_ssl WHERE pid = pg_backend_pid()'")
        assert out == "1000|t", out

        # b forgets c (its user and its slot, which would keep WAL for ever), then turns
        # replication off: its pg_hba.conf lines go.
        tb.ok(f"replication remove {NAME['c']}", 120)
        assert tb.ok(psql("SELECT count(*) FROM pg_replication_slots", "postgres")) == "0"
        assert tb.ok(psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{NAME['c']}'", "postgres")) == "0"
        # "Max 8 standby servers can be configured": eight through the page, the ninth refused.
        names = [f"standby-{i}.example.com" for i in range(1, 10)]
        for name in names[:8]:
            status, said = manager(b, {"mode": "primary", "standby": name})
            assert status == 200 and f"standby {name}: password" in said, (status, said)
        status, said = manager(b, {"mode": "primary", "standby": names[8]})
        assert status == 422 and "at most 8 standbys (9 asked for)" in said, (status, said)
        assert tb.ok(psql("SELECT count(*) FROM pg_replication_slots", "postgres")) == "8"
        assert "off" in tb.ok("replication off", 120)
        assert tb.ok(psql("SELECT count(*) FROM pg_replication_slots", "postgres")) == "0"
        assert tb.ok("grep -c hostssl /mnt/sda2/pgsql/pg_hba.conf || true") == "0"
        assert tb.ok("replication status").startswith("mode off")
        for t in term.values():
            t.close()

    (logdir / "replication.figures.json").write_text(json.dumps(figures, indent=1))
    print("replication:", figures)


# Same-architecture pairs of gateways (the manual, H6): arm64, and armel across the two
# machines that run the armel image (ipx10 with 256 MB the primary, ipx11 its standby).
GATEWAY_PAIRS = {"arm64": ("ipx13", "ipx13"), "armel": ("ipx10", "ipx11")}


@pytest.mark.parametrize("arch", list(GATEWAY_PAIRS))
def test_replication_stream_between_two_gateways(arch, build_board, installed, tmp_path, logdir):
    """The same stream between two gateways of one architecture (the manual: the same
    architecture only), each a copy of the run's installed disk of its board (installed
    through the emulated gateway loader, as test_gateway.py checks), lean: the standby copies
    the cluster over TLS, follows the primary and refuses writes."""
    a_board, b_board = GATEWAY_PAIRS[arch]
    (pa, _), (pb, _) = build_board(a_board), build_board(b_board)
    with Hub() as hub, \
            Machine(pa.board, installed(a_board, tmp_path, "gw-a"), logdir, name=f"gw-a-{pa.board.name}",
                    accel="tcg", extra=hub.args("52:54:00:77:01:01", pa.board.qemu.nic)) as a, \
            Machine(pb.board, installed(b_board, tmp_path, "gw-b"), logdir, name=f"gw-b-{pb.board.name}",
                    accel="tcg", extra=hub.args("52:54:00:77:01:02", pb.board.qemu.nic)) as b:
        for key, m in (("a", a), ("b", b)):
            m.login(timeout=900)
            m.ok(f"ip addr add {IP[key]}/24 dev eth1 && ip link set eth1 up")
        term = {key: reader(m, logdir) for key, m in (("a", a), ("b", b))}
        term["a"].ok(f"psql -d postgres -qc 'CREATE DATABASE app' && {psql('CREATE TABLE t (id int PRIMARY KEY, note text)')}")
        password = re.search(r"password (\w+)", term["a"].ok(f"replication primary {NAME['b']}", 120)).group(1)
        assert "following" in term["b"].ok(f"replication standby {IP['a']} {NAME['b']} {password}", 900)
        term["a"].ok(psql(f"INSERT INTO t SELECT g, '{arch}' FROM generate_series(1, 100) g"))
        wait_for("100 rows on the standby gateway", lambda: count(term["b"]) == 100, 120)
        out, rc = term["b"].run(psql("INSERT INTO t VALUES (0, 'standby')"))
        assert rc != 0 and "read-only transaction" in out, out
        assert term["a"].ok(psql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)", "postgres")) == "t"
        slot = "standby_" + NAME["b"].replace(".", "_").replace("-", "_")
        wait_for("the primary's state: streaming", lambda: f"standby {slot} streaming {IP['b']} "
                 in term["a"].ok("replication status"), 60)
        for t in term.values():
            t.close()
