"""Every shell script the images carry passes shellcheck, as the device runs it: templates
rendered with each board's context, plain scripts as they are."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from apbuild import rootfs
from apbuild.cache import Cache
from apbuild.config import find_root, list_boards, load_project
from apbuild.inputs import BuildInputs
from apbuild.tree import FILE

ROOT = find_root()
SHELLS = (b"#!/bin/sh", b"#!/bin/bash")
# Files the shells read rather than run, with the shell that reads them.
SOURCED = {"/etc/profile": "sh", "/etc/bash.bashrc": "bash", "/etc/apbuild/device.conf": "sh"}
# The module lists the kernel stage works out from the pool: their shape is what counts here.
MODULES = {"boot_modules": ["kernel/drivers/a.ko", "kernel/fs/b.ko"], "rescue_modules": ["kernel/net/c.ko"]}


def device_scripts(board: str, cache: Path, out: Path) -> dict[Path, str]:
    """The board's shell scripts, written under out/<recipe>/<image>/<path in the image>,
    with the shell to check them as ('' for a script's own #! line)."""
    project = load_project(ROOT, board)
    context = BuildInputs.read(project, Cache(cache)).context().variables(**MODULES)
    written: dict[Path, str] = {}
    for recipe in project.recipes:
        for image in ("common", "rootfs", "ramdisk", "boot", f"boot-{project.board.bootloader}"):
            for path, entry in rootfs.render_overlay(recipe.overlay(image), context, recipe.name):
                if entry.kind != FILE:
                    continue
                data = entry.data if entry.data is not None else Path(entry.source).read_bytes()
                if data.startswith(SHELLS) or path in SOURCED or path.endswith(".sh"):
                    dest = out / recipe.name / image / path.lstrip("/")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data)
                    written[dest] = SOURCED.get(path, "")
    return written


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed "
                    "(./build.py test installs it: apt-get install shellcheck)")
@pytest.mark.parametrize("board", list_boards(ROOT) + ["erp@x86_64-vm"])
def test_device_scripts_pass_shellcheck(board, tmp_path, update_key):
    scripts = device_scripts(board, tmp_path / "cache", tmp_path / "scripts")
    assert len(scripts) > 20, scripts  # the installer, init, setip, the S?? scripts ...
    names = {p.name for p in scripts}
    assert {"install_step1.sh", "init", "setip", "update-image", "S50postgresql", "profile",
            "device.sh", "slot.sh", "bootmode.sh", "device.conf"} <= names, names
    found = ""
    for shell in sorted(set(scripts.values())):
        files = [str(p) for p, s in scripts.items() if s == shell]
        proc = subprocess.run(["shellcheck", "--format=gcc", *([f"--shell={shell}"] if shell else []), *files],
                              capture_output=True, text=True)
        found += proc.stdout.replace(f"{tmp_path}/scripts/", "") + proc.stderr
        assert proc.returncode == 0 or found, proc
    assert not found, f"shellcheck on {board}'s scripts:\n{found}"


@pytest.mark.parametrize("packer", [["xz", "-c"], ["zstd", "-q", "-c"]])
def test_the_installer_unpacks_the_rootfs_by_its_name_and_fails_on_a_broken_one(tmp_path, packer):
    """install_step1.sh's unpack, run by sh on the host: xz through tar, zstd piped into tar;
    a damaged file fails the step."""
    script = (ROOT / "recipes/base/common/home/root/install_step1.sh").read_text()
    start = script.index("\nunpack() {\n")
    function = script[start:script.index("\n}\n", start) + 3]
    (tmp_path / "tree/etc").mkdir(parents=True)
    (tmp_path / "tree/etc/app.conf").write_text("x = 1\n" * 50000)
    data = subprocess.run(["tar", "-cf", "-", "-C", str(tmp_path / "tree"), "."], capture_output=True, check=True).stdout
    packed = subprocess.run(packer, input=data, capture_output=True, check=True).stdout
    name = "rootfs.tar.zst" if packer[0] == "zstd" else "rootfs.tar.xz"
    (tmp_path / name).write_bytes(packed)
    # The last 4 bytes: zstd's checksum of the content (xz's stream footer).
    (tmp_path / f"broken-{name}").write_bytes(packed[:-4] + bytes(b ^ 0xFF for b in packed[-4:]))

    def unpack(file: str) -> int:
        dest = tmp_path / "dest"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        return subprocess.run(["sh", "-c", function + 'unpack "$1" "$2"', "sh", str(tmp_path / file), str(dest)],
                              capture_output=True).returncode

    assert unpack(name) == 0
    assert (tmp_path / "dest/etc/app.conf").read_text() == "x = 1\n" * 50000
    assert unpack(f"broken-{name}") != 0
