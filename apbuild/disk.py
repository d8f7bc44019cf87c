"""MBR disk images as plain files: sfdisk writes the table, Python places the contents.

Everything is checked before a byte is written (overlaps, alignment, sizes), each error
naming both sides of the conflict. The file stays sparse: only data blocks are written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .errors import ApbuildError
from .files import data_blocks, replacing
from .run import run

SECTOR = 512


@dataclasses.dataclass(frozen=True)
class Placed:
    number: int
    start: int            # bytes
    size: int             # bytes
    type: str             # MBR type, hex without 0x ("83", "c", "82")
    bootable: bool = False
    image: Path | None = None


def _check(disk_size: int, parts: list[Placed]) -> None:
    for p in parts:
        name = f"partition {p.number}"
        if p.start % SECTOR or p.size % SECTOR:
            raise ApbuildError(f"{name}: start {p.start} and size {p.size} must be multiples of {SECTOR}")
        if p.start < SECTOR:
            raise ApbuildError(f"{name}: starts at {p.start}, inside the partition table sector")
        if p.start + p.size > disk_size:
            raise ApbuildError(f"{name} (offset {p.start:#x}, size {p.size:#x}) ends beyond the "
                               f"disk's {disk_size:#x} bytes")
        if p.image is not None and p.image.stat().st_size > p.size:
            raise ApbuildError(f"{name}: image {p.image.name} is {p.image.stat().st_size} bytes, "
                               f"more than the partition's {p.size}")
    ordered = sorted(parts, key=lambda p: p.start)
    for a, b in zip(ordered, ordered[1:]):
        if a.start + a.size > b.start:
            raise ApbuildError(f"partition {b.number} (offset {b.start:#x}, size {b.size:#x}) overlaps "
                               f"partition {a.number} (offset {a.start:#x}, size {a.size:#x})")
    if len({p.number for p in parts}) != len(parts) or any(not 1 <= p.number <= 4 for p in parts):
        raise ApbuildError(f"MBR partition numbers must be unique and 1 to 4: {[p.number for p in parts]}")


def sfdisk_script(disk: Path, disk_id: int, parts: list[Placed]) -> str:
    lines = ["label: dos", f"label-id: {disk_id:#010x}", "unit: sectors", ""]
    for p in sorted(parts, key=lambda p: p.number):
        flags = ", bootable" if p.bootable else ""
        lines.append(f"{disk}{p.number} : start={p.start // SECTOR}, size={p.size // SECTOR}, "
                     f"type={p.type}{flags}")
    return "\n".join(lines) + "\n"


def _copy_sparse(src: Path, dest_fd: int, offset: int) -> None:
    """Write src's data at offset, leaving its holes and zero blocks unwritten (the fresh
    disk file reads zeros there): the disk stays sparse."""
    block = 1 << 20
    zero = bytes(block)
    with open(src, "rb") as f:
        for at, chunk in data_blocks(f, block):
            if chunk != zero[: len(chunk)]:
                os.pwrite(dest_fd, chunk, offset + at)


def make_mbr_disk(out: Path, disk_size: int, disk_id: int, parts: list[Placed]) -> Path:
    _check(disk_size, parts)
    with replacing(out) as tmp:
        with open(tmp, "wb") as f:
            f.truncate(disk_size)
        run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", tmp],
            input=sfdisk_script(tmp, disk_id, parts).encode())
        fd = os.open(tmp, os.O_WRONLY)
        try:
            for p in parts:
                if p.image is not None:
                    _copy_sparse(p.image, fd, p.start)
        finally:
            os.close(fd)
    return out


def read_table(disk: Path) -> tuple[int, list[Placed]]:
    """(disk id, partitions) as sfdisk reads them back."""
    data = json.loads(run(["sfdisk", "--json", disk]).stdout)["partitiontable"]
    parts = []
    for p in data.get("partitions", []):
        number = int(p["node"][len(str(disk)):])
        parts.append(Placed(number, p["start"] * SECTOR, p["size"] * SECTOR, p["type"],
                            bool(p.get("bootable"))))
    return int(data["id"], 16), parts
