"""Private disks made from a build's outputs (each machine writes its own), and the
partition table of a disk image as the host reads it."""

from __future__ import annotations

import shutil
from pathlib import Path

from apbuild.disk import Placed, read_table
from apbuild.pipeline import BuildResult
from apbuild.run import run


def partitions(disk: Path) -> dict[int, Placed]:
    """A raw disk image's MBR partitions by number (sfdisk's reading, apbuild.disk's)."""
    return {p.number: p for p in read_table(disk)[1]}


def fresh_disk(result: BuildResult, tmp: Path, name: str) -> Path:
    """A private copy of the built qcow2: each machine installs onto its own disk."""
    disk = tmp / f"{name}.qcow2"
    shutil.copyfile(result.outputs["qcow2"], disk)
    return disk


def sparse_copy(source: Path, disk: Path) -> Path:
    """A raw disk copied with its holes (a 4 GB or 16 GiB disk holds far fewer bytes), and
    writable whatever the source's mode."""
    run(["cp", "--sparse=always", str(source), str(disk)])
    disk.chmod(0o644)
    return disk


def raw_disk(result: BuildResult, tmp: Path, name: str) -> Path:
    """A private, sparse copy of the raw image."""
    return sparse_copy(result.outputs["raw"], tmp / f"{name}.img")


def installation_disk(result: BuildResult, tmp: Path, name: str, size: str = "4G") -> Path:
    """A gateway's storage: the installation image written to the start of an empty disk."""
    disk = raw_disk(result, tmp, name)
    run(["truncate", "-s", size, str(disk)])
    return disk
