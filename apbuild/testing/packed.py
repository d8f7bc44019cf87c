"""The bytes inside a packed file of sda1 (rootfs.tar.xz or .zst, ramdisk.cpio.xz or .zst),
for the tests that read its members: xz or zstd, told by the content, as the kernel and the
installer tell them."""

from __future__ import annotations

import lzma
from pathlib import Path

from apbuild.leakscan import XZ_MAGIC, ZSTD_MAGIC
from apbuild.run import run


def unpacked(path: Path) -> bytes:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(XZ_MAGIC):
        return lzma.decompress(path.read_bytes())
    if magic.startswith(ZSTD_MAGIC):
        # Python reads zstd only from 3.14 on: the host's zstd (a build tool) unpacks it.
        return run(["zstd", "-dcq", str(path)]).stdout
    raise ValueError(f"{path}: neither xz nor zstd")
