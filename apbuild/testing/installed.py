"""Each board installed once per test run, handed to each test as a disk of its own.

Installing is what a first boot does (the rescue system partitions the disk, unpacks the
rootfs and reboots; the first normal boot makes the database cluster and the device's keys):
about 95 s more of emulated CPU than a later boot. Tests whose subject is the first boot or
the install itself (test_vm, power cuts during the install, provisioning, test_ntp's clock
from 2015, the second device of an image) still install from the built image; the others
start here, from what every device is after its first boot. The base is made once per image
for all pytest-xdist workers (a file lock; the other worker waits and reuses it), and it gets
its final name only once the guest has powered off cleanly. A VM's base is a qcow2 and each
test's disk an overlay of it; a gateway's is raw, as the emulated gateway loader reads it,
and each test's disk a sparse copy (test_gateway's boards, and the replication between two
gateways, which installed four more before).
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from apbuild.cache import sha256_file
from apbuild.config import Project
from apbuild.pipeline import BuildResult
from apbuild.run import run

from .disks import installation_disk, sparse_copy
from .machine import Machine


def installed_base(project: Project, result: BuildResult, shared: Path, logdir: Path, accel: str) -> Path:
    """The board's disk with its image installed, shut down after the first boot: a qcow2,
    or a gateway's raw disk (its installation image on an empty 4 GB disk, under TCG)."""
    board = project.board
    gateway = board.bootloader == "gateway"
    # The build manifest names every output with its hash: the image's identity, read in a blink.
    key = f"{board.name}-{board.image_version}-{sha256_file(result.outputs['manifest'])[:16]}"
    shared.mkdir(parents=True, exist_ok=True)
    base = shared / f"{key}{'.img' if gateway else '.qcow2'}"
    with open(shared / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # released when the file closes
        if not base.exists():
            if gateway:
                work, accel = installation_disk(result, shared, f"{key}.partial"), "tcg"
            else:
                work = shared / f"{key}.partial.qcow2"
                shutil.copyfile(result.outputs["qcow2"], work)
            with Machine(board, work, logdir, name=f"installed-{board.name}", accel=accel) as m:
                # A gateway's first boot: sda1's mode file says rescue; the ramdisk installs,
                # sets normal and resets, and the loader boots the installed system.
                assert not gateway or m.mode == "rescue", m.mode
                m.install(board.image_version)
                assert not gateway or (m.mode, m.boots) == ("normal", 2), (m.mode, m.boots)
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
    """A private disk whose writes stay its own: a qcow2 whose reads fall through to `base`,
    or a sparse copy of a raw base (a gateway's: its loader reads the disk as raw)."""
    if base.suffix == ".qcow2":
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)])
        return disk
    return sparse_copy(base, disk)            # the base is read-only, its copy is not
