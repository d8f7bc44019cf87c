"""The real x86_64-vm build's OVA, build manifest and SBOM, as a customer receives them."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from apbuild.config import find_root, load_project
from apbuild.lockfile import read as read_lock
from apbuild.lockfile import source_date_epoch
from apbuild.manifest import sha256_sparse
from apbuild.pipeline import build
from apbuild.run import run
from apbuild.testing import scratch

ROOT = find_root()
BOARD = "x86_64-vm"


@pytest.fixture(scope="module")
def vm(request, build_cache):
    """The board built by the real pipeline into a fresh output directory."""
    project = load_project(ROOT, BOARD)
    with scratch(request, "out") as out:
        yield project, build(project, build_cache, out), out


def test_ova_members_sums_and_disk(vm, tmp_path):
    project, result, out = vm
    ova = result.outputs["ova"]
    assert ova == out / "app-platform-x86_64.ova"
    with tarfile.open(ova) as tar:
        names = tar.getnames()
        assert names == ["app-platform-x86_64.ovf", "app-platform-x86_64-disk1.vmdk", "app-platform-x86_64.mf"]
        # The names are checked above (plain files, no path): extract them one by one
        # (extractall's filter= needs Python 3.11.4; bookworm has 3.11.2).
        for name in names:
            tar.extract(name, tmp_path)
    mf = (tmp_path / names[2]).read_text().splitlines()
    assert mf == [f"SHA256({n})= {hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()}" for n in names[:2]]
    info = json.loads(run(["qemu-img", "info", "--output=json", tmp_path / names[1]]).stdout)
    assert info["format"] == "vmdk"
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert info["virtual-size"] == 16 << 30
    ovf = (tmp_path / names[0]).read_text()
    assert f'ovf:size="{(tmp_path / names[1]).stat().st_size}"' in ovf
    assert "<rasd:VirtualQuantity>512</rasd:VirtualQuantity>" in ovf
    assert "<rasd:VirtualQuantity>1</rasd:VirtualQuantity>" in ovf
    # The same disk as the raw image, sector for sector.
    run(["qemu-img", "compare", "-q", "-f", "vmdk", "-F", "raw", tmp_path / names[1], result.outputs["raw"]])


def test_the_boot_stage_links_the_files_it_keeps_beside_sda1(vm):
    """kernel, ramdisk and rootfs beside boot.img are their stages' files, not copies."""
    project, result, out = vm
    for kind in ("kernel", "ramdisk", "rootfs"):
        assert result.boot_files[kind].stat().st_nlink >= 2, kind


def test_build_manifest_names_every_output_with_its_hash(vm):
    project, result, out = vm
    manifest = json.loads((out / "app-platform-x86_64.manifest.json").read_text())
    assert manifest["board"] == BOARD
    assert manifest["lockfile"] == {"path": f"boards/{BOARD}.lock",
                                    "sha256": hashlib.sha256(project.board.lockfile.read_bytes()).hexdigest()}
    listed = {o["name"]: o for o in manifest["outputs"]}
    published = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert set(listed) == published - {"app-platform-x86_64.manifest.json"}
    for name, entry in listed.items():
        assert entry["size"] == (out / name).stat().st_size
        assert entry["sha256"] == sha256_sparse(out / name), name
    assert manifest["source_date_epoch"] == source_date_epoch(read_lock(project.board.lockfile))


def test_sbom_lists_every_locked_package_and_is_valid(vm):
    project, result, out = vm
    path = out / "app-platform-x86_64.spdx.json"
    doc = json.loads(path.read_text())
    lock = read_lock(project.board.lockfile)
    debs = {p["name"]: p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Package-deb-")}
    assert sorted(debs) == sorted(p.name for p in lock.packages)
    for p in lock.packages:
        assert debs[p.name]["checksums"][0]["checksumValue"] == p.sha256
        assert debs[p.name]["downloadLocation"].endswith("/" + p.filename)
    # libedit2's and libexpat1's copyright files are machine-readable (DEP-5) in bookworm:
    # their licences are read.
    assert debs["libedit2"]["licenseDeclared"] == "BSD-3-Clause"
    assert debs["libexpat1"]["licenseDeclared"] == "MIT"
    from test_sbom import validate
    assert validate(path) == []
