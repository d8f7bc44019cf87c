#!/usr/bin/env python3
"""Install, update and resize times of one board in QEMU (TCG), each to the manager's next
answer: prints figures, asserts nothing (qemu-tests/ are the tests).

usage: bench/lifecycle.py [BOARD]   (default x86_64-vm; a gateway runs install and update)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.run import run  # noqa: E402
from apbuild.testing.accounts import ROOT as ROOT_LOGIN  # noqa: E402
from apbuild.testing.disks import fresh_disk, installation_disk  # noqa: E402
from apbuild.testing.lifecycle import make_updates, upload  # noqa: E402
from apbuild.testing.machine import Machine  # noqa: E402


def answered(m: Machine, since: float) -> float:
    m.wait_http("/manager/ramdisk.log", 600)
    return time.monotonic() - since


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "x86_64-vm"
    project = load_project(ROOT, name)
    gateway = project.board.bootloader == "gateway"
    with tempfile.TemporaryDirectory(prefix="apbuild-lifecycle-") as tmp:
        work = Path(tmp)
        result = build(project, Cache(default_root()), work / "out")
        (work / "update").mkdir()
        updates = make_updates(name, work / "update")
        disk = installation_disk(result, work, "disk") if gateway else fresh_disk(result, work, "disk")
        figures = []
        with Machine(project.board, disk, work, name="lifecycle", accel="tcg") as m:
            start = time.monotonic()
            m.install(updates.old)
            figures.append(("first boot: install + reboot, to the manager's answer", answered(m, start)))
            m.ok("psql -h /run/postgresql -U postgres -c 'create table t (n int)' "
                 "-c 'insert into t select generate_series(1, 100000)'")
            start = time.monotonic()
            status, text = upload(m, updates.good)
            assert status == 200, text
            figures.append((f"upload of {updates.good.stat().st_size / 1e6:.1f} MB and its checks",
                            time.monotonic() - start))
            m.expect("running install_step1.sh update", 240)
            m.expect("running install_step1.sh install", 300)
            if not gateway:
                m.expect_boot(f"App Platform {updates.new}", 600)
            m.login(*ROOT_LOGIN, 300)
            figures.append(("update: upload to the manager's answer on the new image",
                            answered(m, start)))
            if not gateway:
                m.send("poweroff\n")
                m.wait_exit(120)
                m.kill()
                run(["qemu-img", "resize", "-q", str(disk), "+4G"])
                m.start()
                start = time.monotonic()
                m.choose_grub_entry(0)
                m.login(*ROOT_LOGIN, 300)
                m.send("cd /tmp && /home/root/install_step1.sh log.txt resize\n")
                m.expect_boot(f"App Platform {updates.new}", 300)
                figures.append(("resize (+4 GB): rescue boot, resize, reboot, to the manager's answer",
                                answered(m, start)))
    print(f"board {name} (TCG)")
    for label, seconds in figures:
        print(f"  {label:<72} {seconds:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
