"""Content-addressed cache for downloads and stage results.

Downloads live under blobs/sha256/<hash>. A stage's result lives in a directory named by
the hash of everything that went into it (stages/<stage>/<key>/); it appears there only
when complete (built under a temporary name, then renamed), with a manifest of its files'
sizes and SHA-256 so a damaged entry is noticed and rebuilt instead of used. A file is hashed
again only when its stat (inode, size, mtime, ctime) differs from when it was last found whole:
any write, truncation, `touch` or new link changes the ctime, as git's index relies on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import log
from .errors import IntegrityError
from .files import data_blocks, locked

MANIFEST = ".apbuild-manifest.json"
CHECKED = ".apbuild-checked.json"   # stat of each file when its fingerprint last matched


def default_root() -> Path:
    if env := os.environ.get("APBUILD_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "apbuild"


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def key_of(stage: str, inputs: Any) -> str:
    """Hash of a stage's name and inputs (canonical JSON), the stage's cache key."""
    blob = json.dumps({"stage": stage, "inputs": _canonical(inputs)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


BLOCK = 1 << 20


def fingerprint(path: Path) -> str:
    """SHA-256 over a file's size and its non-zero 1 MiB blocks (with their index).

    It identifies content without reading holes: a 16 GiB sparse disk image holding 50 MB
    of data is fingerprinted by reading about 50 MB. SEEK_DATA only says where to look;
    the result depends on the bytes alone, not on how the filesystem stores them.
    """
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(f"size={size}\n".encode())
    zero = bytes(BLOCK)
    with open(path, "rb") as f:
        for at, data in data_blocks(f, BLOCK):
            if data != zero[: len(data)]:
                h.update((at // BLOCK).to_bytes(8, "little") + data)
    return h.hexdigest()


def _manifest_of(directory: Path, hash_files: bool) -> dict[str, list[Any]]:
    entries: dict[str, list[Any]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.name in (MANIFEST, CHECKED):
            continue
        rel = str(path.relative_to(directory))
        entries[rel] = [path.stat().st_size, fingerprint(path) if hash_files else None]
    return entries


def _stat_of(path: Path, st: os.stat_result | None = None) -> list[int]:
    st = st or path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _checked(directory: Path) -> dict[str, list[int]]:
    try:
        return json.loads((directory / CHECKED).read_text())
    except (OSError, ValueError):
        return {}


def _record_checked(directory: Path, rels: list[str]) -> None:
    """The files' stats now, written aside and renamed (a reader sees the old or the new)."""
    stats = {rel: _stat_of(directory / rel) for rel in rels}
    tmp = directory / f"{CHECKED}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(stats, sort_keys=True))
        os.replace(tmp, directory / CHECKED)
    except OSError:
        tmp.unlink(missing_ok=True)   # a read-only cache: the next lookup hashes again


