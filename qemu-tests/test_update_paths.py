"""The update path on every board: a device that runs an earlier release (N-2 or N-1, built
from its commit as it shipped: releases/app-platform.toml) takes this tree's image (N)
through the manager, as the manual's admin does. The old image's rescue system writes the
new sda1 and the new one installs, so each path runs the code that is in the field. On each
path, CI's small fixed set of power cuts (bench/powercut.py --board runs a larger one):
together the two paths of a board cut every phase once. ipx11 runs ipx10's image and its
updates, so the armel paths are ipx10's (256 MB)."""

from __future__ import annotations

import pytest
from apbuild import releases
from apbuild.config import find_root
from apbuild.testing.accounts import ADMIN
from apbuild.testing.disks import fresh_disk, installation_disk
from apbuild.testing.lifecycle import (CHANGED_ROOT_PASSWORD, Tally, UpdateCut, change_the_device,
                                       cut_during_update, kept_after_update, make_updates,
                                       refused_change_nothing)
from apbuild.testing.machine import Machine

pytestmark = pytest.mark.update

# ipx10 first: its paths are the longest (the suite runs the longest units first).
BOARDS = ["ipx10", "x86_64-vm", "ipx13"]
# Which release a path starts from: the last two in the product's list.
PATHS = {"N-2": 0, "N-1": 1}
WRITE = UpdateCut("rescue system, old image: writing the new sda1", "apbuild-phase: update-write", 0)
SWITCH = UpdateCut("rescue system, old image: switching the table", "apbuild-phase: update-switch", 0)
UNPACK = UpdateCut("rescue system, new image: unpacking the rootfs", "apbuild-phase: install-unpack", 0)
CUTS = {"N-2": [WRITE, UNPACK], "N-1": [SWITCH]}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("board", BOARDS)
def test_update_from_an_earlier_release_keeps_the_device(board, path, build_board, release_build,
                                                         tmp_path, logdir, accel):
    project, _ = build_board(board)                   # N: this tree's image
    n = project.board.image_version
    release = releases.last(find_root(), project.board.image_name, n, len(PATHS))[PATHS[path]]
    old_project, old = release_build(board, release)
    updates = make_updates(board, tmp_path, base_version=release.version, version=n)
    name = f"path-{board}-{release.version}"
    # The release's own first-boot install, on its installation image (a gateway) or a copy
    # of its qcow2 (the VM): each release is installed by one test only.
    if project.board.bootloader == "gateway":
        disk, accel = installation_disk(old, tmp_path, name), "tcg"
    else:
        disk = fresh_disk(old, tmp_path, name)
    with Machine(old_project.board, disk, logdir, name=name, accel=accel) as m:
        m.install()
        assert m.ok("cat /mnt/sda1/label") == release.version
        kept = change_the_device(m)
        if path == "N-1":
            # Refusals are the old image's update-image and the manager's: once per board, on
            # the release most devices run (N-2's were tested as N-1, with the same files' kinds).
            refused_change_nothing(m, updates)
        tally = Tally()
        missed = cut_during_update(m, updates, CUTS[path], tally, root_password=CHANGED_ROOT_PASSWORD,
                                   follow=True)
        assert not missed, f"the update finished before these cut points: {missed}"
        assert (tally.cuts, tally.recovered) == (len(CUTS[path]), len(CUTS[path])), str(tally)
        kept_after_update(m, kept, updates)
        # What the N-2 release lacked, live after the update over the data it made: the
        # manager's alarm e-mail settings, PostgreSQL's 10 s replication timeouts, replication.
        status, page = m.http_get("/cgi-bin/alarms", auth=ADMIN)
        assert status == 200, (status, page)
        assert m.ok("psql -h /run/postgresql -U postgres -tAc 'show wal_sender_timeout'") == "10s"
        assert m.ok("replication status").splitlines()[0] == "mode off"
