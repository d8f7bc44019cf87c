"""The code that can brick a device, run on the build host in seconds: the device library's
slot write and one-sector switch (/usr/lib/apbuild/slot.sh) and the boot-mode switch
(bootmode.sh), on image files, with each board's rendered device contract. The way RAUC
tests its MBR switch: both halves, a replayed cut, a refused image."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from apbuild import rootfs
from apbuild.cache import Cache
from apbuild.config import find_root, list_boards, load_project
from apbuild.files import data_extents
from apbuild.inputs import BuildInputs
from apbuild.tree import FILE

ROOT = find_root()
LIB = ROOT / "recipes" / "base" / "common" / "usr" / "lib" / "apbuild"
MIB = 1 << 20


def contract(board: str, cache: Path) -> dict[str, str]:
    """The board's /etc/apbuild/device.conf as the image carries it, as a dict."""
    project = load_project(ROOT, board)
    base = next(r for r in project.recipes if r.name == "base")
    context = BuildInputs.read(project, Cache(cache)).context().variables()
    entry = rootfs.render_overlay(base.overlay("common"), context, "base").get("/etc/apbuild/device.conf")
    assert entry is not None and entry.kind == FILE
    values = {}
    for line in entry.data.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


class Device:
    """A disk image file with sda1 in slot A, and the library run against it with sh."""

    def __init__(self, tmp: Path, board: str) -> None:
        self.tmp = tmp
        self.conf = contract(board, tmp / "cache")
        text = "".join(f"{k}={v}\n" for k, v in self.conf.items())
        # The device's names, with the disk and sda1's mount point moved into the test's directory.
        self.disk = tmp / "disk.img"
        self.boot = tmp / "sda1"
        self.boot.mkdir()
        text += f"DISK={self.disk}\nBOOT_MOUNT={self.boot}\n"
        (tmp / "device.conf").write_text(text)
        self.slot_a, self.slot_b = int(self.conf["SLOT_A"]), int(self.conf["SLOT_B"])
        self.slot_sectors = int(self.conf["SLOT_SECTORS"])
        end = (self.slot_b + self.slot_sectors) * 512 + 4 * MIB  # the slots, then more of the disk
        with open(self.disk, "wb") as f:
            f.truncate(end)
        self.old = os.urandom(3 * MIB + 1234)
        table = (f"label: dos\nlabel-id: {self.conf['DISK_ID']}\nunit: sectors\n\n"
                 f"start={self.slot_a}, size={-(-len(self.old) // 512)}, type={self.conf['BOOT_TYPE']}, bootable\n")
        subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(self.disk)], input=table.encode(),
                       check=True, capture_output=True)
        self.write_at(self.slot_a, self.old)

    def write_at(self, sector: int, data: bytes) -> None:
        with open(self.disk, "r+b") as f:
            f.seek(sector * 512)
            f.write(data)

    def read_at(self, sector: int, size: int) -> bytes:
        with open(self.disk, "rb") as f:
            f.seek(sector * 512)
            return f.read(size)

    def sectors(self) -> dict[int, bytes]:
        """Sector number -> content, for the sectors holding data (the image is sparse)."""
        out = {}
        with open(self.disk, "rb") as f:
            for start, end in data_extents(f.fileno()):
                f.seek(start)
                data = f.read(end - start)
                for i in range(0, len(data), 512):
                    out[(start + i) // 512] = data[i:i + 512]
        return out

    def sh(self, script: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "APBUILD_CONF": str(self.tmp / "device.conf"),
               "APBUILD_LIB": str(LIB)}
        return subprocess.run(["sh", "-c", f'. "$APBUILD_LIB/device.sh"\n{script}'], input=stdin, env=env,
                              capture_output=True)

    def table(self) -> tuple[int, int]:
        """(start, sectors) of sda1 in the image's table."""
        out = subprocess.run(["sfdisk", "-J", str(self.disk)], check=True, capture_output=True, text=True).stdout
        parts = json.loads(out)["partitiontable"]["partitions"]
        (p,) = [p for p in parts if p["node"].endswith(self.conf["BOOT_NUMBER"])]
        return p["start"], p["size"]

    def update(self, image: bytes, sha256: str | None = None) -> subprocess.CompletedProcess:
        """What install_step1.sh update does with the slots: write the other one, then switch."""
        sha = sha256 or hashlib.sha256(image).hexdigest()
        return self.sh(f'new=$(slot_other "$(slot_current)") && slot_write "$new" {len(image)} {sha} '
                       f'&& slot_switch "$new" {len(image)} >/dev/null', image)


pytestmark = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (fdisk package) is missing")


@pytest.mark.parametrize("board", list_boards(ROOT))
def test_an_update_writes_the_other_slot_and_switches_one_sector(board, tmp_path, update_key):
    dev = Device(tmp_path, board)
    assert dev.sh("slot_current").stdout.decode().strip() == str(dev.slot_a)
    before = dev.sectors()
    new = os.urandom(2 * MIB + 777)
    result = dev.update(new)
    assert result.returncode == 0, result.stderr.decode()
    assert dev.table() == (dev.slot_b, -(-len(new) // 512))
    assert dev.read_at(dev.slot_b, len(new)) == new
    after = dev.sectors()
    # Nothing changed outside the new slot but the MBR's one sector.
    changed = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
    slot_b = range(dev.slot_b, dev.slot_b + dev.slot_sectors)
    assert sorted(n for n in changed if n not in slot_b) == [0]
    assert dev.read_at(dev.slot_a, len(dev.old)) == dev.old

    # The next update goes back to slot A, and leaves B as it is.
    newer = os.urandom(1 * MIB)
    assert dev.update(newer).returncode == 0
    assert dev.table() == (dev.slot_a, MIB // 512)
    assert dev.read_at(dev.slot_a, len(newer)) == newer
    assert dev.read_at(dev.slot_b, len(new)) == new


def test_a_cut_write_is_replayed_and_the_table_moves_only_at_the_end(tmp_path, update_key):
    dev = Device(tmp_path, "x86_64-vm")
    new = os.urandom(3 * MIB)
    # A power cut in the middle of the write: half the new sda1, the table untouched.
    dev.write_at(dev.slot_b, new[: len(new) // 2])
    assert dev.table() == (dev.slot_a, -(-len(dev.old) // 512))
    # The old rescue system boots again and redoes the update from the start.
    assert dev.update(new).returncode == 0
    assert dev.table() == (dev.slot_b, len(new) // 512)
    assert dev.read_at(dev.slot_b, len(new)) == new


def test_a_refused_image_changes_nothing(tmp_path, update_key):
    dev = Device(tmp_path, "ipx13")
    new = os.urandom(2 * MIB)
    # Reads back wrong (the manifest's SHA-256 is not this image's): the table is not switched.
    result = dev.update(new, sha256="0" * 64)
    assert result.returncode != 0 and b"reads back wrong" in result.stderr
    assert dev.table() == (dev.slot_a, -(-len(dev.old) // 512))
    assert dev.read_at(dev.slot_a, len(dev.old)) == dev.old
    # Too big for a slot: refused before anything is written.
    before = dev.sectors()
    big = bytes((dev.slot_sectors + 1) * 512)
    result = dev.update(big)
    assert result.returncode != 0 and b"do not fit" in result.stderr
    assert dev.sectors() == before


@pytest.mark.parametrize("board", ["x86_64-vm", "ipx13"])
def test_boot_mode_switches_in_one_rename_and_refuses_nonsense(board, tmp_path, update_key):
    dev = Device(tmp_path, board)
    grub = dev.conf["BOOTLOADER"] == "grub-bios"
    if grub:
        (dev.boot / "grub").mkdir()
        cfg = dev.boot / "grub" / "grub.cfg"
        cfg.write_text("# menu\nset default=0\nset timeout=2\n")
        read = lambda: cfg.read_text()  # noqa: E731
    else:
        mode = dev.boot / dev.conf["FILE_MODE"]
        mode.write_text("rescue\n")
        read = lambda: mode.read_text()  # noqa: E731
    assert dev.sh("boot_mode normal").returncode == 0
    assert ("set default=1\n" in read()) if grub else read() == "normal\n"
    assert dev.sh("boot_mode rescue").returncode == 0
    assert ("set default=0\n" in read()) if grub else read() == "rescue\n"
    before = read()
    result = dev.sh("boot_mode sideways")
    assert result.returncode != 0 and b"not normal or rescue" in result.stderr
    assert read() == before
    assert sorted(p.name for p in dev.boot.rglob("*.new")) == []


def test_phase_markers_are_one_machine_readable_line(tmp_path, update_key):
    dev = Device(tmp_path, "ipx10")
    log = tmp_path / "install.log"
    result = dev.sh(f'LOG={log}; phase update-write')
    assert result.stdout == b"apbuild-phase: update-write\n"
    assert log.read_text() == "apbuild-phase: update-write\n"
