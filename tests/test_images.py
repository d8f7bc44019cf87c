"""Filesystem and disk images written into files: reproducible, readable, checked first."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from apbuild import disk, fsimage
from apbuild.errors import ApbuildError


def tree(root: Path) -> Path:
    (root / "grub").mkdir(parents=True)
    (root / "grub" / "grub.cfg").write_text("set default=0\n")
    (root / "label").write_text("140001\n")
    (root / "big").write_bytes(bytes(range(256)) * 4096)
    return root


@pytest.mark.parametrize("fs", ["ext2", "ext4"])
def test_ext_images_are_reproducible_and_clean(tmp_path, fs):
    src = tree(tmp_path / "src")
    a = fsimage.make_ext(fs, src, tmp_path / "a.img", label="boot", uuid=fsimage.uuid_from("t"), epoch=1700000000)
    time.sleep(1.1)
    (src / "label").touch()  # new mtime/ctime on the source must not matter
    b = fsimage.make_ext(fs, src, tmp_path / "b.img", label="boot", uuid=fsimage.uuid_from("t"), epoch=1700000000)
    assert a.read_bytes() == b.read_bytes()
    subprocess.run(["e2fsck", "-fn", str(a)], check=True, capture_output=True)
    cat = subprocess.run(["debugfs", "-R", "cat /label", str(a)], capture_output=True, check=True)
    assert cat.stdout == b"140001\n"
    stat = subprocess.run(["debugfs", "-R", "stat /grub/grub.cfg", str(a)], capture_output=True, text=True).stdout
    assert "User:     0   Group:     0" in stat
    assert not list(tmp_path.glob(".*.part"))


def test_fat32_is_reproducible_and_readable(tmp_path):
    src = tree(tmp_path / "src")
    a = fsimage.make_fat(src, tmp_path / "a.img", label="boot", epoch=1700000000)
    time.sleep(1.1)
    (src / "label").touch()
    b = fsimage.make_fat(src, tmp_path / "b.img", label="boot", epoch=1700000000)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size == fsimage.FAT32_MIN
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(["fsck.fat", "-n", str(a)], check=True, capture_output=True)
    info = subprocess.run(["minfo", "-i", str(a), "::"], capture_output=True, text=True, env=env).stdout
    assert "FAT32" in info or "fat_bits=32" in info.replace(" ", "")
    assert subprocess.run(["mtype", "-i", str(a), "::/grub/grub.cfg"], capture_output=True,
                          env=env, check=True).stdout == b"set default=0\n"
    listing = subprocess.run(["mdir", "-i", str(a), "::/"], capture_output=True, text=True, env=env).stdout
    assert "2023-11-14" in listing  # every entry carries the build's time, not the source's


def test_swap_header_matches_mkswap(tmp_path):
    uuid = fsimage.uuid_from("swap")
    ours = fsimage.make_swap(tmp_path / "ours", 64 << 20, uuid, "swap")
    theirs = tmp_path / "theirs"
    with open(theirs, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkswap", "-U", uuid, "-L", "swap", str(theirs)], check=True, capture_output=True)
    assert ours.read_bytes()[:4096] == theirs.read_bytes()[:4096]


def test_partitions_keep_their_numbers_in_physical_order(tmp_path):
    image = tmp_path / "p1.img"
    image.write_bytes(b"\xab" * 4096)
    M = 1 << 20
    parts = [disk.Placed(1, 1 * M, 8 * M, "83", True, image), disk.Placed(3, 9 * M, 4 * M, "83"),
             disk.Placed(4, 13 * M, 2 * M, "82"), disk.Placed(2, 15 * M, 17 * M, "83")]
    out = disk.make_mbr_disk(tmp_path / "d.img", 32 * M, 0x41505046, parts)
    disk_id, table = disk.read_table(out)
    assert disk_id == 0x41505046
    assert {(p.number, p.start, p.size, p.type, p.bootable) for p in table} == \
        {(p.number, p.start, p.size, p.type, p.bootable) for p in parts}
    with open(out, "rb") as f:
        f.seek(1 * M)
        assert f.read(4096) == b"\xab" * 4096
    assert out.stat().st_blocks * 512 < 1 * M  # sparse


def test_overlap_and_oversize_are_refused_before_writing(tmp_path):
    M = 1 << 20
    with pytest.raises(ApbuildError, match=r"partition 3 \(offset 0x500000.*overlaps partition 1 \(offset 0x100000"):
        disk.make_mbr_disk(tmp_path / "x.img", 32 * M, 1, [disk.Placed(1, M, 8 * M, "83"), disk.Placed(3, 5 * M, M, "83")])
    big = tmp_path / "big"
    big.write_bytes(bytes(2 * M))
    with pytest.raises(ApbuildError, match=r"image big is 2097152 bytes, more than the partition's 1048576"):
        disk.make_mbr_disk(tmp_path / "y.img", 32 * M, 1, [disk.Placed(1, M, M, "83", image=big)])
    assert not (tmp_path / "x.img").exists() and not (tmp_path / "y.img").exists()


def test_fat32_is_sized_to_its_content_with_room_for_the_device(tmp_path):
    """A gateway's installation image is its sda1: every spare MiB counts against 50 MB, yet
    the device writes bootmode, label and provision.conf there."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "payload").write_bytes(bytes(range(256)) * (160 * 1024))   # 40 MiB
    image = fsimage.make_fat(src, tmp_path / "boot.img", label="boot", epoch=1700000000)
    size = image.stat().st_size
    assert size % 2**20 == 0 and size == fsimage.fat32_size(40 * 2**20 + 2**16)
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    listing = subprocess.run(["mdir", "-i", str(image), "::"], capture_output=True, text=True,
                             env=env, check=True).stdout
    line = next(line for line in listing.splitlines() if "bytes free" in line)
    free = int("".join(c for c in line.split("bytes free")[0] if c.isdigit()))
    assert fsimage.FAT_SPARE <= free < fsimage.FAT_SPARE + 2**20 + 2**16, listing
    subprocess.run(["fsck.fat", "-n", str(image)], check=True, capture_output=True)
