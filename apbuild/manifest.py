"""The build manifest, <platform>.manifest.json: what was built, from what, with which hashes.

Beside the outputs, so whoever receives them can check every file and trace it back to a
lockfile (and so to every package version and .deb hash). No host paths and no clock: the
lockfile is named relative to the project, the time is SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import __version__
from .files import data_extents

FORMAT = 1
_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class OutputFile:
    name: str       # file name in the output directory
    kind: str       # raw, qcow2, vhdx, ova, sbom
    size: int
    sha256: str


def sha256_sparse(path: Path) -> str:
    """SHA-256 of a file's bytes; holes are hashed from a zero buffer instead of read, which
    halves the time for a 16 GiB disk image holding 50 MB."""
    h = hashlib.sha256()
    zero = bytes(_BLOCK)
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        # The last pair stands for the hole up to the end, if there is one.
        for start, end in (*data_extents(f.fileno()), (size, size)):
            for at in range(pos, start, _BLOCK):
                h.update(zero[: min(_BLOCK, start - at)])
            f.seek(start)
            pos = start
            while pos < end:
                chunk = f.read(min(_BLOCK, end - pos))
                h.update(chunk)
                pos += len(chunk)
    return h.hexdigest()


def describe(name: str, kind: str, path: Path, sha256: str | None = None) -> OutputFile:
    """sha256: the file's, when it was taken already."""
    return OutputFile(name, kind, path.stat().st_size, sha256 or sha256_sparse(path))


def render(*, board: str, platform: str, image_version: str, lockfile_name: str,
           lockfile_sha256: str, epoch: int, outputs: list[OutputFile]) -> bytes:
    data = {
        "format": FORMAT,
        "board": board,
        "platform": platform,
        "image_version": image_version,
        "apbuild_version": __version__,
        "lockfile": {"path": lockfile_name, "sha256": lockfile_sha256},
        "source_date_epoch": epoch,
        "outputs": [dataclasses.asdict(o) for o in sorted(outputs, key=lambda o: o.name)],
    }
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