def _remove_abandoned(directory: Path, key: str) -> None:
    """Work directories of builds that were killed (their process is gone) are removed."""
    for stale in directory.glob(f".tmp-{key[:12]}-*"):
        try:
            pid = int(stale.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


@dataclasses.dataclass(frozen=True)
class Cache:
    root: Path
    # A shared cache (remote.Remote) asked for what this one lacks, and given what it builds.
    remote: Any = dataclasses.field(default=None, compare=False)

    # -- downloads ------------------------------------------------------------------
    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def has_blob(self, sha256: str) -> bool:
        path = self.blob(sha256)
        return path.is_file() and path.stat().st_size > 0

    def put_blob(self, source: Path, sha256: str, what: str) -> Path:
        """Move a downloaded file into the store after checking its hash."""
        actual = sha256_file(source)
        if actual != sha256:
            source.unlink(missing_ok=True)
            raise IntegrityError(f"{what}: sha256 is {actual}, expected {sha256}; refused")
        dest = self.blob(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        return dest

    def incoming(self) -> Path:
        """A directory on the same filesystem as the store, for files being downloaded."""
        path = self.root / "incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def download_file(self, label: str) -> Iterator[Path]:
        """A new file in incoming/ to download into (label begins its name: the blob's hash,
        or what the file is), gone afterwards unless put_blob took it. Its name is its own:
        two processes that fetch one file at once (the suite's workers, two builds on one
        cache) wrote into one shared name, and each refused the mix the other had made of it."""
        fd, name = tempfile.mkstemp(prefix=f"{label}.", suffix=".part", dir=self.incoming())
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- stage results --------------------------------------------------------------
    def stage_dir(self, stage: str, key: str) -> Path:
        return self.root / "stages" / stage / key

    def lookup(self, stage: str, key: str, *, verify_hashes: bool = True) -> Path | None:
        """The finished result for (stage, key), or None; a damaged one is discarded."""
        path = self.stage_dir(stage, key)
        manifest = path / MANIFEST
        if not manifest.is_file():
            return None
        recorded = json.loads(manifest.read_text())
        checked = _checked(path) if verify_hashes else {}
        hashed = False
        for rel, (size, digest) in recorded.items():
            file = path / rel
            try:
                st: os.stat_result | None = file.stat()
            except OSError:
                st = None
            ok = st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size
            if ok and verify_hashes and digest is not None and checked.get(rel) != _stat_of(file, st):
                ok = fingerprint(file) == digest
                hashed = True
            if not ok:
                log.warn(f"cache entry {stage}/{key[:12]} is damaged ({rel}); rebuilding it")
                shutil.rmtree(path, ignore_errors=True)
                return None
        if hashed:
            _record_checked(path, list(recorded))
        os.utime(manifest)  # the last use, which `./build.py clean` keeps results by
        log.detail(f"cache hit: {stage} {key[:12]}")
        return path

    def in_use(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) by every build while it runs: `clean` waits for builds to end."""
        return locked(self.root / "builds.lock", shared=True)

    def recorded(self, result: Path) -> str:
        """The fingerprint recorded for a stage's file (checked when the stage was looked up)."""
        manifest = json.loads((result.parent / MANIFEST).read_text())
        size, digest = manifest[result.name]
        return digest

    @contextlib.contextmanager
    def build(self, stage: str, key: str, *, hash_files: bool = True) -> Iterator[Path]:
        """Yield an empty work directory; on success it becomes the stage's result."""
        final = self.stage_dir(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(final.parent, key)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-{os.getpid()}-", dir=final.parent))
        try:
            yield work
            manifest = _manifest_of(work, hash_files)
            (work / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=0))
            if hash_files:
                _record_checked(work, list(manifest))  # renaming the directory keeps the stats
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
            log.detail(f"cached: {stage} {key[:12]}")
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def produce(self, stage: str, key: str, make: Callable[[Path], None], *,
                hash_files: bool = True, shared: bool = True,
                on_build: Callable[[], contextlib.AbstractContextManager]
                = contextlib.nullcontext) -> tuple[Path, bool]:
        """The result for (stage, key), made by make(work_dir) unless another run has it
        (this cache, or the remote one when `shared`); returns (path, whether this call
        built it). on_build wraps the building only."""
        remote = self.remote if shared else None
        found = self.lookup(stage, key, verify_hashes=hash_files)
        if found is None:
            # Parallel builds (pytest-xdist workers, two terminals) wait for the one that
            # builds and then reuse its result instead of replacing it under the reader. The
            # lock files live apart from the stages, which hold results only.
            with locked(self.root / "locks" / stage / key[:32]):
                found = self.lookup(stage, key, verify_hashes=hash_files)
                if found is None and remote is not None:
                    found = self._pull(remote, stage, key)
                if found is None:
                    with on_build(), self.build(stage, key, hash_files=hash_files) as work:
                        make(work)
                    if remote is not None:
                        remote.push_stage(stage, key, self.stage_dir(stage, key))
                    return self.stage_dir(stage, key), True
        # A result this cache had or pulled: the remote gets it if it lacks it (one request),
        # so a runner whose cache was warm before the remote was set shares it too.
        if remote is not None:
            remote.offer_stage(stage, key, found)
        return found, False

    def _pull(self, remote: Any, stage: str, key: str) -> Path | None:
        """The remote's result, checked file by file against the fingerprints its builder
        recorded (the remote checked the layer's digest), or None."""
        final = self.stage_dir(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-{os.getpid()}-", dir=final.parent))
        try:
            if not remote.pull_stage(stage, key, work) or not (work / MANIFEST).is_file():
                return None
            os.replace(work, final)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return self.lookup(stage, key)

