"""File helpers the stages share: a lock between processes, writes that appear whole or not
at all, walks over a sparse file's data, and tar members that carry no build-host facts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold a flock on path (created if missing) for the block: exclusive, or shared with
    other shared holders. Whoever cannot have it waits. The lock goes with the process,
    even when it is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[Path]:
    """A temporary path beside final for the block to write; renamed onto final when the block
    succeeds, removed when it fails. So an interrupted write never leaves a partial file under
    the final name (a rename within one directory is atomic)."""
    tmp = final.with_name(f".{final.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write data to path as replacing() does: readers see the old file or the new one."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def link_or_copy(source: Path, dest: Path) -> None:
    """dest as a hard link to source (no space), or a copy where they are on different
    filesystems or the filesystem has no links. An existing dest is an error (a copy over it
    would write through to whatever it is a link of)."""
    try:
        os.link(source, dest)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        shutil.copyfile(source, dest)


def data_extents(fd: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data region of an open file, in order, from SEEK_DATA and
    SEEK_HOLE: a 16 GiB sparse disk holding 50 MB is walked by reading about 50 MB."""
    size, pos = os.fstat(fd).st_size, 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        pos = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, pos


def data_blocks(f: BinaryIO, block: int, overlap: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of each block-aligned block that holds data, once each, in order;
    holes in between are skipped. Each read is block + overlap bytes long (shorter at the
    end), so a search for strings up to overlap bytes long misses none at a block edge.
    A block may still be all zeros: which ones are is the caller's business."""
    done = 0
    for start, end in data_extents(f.fileno()):
        at = max(start // block * block, done)
        while at < end:
            f.seek(at)
            yield at, f.read(block + overlap)
            at += block
        done = at


def tar_member(name: str, epoch: int, *, size: int = 0, mode: int = 0o644, uid: int = 0,
               gid: int = 0, owner: str = "", kind: bytes = tarfile.REGTYPE,
               link: str = "") -> tarfile.TarInfo:
    """A tar header with nothing from the build host: the time is SOURCE_DATE_EPOCH, owners
    are the given numbers and owner names (empty: numeric owners only, as the device's users
    may differ from the host's)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, epoch, mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = owner
    info.type, info.linkname = kind, link
    return info
