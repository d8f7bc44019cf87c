"""Signed image update through the manager, on the VM and on ipx13: a good update is applied
by the rescue system and keeps the data; a tampered one, or one signed with another key, is
refused and changes nothing."""

from __future__ import annotations

import pytest
from apbuild.testing.disks import installation_disk
from apbuild.testing.lifecycle import (Tally, UpdateCut, applied, boot_state, cut_during_commits,
                                       cut_during_update, cut_during_upload, make_updates, upload)
from apbuild.testing.machine import Machine

pytestmark = pytest.mark.update


BOARDS = ["x86_64-vm", "ipx13"]


@pytest.mark.parametrize("name", BOARDS)
def test_signed_update_applies_and_keeps_data_others_refused(name, build_board, installed, tmp_path, logdir, accel):
    project, result = build_board(name)
    updates = make_updates(name, tmp_path)
    gateway = project.board.bootloader == "gateway"
    if gateway:   # the emulated loader reads a raw disk: installed here
        disk, accel = installation_disk(result, tmp_path, name), "tcg"
    else:         # the run's installed VM (updates.old)
        disk = installed(name, tmp_path, name)
    with Machine(project.board, disk, logdir, name=f"update-{name}", accel=accel) as m:
        if gateway:
            m.install(updates.old)
        else:
            m.login(timeout=300)
        m.ok("psql -h /run/postgresql -U postgres -c 'create table kept (n int)' "
             "-c 'insert into kept select generate_series(1, 1000)'")
        # A password changed on the device survives the update, whose rootfs has the defaults
        # (set here as passwd would, without its prompts).
        m.ok("h=$(echo Changed-On-The-Device | mkpasswd -m sha512 -P 0) && "
             "sed -i \"s|^root:[^:]*:|root:$h:|\" /etc/shadow")
        root_hash = m.password_hash("root")
        assert root_hash.startswith("$6$") and root_hash != m.password_hash("admin")
        # What the manual's reader changes and an update (a new sda3) must not take away: the
        # VPN note's /etc/hosts line, a standby's /home/root/standby.conf, an app's own unix
        # user (useradd, as the manual's "each App has an own unix user"), a static address.
        m.ok("echo '10.8.0.1 vpn-host.example' >> /etc/hosts")
        m.ok("echo '{\"primary\": \"10.8.0.1\", \"name\": \"standby1\"}' > /home/root/standby.conf")
        m.ok("useradd -m app-demo && usermod -p \"$(echo App-Pass-1 | mkpasswd -m sha512 -P 0)\" app-demo")
        m.ok("echo app data > /mnt/sda2/home/app-demo/data && chown app-demo: /mnt/sda2/home/app-demo/data")
        app_id = m.ok("id app-demo")
        m.ok("setip --addr=10.0.2.15 --mask=255.255.255.0 --gateway=10.0.2.2 --dns1=10.0.2.3")
        m.wait_http("/manager/ramdisk.log", 120)
        before = boot_state(m)

        status, text = upload(m, updates.tampered)
        assert status == 422 and "checksum" in text, (status, text)
        status, text = upload(m, updates.other_key)
        assert status == 422 and "signature" in text, (status, text)
        assert boot_state(m) == before, "a refused update changed the device"

        status, text = upload(m, updates.good)
        assert status == 200 and f"version {updates.new} staged" in text, (status, text)
        applied(m, updates.new, root_password="Changed-On-The-Device", follow=True)  # the default fails
        assert m.ok("cat /mnt/sda1/label") == updates.new
        assert m.ok("psql -h /run/postgresql -U postgres -tAc 'select count(*), sum(n) from kept'") \
            == "1000|500500"
        assert m.run("test -e /mnt/sda1/pending")[1] == 1
        assert m.password_hash("root") == root_hash
        assert "10.8.0.1 vpn-host.example" in m.ok("cat /etc/hosts")
        assert '"name": "standby1"' in m.ok("cat /home/root/standby.conf")
        assert m.ok("id app-demo") == app_id
        assert m.ok("cat /mnt/sda2/home/app-demo/data") == "app data"
        assert m.ssh_user("app-demo", "App-Pass-1") == "app-demo"
        assert "MODE=static" in m.ok("cat /mnt/sda2/etc/network.conf")
        assert "inet 10.0.2.15/24" in m.ok("ip address show eth0") and m.run("pidof udhcpc")[1] == 1
        assert m.ok("ls /mnt/sda2/update 2>/dev/null | wc -l") == "0"
        m.wait_http("/manager/ramdisk.log", 120)
        status, log = m.http_get("/manager/ramdisk.log")
        assert status == 200
        assert f"update from image {updates.old} to {updates.new} started" in log
        assert log.rstrip().splitlines()[-1] == "finished"
        # Only the admin may upload.
        status, _ = upload(m, updates.tampered, auth=("admin", "wrong"))
        assert status == 401


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
