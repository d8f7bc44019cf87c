#!/usr/bin/env python3
"""What a reboot of a GRUB board (the x86_64 VM) costs in QEMU (TCG), the two ways the test
harness could boot it: in a new QEMU (what it does: -no-reboot, the next boot a QEMU of its
own) or in the QEMU that reset (what a hypervisor and ./build.py run do). Each round starts
a QEMU on the installed disk and takes its CPU seconds to the login prompt, logs in, reboots
in that QEMU and takes them again to the next prompt (the shutdown included). Prints
figures, asserts nothing.

usage: bench/reboot.py [BOARD] [ROUNDS]   (default x86_64-vm, 3 rounds)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.testing.disks import fresh_disk  # noqa: E402
from apbuild.testing.machine import Machine  # noqa: E402

PROMPT = "login:"


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "x86_64-vm"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    project = load_project(ROOT, name)
    if project.board.bootloader == "gateway":
        # Its QEMU always exits at a reset: the emulated loader starts every boot anew.
        print(f"bench/reboot.py: {name} boots through the gateway loader, a new QEMU at every "
              "boot; give a GRUB board", file=sys.stderr)
        return 2
    new, same = [], []
    with tempfile.TemporaryDirectory(prefix="apbuild-reboot-") as tmp:
        work = Path(tmp)
        result = build(project, Cache(default_root()), work / "out")
        disk = fresh_disk(result, work, "reboot")
        with Machine(project.board, disk, work, name="install", accel="tcg") as m:
            m.install()
            m.wait_http("/manager/ramdisk.log", 600)
            m.send("poweroff\n")
            m.wait_exit(180)
        for _ in range(rounds):
            with Machine(project.board, disk, work, name="reboot", accel="tcg", no_reboot=False) as m:
                m.expect(PROMPT, 300)
                new.append(m.cpu_seconds())
                m.send("\n")                  # the prompt again, for login() to answer
                m.login(timeout=300)
                before = m.cpu_seconds()
                m.send("reboot\n")
                m.expect(PROMPT, 300)
                same.append(m.cpu_seconds() - before)
    print(f"{name}: QEMU (TCG) CPU-s to the login prompt, {rounds} rounds:")
    print(f"  {' '.join(f'{s:5.1f}' for s in new)}  started in a new QEMU")
    print(f"  {' '.join(f'{s:5.1f}' for s in same)}  rebooted in the same QEMU (its shutdown included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
