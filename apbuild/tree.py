"""An image's file tree held as metadata, so owners and modes never need root.

Paths are absolute and normalised ('/usr/bin/sh'); file content lives elsewhere on disk
(an unpacked package, an overlay file) or in memory (rendered templates). The writers
turn a tree into a tar or a newc cpio archive with numeric owners and one timestamp, in
sorted order, so the same tree always gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from .files import tar_member

FILE, DIR, SYMLINK = "file", "dir", "symlink"


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str
    mode: int = 0o644          # permission bits only
    uid: int = 0
    gid: int = 0
    target: str = ""           # symlinks
    source: Path | None = None  # files: content on disk ...
    data: bytes | None = None   # ... or in memory
    origin: str = ""           # package or overlay it came from, for error messages

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return self.source.stat().st_size if self.source else 0


def norm(path: str) -> str:
    path = posixpath.normpath("/" + path.lstrip("./").lstrip("/"))
    return "/" if path in ("/", "//") else path


class Tree:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def __contains__(self, path: str) -> bool:
        return norm(path) in self.entries

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        return iter(sorted(self.entries.items()))

    def get(self, path: str) -> Entry | None:
        return self.entries.get(norm(path))

    def add(self, path: str, entry: Entry) -> None:
        path = norm(path)
        self._parents(path)
        self.entries[path] = entry

    def remove(self, path: str) -> None:
        path = norm(path)
        for p in [p for p in self.entries if p == path or p.startswith(path + "/")]:
            del self.entries[p]

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in self.entries:
            self.entries[parent] = Entry(DIR, 0o755)
            parent = posixpath.dirname(parent)

    def resolve(self, path: str, *, depth: int = 0) -> str | None:
        """Follow symlinks inside the tree (component by component), as the device would."""
        if depth > 40:
            return None
        parts = norm(path).strip("/").split("/")
        current = "/"
        for i, part in enumerate(parts):
            if not part:
                continue
            candidate = posixpath.join(current, part)
            entry = self.entries.get(candidate)
            if entry is None:
                return None
            if entry.kind == SYMLINK:
                base = posixpath.dirname(candidate)
                target = entry.target if entry.target.startswith("/") else posixpath.join(base, entry.target)
                rest = "/".join(parts[i + 1:])
                return self.resolve(posixpath.join(target, rest) if rest else target, depth=depth + 1)
            current = candidate
        return current

    def merge(self, other: Tree) -> None:
        for path, entry in other:
            self.add(path, entry)

    # -- writers ----------------------------------------------------------------------
    def write_tar(self, out: io.BufferedIOBase, epoch: int, *, end: bool = True) -> None:
        """end=False leaves out the end-of-archive blocks, so another tar can follow it."""
        sink = _Sink(out)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path, entry in self:
                kind, link, data = tarfile.REGTYPE, "", b""
                if entry.kind == DIR:
                    kind = tarfile.DIRTYPE
                elif entry.kind == SYMLINK:
                    kind, link = tarfile.SYMTYPE, entry.target
                else:
                    data = entry.read()
                info = tar_member("." + path, epoch, size=len(data), mode=entry.mode,
                                  uid=entry.uid, gid=entry.gid, kind=kind, link=link)
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
            sink.discard = not end

    def write_cpio(self, out: io.BufferedIOBase, epoch: int) -> None:
        """newc cpio, as the kernel unpacks an initramfs."""
        def header(ino: int, mode: int, uid: int, gid: int, nlink: int, size: int, name: bytes) -> bytes:
            fields = (ino, mode, uid, gid, nlink, epoch, size, 0, 0, 0, 0, len(name) + 1, 0)
            return b"070701" + b"".join(b"%08X" % f for f in fields)

        def pad(n: int) -> bytes:
            return b"\0" * (-n % 4)

        ino = 0
        for path, entry in self:
            ino += 1
            name = path.lstrip("/").encode()
            if entry.kind == DIR:
                mode, body = stat.S_IFDIR | entry.mode, b""
            elif entry.kind == SYMLINK:
                mode, body = stat.S_IFLNK | 0o777, entry.target.encode()
            else:
                mode, body = stat.S_IFREG | entry.mode, entry.read()
            hdr = header(ino, mode, entry.uid, entry.gid, 2 if entry.kind == DIR else 1, len(body), name)
            out.write(hdr + name + b"\0" + pad(len(hdr) + len(name) + 1) + body + pad(len(body)))
        trailer = b"TRAILER!!!"
        hdr = header(0, 0, 0, 0, 1, 0, trailer)
        out.write(hdr + trailer + b"\0" + pad(len(hdr) + len(trailer) + 1))

    def write_dir(self, dest: Path) -> None:
        """Materialise the files (content and modes; owners are set by the image writer)."""
        dirs = []
        for path, entry in self:
            target = dest / path.lstrip("/")
            if entry.kind == DIR:
                target.mkdir(parents=True, exist_ok=True)
                dirs.append((target, entry.mode))
            elif entry.kind == SYMLINK:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(entry.target, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                if entry.source is not None and entry.data is None:
                    shutil.copyfile(entry.source, target)
                else:
                    target.write_bytes(entry.read())
                os.chmod(target, entry.mode)
        for target, mode in reversed(dirs):  # last: a read-only directory is filled by now
            os.chmod(target, mode)


class _Sink(io.RawIOBase):
    """A write-only file that can stop passing bytes on (to drop a tar's end blocks)."""

    def __init__(self, out: io.BufferedIOBase) -> None:
        self.out, self.pos, self.discard = out, 0, False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if not self.discard:
            self.out.write(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos
