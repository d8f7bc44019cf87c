"""`./build.py clean`: evict stage results that no build has used for a while.

Every lookup of a stage result touches its manifest, so the manifest's mtime is the result's
last use. Builds hold the cache's builds lock shared; clean holds it exclusively, so it waits
for running builds and never removes what one of them is reading. Downloads (the .deb store)
stay: they are small beside the stages and are what makes a rebuild work offline.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from . import log
from .cache import MANIFEST, Cache
from .files import locked


@dataclasses.dataclass(frozen=True)
class Cleaned:
    removed: int
    kept: int
    freed: int  # bytes on disk (a sparse image counts by what it holds)


def _on_disk(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if not p.is_symlink())


def clean(cache: Cache, keep_days: float, now: float | None = None) -> Cleaned:
    """Remove stage results last used more than keep_days ago (0: every result), work
    directories left by killed builds, and the lock files of removed results."""
    limit = (time.time() if now is None else now) - keep_days * 86400
    removed = kept = freed = 0
    stages = cache.root / "stages"
    with locked(cache.root / "builds.lock"):
        for result in sorted(stages.glob("*/*")) if stages.is_dir() else []:
            manifest = result / MANIFEST
            # No build runs now, so a work directory (.tmp-*) is one a killed build left.
            unfinished = result.name.startswith(".tmp-") or not manifest.is_file()
            if unfinished or manifest.stat().st_mtime < limit:
                size = _on_disk(result)
                shutil.rmtree(result, ignore_errors=True)
                (cache.root / "locks" / result.parent.name / result.name[:32]).unlink(missing_ok=True)
                removed, freed = removed + (not unfinished), freed + size
                log.detail(f"removed {result.parent.name}/{result.name[:12]} ({size / 1e6:.1f} MB)")
            else:
                kept += 1
    return Cleaned(removed=removed, kept=kept, freed=freed)
