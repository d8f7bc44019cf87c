"""The host-leak scan: a planted host path is found inside xz, zstd, tar, cpio and sparse files."""

from __future__ import annotations

import io
import lzma
import subprocess
from pathlib import Path

import pytest

from apbuild import leakscan
from apbuild.errors import ApbuildError
from apbuild.tree import FILE, Entry, Tree

SECRET = "/home/builder7/src/apbuild"
NEEDLES = {SECRET: "work tree", "buildhost42": "hostname"}


def tree_with(content: bytes) -> Tree:
    t = Tree()
    t.add("/etc/motd", Entry(FILE, data=b"welcome\n"))
    t.add("/etc/app.conf", Entry(FILE, data=content))
    return t


def outputs(tmp_path: Path, content: bytes) -> dict[str, Path]:
    """rootfs.tar.xz, rootfs.tar.zst (a zstd product's), ramdisk.cpio.xz, a sparse disk image
    and an OVA-like tar."""
    tmp_path.mkdir(exist_ok=True)
    tar, cpio = io.BytesIO(), io.BytesIO()
    tree_with(content).write_tar(tar, 0)
    tree_with(content).write_cpio(cpio, 0)
    (tmp_path / "rootfs.tar.xz").write_bytes(lzma.compress(tar.getvalue()))
    (tmp_path / "rootfs.tar.zst").write_bytes(subprocess.run(["zstd", "-q", "-c"], input=tar.getvalue(),
                                                             capture_output=True, check=True).stdout)
    (tmp_path / "ramdisk.cpio.xz").write_bytes(lzma.compress(cpio.getvalue()))
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(256 << 20)
        f.seek(200 << 20)
        f.write(b"\0" * 100 + content)
    (tmp_path / "plain.tar").write_bytes(tar.getvalue())
    return {p.name: p for p in sorted(tmp_path.iterdir())}


def test_clean_outputs_pass(tmp_path):
    leakscan.check(outputs(tmp_path, b"listen = 0.0.0.0\n"), NEEDLES)


def test_planted_leak_is_named_with_output_member_and_string(tmp_path):
    files = outputs(tmp_path, f"data_dir = {SECRET}/cache\n".encode())
    with pytest.raises(ApbuildError) as err:
        leakscan.check(files, NEEDLES)
    text = str(err.value)
    assert f"rootfs.tar.xz: ./etc/app.conf: contains the build host's work tree '{SECRET}'" in text
    assert f"rootfs.tar.zst: ./etc/app.conf: contains the build host's work tree '{SECRET}'" in text
    assert "ramdisk.cpio.xz: etc/app.conf: contains" in text
    assert f"disk.img: offset {(200 << 20) + 100 + len('data_dir = ')}: contains" in text
    assert "plain.tar: ./etc/app.conf: contains" in text


def test_leak_across_a_chunk_boundary_is_found(tmp_path):
    data = tmp_path / "vmlinuz"
    data.write_bytes(b"x" * (leakscan.CHUNK - 5) + b"buildhost42" + b"y" * 100)
    assert [str(leak) for leak in leakscan.scan_file(data, NEEDLES)] == \
        ["vmlinuz: offset 1048571: contains the build host's hostname 'buildhost42'"]


def test_host_needles_follow_the_documented_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setenv("USER", "root")
    monkeypatch.setattr(leakscan.socket, "gethostname", lambda: "vm")
    needles = leakscan.host_needles(tmp_path / "tree", tmp_path / "cache")
    assert set(needles.values()) == {"work tree", "cache directory"}   # /root, root, vm: too common
    monkeypatch.setenv("HOME", "/home/alice")
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setattr(leakscan.socket, "gethostname", lambda: "alice-laptop")
    needles = leakscan.host_needles(tmp_path / "tree", tmp_path / "cache")
    assert needles["/home/alice"] == "home directory"
    assert needles["alice"] == "user name" and needles["alice-laptop"] == "hostname"

