"""Refuse outputs that carry the build host's identity: its paths, user name or hostname.

A reproducible image must not depend on where it was built, and an image that names the
builder's home or work tree leaks it to every customer. The scan reads what a customer
gets: every output and the boot files, looking inside xz and zstd layers, tar and newc cpio
members (so an error names the member) and, for sparse disk images, every data region.

Which strings count as the host's (host_needles):
- the work tree, the cache directory and $HOME, unless $HOME is `/root` or `/`: the image
  has its own /root (root's home in /etc/passwd), so that path says nothing about the host;
- the user name and the hostname when they are at least 4 characters long and not a
  common account or machine word (root, admin, debian, localhost ...): shorter or common
  words occur in any binary and would only give false alarms.
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import pwd
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ApbuildError
from .files import data_blocks
from .run import spawn

_COMMON = frozenset({
    "root", "admin", "user", "users", "debian", "ubuntu", "build", "builder", "nobody", "daemon",
    "postgres", "test", "tester", "guest", "localhost", "linux", "host", "server", "master",
    "main", "node", "runner", "docker", "vagrant", "default", "ipapps", "iplinux",
})
MIN_WORD = 4
CHUNK = 1 << 20
XZ_MAGIC = b"\xfd7zXZ\0"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclasses.dataclass(frozen=True)
class Leak:
    output: str     # the file a customer gets
    member: str     # the member inside it ('' for the file itself, or 'offset N')
    what: str       # which host string: "work tree", "user name" ...
    text: str       # the leaked string

    def __str__(self) -> str:
        where = f"{self.output}: {self.member}" if self.member else self.output
        return f"{where}: contains the build host's {self.what} {self.text!r}"


def host_needles(work_tree: Path, cache: Path) -> dict[str, str]:
    """{string: what it is} for this build host, by the rules in the module docstring."""
    needles: dict[str, str] = {}
    for what, path in (("work tree", work_tree), ("cache directory", cache)):
        needles[str(path.resolve())] = what
        needles.setdefault(str(path), what)
    home = os.environ.get("HOME", "")
    if home and os.path.normpath(home) not in ("/", "/root"):
        needles.setdefault(os.path.normpath(home), "home directory")
    words = {"user name": os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name,
             "hostname": socket.gethostname()}
    for what, word in words.items():
        if word and len(word) >= MIN_WORD and word.lower() not in _COMMON:
            needles.setdefault(word, what)
    return needles


def _scan_stream(f: BinaryIO, needles: dict[str, str], output: str, member: str) -> Iterator[Leak]:
    """Search a stream chunk by chunk, keeping an overlap so a string across two chunks is found."""
    encoded = [(n.encode(), what, n) for n, what in needles.items()]
    keep = max((len(e) for e, _, _ in encoded), default=1) - 1
    tail = b""
    found: set[str] = set()
    while chunk := f.read(CHUNK):
        data = tail + chunk
        for raw, what, text in encoded:
            if text not in found and raw in data:
                found.add(text)
                yield Leak(output, member, what, text)
        tail = data[-keep:] if keep else b""


def _scan_bytes(data: bytes, needles: dict[str, str], output: str, member: str) -> Iterator[Leak]:
    for text, what in needles.items():
        if text.encode() in data:
            yield Leak(output, member, what, text)


def _scan_tar(f: BinaryIO, needles: dict[str, str], output: str) -> Iterator[Leak]:
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for m in tar:
            yield from _scan_bytes(f"{m.name}\0{m.linkname}".encode(), needles, output, m.name)
            if m.isfile():
                src = tar.extractfile(m)
                assert src is not None
                yield from _scan_stream(src, needles, output, m.name)


def _scan_cpio(f: BinaryIO, needles: dict[str, str], output: str) -> Iterator[Leak]:
    for name, data in cpio_members(f):
        yield from _scan_bytes(name.encode() + b"\0" + data, needles, output, name)


def cpio_members(f: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Names and data of newc cpio members (the initramfs: 110-byte ASCII headers, name and
    data 4-byte aligned), across the archives concatenated in it."""
    while True:
        header = f.read(110)
        if len(header) < 110 or header[:6] not in (b"070701", b"070702"):
            return
        size, name_size = int(header[54:62], 16), int(header[94:102], 16)
        name = f.read(name_size)[:-1].decode(errors="replace")
        f.read((-(110 + name_size)) % 4)
        if name == "TRAILER!!!":
            # The initramfs may hold further archives after a trailer (padding between them).
            while (pad := f.read(4)) == b"\0\0\0\0":
                pass
            if len(pad) < 4:
                return
            rest = pad + f.read(106)
            f = _Prefixed(rest, f)
            continue
        data = f.read(size)
        f.read((-size) % 4)
        yield name, data


