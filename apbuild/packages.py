"""The locked packages as a stage input: keyed by the lockfile's content, fetched from the
mirror and unpacked only when a stage that reads them has to build (a cached build never
touches the mirror)."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import debian, debpkg, kernel, log, mirror, pypi
from .cache import Cache
from .lockfile import Lockfile
from .tree import Tree

UNPACKERS = 2


@dataclasses.dataclass(frozen=True)
class Packages:
    lock: Lockfile
    cache: Cache = dataclasses.field(compare=False)
    board: str = dataclasses.field(default="BOARD", compare=False)  # for messages only
    # Unpacked once per build, whichever stage asks first (a memo, not an input); the
    # ramdisk's and the rootfs's stages may ask at once (apbuild.parallel).
    _memo: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    _lock: threading.RLock = dataclasses.field(default_factory=threading.RLock, compare=False, repr=False)

    def stage_key(self) -> str:
        return self.lock.digest

    def only(self, *names: str) -> Packages:
        """These packages alone, keyed by them alone: a stage that reads the kernel package
        is not rebuilt when another package changes."""
        chosen = tuple(p for p in self.lock.packages if p.name in names)
        lock = Lockfile(arch=self.lock.arch, date="", requested=(), excluded=(), packages=chosen)
        return Packages(lock, self.cache, self.board)

    def debs(self) -> dict[str, Path]:
        with self._lock:
            return self._debs()

    def _debs(self) -> dict[str, Path]:
        if "debs" not in self._memo:
            missing = [p for p in self.lock.packages if not self.cache.has_blob(p.sha256)]
            total = len(self.lock.packages)
            label = f"fetch: {len(missing)} of {total} packages" if missing else "fetch: all packages cached"
            with log.step(label):
                self._memo["debs"] = debian.fetch(self.lock, mirror.sources() if missing else (),
                                                  self.cache, board=self.board)
        return self._memo["debs"]

    def pool(self) -> Tree:
        """Every package's files in one tree, /bin and friends linked into /usr."""
        with self._lock:
            return self._pool()

    def _pool(self) -> Tree:
        if "pool" not in self._memo:
            debs = self.debs()
            with log.step(f"unpack: {len(debs)} packages"):
                pool = debpkg.merged_links()
                # Two at a time: each .deb's dpkg-deb unpacks its data.tar.xz in a process
                # of its own. They are merged in the lockfile's order, whichever ends first.
                with ThreadPoolExecutor(UNPACKERS, initializer=log.same_lines()) as unpackers:
                    for tree in unpackers.map(lambda p: debpkg.unpack(self.cache, debs[p.name], p.sha256, p.name),
                                              self.lock.packages):
                        pool.merge(tree)
            for venv in self.lock.venvs:
                version = pypi.python_version(self.lock.packages)
                xy = ".".join(version.split(".")[:2])
                activate = pool.get(f"/usr/lib/python{xy}/venv/scripts/common/activate")
                pool.merge(pypi.venv_tree(venv, version, self.lock.arch, self.cache,
                                          activate.read() if activate else None))
            self._memo["pool"] = pool
        return self._memo["pool"]

    def kernel(self, image_glob: str) -> kernel.KernelInfo:
        with self._lock:
            if ("kernel", image_glob) not in self._memo:
                self._memo["kernel", image_glob] = kernel.inspect(self.pool(), image_glob)
            return self._memo["kernel", image_glob]
