#!/usr/bin/env python3
"""Bit-identical rebuilds of every board: two cold builds per board, each in its own stage
cache (downloads shared by hard links) and its own output directory, a few seconds apart.
Prints, per board, every output and sda1 file with its SHA-256 and whether both builds agree,
and the SBOM's package count. Asserts nothing: tests/test_build.py is the test (one board).

usage: bench/reproducible.py [BOARD ...]   (default: every board)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild.cache import Cache, default_root, fingerprint, sha256_file  # noqa: E402
from apbuild.config import list_boards, load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.testing.seeding import with_downloads  # noqa: E402


def private_cache(work: Path) -> Cache:
    return with_downloads(work, Cache(default_root()))


def digests(result) -> dict[str, str]:
    files = {p.name: p for p in result.outputs.values()}
    files.update({f"sda1/{p.name}": p for p in result.boot_files.values()})
    if result.boot_image is not None:
        files["sda1 filesystem (boot.img)"] = result.boot_image
    # A sparse 16 GiB raw disk: its fingerprint (size + SHA-256 of the data) is the cheap equal.
    return {name: fingerprint(p) if p.stat().st_size > 4 << 30 else sha256_file(p)
            for name, p in sorted(files.items())}


def sbom_packages(result) -> int | None:
    sbom = result.outputs.get("sbom")
    return len(json.loads(sbom.read_text()).get("packages", [])) if sbom else None


def main() -> int:
    boards = sys.argv[1:] or list_boards(ROOT)
    for name in boards:
        project = load_project(ROOT, name)
        with tempfile.TemporaryDirectory(prefix="apbuild-repro-") as tmp:
            work = Path(tmp)
            runs = []
            for n in (1, 2):
                start = time.monotonic()
                result = build(project, private_cache(work / f"cache{n}"), work / f"out{n}")
                runs.append((result, time.monotonic() - start))
                time.sleep(2)
            (a, ta), (b, tb) = runs
            da, db = digests(a), digests(b)
            same = all(da[k] == db.get(k) for k in da) and da.keys() == db.keys()
            print(f"{name}: {'IDENTICAL' if same else 'DIFFERENT'} (cold builds {ta:.0f} s, {tb:.0f} s; "
                  f"SBOM packages: {sbom_packages(a)})", flush=True)
            for k in sorted(da.keys() | db.keys()):
                mark = "same" if da.get(k) == db.get(k) else "DIFFERS"
                print(f"  {mark:7} {k}: {str(da.get(k))[:16]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
