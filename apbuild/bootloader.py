"""GRUB for BIOS, written into a disk image file (no grub-install, no loop device).

boot.img's first 440 bytes go into the MBR; core.img (grub-mkimage, with the modules to
read an msdos-partitioned ext2 sda1 and show a menu on the serial console) goes into the gap
between the MBR and the first partition, starting at sector 1.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from .errors import ApbuildError
from .run import run
from .tree import Tree

MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "serial", "terminal",
           "configfile", "echo", "test", "boot", "search", "halt", "reboot", "sleep")
SECTOR = 512


def grub_core_image(grub_dir: Path, out: Path, prefix: str = "(hd0,msdos1)/grub",
                    modules: tuple[str, ...] = MODULES) -> Path:
    missing = [m for m in modules if not (grub_dir / f"{m}.mod").exists()]
    if missing:
        raise ApbuildError(f"GRUB modules missing in {grub_dir}: {', '.join(missing)}")
    run(["grub-mkimage", "-O", "i386-pc", "-d", grub_dir, "-p", prefix, "-o", out, *modules])
    return out


def install_grub_bios(disk: Path, grub_dir: Path, core: Path, first_partition_start: int) -> None:
    boot = (grub_dir / "boot.img").read_bytes()
    if len(boot) != SECTOR:
        raise ApbuildError(f"{grub_dir}/boot.img is {len(boot)} bytes, expected {SECTOR}")
    core_bytes = core.read_bytes()
    room = first_partition_start - SECTOR
    if len(core_bytes) > room:
        raise ApbuildError(f"GRUB core.img is {len(core_bytes)} bytes, but only {room} bytes lie "
                           f"between the MBR and the first partition")
    sectors = -(-len(core_bytes) // SECTOR)
    core_bytes = bytearray(core_bytes.ljust(sectors * SECTOR, b"\0"))
    # diskboot.img (core.img's first sector) ends with a block list: where the rest of
    # core.img lies. grub-install fills it in; we do: sector 2 onwards, sectors - 1 long.
    # Layout of the last entry (offset 0x1f4): start (u64), length (u16), segment (u16).
    struct.pack_into("<QH", core_bytes, 0x1F4, 2, sectors - 1)
    mbr = bytearray(boot[:440])
    # boot.img's "kernel sector" (offset 0x5c, u64): where diskboot.img is, sector 1.
    struct.pack_into("<Q", mbr, 0x5C, 1)
    fd = os.open(disk, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(mbr), 0)          # keeps bytes 440..511: disk id and the table
        os.pwrite(fd, bytes(core_bytes), SECTOR)
    finally:
        os.close(fd)


def install_from_pool(disk: Path, pool: Tree, first_partition_start: int, work: Path,
                      board_file: Path) -> None:
    """GRUB for BIOS into disk, from the i386-pc modules of the locked grub-pc-bin in pool
    (the boot code is pinned like every other file); work holds the temporary files."""
    sub = Tree()
    for path, entry in pool:
        if path.startswith("/usr/lib/grub/i386-pc/"):
            sub.add(path[len("/usr/lib/grub/i386-pc"):], entry)
    if not sub.entries:
        raise ApbuildError(f"{board_file}: bootloader 'grub-bios' needs the package grub-pc-bin in a recipe")
    sub.entries.pop("/", None)
    grub_dir, core = work / "grub", work / "core.img"
    sub.write_dir(grub_dir)
    grub_core_image(grub_dir, core)
    install_grub_bios(disk, grub_dir, core, first_partition_start)
    shutil.rmtree(grub_dir)
    core.unlink()
