"""Signed image update through the manager on the VM: a good update is applied by the rescue
system and keeps the data; a tampered one, or one signed with another key, is refused and
changes nothing. Power cuts during the upload, the update and PostgreSQL's commits. (ipx13's
update runs on the gateway test_gateway.py installed: test_gateway.py's last test.)"""

from __future__ import annotations

import pytest
from apbuild.testing.lifecycle import (Tally, UpdateCut, cut_during_commits, cut_during_update,
                                       cut_during_upload, make_updates, signed_update_keeps_data)
from apbuild.testing.machine import Machine

pytestmark = pytest.mark.update


def test_signed_update_applies_and_keeps_data_others_refused(vm_build, installed, tmp_path, logdir, accel):
    project, _ = vm_build
    name = project.board.name
    updates = make_updates(name, tmp_path)
    with Machine(project.board, installed(name, tmp_path, name), logdir, name=f"update-{name}",
                 accel=accel) as m:
        m.login(timeout=300)
        signed_update_keeps_data(m, updates)


# CI's fixed set: one cut during the upload, one in each phase of applying the update,
# then three while PostgreSQL commits.
# bench/powercut.py runs a larger, spread set with the same code.
UPDATE_CUTS = [
    UpdateCut("rescue system, old image: writing the new sda1", "apbuild-phase: update-write", 0),
    UpdateCut("rescue system, old image: switching the table", "apbuild-phase: update-switch", 0),
    UpdateCut("rescue system, new image: unpacking the rootfs", "apbuild-phase: install-unpack", 0),
]
COMMIT_CUTS = [5, 17, 29]


def test_power_cuts_during_update_and_commits(vm_build, installed, tmp_path, logdir, accel):
    project, _ = vm_build
    updates = make_updates(project.board.name, tmp_path)
    tally = Tally()
    with Machine(project.board, installed(project.board.name, tmp_path, "cuts"), logdir, name="update-cuts",
                 accel=accel) as m:
        m.login(timeout=300)
        m.ok("psql -h /run/postgresql -U postgres -c 'create table kept (n int)' "
             "-c 'insert into kept select generate_series(1, 100)'")
        cut_during_upload(m, updates, tally)
        missed = cut_during_update(m, updates, UPDATE_CUTS, tally)
        assert not missed, f"the update finished before these cut points: {missed}"
        assert m.ok("psql -h /run/postgresql -U postgres -tAc 'select count(*) from kept'") == "100"
        cut_during_commits(m, updates.new, COMMIT_CUTS, tally)
    print(f"\n{tally}")
    assert (tally.cuts, tally.recovered, tally.rows_lost) == (7, 7, 0), str(tally)
