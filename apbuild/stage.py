"""The stage runner: a stage is a function of one frozen inputs record to one directory.

The runner computes the stage's cache key from the record (and apbuild's own code) and
hands the stage that record and an empty work directory, nothing else, so a stage cannot
read what its key leaves out (osbuild's lesson). A record holds plain values, other
records, and `Content`: a file or directory the stage reads, keyed by its digest and read
through its path. Paths themselves are never in a key (they say where, not what), which
lets one cache serve every checkout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from . import __version__, log
from .cache import Cache


class Keyed(Protocol):
    def stage_key(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Content:
    """A file or directory a stage reads: its digest goes into the key, its path does not."""

    path: Path
    digest: str

    def stage_key(self) -> str:
        return self.digest


def dir_digest(directory: Path) -> str:
    """Names, links, executable bits and bytes of everything under a directory (an
    overlay); a missing directory has the digest of an empty one."""
    h = hashlib.sha256()
    if directory.is_dir():
        for path in sorted(directory.rglob("*")):
            rel = str(path.relative_to(directory)).encode()
            if path.is_symlink():
                h.update(b"L" + rel + b"\0" + str(path.readlink()).encode())
            elif path.is_file():
                h.update(b"F" + rel + b"\0" + bytes([path.stat().st_mode & 0o111 != 0]))
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def directory(path: Path) -> Content:
    return Content(path, dir_digest(path))


def code_digest() -> str:
    """Hash of apbuild's own source: a code change must never reuse a stale stage result."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def canonical(value: Any) -> Any:
    """The record as JSON-able data: Content by digest, Path fields left out."""
    if hasattr(value, "stage_key"):
        return canonical(value.stage_key())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), Path)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, Path):
        raise TypeError(f"a path in a stage's inputs ({value}): use Content, keyed by its digest")
    return value


def key_of(name: str, inputs: Any, code: str) -> str:
    blob = json.dumps({"stage": name, "code": code, "inputs": canonical(inputs)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


Inputs = TypeVar("Inputs")


class Runner:
    """Runs stages against one cache; remembers which of them had to build."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.code = code_digest()
        self.built: list[str] = []

    @property
    def did_work(self) -> bool:
        return bool(self.built)

    def key(self, name: str, inputs: Any) -> str:
        return key_of(name, inputs, self.code)

    def run(self, name: str, make: Callable[[Inputs, Path], None], inputs: Inputs,
            output: str | None = None) -> Content:
        """The stage's result (its `output` file, or its directory), reused or built."""
        key = self.key(name, inputs)
        path, built = self.cache.produce(name, key, lambda work: make(inputs, work),
                                         on_build=lambda: log.step(name))
        if built:
            self.built.append(name)
        else:
            log.detail(f"{name}: reused {key[:12]}")
        if output is None:
            return Content(path, key)
        return Content(path / output, self.cache.recorded(path / output))
