"""A product's releases: the images devices in the field run, each the tree of one commit of
this repository built with its version (releases/PRODUCT.toml, oldest first). The update-path
tests and bench/powercut.py build the last two and update them to the tree's own image, so
that the old image's rescue system, which applies an update, is the one that shipped."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .errors import ConfigError, ConfigErrors
from .schema import load, read_toml, setting


def _version(value: str) -> str | None:
    return None if value.isdigit() else f"{value!r} is not a whole number like the manual's labels (e.g. 140002)"


def _commit(value: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-f]{40}", value) else f"{value!r} is not a full commit id (40 hex digits)"


@dataclasses.dataclass(frozen=True)
class Release:
    version: str = setting("the image version the release shipped as (sda1's label)", check=_version)
    commit: str = setting("the commit of this repository the release was built from", check=_commit)
    note: str = setting("what the release was, for people", default="")


@dataclasses.dataclass(frozen=True)
class Releases:
    release: tuple[Release, ...] = setting("the releases, oldest first")


def path_of(root: Path, product: str) -> Path:
    return root / "releases" / f"{product}.toml"


def load_releases(root: Path, product: str, current: str) -> tuple[Release, ...]:
    """The product's releases, each older than the last and than `current` (the tree's
    version): an update from each of them to the tree is then a step forward."""
    path = path_of(root, product)
    releases = load(Releases, read_toml(path), path).release
    errors = []
    for i, (older, newer) in enumerate(zip(releases, releases[1:]), start=1):
        if int(newer.version) <= int(older.version):
            errors.append(ConfigError(path, f"release[{i}].version", f"{newer.version} is not above "
                                      f"the release before it ({older.version}): oldest first"))
    if releases and int(releases[-1].version) >= int(current):
        errors.append(ConfigError(path, f"release[{len(releases) - 1}].version",
                                  f"{releases[-1].version} is not below the product's image_version "
                                  f"({current}): raise image_version for the next release"))
    if errors:
        raise ConfigErrors.of(errors)
    return releases


def last(root: Path, product: str, current: str, n: int) -> list[Release]:
    """The last n releases, newest last (N-n ... N-1)."""
    releases = load_releases(root, product, current)
    if len(releases) < n:
        raise ConfigError(path_of(root, product), "release", f"{len(releases)} release(s); {n} are needed")
    return list(releases[-n:])
