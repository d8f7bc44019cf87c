"""The locked packages as a stage input: keyed by the lockfile's content, fetched from the
mirror and unpacked only when a stage that reads them has to build (a cached build never
touches the mirror)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import debian, debpkg, kernel, log, mirror, pypi
from .cache import Cache
from .lockfile import Lockfile
from .tree import Tree


@dataclasses.dataclass(frozen=True)
class Packages:
    lock: Lockfile
    cache: Cache = dataclasses.field(compare=False)
    board: str = dataclasses.field(default="BOARD", compare=False)  # for messages only
    # Unpacked once per build, whichever stage asks first (a memo, not an input).
    _memo: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def stage_key(self) -> str:
        return self.lock.digest

    def only(self, *names: str) -> Packages:
        """These packages alone, keyed by them alone: a stage that reads the kernel package
        is not rebuilt when another package changes."""
        chosen = tuple(p for p in self.lock.packages if p.name in names)
        lock = Lockfile(arch=self.lock.arch, date="", requested=(), excluded=(), packages=chosen)
        return Packages(lock, self.cache, self.board)

    def debs(self) -> dict[str, Path]:
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
        if "pool" not in self._memo:
            debs = self.debs()
            with log.step(f"unpack: {len(debs)} packages"):
                pool = debpkg.merged_links()
                for pkg in self.lock.packages:
                    pool.merge(debpkg.unpack(self.cache, debs[pkg.name], pkg.sha256, pkg.name))
            for venv in self.lock.venvs:
                version = pypi.python_version(self.lock.packages)
                xy = ".".join(version.split(".")[:2])
                activate = pool.get(f"/usr/lib/python{xy}/venv/scripts/common/activate")
                pool.merge(pypi.venv_tree(venv, version, self.lock.arch, self.cache,
                                          activate.read() if activate else None))
            self._memo["pool"] = pool
        return self._memo["pool"]

    def kernel(self, image_glob: str) -> kernel.KernelInfo:
        if ("kernel", image_glob) not in self._memo:
            self._memo["kernel", image_glob] = kernel.inspect(self.pool(), image_glob)
        return self._memo["kernel", image_glob]
