"""x86_64-vm after its first boot: grown disk, rescue system, power cut during the install."""

from __future__ import annotations

import re
import subprocess

import pytest
from apbuild.testing.accounts import ROOT
from apbuild.testing.disks import fresh_disk
from apbuild.testing.lifecycle import rescue_as_the_manual_says
from apbuild.testing.machine import Machine

pytestmark = pytest.mark.vm


def test_resize_after_the_disk_grew_keeps_the_data(vm_build, installed, tmp_path, logdir, accel):
    project, _ = vm_build
    label = project.board.image_version
    disk = installed(project.board.name, tmp_path, "resize")
    m = Machine(project.board, disk, logdir, name="resize", accel=accel)
    with m:
        m.login(*ROOT, 300)
        m.ok("psql -h /run/postgresql -U postgres -c 'create table t (v text); insert into t values (42)'")
        before = int(m.ok("cat /sys/class/block/sda2/size"))
        m.send("poweroff\n")
        m.wait_exit(120)
    subprocess.run(["qemu-img", "resize", "-q", str(disk), "+2G"], check=True)
    with m.start():
        m.choose_grub_entry(0)                      # the manual: boot rescue/setup
        m.login(*ROOT, 300)
        m.send("cd /tmp && /home/root/install_step1.sh log.txt resize\n")
        m.expect_boot(f"App Platform {label}", 300)  # it reboots by itself, into normal
        m.login(*ROOT, 300)
        after = int(m.ok("cat /sys/class/block/sda2/size"))
        assert after == before + 2 * 2**30 // 512
        sda2 = int(m.ok("df -k /mnt/sda2 | tail -1").split()[1])
        assert sda2 * 1024 > (before * 512) + 1.5 * 2**30, "the ext4 filesystem did not grow"
        assert m.ok("psql -h /run/postgresql -U postgres -tAc 'select v from t'") == "42"


def test_rescue_entry_checks_filesystems_and_switches_default(vm_build, installed, tmp_path, logdir, accel):
    project, _ = vm_build
    label = project.board.image_version
    disk = installed(project.board.name, tmp_path, "rescue")
    with Machine(project.board, disk, logdir, name="rescue", accel=accel) as m:
        m.login(*ROOT, 300)
        keys, certificate = m.host_keys(), m.tls_certificate()
        # The manual: "Restart the VM and select the first entry in the boot menu from grub.
        # use putty to log in ... su - root ... e2fsck -p -f /dev/sda2 ... /dev/sda3".
        m.send("reboot\n")
        m.choose_grub_entry(0)
        rescue_as_the_manual_says(m, logdir, keys, certificate)
        m.login(*ROOT, 60)
        # The manual's way out of a boot that always lands in rescue: edit default in grub.cfg.
        m.ok("sed -i 's/^set default=1$/set default=0/' /boot/grub/grub.cfg && sync")
        m.send("reboot -f\n")
        m.expect_boot(f"App Platform {label} rescue/setup")
        m.login(*ROOT, 300)
        m.ok("sed -i 's/^set default=0$/set default=1/' /boot/grub/grub.cfg && sync")
        m.send("reboot -f\n")
        m.expect_boot(f"App Platform {label}")
        m.login(*ROOT, 300)
        assert "root=/dev/sda3" in m.ok("cat /proc/cmdline")


# The install's phases, in order: the power goes in each in turn, on one disk.
INSTALL_CUTS = ["apbuild-phase: install-partition", "apbuild-phase: install-data",
                "apbuild-phase: install-unpack"]


def test_power_cuts_during_install_are_recovered(vm_build, tmp_path, logdir, accel):
    """The power goes in each phase of the install, one after another: each next boot takes
    the install up again (and reaches the next phase), the last one finishes it. Then it goes
    during the first boot, just after it made the device's own files (the database's
    certificate, the manager in /apps/manager): sooner than the kernel writes them back by
    itself, so they must be on the disk already, or the device has no manager for good."""
    project, result = vm_build
    label = project.board.image_version
    m = Machine(project.board, fresh_disk(result, tmp_path, "cut"), logdir, name="install-cuts", accel=accel)
    for phase in INSTALL_CUTS:
        with m.start():
            m.expect("running install_step1.sh install", 180)
            m.expect(phase, 300)
            m.qmp("quit")                           # the power goes: no sync, no shutdown
            m.wait_exit(60)
    with m.start():
        m.install(label, login=False)               # the next boot resumes the install
        m.expect("S92manager: installed the reference manager", 300)
        m.qmp("quit")
        m.wait_exit(60)
    with m.start():
        m.expect_boot(f"App Platform {label}")
        made = m.expect(re.compile(rb"S50postgresql: (made the server's TLS certificate|started)"), 300)
        assert made.group(1) == b"started", "the first boot's certificate was lost to the power cut"
        m.login(*ROOT, 300)
        assert m.run("test -s /apps/manager/manager")[1] == 0, "the first boot's manager was lost"
        assert m.ok("cat /mnt/sda1/label") == label
        assert m.ok("tail -1 /mnt/sda2/log/ramdisk.log") == "finished"
        assert m.ok("psql -h /run/postgresql -U postgres -tAc 'select 1'") == "1"
        m.wait_http("/manager/ramdisk.log", 120)
