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
from .cache import Cache, sha256_file
from .errors import ApbuildError


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


def content_digest(path: Path) -> str:
    """A directory's dir_digest, a file's SHA-256: how a stage's sources are keyed."""
    return sha256_file(path) if path.is_file() else dir_digest(path)


def project_sources(record: Any, cache_root: Path) -> list[Content]:
    """The Content in a stage's inputs that lies outside the cache (the recipes' overlays,
    the lockfile, a vendor kernel file): what a user may edit while a build runs. Results
    of earlier stages live in the cache, whose entries never change."""
    found: list[Content] = []
    cache_root = cache_root.resolve()

    def walk(value: Any) -> None:
        if isinstance(value, Content):
            if not value.path.resolve().is_relative_to(cache_root):
                found.append(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(record)
    return found


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

        def make_checked(work: Path) -> None:
            make(inputs, work)
            # A source edited while the stage read it (a template saved mid-build) would be
            # kept under the key of its old content: such a result is not kept at all.
            for source in project_sources(inputs, self.cache.root):
                if content_digest(source.path) != source.digest:
                    raise ApbuildError(f"{source.path} changed while the {name} stage was built from it; "
                                       f"nothing of that stage was kept: build again")

        path, built = self.cache.produce(name, key, make_checked, on_build=lambda: log.step(name))
        if built:
            self.built.append(name)
        else:
            log.detail(f"{name}: reused {key[:12]}")
        if output is None:
            return Content(path, key)
        return Content(path / output, self.cache.recorded(path / output))
