#!/usr/bin/env python3
"""The App Platform's replication figures under TCG (issue 14): two VMs from one installed
disk on a private segment (apbuild.testing.network's hub), the x86_64-vm image of the
user's cache (APBUILD_CACHE). Prints, asserts nothing:
- the initial copy (replication standby: pg_basebackup over TLS) of a cluster of ~100 MB;
- the replication lag under a steady insert load (pg_stat_replication.replay_lag, sampled);
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
                    extra=hub.args("52:54:00:77:00:01")) as a, \
            Machine(project.board, overlay(base, work / "b.qcow2"), work, name="b", accel="tcg",
                    extra=hub.args("52:54:00:77:00:02")) as b:
        for m, ip in ((a, "192.168.77.1"), (b, "192.168.77.2")):
            m.login(timeout=300)
            m.ok(f"ip addr add {ip}/24 dev eth1 && ip link set eth1 up")
        a.ok("psql -d postgres -qc 'CREATE DATABASE app'")
        sql(a, "CREATE TABLE big (id int, body text); CREATE TABLE load (id int PRIMARY KEY, at timestamptz)")
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
        lags: list[float] = []
        for _ in range(30):
            time.sleep(2)
            lag = sql(a, "SELECT coalesce(extract(epoch FROM replay_lag), 0) FROM pg_stat_replication", "postgres")
            if lag:
                lags.append(float(lag))
        rate = int(sql(a, "SELECT count(*) FROM load WHERE at > now() - interval '60 seconds'")) / 60
        figures.append((f"replication lag under {rate:.1f} commits/s (replay_lag, {len(lags)} samples)",
                        f"median {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"))

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
