"""Caches for tests and benchmarks that build: the locked packages downloaded into a store
(the user's cache), and private caches holding only those downloads, so that every stage of a
build in them runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from apbuild import debian, lockfile, mirror
from apbuild.cache import Cache
from apbuild.config import find_root
from apbuild.files import link_or_copy


def seeded_cache(root: Path, boards: Iterable[str], store: Cache) -> Cache:
    """A cache at `root` holding the locked packages of `boards`. Packages missing from
    `store` are downloaded into it first (the only network use)."""
    cache = Cache(root)
    for lock in fetched(store, boards):
        for p in lock.packages:
            _link(store.blob(p.sha256), cache.blob(p.sha256))
    return cache


def fetched(store: Cache, boards: Iterable[str]) -> list[lockfile.Lockfile]:
    """The lockfiles of `boards`, every package they lock downloaded into `store`."""
    locks = []
    for board in boards:
        lock = lockfile.read(find_root() / "boards" / f"{board}.lock")
        if any(not store.has_blob(p.sha256) for p in lock.packages):
            debian.fetch(lock, mirror.sources(), store, board=board)
        locks.append(lock)
    return locks


def with_downloads(root: Path, store: Cache) -> Cache:
    """A cache at `root` holding every download of `store` (none if it has none yet)."""
    cache = Cache(root)
    for blob in sorted((store.root / "blobs").rglob("*")):
        if blob.is_file():
            _link(blob, cache.root / blob.relative_to(store.root))
    return cache


def _link(source: Path, dest: Path) -> None:
    """Hard links: a seeded cache costs no space (a copy where the store is on another
    filesystem)."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        link_or_copy(source, dest)
    except FileExistsError:
        pass  # another test worker seeding the same cache linked it first


def definitions_copy(dest: Path) -> Path:
    """The project's boards, machines and products copied to `dest` (for a test to change),
    its layouts and recipes linked: a project root that load_project reads."""
    root = find_root()
    for name in ("boards", "machines", "products"):
        shutil.copytree(root / name, dest / name, dirs_exist_ok=True)
    for name in ("partitions", "recipes"):
        if not (dest / name).exists():
            (dest / name).symlink_to(root / name)
    return dest
