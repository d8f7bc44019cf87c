"""Where each partition lies on the device's disk, computed once from the layout.

The build uses it for the installation image (sda1 only); the installer template uses the
same numbers to create sda3, sda4 and sda2 on the device, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses

from .config import Layout
from .schema import parse_size

SECTOR = 512


@dataclasses.dataclass(frozen=True)
class Placement:
    number: int
    name: str
    filesystem: str
    mount: str
    mbr_type: str
    start_sector: int
    size_sectors: int | None      # None: to the end of the disk
    reserved_sectors: int | None  # the maximum size the layout allows

    @property
    def device(self) -> str:
        return f"/dev/sda{self.number}"

    @property
    def start(self) -> int:
        return self.start_sector * SECTOR

    @property
    def update_slot_sectors(self) -> int | None:
        """Half the reserve, in whole MiB: an update writes the new partition into the half
        the current one does not use (the installer and update-image use this too)."""
        if self.reserved_sectors is None:
            return None
        mib = 1024 * 1024 // SECTOR
        return self.reserved_sectors // 2 // mib * mib


def place(layout: Layout) -> list[Placement]:
    """Placements in physical order; every partition starts on the layout's alignment."""
    align = parse_size(layout.alignment) // SECTOR
    out = []
    start = align
    for p in layout.partitions:
        size = None if p.size_bytes is None else -(-p.size_bytes // SECTOR)
        out.append(Placement(p.number, p.name, p.filesystem, p.mount, p.mbr_type, start, size, size))
        if size is not None:
            start += -(-size // align) * align
    return out


def by_name(placements: list[Placement]) -> dict[str, Placement]:
    return {p.name: p for p in placements}

