"""Signed image update through the manager, on the VM and on ipx13: a good update is applied
by the rescue system and keeps the data; a tampered one, or one signed with another key, is
refused and changes nothing."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import re
from pathlib import Path

import pytest
from conftest import ROOT, fresh_disk, installation_disk
from harness import Machine, scaled

from apbuild import signing, update
from apbuild.cache import Cache, default_root
from apbuild.config import load_project
from apbuild.lockfile import read as read_lock
from apbuild.pipeline import build, epoch_of

pytestmark = pytest.mark.update

ADMIN = ("admin", "ipapps")


@dataclasses.dataclass(frozen=True)
class Updates:
    old: str                 # the installed image's version
    new: str                 # the update's version
    good: Path               # signed with the key the image was built for
    other_key: Path          # signed with a key the image does not know
    tampered: Path           # good, with one byte of boot.img changed


def make_updates(name: str, tmp: Path) -> Updates:
    """Build the board again as the next image version and sign it three ways."""
    project = load_project(ROOT, name)
    old = project.board.image_version
    new = str(int(old) + 1)
    board = dataclasses.replace(project.board, image_version=new)
    result = build(dataclasses.replace(project, board=board), Cache(default_root()), tmp / "out")
    epoch = epoch_of(read_lock(project.board.lockfile))
    platform = project.board.platform
    good = update.make(platform, new, result.boot_image, signing.key_in(signing.default_dir()),
                       tmp / "good.update", epoch)
    stranger = signing.keygen(tmp / "other-key")
    other = update.make(platform, new, result.boot_image, stranger, tmp / "other.update", epoch)
    tampered = tmp / "tampered.update"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01          # inside boot.img, the last and largest member
    tampered.write_bytes(data)
    return Updates(old, new, good, other, tampered)


def upload(m: Machine, path: Path, auth=ADMIN, timeout: float = 300) -> tuple[int, str]:
    """POST the file to the manager's update CGI, as the Update button would."""
    conn = http.client.HTTPConnection("127.0.0.1", m.ports[80], timeout=scaled(timeout))
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    with open(path, "rb") as body:
        conn.request("POST", "/cgi-bin/update", body=body, headers={
            "Authorization": f"Basic {token}", "Content-Type": "application/octet-stream",
            "Content-Length": str(path.stat().st_size)})
        reply = conn.getresponse()
        text = reply.read().decode(errors="replace")
    conn.close()
    return reply.status, text


def boot_state(m: Machine) -> str:
    """What an update must not change when it is refused: label, boot choice, sda1's place."""
    mode = ("grep '^set default' /boot/grub/grub.cfg" if m.board.bootloader == "grub-bios"
            else "cat /mnt/sda1/bootmode")
    return m.ok(f"cat /mnt/sda1/label; {mode}; sfdisk -d /dev/sda | grep '^/dev/sda1'; "
                f"ls /mnt/sda2/update 2>/dev/null | wc -l")


def first_install(m: Machine, label: str) -> None:
    m.expect("running install_step1.sh install", 180)
    m.expect(re.compile(rb"^finished", re.M), 300)
    if m.board.bootloader == "grub-bios":
        m.expect(f"Booting `App Platform {label}'", 180)
    m.login("root", "iplinux", 300)


def applied(m: Machine, new: str) -> None:
    """The rescue system (old image) writes the new sda1, the new one installs, then normal."""
    m.expect("running install_step1.sh update", 240)
    m.expect("running install_step1.sh install", 300)
    m.expect(re.compile(rb"^finished", re.M), 300)
    if m.board.bootloader == "grub-bios":
        m.expect(f"Booting `App Platform {new}'", 180)
    m.login("root", "iplinux", 300)


BOARDS = ["x86_64-vm", "ipx13"]


