"""A product whose rootfs is packed with zstd (rootfs_compression = "zstd", as erp and
tryton): built for real from x86_64-vm's locked packages plus zstd, its sda1 carries
rootfs.tar.zst, the device contract names that file, and the rescue ramdisk has the zstd
that unpacks it."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

from apbuild import leakscan, pipeline, signing
from apbuild.config import find_root, load_project
from apbuild.testing.packed import unpacked
from apbuild.testing.seeding import definitions_copy

ROOT = find_root()


def test_a_zstd_products_sda1_carries_rootfs_tar_zst_and_its_contract_names_it(tmp_path, build_cache):
    root = definitions_copy(tmp_path)
    (root / "products" / "kiosk.toml").write_text(
        'description = "Kiosk"\ntitle = "Kiosk"\nrecipes = ["base", "zstd", "ssh"]\nimage_name = "kiosk"\n'
        'image_version = "100"\narches = ["amd64"]\nrootfs_compression = "zstd"\n[layouts]\ngrub-bios = "vm"\n')
    project = load_project(root, "kiosk@x86_64-vm")
    assert project.board.boot_files["rootfs"] == "rootfs.tar.zst"
    # x86_64-vm's packages and tryton's zstd (same suite, same date): a lockfile for the
    # kiosk without resolving anything.
    lock = json.loads((ROOT / "boards" / "x86_64-vm.lock").read_text())
    tryton = json.loads((ROOT / "boards" / "tryton@x86_64-vm.lock").read_text())
    lock["packages"] = sorted(lock["packages"] + [p for p in tryton["packages"] if p["name"] == "zstd"],
                              key=lambda p: p["name"])
    lock["requested"], lock["excluded"] = list(project.packages), list(project.exclude_packages)
    (root / "boards" / "kiosk@x86_64-vm.lock").write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")

    signing.ensure_key(signing.default_dir())
    boot = pipeline.boot_image(project, build_cache)
    listing = subprocess.run(["debugfs", "-R", "ls -p /", str(boot)], capture_output=True,
                             text=True, check=True).stdout
    names = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    assert "rootfs.tar.zst" in names and "rootfs.tar.xz" not in names, listing

    rootfs = boot.parent / "rootfs.tar.zst"
    data = subprocess.run(["zstd", "-dcq", str(rootfs)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        members = {m.name for m in tar}
    # Both layers (packages, then configuration) unpack as one archive.
    assert "./usr/bin/busybox" in members and "./etc/apbuild/device.conf" in members
    assert "./usr/bin/zstd" not in members, "the rootfs never unpacks a rootfs"

    ramdisk = dict(leakscan.cpio_members(io.BytesIO(unpacked(boot.parent / project.board.boot_files["ramdisk"]))))
    assert "FILE_ROOTFS=rootfs.tar.zst\n" in ramdisk["etc/apbuild/device.conf"].decode()
    assert "usr/bin/zstd" in ramdisk
    assert leakscan.scan_file(rootfs, {"/nonexistent/build-host-path": "work tree"}) == []
