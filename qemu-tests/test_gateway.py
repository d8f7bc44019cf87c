"""The ARM gateways: each board's installation image, written to an empty 4 GB disk, installs
itself through the emulated gateway loader and runs the App Platform's services (TCG). The
install is the run's installed disk of the board (apbuild.testing.installed: its first boot
is checked there, rescue, then normal after one reset), which test_replication.py's gateways
start from too; each test module boots a copy of it. Their signed updates, from the
releases in the field, are test_update_paths.py's."""

from __future__ import annotations

import re

import paramiko
import pytest
from apbuild.testing import scratch
from apbuild.testing.accounts import ADMIN, ROOT
from apbuild.testing.lifecycle import rescue_as_the_manual_says
from apbuild.testing.machine import Machine

pytestmark = pytest.mark.gateway

BOARDS = ["ipx10", "ipx11", "ipx13"]


@pytest.fixture(scope="module", params=BOARDS)
def gateway(request, build_board, installed, logdir):
    project, result = build_board(request.param)
    with scratch(request, request.param) as tmp, \
            Machine(project.board, installed(request.param, tmp, request.param), logdir, name=request.param,
                    accel="tcg") as m:
        m.login(timeout=300)
        m.project, m.result = project, result
        yield m


def test_installed_and_switched_to_normal(gateway):
    assert gateway.mode == "normal"
    assert "root=/dev/sda3" in gateway.ok("cat /proc/cmdline")
    assert gateway.ok("cat /mnt/sda1/bootmode") == "normal"
    assert gateway.ok("cat /mnt/sda1/label") == gateway.project.board.image_version
    assert gateway.run("test -e /mnt/sda1/pending")[1] == 1
    assert gateway.ok("tail -1 /mnt/sda2/log/ramdisk.log") == "finished"


def test_partitions_and_filesystems(gateway):
    table = gateway.ok("sfdisk -d /dev/sda")
    parts = {int(m.group(1)): (int(m.group(2)), int(m.group(3)), m.group(4))
             for m in re.finditer(r"/dev/sda(\d) : start=\s*(\d+), size=\s*(\d+), type=(\w+)", table)}
    assert sorted(parts) == [1, 2, 3, 4], table
    assert [parts[n][2] for n in (1, 2, 3, 4)] == ["c", "83", "83", "82"]
    assert parts[1][1] <= 200 * 2048 and parts[3][1] == 500 * 2048 and parts[4][1] == 512 * 2048
    assert parts[1][0] < parts[3][0] < parts[4][0] < parts[2][0]
    assert parts[2][0] + parts[2][1] == int(gateway.ok("cat /sys/block/sda/size"))
    assert "vfat" in gateway.ok("grep ' /mnt/sda1 ' /proc/mounts")
    assert "ext4" in gateway.ok("grep ' /mnt/sda2 ' /proc/mounts")
    assert "/dev/sda4" in gateway.ok("cat /proc/swaps")


def test_userspace_is_the_boards_arch(gateway):
    arch = gateway.project.board.arch
    loader = {"armel": "/lib/ld-linux.so.3", "arm64": "/lib/ld-linux-aarch64.so.1"}[arch]
    assert gateway.run(f"test -e {loader}")[1] == 0
    assert gateway.run("test -e /lib/ld-linux-armhf.so.3")[1] == 1
    mem_kb = int(gateway.ok("grep MemTotal /proc/meminfo").split()[1])
    assert mem_kb <= gateway.project.board.ram_mb * 1024


def test_postgresql_and_manager(gateway):
    assert gateway.ok("psql -h /run/postgresql -U postgres -tAc 'select 1'") == "1"
    # ipx10 (256 MB) and ipx11 (1.5 GB) share one image: its PostgreSQL sizes itself on the
    # device, a connection per quarter MB of RAM, at most 200.
    mem_mb = int(gateway.ok("grep MemTotal /proc/meminfo").split()[1]) // 1024
    expected = min(200, mem_mb // 4)
    assert int(gateway.ok("psql -h /run/postgresql -U postgres -tAc 'show max_connections'")) == expected
    gateway.wait_http("/manager/", 120, auth=ADMIN)
    status, page = gateway.http_get("/manager/", auth=ADMIN)
    assert status == 200 and f">{gateway.project.board.image_version}<" in page
    status, log = gateway.http_get("/manager/ramdisk.log")
    assert status == 200 and log.rstrip().splitlines()[-1] == "finished"


def test_ssh_admin_yes_root_no(gateway):
    assert gateway.ssh_user(*ADMIN) == "admin"
    with pytest.raises(paramiko.AuthenticationException):
        gateway.ssh_user(*ROOT)


def test_rescue_mode_as_the_manual_does_it(gateway, logdir):
    """The manual's gateway rescue: "modify the Kernel command line from root=/dev/sda3 to
    root=/dev/ram0, modify the Initrd file to ramdisk.ext2.xz, modify the ramdisk size to
    100000, start Linux again ... use putty to log in ... su - root (password iplinux) ...
    e2fsck -p -f /dev/sda2 ... e2fsck -p -f /dev/sda3", then back to root=/dev/sda3 with the
    Initrd field cleared; and "cat /apps/install_step1.log" there. The gateway's UI is the
    loader's bootmode file; its Initrd file is what the loader boots (ramdisk.ext2.xz)."""
    keys, certificate = gateway.host_keys(), gateway.tls_certificate()
    assert gateway.ok("ls /mnt/sda1/ramdisk.ext2.xz") == "/mnt/sda1/ramdisk.ext2.xz"
    # Root's password as changed on the device (set as passwd would, without its prompts):
    # the rescue system takes that one, not the image's default.
    password = "Changed-Before-Rescue"
    gateway.ok(f"h=$(echo {password} | mkpasswd -m sha512 -P 0) && "
               "sed -i \"s|^root:[^:]*:|root:$h:|\" /etc/shadow && sync")
    gateway.ok("echo rescue > /mnt/sda1/bootmode && sync")
    gateway.send("reboot\n")
    gateway.expect("rescue system ready", 300)
    assert gateway.mode == "rescue"
    rescue_as_the_manual_says(gateway, logdir, keys, certificate, root_password=password)
    gateway.login("root", password, 60)           # the console, to play the UI's part
    assert gateway.run("grep -q ' /mnt/sda2 ' /proc/mounts")[1] == 1   # free to be checked
    gateway.ok("echo normal > /mnt/sda1/bootmode && sync")
    gateway.send("reboot -f\n")
    gateway.login("root", password, 300)
    assert gateway.mode == "normal"
    assert "root=/dev/sda3" in gateway.ok("cat /proc/cmdline")
