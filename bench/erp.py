#!/usr/bin/env python3
"""The erp product's figures, per machine: cold build (downloads cached, private stage
cache), the image's sizes, and the first boot in QEMU (TCG on the gateway): to the login
prompt (every service started), to a PHP page served through nginx and PHP-FPM that reads
PostGIS, and to the broker's users being made. Prints figures, asserts nothing; the limits
(qcow2 under 250 MB, a served PHP page within 5 minutes of TCG on the VM) are in issue 12.

usage: bench/erp.py [MACHINE ...]      (default: x86_64-vm ipx13)
Needs the test packages (./build.py test installs them): pexpect, qemu.qmp.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from build import private_copy, show, timed  # noqa: E402  (bench/build.py's helpers)

PAGE = """<?php
$pw = trim(file_get_contents('/tmp/pgpass'));
$db = new PDO('pgsql:host=127.0.0.1;dbname=userside', 'userside', $pw);
echo $db->query('SELECT postgis_version()')->fetchColumn();
"""


def bench_machine(machine: str, work: Path) -> list[tuple[str, str]]:
    from apbuild.cache import Cache
    from apbuild.config import load_project
    from apbuild.pipeline import build
    from apbuild.testing.disks import fresh_disk, installation_disk
    from apbuild.testing.machine import Machine

    target = f"erp@{machine}"
    project_dir, env, python = private_copy(work)
    figures = [("cold build (downloads cached)", f"{timed([python, str(project_dir / 'build.py'), target], env):.1f} s")]
    for f in sorted((project_dir / "out" / target).glob("*")):
        figures.append((f"output {f.name}", f"{f.stat().st_size / 1e6:.1f} MB apparent, "
                        f"{f.stat().st_blocks * 512 / 1e6:.1f} MB on disk"))
    project = load_project(project_dir, target)
    result = build(project, Cache(Path(env["APBUILD_CACHE"])), work / "boot-out")
    gateway = project.board.bootloader == "gateway"
    disk = installation_disk(result, work, "bench", "8G") if gateway else fresh_disk(result, work, "bench")
    with Machine(project.board, disk, work, name="bench", accel="tcg") as m:
        m.install(login=False)
        m.login(timeout=1800)
        figures.append(("first boot (install, reboot) to the login prompt", f"{time.monotonic() - m.started_at:.1f} s"))
        encoded = base64.b64encode(PAGE.encode()).decode()
        m.ok("cp /mnt/sda2/etc/erp/userside.pgpass /tmp/pgpass && chown www-data /tmp/pgpass && "
             f"echo {encoded} | base64 -d > /var/www/userside/userside3/bench.php")
        status, body = m.http_get("/bench.php", timeout=120)
        figures.append(("first boot to a served PHP page (PostGIS " + body.strip()[:5] + ")" if status == 200
                        else f"PHP page: HTTP {status}", f"{time.monotonic() - m.started_at:.1f} s"))
        while m.run("test -e /etc/rabbitmq/.users-made")[1] != 0 and time.monotonic() - m.started_at < 3600:
            time.sleep(5)
        figures.append(("first boot to RabbitMQ's users made", f"{time.monotonic() - m.started_at:.1f} s"))
        figures.append(("rootfs in use after the first boot", m.ok("df -m / | awk 'NR == 2 { print $3 \" MB\" }'")))
    return figures


def main() -> int:
    machines = [a for a in sys.argv[1:] if not a.startswith("-")] or ["x86_64-vm", "ipx13"]
    print(f"erp benchmark: {os.cpu_count()} CPUs, machines {' '.join(machines)}", flush=True)
    for machine in machines:
        with tempfile.TemporaryDirectory(prefix="apbuild-bench-erp-") as tmp:
            show(f"erp@{machine}", bench_machine(machine, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
