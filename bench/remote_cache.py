#!/usr/bin/env python3
"""A cold CI runner with and without the shared cache in an OCI registry (--cache-remote).

For each board, three runners with empty caches: (1) alone: downloads from the mirror, every
stage built; (2) the first with a registry (an empty one of its own on the loopback, Debian's
docker-registry): the same work, plus pushing every package and stage; (3) the next one:
everything pulled. Prints the wall time of each, the bytes in the registry and whether the
outputs are the same. The registry is on this machine: over a network, add the transfer of
those bytes.

usage: bench/remote_cache.py [BOARD ...]   (default: x86_64-vm)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild.cache import Cache, fingerprint  # noqa: E402
from apbuild.config import load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.remote import Remote  # noqa: E402
from apbuild.testing.registry import registry  # noqa: E402


def du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def main() -> int:
    boards = sys.argv[1:] or ["x86_64-vm"]
    print(f"{'board':<12} {'alone':>8} {'first, pushing':>15} {'next, pulling':>14} {'in registry':>12}  same bytes")
    for name in boards:
        project = load_project(ROOT, name)
        with tempfile.TemporaryDirectory(prefix="apbuild-remote-") as tmp, registry(Path(tmp) / "reg") as reg:
            work = Path(tmp)
            times, results = [], []
            for n, remote in enumerate((None, Remote(reg.url()), Remote(reg.url()))):
                start = time.monotonic()
                results.append(build(project, Cache(work / f"cache{n}", remote=remote), work / f"out{n}"))
                times.append(time.monotonic() - start)
                if remote is not None and remote.gone:
                    print(f"{name}: the registry failed: {remote.gone}", file=sys.stderr)
                    return 1
            a, c = results[0], results[2]
            same = all(fingerprint(a.outputs[k]) == fingerprint(c.outputs[k]) for k in a.outputs)
            print(f"{name:<12} {times[0]:>7.1f}s {times[1]:>14.1f}s {times[2]:>13.1f}s {du(reg.storage) / 1e6:>9.0f} MB  "
                  f"{'yes' if same else 'NO'} (stages the last one built: {len(c.built)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
