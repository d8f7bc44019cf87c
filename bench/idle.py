#!/usr/bin/env python3
"""What an installed, idle board costs the host in QEMU (TCG): the emulator's CPU seconds a
minute once the manager answers, then with the manager's processes stopped (SIGSTOP), so the
manager's own share shows. Every emulated guest of the test suite idles between its steps,
and a device idles most of its life. Prints figures, asserts nothing.

usage: bench/idle.py [BOARD] [SECONDS]   (default x86_64-vm, 60 s a figure)
BOARD is one whose product has the manager (the App Platform's): the figures start when it
answers, and the second is taken with it stopped.
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
from apbuild.testing.disks import fresh_disk, installation_disk  # noqa: E402
from apbuild.testing.machine import Machine  # noqa: E402

# The manager and what it started (its loop, socat, crond), found by their command lines.
STOP_MANAGER = ("for p in /proc/[0-9]*; do grep -qaE '/manager/|socat|crond' $p/cmdline 2>/dev/null "
                "&& [ ${p#/proc/} != $$ ] && kill -STOP ${p#/proc/}; done; true")


def per_minute(m: Machine, seconds: float) -> float:
    before, start = m.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (m.cpu_seconds() - before) * 60 / (time.monotonic() - start)


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "x86_64-vm"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    project = load_project(ROOT, name)
    if "manager" not in project.board.recipes:
        # Its answer is what the figures wait for: without it the wait would only time out.
        print(f"bench/idle.py: {name} has no manager (recipes: {', '.join(project.board.recipes)}); "
              "give a board of the App Platform", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="apbuild-idle-") as tmp:
        work = Path(tmp)
        result = build(project, Cache(default_root()), work / "out")
        gateway = project.board.bootloader == "gateway"
        disk = installation_disk(result, work, "idle") if gateway else fresh_disk(result, work, "idle")
        with Machine(project.board, disk, work, name="idle", accel="tcg") as m:
            m.install()
            m.wait_http("/manager/ramdisk.log", 600)
            time.sleep(20)                  # the first boot's last steps after the answer
            idle = per_minute(m, seconds)
            m.ok(STOP_MANAGER)
            time.sleep(5)
            without = per_minute(m, seconds)
    print(f"{name}, installed and idle, QEMU (TCG) CPU-s a minute over {seconds:.0f} s:")
    print(f"  {idle:5.2f}  as it runs")
    print(f"  {without:5.2f}  with the manager stopped (its share: {idle - without:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