class _Prefixed:
    """A stream with some bytes already read put back in front."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self.prefix, self.rest = prefix, rest

    def read(self, n: int) -> bytes:
        head, self.prefix = self.prefix[:n], self.prefix[n:]
        return head + (self.rest.read(n - len(head)) if n > len(head) else b"")


def _scan_sparse(path: Path, needles: dict[str, str], output: str) -> Iterator[Leak]:
    """A (sparse) file's data regions only: a 16 GiB disk with 50 MB of data reads 50 MB.
    Chunks overlap by the longest needle; a string cannot span a hole (holes read as zeros)."""
    keep = max((len(n.encode()) for n in needles), default=1)
    found: set[str] = set()
    with open(path, "rb") as f:
        for start, data in data_blocks(f, CHUNK, overlap=keep):
            for text, what in needles.items():
                if text not in found and (at := data.find(text.encode())) >= 0:
                    found.add(text)
                    yield Leak(output, f"offset {start + at}", what, text)


def _scan_unpacked(f: BinaryIO, needles: dict[str, str], output: str, inner: str) -> list[Leak]:
    """A decompressed stream: tar or cpio member by member, anything else as bytes."""
    head = f.read(262)
    f = _Prefixed(head, f)
    if head[257:262] == b"ustar":
        return list(_scan_tar(f, needles, output))
    if head[:6] in (b"070701", b"070702"):
        return list(_scan_cpio(f, needles, output))
    return list(_scan_stream(f, needles, output, inner))


def scan_file(path: Path, needles: dict[str, str], name: str | None = None) -> list[Leak]:
    """Every leak in one output, by its kind: xz or zstd (decompressed; tar or cpio inside is
    read member by member), tar (the OVA), or plain bytes (disk images, kernel, JSON)."""
    output = name or path.name
    with open(path, "rb") as f:
        magic = f.read(262)
    inner = path.stem if path.suffix in (".xz", ".zst") else path.name
    if magic.startswith(XZ_MAGIC):
        with lzma.open(path) as f:
            return _scan_unpacked(f, needles, output, inner)
    if magic.startswith(ZSTD_MAGIC):
        # Python reads zstd only from 3.14 on: the host's zstd (a build tool) streams it.
        with spawn(["zstd", "-dcq", path]) as proc:
            assert proc.stdout is not None
            return _scan_unpacked(proc.stdout, needles, output, inner)
    if magic[257:262] == b"ustar":
        with open(path, "rb") as f:
            return list(_scan_tar(f, needles, output))
    return list(_scan_sparse(path, needles, output))


def check(files: dict[str, Path], needles: dict[str, str]) -> None:
    """Raise naming every output, member and leaked string; files: name shown -> path."""
    # dict.fromkeys: a member whose name and content both hold the string is reported once.
    leaks = list(dict.fromkeys(leak for name, path in sorted(files.items())
                               for leak in scan_file(path, needles, name)))
    if leaks:
        lines = "\n  ".join(str(leak) for leak in leaks[:20])
        more = f"\n  ... and {len(leaks) - 20} more" if len(leaks) > 20 else ""
        raise ApbuildError(f"the outputs leak the build host ({len(leaks)} found):\n  {lines}{more}\n"
                           f"an image must not depend on where it was built: find what wrote it "
                           f"(a template, a tool's default) and make it use a fixed value")
