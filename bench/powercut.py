#!/usr/bin/env python3
"""Power-loss benchmark, per board: more cut points than CI's tests, spread over each phase
of an update and over PostgreSQL commits. The device starts from an earlier release built
from its commit (releases/app-platform.toml; --from N-1 by default) or from this tree, and
each round updates it to the next image. Prints "N cuts, N recovered, M rows lost" and the
time each cycle took, per board; asserts nothing (qemu-tests/test_update_paths.py and
test_update.py are the tests).

usage: bench/powercut.py [--board NAME ...] [--from N-2|N-1|tree] [--rounds N]
  --board   x86_64-vm (default), ipx13, ipx10 (ipx11 runs ipx10's image); several in turn
  --rounds  updates, default 2; each: a cut during the upload, 9 spread over the three
            phases of applying it, then 6 commit cuts
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild import releases  # noqa: E402
from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.testing.disks import installation_disk  # noqa: E402
from apbuild.testing.lifecycle import (Tally, UpdateCut, cut_during_commits,  # noqa: E402
                                       cut_during_update, cut_during_upload, make_updates)
from apbuild.testing.machine import Machine  # noqa: E402
from apbuild.testing.releases import release_build, release_project  # noqa: E402

PHASES = [("old rescue system writes the new sda1", "apbuild-phase: update-write"),
          ("old rescue system switches the table", "apbuild-phase: update-switch"),
          ("new rescue system unpacks the rootfs", "apbuild-phase: install-unpack")]
DELAYS = [0.0, 1.0, 2.5]          # seconds into each phase
COMMIT_CUTS = [1, 3, 8, 13, 21, 34]
STARTS = {"N-2": 0, "N-1": 1}


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--board", nargs="+", default=["x86_64-vm"], choices=["x86_64-vm", "ipx13", "ipx10"])
    args.add_argument("--from", dest="start", default="N-1", choices=[*STARTS, "tree"])
    args.add_argument("--rounds", type=int, default=2)
    opts = args.parse_args()
    tallies = {}
    for board in opts.board:
        with tempfile.TemporaryDirectory(prefix=f"apbuild-powercut-{board}-") as tmp:
            tallies[board] = bench_board(board, opts.start, opts.rounds, Path(tmp))
    for board, tally in tallies.items():
        print(f"{board} from {opts.start}: {tally}")
    return 0


def bench_board(board: str, start: str, rounds: int, work: Path) -> Tally:
    project = load_project(ROOT, board)
    cache = Cache(default_root())
    tree_result = build(project, cache, work / "out")         # N, and the signing key
    if start == "tree":
        first, result = project, tree_result
    else:
        release = releases.last(ROOT, project.board.image_name, project.board.image_version,
                                len(STARTS))[STARTS[start]]
        first, result = release_project(board, release), release_build(board, release, work, cache.root)
    gateway = project.board.bootloader == "gateway"
    if gateway:
        disk = installation_disk(result, work, "disk")
    else:
        disk = work / "disk.qcow2"
        shutil.copyfile(result.outputs["qcow2"], disk)
    tally = Tally()
    cuts = [UpdateCut(phase, line, d) for phase, line in PHASES for d in DELAYS]
    with Machine(first.board, disk, work, name=f"powercut-{board}", accel="tcg") as m:
        m.install(first.board.image_version)
        # The first boot's work (the data reserve, the device's certificate) ends with the
        # manager answering: the upload needs it, and a cut before it would redo that work.
        m.wait_http("/manager/ramdisk.log", 300)
        if start != "tree":
            # A release's first boot leaves what it made (the manager in /apps/manager, the
            # certificates) to the kernel's writeback, up to 30 s later: the upload cut came
            # within that and left them empty, a device with no manager for good. The tree's
            # first boot syncs them (test_vm_lifecycle.py cuts right after it); a device in the
            # field has run longer than 30 s before its update, so the release's are synced.
            m.ok("sync")
        label = first.board.image_version
        for r in range(rounds):
            # The first round takes the device to the tree's version, the next ones on.
            began = time.monotonic()
            version = project.board.image_version if int(label) < int(project.board.image_version) else None
            updates = updates_from(board, label, version, work / f"round{r}")
            cut_during_upload(m, updates, tally)
            left = cut_during_update(m, updates, cuts, tally)
            label, extra = updates.new, 0
            # A phase shorter than a point's delay: the next update takes the points left.
            while left:
                extra += 1
                more = updates_from(board, label, None, work / f"round{r}-{extra}")
                left = cut_during_update(m, more, left, tally)
                label = more.new
            print(f"{board} round {r + 1}: {1 + extra} update(s) to {label} with {len(cuts)} cuts: "
                  f"{time.monotonic() - began:.0f} s", flush=True)
            began = time.monotonic()
            cut_during_commits(m, label, COMMIT_CUTS, tally)
            print(f"{board} round {r + 1}: {len(COMMIT_CUTS)} commit cuts: {time.monotonic() - began:.0f} s",
                  flush=True)
    print(f"{board}: {tally}", flush=True)
    return tally


def updates_from(board: str, version: str, new: str | None, tmp: Path):
    tmp.mkdir(parents=True, exist_ok=True)
    return make_updates(board, tmp, base_version=version, version=new)


if __name__ == "__main__":
    sys.exit(main())
