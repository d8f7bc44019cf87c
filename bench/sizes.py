#!/usr/bin/env python3
"""Image sizes before and after: builds every board from this tree and from an earlier
revision (git archive, private caches seeded with the downloaded packages) and prints each
output's size side by side, and sda1's payload (kernel, ramdisk, rootfs) that makes it.
The installation images' limit is 50 MB (the original App Platform's ~50 MB); a sparse
raw disk counts by its allocated bytes.

usage: bench/sizes.py [--before REV] [BOARD ...]
REV defaults to 1ec26f1, the tree before the manual's procedures were built (issue 10).
Prints figures, asserts nothing; a size over the limit is marked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIMIT = 50e6
INSTALLATION = (".img", ".qcow2", ".ova", ".vhdx")
# The rootfs is .xz or, for a product with rootfs_compression = "zstd", .zst.
PAYLOAD = ("vmlinuz", "ramdisk.cpio.xz", "ramdisk.cpio.zst", "ramdisk.ext2.xz", "rootfs.tar.xz", "rootfs.tar.zst")


def build_tree(tree: Path, board: str, cache: Path) -> dict[str, int]:
    """Build one board from `tree` in `cache`; the sizes of its outputs and sda1 payload."""
    from apbuild.cache import Cache, default_root
    from apbuild.testing.seeding import with_downloads

    with_downloads(cache, Cache(default_root()))
    env = {**os.environ, "APBUILD_CACHE": str(cache), "APBUILD_VENV": str(ROOT / ".venv")}
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    subprocess.run([python, str(tree / "build.py"), board], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # A sparse raw disk (the VM's 16 GiB .img) counts by what it holds, as a download would.
    sizes = {f.name: min(f.stat().st_size, f.stat().st_blocks * 512)
             for f in sorted((tree / "out" / board).iterdir()) if f.suffix in INSTALLATION}
    boots = sorted((cache / "stages" / "boot").glob("*/"), key=lambda p: p.stat().st_mtime)
    for name in PAYLOAD:
        if boots and (boots[-1] / name).exists():
            sizes[f"sda1/{name}"] = (boots[-1] / name).stat().st_size
    return sizes


def main() -> int:
    from apbuild.config import list_boards

    args = sys.argv[1:]
    rev = "1ec26f1"
    if "--before" in args:
        i = args.index("--before")
        rev = args[i + 1]
        del args[i:i + 2]
    boards = args or list_boards(ROOT)
    print(f"apbuild image sizes: before = {rev}, after = this tree; limit {LIMIT / 1e6:.0f} MB", flush=True)
    with tempfile.TemporaryDirectory(prefix="apbuild-sizes-") as tmp:
        work = Path(tmp)
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        new = work / "after"
        shutil.copytree(ROOT, new, ignore=shutil.ignore_patterns(".venv", "out", ".git", "__pycache__"))
        for board in boards:
            before = build_tree(old, board, work / "cache-before")
            after = build_tree(new, board, work / "cache-after")
            print(f"board {board}")
            for name in sorted(set(before) | set(after), key=lambda n: (n.startswith("sda1/"), n)):
                a, b = before.get(name), after.get(name)
                mark = ""
                if b and name.endswith(INSTALLATION) and b >= LIMIT:
                    # VHDX keeps its data uncompressed (Hyper-V runs it as it is): an extra
                    # format beside the installation images, not one of them.
                    mark = "  over 50 MB (uncompressed format)" if name.endswith(".vhdx") else "  OVER THE LIMIT"
                shown = lambda v: f"{v / 1e6:6.1f} MB" if v is not None else "      -  "
                delta = f"{(b - a) / 1e6:+.1f}" if a is not None and b is not None else ""
                print(f"  {name:<34} {shown(a)}  ->  {shown(b)}  {delta}{mark}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
