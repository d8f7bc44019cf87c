"""x86_64-vm for Hyper-V, in the real build: the Hyper-V drivers in the ramdisk (disk) and the
rootfs (NIC, integration services), and the VHDX as qemu-img reads it. What only a Hyper-V
host can show (VMBus, storvsc, netvsc, hv_utils at work) is in docs/user-guide.md."""

from __future__ import annotations

import io
import json
import lzma
import re
import tarfile

import pytest

from apbuild.config import find_root, load_project
from apbuild.leakscan import cpio_members
from apbuild.pipeline import build
from apbuild.run import run
from apbuild.testing import scratch
from apbuild.testing.packed import unpacked

ROOT = find_root()
BOARD = "x86_64-vm"
HV = "usr/lib/modules/{version}/kernel/drivers/"


@pytest.fixture(scope="module")
def vm(request, build_cache):
    project = load_project(ROOT, BOARD)
    with scratch(request, "out") as out:
        yield build(project, build_cache, out)


def kernel_version(result) -> str:
    with lzma.open(result.boot_files["rootfs"]) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for m in tar:
            if found := re.match(r"\./usr/lib/modules/([^/]+)/modules\.dep$", m.name):
                return found.group(1)
    raise AssertionError("no modules.dep in the rootfs")


def test_ramdisk_loads_the_vmbus_before_storvsc(vm):
    members = dict(cpio_members(io.BytesIO(unpacked(vm.boot_files["ramdisk"]))))
    base = HV.format(version=kernel_version(vm))
    for module in ("hv/hv_vmbus.ko", "scsi/hv_storvsc.ko", "scsi/scsi_transport_fc.ko"):
        assert base + module in members, module
    # /init insmods in list order with no modprobe: every dependency must come first.
    assert "for m in $BOOT_MODULES; do" in members["init"].decode(), "no insmod loop in the ramdisk's /init"
    listed = re.search(r'^BOOT_MODULES="(.*)"$', members["etc/apbuild/modules.conf"].decode(), re.M)
    assert listed, "no BOOT_MODULES in the ramdisk's /etc/apbuild/modules.conf"
    order = [m.rsplit("/", 1)[-1] for m in listed.group(1).split()]
    for dep, module in (("hv_vmbus.ko", "hv_storvsc.ko"), ("scsi_transport_fc.ko", "hv_storvsc.ko"),
                        ("scsi_mod.ko", "hv_storvsc.ko")):
        assert order.index(dep) < order.index(module), order


def test_rootfs_has_netvsc_and_utils_for_modprobe(vm):
    version = kernel_version(vm)
    base = "./" + HV.format(version=version)
    with lzma.open(vm.boot_files["rootfs"]) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        files = {m.name: tar.extractfile(m).read() if m.isfile() else b"" for m in tar}
    for module in ("net/hyperv/hv_netvsc.ko", "hv/hv_utils.ko", "hv/hv_vmbus.ko"):
        assert base + module in files, module
    dep = files[f"./usr/lib/modules/{version}/modules.dep"].decode()
    for module in ("net/hyperv/hv_netvsc.ko", "hv/hv_utils.ko"):
        assert re.search(rf"^kernel/drivers/{module}: .*kernel/drivers/hv/hv_vmbus\.ko", dep, re.M), module
    assert "hv_netvsc" in files["./etc/init.d/S40network"].decode()
    assert "modprobe -q hv_utils" in files["./etc/init.d/S15hyperv"].decode()


def test_vhdx_is_checked_clean_16_gib_and_the_raw_disk(vm):
    vhdx = vm.outputs["vhdx"]
    assert vhdx.name == "app-platform-x86_64.vhdx"
    run(["qemu-img", "check", "-q", "-f", "vhdx", vhdx])
    info = json.loads(run(["qemu-img", "info", "--output=json", "-f", "vhdx", vhdx]).stdout)
    assert info["format"] == "vhdx"
    assert info["virtual-size"] == 16 << 30
    # Dynamic: the file holds the data blocks, not 16 GiB.
    assert vhdx.stat().st_size < 200 << 20
    run(["qemu-img", "compare", "-q", "-f", "vhdx", "-F", "raw", vhdx, vm.outputs["raw"]])


def test_vhdx_identifiers_are_rewritten_reproducibly(vm, tmp_path):
    """A second conversion of the same disk gives the same bytes (qemu-img alone does not)."""
    from apbuild import vhdx as vhdx_mod
    from apbuild.cache import fingerprint, sha256_file

    again = vhdx_mod.to_vhdx(vm.outputs["raw"], tmp_path / "again.vhdx", fingerprint(vm.outputs["raw"]))
    assert sha256_file(again) == sha256_file(vm.outputs["vhdx"])
    assert not (tmp_path / ".again.vhdx.part").exists()
    plain = tmp_path / "plain.vhdx"
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic",
         vm.outputs["raw"], plain])
    assert sha256_file(plain) != sha256_file(again), "qemu-img became deterministic: drop the rewrite"


def test_crc32c_known_value():
    from apbuild.vhdx import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


@pytest.mark.parametrize("edits,key,words", [
    ([('formats = ["qcow2", "ova", "vhdx"]', 'formats = ["qcow2", "vhd"]')], "image.formats", "qcow2, ova, vhdx"),
    # Without the OVA (which would be refused first), a VHDX for an arm64 machine.
    ([('formats = ["qcow2", "ova", "vhdx"]', 'formats = ["vhdx"]'), ('arch = "amd64"', 'arch = "arm64"')],
     "image.formats", "amd64 virtual machine"),
])
def test_bad_vhdx_setting_names_file_and_key(tmp_path, edits, key, words):
    from apbuild.errors import ConfigError
    from apbuild.machines import load_machine

    text = (ROOT / "machines" / f"{BOARD}.toml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{BOARD}.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_machine(path)
    assert (err.value.file, err.value.key) == (path, key)
    assert words in str(err.value) and str(path) in str(err.value)
