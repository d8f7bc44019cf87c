"""Filesystem images written into files: ext2/ext4 with mke2fs -d, swap headers.

No loop devices, no mounts, no root needed; the same inputs give the same bytes:
E2FSPROGS_FAKE_TIME fixes the superblock's times, -U and hash_seed fix its ids, and one
debugfs pass resets what mke2fs -d copies from the source files (times, owners).
"""

from __future__ import annotations

import os
import struct
import tempfile
import uuid as uuidlib
from pathlib import Path

from .files import replacing
from .run import run

BLOCK = 4096


def uuid_from(*parts: str) -> str:
    """A stable UUID derived from the inputs (never random: images must rebuild identically)."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "apbuild:" + "/".join(parts)))


def _walk(source: Path) -> list[Path]:
    return sorted(source.rglob("*"))


def content_size(source: Path) -> tuple[int, int]:
    """(bytes needed, inode count) for the tree with generous filesystem overhead."""
    blocks = 0
    inodes = 1
    for path in _walk(source):
        inodes += 1
        if path.is_file() and not path.is_symlink():
            data = -(-path.stat().st_size // BLOCK)
            blocks += data + data // 1000 + 2  # indirect blocks for ext2's block maps
        else:
            blocks += 1
    return blocks * BLOCK, inodes


def make_ext(fs: str, source: Path, out: Path, *, label: str, uuid: str, epoch: int,
             size_bytes: int | None = None, owner_root: bool = True) -> Path:
    if fs not in ("ext2", "ext4"):
        raise ValueError(fs)
    needed, inodes = content_size(source)
    if size_bytes is None:
        # Content plus 10% and 2 MiB for metadata (inode tables, group descriptors, journal-free).
        size_bytes = -(-int(needed * 1.10 + 2 * 2**20) // 2**20) * 2**20
    features = ["-O", "^has_journal,^resize_inode"] if fs == "ext2" else []
    with replacing(out) as tmp:
        with open(tmp, "wb") as f:
            f.truncate(size_bytes)
        run(["mke2fs", "-q", "-F", "-t", fs, "-b", str(BLOCK), "-m", "0", "-N", str(inodes + 64),
             "-L", label, "-U", uuid, "-E", f"hash_seed={uuid},root_owner=0:0,nodiscard",
             *features, "-d", source, tmp, f"{size_bytes // BLOCK}"],
            env={"E2FSPROGS_FAKE_TIME": str(epoch)})
        _normalise(tmp, source, epoch, owner_root)
    return out


def _normalise(image: Path, source: Path, epoch: int, owner_root: bool) -> None:
    """One debugfs run: every inode gets the build's timestamp (and owner root)."""
    paths = ["/", "/lost+found"] + ["/" + str(p.relative_to(source)) for p in _walk(source)]
    lines = []
    for p in paths:
        quoted = '"' + p.replace('"', '\\"') + '"'
        for field in ("atime", "mtime", "ctime", "crtime"):
            lines.append(f"set_inode_field {quoted} {field} {epoch}")
        if owner_root:
            lines.append(f"set_inode_field {quoted} uid 0")
            lines.append(f"set_inode_field {quoted} gid 0")
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as cmd:
        cmd.write("\n".join(lines) + "\n")
        cmd.flush()
        run(["debugfs", "-w", "-f", cmd.name, image], env={"E2FSPROGS_FAKE_TIME": str(epoch)})


FAT32_MIN = 34 * 2**20  # FAT32 needs 65525 clusters: with 512-byte clusters, 33 MiB and the FATs
# Free room left on a content-sized FAT for what the device writes there (bootmode, label,
# provision.conf): the image's size counts every byte of it (the 50 MB limit).
FAT_SPARE = 2**20


def fat32_size(needed: int) -> int:
    """The smallest whole-MiB FAT32 (512-byte sectors and clusters) holding `needed` bytes
    of clusters plus FAT_SPARE: 32 reserved sectors, two FATs of 4 bytes per cluster."""
    size = needed + FAT_SPARE
    while True:
        fat = -(-(size // 512 + 2) * 4 // 512) * 512
        total = -(-(needed + FAT_SPARE + 32 * 512 + 2 * fat) // 2**20) * 2**20
        if total <= size:
            return max(FAT32_MIN, total)
        size = total


def make_fat(source: Path, out: Path, *, label: str, epoch: int, size_bytes: int | None = None) -> Path:
    """FAT32 with mkfs.fat and mcopy (mtools), no mounts. --invariant fixes the volume serial
    and the format's own times; every file and directory carries the build's mtime, which
    mcopy -m keeps, so two builds give the same bytes."""
    needed = sum(-(-p.stat().st_size // 512) * 512 for p in _walk(source) if p.is_file())
    if size_bytes is None:
        size_bytes = fat32_size(needed + 2**16)   # + the directories' clusters
    for path in _walk(source) + [source]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    env = {"SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}
    top = sorted(source.iterdir())
    with replacing(out) as tmp:
        run(["mkfs.fat", "-F", "32", "-s", "1", "-S", "512", "--invariant", "-n", label.upper()[:11],
             "-C", tmp, str(size_bytes // 1024)], env=env)
        if top:
            run(["mcopy", "-s", "-m", "-Q", "-i", tmp, *top, "::/"], env=env)
    return out


def make_swap(out: Path, size_bytes: int, uuid: str, label: str = "") -> Path:
    """A Linux swap area header (version 1, 4 KiB pages), as mkswap writes it."""
    page = 4096
    pages = size_bytes // page
    header = bytearray(page)
    # struct swap_header_v1_2 starts after 1024 bytes of boot-block space.
    struct.pack_into("<III", header, 1024, 1, pages - 1, 0)
    header[1024 + 12:1024 + 28] = uuidlib.UUID(uuid).bytes
    header[1024 + 28:1024 + 44] = label.encode()[:16].ljust(16, b"\0")
    header[page - 10:] = b"SWAPSPACE2"
    with replacing(out) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.truncate(pages * page)
    return out
