"""The VM installed once per test run, handed to each test as a qcow2 overlay of its own.

Installing is what a first boot does (the rescue system partitions the disk, unpacks the
rootfs and reboots; the first normal boot makes the database cluster and the device's keys):
about 95 s more of emulated CPU than a later boot. Tests whose subject is the first boot or
the install itself (test_vm, power cuts during the install, provisioning, test_ntp's clock
from 2015, the second device of an image) still install from the built image; the others
start here, from what every device is after its first boot. The base is made once per image
for all pytest-xdist workers (a file lock; the other worker waits and reuses it), and it gets
its final name only once the guest has powered off cleanly. Gateways are left out: the
emulated gateway loader reads a raw disk, and only one gateway test would share one.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from apbuild.cache import sha256_file
from apbuild.config import Project
from apbuild.pipeline import BuildResult
from apbuild.run import run

from .machine import Machine


def installed_base(project: Project, result: BuildResult, shared: Path, logdir: Path, accel: str) -> Path:
    """The board's qcow2 with its image installed, shut down after the first boot."""
    board = project.board
    if board.bootloader == "gateway":
        raise ValueError(f"{board.name}: an installed base is for GRUB boards (a qcow2 disk)")
    # The build manifest names every output with its hash: the image's identity, read in a blink.
    key = f"{board.name}-{board.image_version}-{sha256_file(result.outputs['manifest'])[:16]}"
    shared.mkdir(parents=True, exist_ok=True)
    base = shared / f"{key}.qcow2"
    with open(shared / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # released when the file closes
        if not base.exists():
            work = shared / f"{key}.partial.qcow2"
            shutil.copyfile(result.outputs["qcow2"], work)
            with Machine(board, work, logdir, name=f"installed-{board.name}", accel=accel) as m:
                m.install(board.image_version)
                # The first boot's work ends with the manager answering (its 500 MB reserve,
                # the device's TLS certificate and their log lines come before it): a
                # power-off before that would leave it half done for every copy.
                m.wait_http("/manager/ramdisk.log", 300)
                m.send("poweroff\n")
                m.wait_exit(180)
            work.chmod(0o444)                 # the overlays' backing file: nobody writes it
            work.rename(base)
    return base


def overlay(base: Path, disk: Path) -> Path:
    """A private qcow2 whose reads fall through to `base` and whose writes stay its own."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)])
    return disk
