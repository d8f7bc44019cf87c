"""The per-board lockfile: every package pinned by name, version, pool path and SHA-256.

JSON, sorted and indented so that a change reads well in a diff. It names suites and pool
paths, never a mirror host: the archive comes from the host's apt sources at fetch time.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import hashlib
import json
import os
from pathlib import Path

from .errors import ApbuildError, ConfigError
from .files import atomic_write

FORMAT = 1


@dataclasses.dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    arch: str
    suite: str
    filename: str
    size: int
    sha256: str
    source_package: str


@dataclasses.dataclass(frozen=True)
class PythonDist:
    name: str
    version: str
    filename: str      # the wheel or sdist the lockfile pins
    url: str
    sha256: str

    @property
    def is_sdist(self) -> bool:
        return not self.filename.endswith(".whl")


@dataclasses.dataclass(frozen=True)
class Venv:
    """One virtualenv in the image (pypi.py): where it is, what the recipe asked, what was pinned."""

    path: str                          # e.g. /opt/bip/venv
    requirements: tuple[str, ...]
    dists: tuple[PythonDist, ...]


@dataclasses.dataclass(frozen=True)
class Lockfile:
    arch: str
    date: str                      # newest InRelease Date: of the suites used
    requested: tuple[str, ...]
    excluded: tuple[str, ...]
    packages: tuple[LockedPackage, ...]
    venvs: tuple[Venv, ...] = ()   # PyPI distributions, per virtualenv (pypi.py)

    @property
    def epoch(self) -> int:
        return int(email.utils.parsedate_to_datetime(self.date).timestamp())

    @functools.cached_property
    def digest(self) -> str:
        # Once per lockfile: every stage's key asks for it (7 times a build, 5 ms each).
        return hashlib.sha256(dumps(self).encode()).hexdigest()

    def package(self, name: str) -> LockedPackage:
        for p in self.packages:
            if p.name == name:
                return p
        raise KeyError(name)


def dumps(lock: Lockfile) -> str:
    data = {
        "format": FORMAT,
        "arch": lock.arch,
        "date": lock.date,
        "requested": list(lock.requested),
        "excluded": list(lock.excluded),
        "packages": [dataclasses.asdict(p) for p in sorted(lock.packages, key=lambda p: p.name)],
    }
    if lock.venvs:  # absent when there are none: a lockfile without Python is as it was
        data["python"] = [dataclasses.asdict(v) for v in lock.venvs]
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def read(path: Path) -> Lockfile:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ConfigError(path, "format", f"{data.get('format')!r}: this apbuild reads format {FORMAT}")
        packages = tuple(LockedPackage(**p) for p in data["packages"])
        venvs = tuple(Venv(v["path"], tuple(v["requirements"]), tuple(PythonDist(**d) for d in v["dists"]))
                      for v in data.get("python", ()))
        return Lockfile(data["arch"], data["date"], tuple(data["requested"]),
                        tuple(data["excluded"]), packages, venvs)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(path, "", f"not a valid lockfile ({e}); recreate it with './build.py lock BOARD'") from None


def write(path: Path, lock: Lockfile) -> None:
    atomic_write(path, dumps(lock).encode())


def diff(old: Lockfile, new: Lockfile) -> list[tuple[str, str | None, str | None]]:
    def versions(lock: Lockfile) -> dict[str, str]:
        pins = {f"{v.path}: {d.name} (PyPI)": d.version for v in lock.venvs for d in v.dists}
        return {**{p.name: p.version for p in lock.packages}, **pins}

    before, after = versions(old), versions(new)
    return [(n, before.get(n), after.get(n)) for n in sorted(before.keys() | after.keys())
            if before.get(n) != after.get(n)]


def source_date_epoch(lock: Lockfile) -> int:
    """The build's clock: SOURCE_DATE_EPOCH when set, else the newest package's date."""
    if value := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(value)
    return lock.epoch


def kernel_version(lock: Lockfile) -> str:
    """The one versioned linux-image package's version (its modules' directory name)."""
    names = [p.name[len("linux-image-"):] for p in lock.packages
             if p.name.startswith("linux-image-") and p.name[len("linux-image-")][0].isdigit()]
    if len(names) != 1:
        raise ApbuildError(f"expected one versioned linux-image package in the lockfile, found {names}")
    return names[0]
