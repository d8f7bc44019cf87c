#!/usr/bin/env python3
"""Power-loss benchmark on x86_64-vm: more cut points than CI's test, spread over each phase
of an update and over PostgreSQL commits. Prints "N cuts, N recovered, M rows lost" and the
time each cycle took; asserts nothing (qemu-tests/test_update.py is the test).

usage: bench/powercut.py [--rounds N]   (N updates, default 2; each round: a cut during the upload,
                                         9 spread over three phases, then 6 commit cuts)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.testing.lifecycle import (Tally, UpdateCut, cut_during_commits,  # noqa: E402
                                       cut_during_update, cut_during_upload, make_updates)
from apbuild.testing.machine import Machine  # noqa: E402

PHASES = [("old rescue system writes the new sda1", "apbuild-phase: update-write"),
          ("old rescue system switches the table", "apbuild-phase: update-switch"),
          ("new rescue system unpacks the rootfs", "apbuild-phase: install-unpack")]
DELAYS = [0.0, 1.0, 2.5]          # seconds into each phase
COMMIT_CUTS = [1, 3, 8, 13, 21, 34]


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--rounds", type=int, default=2)
    rounds = args.parse_args().rounds
    project = load_project(ROOT, "x86_64-vm")
    with tempfile.TemporaryDirectory(prefix="apbuild-powercut-") as tmp:
        work = Path(tmp)
        result = build(project, Cache(default_root()), work / "out")
        disk = work / "disk.qcow2"
        disk.write_bytes(result.outputs["qcow2"].read_bytes())
        tally = Tally()
        cuts = [UpdateCut(phase, line, d) for phase, line in PHASES for d in DELAYS]
        with Machine(project.board, disk, work, name="powercut", accel="tcg") as m:
            m.install(project.board.image_version)
            label = project.board.image_version
            for r in range(rounds):
                # Each round updates to the next version: its own build, signed.
                start = time.monotonic()
                updates = make_updates_from(label, work / f"round{r}")
                cut_during_upload(m, updates, tally)
                left = cut_during_update(m, updates, cuts, tally)
                label, extra = updates.new, 0
                # A phase shorter than a point's delay: the next update takes the points left.
                while left:
                    extra += 1
                    more = make_updates_from(label, work / f"round{r}-{extra}")
                    left = cut_during_update(m, more, left, tally)
                    label = more.new
                print(f"round {r + 1}: {1 + extra} update(s) with {len(cuts)} cuts: "
                      f"{time.monotonic() - start:.0f} s")
                start = time.monotonic()
                cut_during_commits(m, label, COMMIT_CUTS, tally)
                print(f"round {r + 1}: {len(COMMIT_CUTS)} commit cuts: {time.monotonic() - start:.0f} s")
        print(tally)
    return 0


def make_updates_from(version: str, tmp: Path):
    tmp.mkdir(parents=True, exist_ok=True)
    return make_updates("x86_64-vm", tmp, base_version=version)


if __name__ == "__main__":
    sys.exit(main())
