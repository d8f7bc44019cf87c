"""Power cuts on the VM that are not an update's phases: during the upload of a signed update
(the old image runs on, the half-received file is cleaned away) and while PostgreSQL commits
(no row whose commit returned is lost). The update itself, refused and applied, with cuts in
each of its phases, is test_update_paths.py's, from the releases in the field on every board."""

from __future__ import annotations

import pytest
from apbuild.testing.lifecycle import Tally, cut_during_commits, cut_during_upload, make_updates
from apbuild.testing.machine import Machine

pytestmark = pytest.mark.update

# CI's fixed set: one cut during the upload, then three while PostgreSQL commits.
# bench/powercut.py runs a larger, spread set with the same code.
COMMIT_CUTS = [5, 17, 29]


def test_power_cuts_during_the_upload_and_commits(vm_build, installed, tmp_path, logdir, accel):
    project, _ = vm_build
    updates = make_updates(project.board.name, tmp_path)
    tally = Tally()
    with Machine(project.board, installed(project.board.name, tmp_path, "cuts"), logdir, name="update-cuts",
                 accel=accel) as m:
        m.login(timeout=300)
        cut_during_upload(m, updates, tally)
        cut_during_commits(m, updates.old, COMMIT_CUTS, tally)
    print(f"\n{tally}")
    assert (tally.cuts, tally.recovered, tally.rows_lost) == (4, 4, 0), str(tally)
