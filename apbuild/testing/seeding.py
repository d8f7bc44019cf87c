"""Private caches for tests that build: the boards' locked .debs, linked from a store of
downloads (the user's cache), and no stage results, so every stage of a build in them runs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from apbuild import debian, lockfile, mirror
from apbuild.cache import Cache
from apbuild.config import find_root


def seeded_cache(root: Path, boards: Iterable[str], store: Cache) -> Cache:
    """A cache at `root` holding the locked packages of `boards`. Packages missing from
    `store` are downloaded into it first (the only network use)."""
    cache = Cache(root)
    for board in boards:
        lock = lockfile.read(find_root() / "boards" / f"{board}.lock")
        if any(not store.has_blob(p.sha256) for p in lock.packages):
            debian.fetch(lock, mirror.sources(), store, board=board)
        for p in lock.packages:
            dest = cache.blob(p.sha256)
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(store.blob(p.sha256), dest)
            except OSError:   # the store on another filesystem
                shutil.copyfile(store.blob(p.sha256), dest)
    return cache
