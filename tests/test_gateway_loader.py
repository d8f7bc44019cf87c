"""The emulated gateway loader (apbuild/qemu.py gateway_loader) reads sda1's FAT32 as the
firmware does: names without case, a lost mode file boots rescue; pyfatfs and the mtools
fallback read alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apbuild import qemu
from apbuild.config import find_root, load_board
from apbuild.disk import Placed, make_mbr_disk

BOARD = load_board(find_root() / "boards" / "ipx13.toml")
MIB = 2**20


def gateway_disk(tmp: Path, files: dict[str, bytes]) -> Path:
    """A disk whose sda1 (at 1 MiB) is a FAT32 holding `files`, written with mtools."""
    fat = tmp / "sda1.img"
    subprocess.run(["truncate", "-s", "40M", str(fat)], check=True)
    subprocess.run(["mformat", "-F", "-i", str(fat), "::"], check=True)
    for name, data in files.items():
        (tmp / "src").write_bytes(data)
        subprocess.run(["mcopy", "-i", str(fat), str(tmp / "src"), f"::{name}"], check=True)
    return make_mbr_disk(tmp / "disk.img", 48 * MIB, 0x1234, [Placed(1, MIB, 40 * MIB, "c", image=fat)])


@pytest.fixture(params=["pyfatfs", "mtools"])
def reader(request, monkeypatch):
    if request.param == "mtools":
        monkeypatch.setattr(qemu, "_read_fat", qemu._read_fat_mtools)
    else:
        pytest.importorskip("pyfatfs")


def test_names_compare_without_case(tmp_path, reader):
    names = BOARD.boot_files
    disk = gateway_disk(tmp_path, {names["kernel"].upper(): b"kernel", names["ramdisk"].upper(): b"initrd",
                                   names["mode"]: b"normal\n"})
    boot = qemu.gateway_loader(BOARD, disk, tmp_path / "loader")
    assert boot.mode == "normal" and "root=/dev/sda3" in boot.append
    assert boot.kernel.read_bytes() == b"kernel" and boot.initrd.read_bytes() == b"initrd"


def test_a_lost_mode_file_boots_rescue(tmp_path, reader):
    names = BOARD.boot_files
    disk = gateway_disk(tmp_path, {names["kernel"]: b"k", names["ramdisk"]: b"r"})
    boot = qemu.gateway_loader(BOARD, disk, tmp_path / "loader")
    assert boot.mode == "rescue" and "root=/dev/ram0" in boot.append
