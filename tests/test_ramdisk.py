"""The ext2 RAM disk format (for a vendor kernel with the RAM disk built in), built for real
from ipx10's locked packages: an ext2 image whose busybox init runs the ramdisk's setup."""

from __future__ import annotations

import lzma
import shutil
import subprocess

from apbuild.config import find_root, load_project
from apbuild import images, signing
from apbuild.inputs import BuildInputs
from apbuild.stage import Runner
from apbuild.testing.seeding import definitions_copy

ROOT = find_root()


def test_ext2_ramdisk_boots_its_setup_from_inittab(tmp_path, build_cache):
    root = definitions_copy(tmp_path)
    text = (root / "machines" / "ipx10.toml").read_text().replace('name = "ipx10"', 'name = "ext2box"')
    (root / "machines" / "ext2box.toml").write_text(text + '[kernel]\nramdisk_format = "ext2"\n')  # over the base's initramfs
    board = root / "boards" / "ext2box.toml"
    board.write_text('product = "app-platform"\nmachine = "ext2box"\n')
    (root / "boards" / "ext2box.lock").write_bytes((ROOT / "boards" / "ipx10.lock").read_bytes())

    project = load_project(root, str(board))
    assert project.board.boot_files["ramdisk"] == "ramdisk.ext2.xz"
    signing.ensure_key(signing.default_dir())
    ramdisk = images.image(Runner(build_cache), BuildInputs.read(project, build_cache), "ramdisk").path
    assert ramdisk.name == "ramdisk.ext2.xz"
    image = tmp_path / "ramdisk.ext2"
    image.write_bytes(lzma.decompress(ramdisk.read_bytes()))
    assert image.stat().st_size < 100000 * 1024, "must fit the loader's ramdisk_size=100000"
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)

    def cat(path: str) -> str:
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                              text=True, check=True).stdout

    assert "::sysinit:/init" in cat("/etc/inittab")
    assert "install_step1.sh" in cat("/init")
    assert "[ $$ = 1 ] && exec /sbin/init" in cat("/init")
    listing = subprocess.run(["debugfs", "-R", "ls -l /usr/bin", str(image)], capture_output=True,
                             text=True, check=True).stdout
    assert " busybox" in listing
    tmp_mode = subprocess.run(["debugfs", "-R", "stat /tmp", str(image)], capture_output=True,
                              text=True, check=True).stdout
    assert "Mode:  01777" in tmp_mode
