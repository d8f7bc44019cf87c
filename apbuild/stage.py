"""The stage runner: a stage is a function of one frozen inputs record to one directory.

The runner computes the stage's cache key from the record and the apbuild code the stage
runs (apbuild.codedigest), and hands the stage that record and an empty work directory,
nothing else, so a stage cannot read what its key leaves out (osbuild's lesson). A record
holds plain values, other records, and `Content`: a file or directory the stage reads,
keyed by its digest and read through its path. Paths themselves are never in a key (they
say where, not what), which lets one cache serve every checkout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from . import codedigest, log
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


def values(record: Any) -> Iterator[Any]:
    """Every value in a record, the record first: the fields of records, the items of
    dicts (their values), lists and tuples, in order."""
    yield record
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        for f in dataclasses.fields(record):
            yield from values(getattr(record, f.name))
    elif isinstance(record, dict):
        for v in record.values():
            yield from values(v)
    elif isinstance(record, (list, tuple)):
        for v in record:
            yield from values(v)


def project_sources(record: Any, cache_root: Path) -> list[Content]:
    """The Content in a stage's inputs that lies outside the cache (the recipes' overlays,
    the lockfile, a vendor kernel file): what a user may edit while a build runs. Results
    of earlier stages live in the cache, whose entries never change."""
    cache_root = cache_root.resolve()
    return [v for v in values(record)
            if isinstance(v, Content) and not v.path.resolve().is_relative_to(cache_root)]


def code_modules(make: Callable[..., Any], record: Any) -> set[str]:
    """The apbuild modules a stage starts from: its make function's, and those of the
    classes of the objects in its record (a stage calls their methods)."""
    named = [make, *(type(v) for v in values(record))]
    return {parts[1] for obj in named
            if len(parts := getattr(obj, "__module__", "").split(".")) == 2 and parts[0] == codedigest.NAME}


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
    """code: the digest of the apbuild code the stage runs (apbuild.codedigest)."""
    blob = json.dumps({"stage": name, "code": code, "inputs": canonical(inputs)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


Inputs = TypeVar("Inputs")


class Runner:
    """Runs stages against one cache; remembers which of them had to build. `package`: the
    apbuild source whose code the keys cover (another copy, for a test)."""

    def __init__(self, cache: Cache, package: Path = codedigest.PACKAGE) -> None:
        self.cache = cache
        self.package = package
        self.built: list[str] = []
        self._code: dict[frozenset[str], str] = {}
        self._imports = codedigest.ImportMemo(cache.root / "code-imports.json")

    @property
    def did_work(self) -> bool:
        return bool(self.built)

    def code(self, make: Callable[..., Any], inputs: Any) -> str:
        """The digest of the code a stage runs: its make function's module, its inputs'
        classes' modules, and what they import."""
        modules = frozenset(code_modules(make, inputs))
        if modules not in self._code:
            self._code[modules] = codedigest.digest(modules, self.package, self._imports)
            self._imports.save()
        return self._code[modules]

    def key(self, name: str, make: Callable[..., Any], inputs: Any) -> str:
        return key_of(name, inputs, self.code(make, inputs))

    def run(self, name: str, make: Callable[[Inputs, Path], None], inputs: Inputs,
            output: str | None = None) -> Content:
        """The stage's result (its `output` file, or its directory), reused or built."""
        key = self.key(name, make, inputs)

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