@pytest.mark.parametrize("name", BOARDS)
def test_signed_update_applies_and_keeps_data_others_refused(name, build_board, tmp_path, logdir, accel):
    project, result = build_board(name)
    updates = make_updates(name, tmp_path)
    if project.board.bootloader == "gateway":
        disk, accel = installation_disk(result, tmp_path, name), "tcg"
    else:
        disk = fresh_disk(result, tmp_path, name)
    with Machine(project.board, disk, logdir, name=f"update-{name}", accel=accel) as m:
        first_install(m, updates.old)
        m.ok("psql -h /run/postgresql -U postgres -c 'create table kept (n int)' "
             "-c 'insert into kept select generate_series(1, 1000)'")
        m.wait_http("/manager/ramdisk.log", 120)
        before = boot_state(m)

        status, text = upload(m, updates.tampered)
        assert status == 422 and "checksum" in text, (status, text)
        status, text = upload(m, updates.other_key)
        assert status == 422 and "signature" in text, (status, text)
        assert boot_state(m) == before, "a refused update changed the device"

        status, text = upload(m, updates.good)
        assert status == 200 and f"version {updates.new} staged" in text, (status, text)
        applied(m, updates.new)
        assert m.ok("cat /mnt/sda1/label") == updates.new
        assert m.ok("psql -h /run/postgresql -U postgres -tAc 'select count(*), sum(n) from kept'") \
            == "1000|500500"
        assert m.run("test -e /mnt/sda1/pending")[1] == 1
        assert m.ok("ls /mnt/sda2/update | wc -l") == "0"
        m.wait_http("/manager/ramdisk.log", 120)
        status, log = m.http_get("/manager/ramdisk.log")
        assert status == 200
        assert f"update from image {updates.old} to {updates.new} started" in log
        assert log.rstrip().splitlines()[-1] == "finished"
        # Only the admin may upload.
        status, _ = upload(m, updates.tampered, auth=("admin", "wrong"))
        assert status == 401


# -- power cuts --------------------------------------------------------------------------
# Each cut point is a line the rescue system or the installer prints, in the order an update
# passes them; the power goes as soon as it appears (QMP quit: no sync, no shutdown).
UPDATE_CUTS = [
    ("rescue system, old image: writing the new sda1", "writing the new /dev/sda1"),
    ("rescue system, old image: switching the partition table", "switching partition 1"),
    ("rescue system, new image: unpacking the new rootfs", "tar -xJf"),
]
COMMIT_CUTS = [5, 17, 29]   # after this many commits the host saw returned


def cut(m: Machine) -> None:
    m.qmp("quit")
    m.wait_exit(60)
    m.kill()          # drops the QMP connection to the QEMU that is gone
    m.start()


def test_power_cuts_during_update_and_commits(vm_build, tmp_path, logdir, accel):
    project, result = vm_build
    updates = make_updates(project.board.name, tmp_path)
    m = Machine(project.board, fresh_disk(result, tmp_path, "cuts"), logdir, name="update-cuts",
                accel=accel)
    cuts = recovered = lost = 0
    with m:
        first_install(m, updates.old)
        m.ok("psql -h /run/postgresql -U postgres -c 'create table c (n int primary key)'")
        status, text = upload(m, updates.good)
        assert status == 200, text
        m.expect("running install_step1.sh update", 240)
        for phase, line in UPDATE_CUTS:
            m.expect(line, 300)
            cut(m)
            cuts += 1
            # The next boot goes on by itself: the old rescue system redoes the update, or
            # the new one (re)installs.
            m.expect(re.compile(rb"running install_step1.sh (update|install)"), 240)
            recovered += 1
        m.expect(re.compile(rb"^finished", re.M), 300)
        m.expect(f"Booting `App Platform {updates.new}'", 180)
        m.login("root", "iplinux", 300)
        assert m.ok("cat /mnt/sda1/label") == updates.new

        # Rows whose commit returned must survive a cut at any moment.
        for after in COMMIT_CUTS:
            start = int(m.ok("psql -h /run/postgresql -U postgres -tAc 'select coalesce(max(n), 0) from c'"))
            m.send(f"i={start}; while i=$((i + 1)); do psql -h /run/postgresql -U postgres -qc "
                   f"\"insert into c values ($i)\" && echo \"committed $i\"; done\n")
            seen = start
            while seen < start + after:
                seen = int(m.expect(re.compile(rb"committed (\d+)"), 120).group(1))
            cut(m)
            cuts += 1
            m.expect(f"Booting `App Platform {updates.new}'", 180)
            m.login("root", "iplinux", 300)
            present = int(m.ok(f"psql -h /run/postgresql -U postgres -tAc "
                               f"'select count(*) from c where n <= {seen}'"))
            lost += seen - present
            recovered += 1
    print(f"\n{cuts} cuts, {recovered} recovered, {lost} rows lost")
    assert (cuts, recovered, lost) == (len(UPDATE_CUTS) + len(COMMIT_CUTS),) * 2 + (0,)
