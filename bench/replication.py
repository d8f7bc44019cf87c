#!/usr/bin/env python3
"""The App Platform's replication figures under TCG (issue 14): two VMs from one installed
disk on a private segment (apbuild.testing.network's hub), the x86_64-vm image of the
user's cache (APBUILD_CACHE). Prints, asserts nothing:
- the initial copy (replication standby: pg_basebackup over TLS) of a cluster of ~100 MB;
- the replication lag under a steady insert load, per commit and on one clock: the primary
  commits a row, then asks the standby (dblink, one open connection over the private link)
  until the row is there; the time from the commit's return to the row seen, less one round
  trip of that question (measured alone), is the lag (pg_stat_replication.replay_lag cannot
  give it: it is NULL whenever the standby has caught up);
- the catch-up after a one-minute outage (the standby's cable out, the load going on).

usage: bench/replication.py [MB]      (default 100)
Needs the test packages (./build.py test installs them): pexpect, qemu.qmp.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOAD = ("( (i=0; while i=$((i+1)); do psql -d app -qc \"INSERT INTO load VALUES ($i, now())\"; "
        "sleep 0.2; done) > /dev/null 2>&1 & )")
# On the primary: COMMITS rows, one a commit, ~5 a second; after each commit, ask the standby
# until the row is there (dblink, one connection); each wait into the table lag. Transaction
# control in a DO block: each COMMIT makes the row visible to the standby's replay.
COMMITS = 300
PROBE = """DO $$
DECLARE t0 timestamptz; seen int;
BEGIN
  PERFORM dblink_connect('s', 'host=192.168.77.2 dbname=app user=bench password=bench-pass-1 sslmode=require');
  FOR k IN 1..20 LOOP
    t0 := clock_timestamp();
    PERFORM * FROM dblink('s', 'SELECT 1') AS x(n int);
    INSERT INTO rtt VALUES (extract(epoch FROM clock_timestamp() - t0)); COMMIT;
  END LOOP;
  FOR i IN 1..%d LOOP
    INSERT INTO probe VALUES (i, clock_timestamp()); COMMIT;
    t0 := clock_timestamp();
    LOOP
      SELECT n INTO seen FROM dblink('s', 'SELECT coalesce(max(id), 0) FROM probe') AS x(n int);
      EXIT WHEN seen >= i;
    END LOOP;
    INSERT INTO lag VALUES (i, extract(epoch FROM clock_timestamp() - t0)); COMMIT;
    PERFORM pg_sleep(0.2);
  END LOOP;
  PERFORM dblink_disconnect('s');
END $$""" % COMMITS


def sql(m, query: str, db: str = "app") -> str:
    return m.ok(f"psql -d {db} -tAc \"{query}\"", 600)


def main() -> None:
    from apbuild.cache import Cache, default_root
    from apbuild.config import find_root, load_project
    from apbuild.pipeline import build
    from apbuild.testing.installed import installed_base, overlay
    from apbuild.testing.machine import Machine
    from apbuild.testing.network import NIC, Hub

    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    project = load_project(find_root(), "x86_64-vm")
    work = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    result = build(project, Cache(default_root()), work / "out")
    base = installed_base(project, result, work / "installed", work, "tcg")
    figures: list[tuple[str, str]] = []
    with Hub() as hub, \
            Machine(project.board, overlay(base, work / "a.qcow2"), work, name="a", accel="tcg",
                    extra=hub.args("52:54:00:77:00:01", project.board.qemu.nic)) as a, \
            Machine(project.board, overlay(base, work / "b.qcow2"), work, name="b", accel="tcg",
                    extra=hub.args("52:54:00:77:00:02", project.board.qemu.nic)) as b:
        for m, ip in ((a, "192.168.77.1"), (b, "192.168.77.2")):
            m.login(timeout=300)
            m.ok(f"ip addr add {ip}/24 dev eth1 && ip link set eth1 up")
        a.ok("psql -d postgres -qc 'CREATE DATABASE app'")
        sql(a, "CREATE TABLE big (id int, body text); CREATE TABLE load (id int PRIMARY KEY, at timestamptz);"
               " CREATE TABLE probe (id int PRIMARY KEY, at timestamptz);"
               " CREATE TABLE lag (id int, s float8); CREATE TABLE rtt (s float8); CREATE EXTENSION dblink;"
               " CREATE USER bench PASSWORD 'bench-pass-1'; GRANT SELECT ON probe TO bench")
        # The primary's questions reach the standby as bench over TLS (the copy takes this line).
        a.ok("sed -i '1i hostssl app bench 192.168.77.0/24 scram-sha-256' /mnt/sda2/pgsql/pg_hba.conf")
        start = time.monotonic()
        # ~1 KB a row.
        sql(a, f"INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, {mb * 1000}) g")
        size = int(sql(a, "SELECT pg_database_size('app') + pg_database_size('postgres')"))
        figures.append((f"filling the primary with {size / 1e6:.0f} MB", f"{time.monotonic() - start:.1f} s"))
        said = a.ok("replication primary standby-b.example.com")
        password = re.search(r"password (\w+)", said).group(1)
        start = time.monotonic()
        b.ok(f"replication standby 192.168.77.1 standby-b.example.com {password}", 3600)
        cluster = int(b.ok("du -sk /mnt/sda2/pgsql | cut -f1")) * 1024
        figures.append((f"initial copy of the cluster ({cluster / 1e6:.0f} MB)", f"{time.monotonic() - start:.1f} s"))

        a.ok(LOAD)
        started = time.monotonic()
        probe = " ".join(PROBE.split()).replace("$", "\\$")     # one line on the console
        a.ok(f'psql -d app -v ON_ERROR_STOP=1 -qc "{probe}"', 3600)
        took = time.monotonic() - started
        rtt = statistics.median(float(v) for v in sql(a, "SELECT s FROM rtt").split())
        lags = sorted(max(0.0, float(v) - rtt) for v in sql(a, "SELECT s FROM lag").split())
        rate = (COMMITS + int(sql(a, "SELECT count(*) FROM load"))) / took if took else 0
        figures.append(("one question to the standby and back (dblink, median of 20)", f"{rtt * 1000:.0f} ms"))
        figures.append((f"replication lag, commit to row seen on the standby ({len(lags)} commits, "
                        f"~{rate:.1f} commits/s in all)",
                        f"median {statistics.median(lags) * 1000:.0f} ms, 90% {lags[int(len(lags) * 0.9)] * 1000:.0f} ms, "
                        f"max {lags[-1] * 1000:.0f} ms"))

        b.qmp("set_link", name=NIC, up=False)
        time.sleep(60)
        behind = int(sql(a, "SELECT max(id) FROM load"))
        b.qmp("set_link", name=NIC, up=True)
        start = time.monotonic()
        while int(sql(b, "SELECT coalesce(max(id), 0) FROM load")) < behind:
            time.sleep(0.5)
        figures.append(("catch-up after a one-minute outage (load going on)", f"{time.monotonic() - start:.1f} s"))
    for what, value in figures:
        print(f"{what:70s} {value}")


if __name__ == "__main__":
    main()
