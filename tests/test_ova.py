"""The OVA: the OVF descriptor against the DMTF schema, the VMDK byte for byte, the tar layout.

The DMTF schema (DSP8023 1.1.0 ovf-envelope, the CIM RASD/VSSD schemas and DSP8004 common it
imports, and the W3C xml.xsd) is kept in tests/data/dmtf-ovf/ (DMTF allows reproduction with
attribution: see its README): no package a build may install ships it — not PyPI (cot 2.2.1,
the Common OVF Tool, has no .xsd), not Debian bookworm (Contents-amd64/-all of main list no
dsp8023 or OVF envelope schema), not npm. Imports are resolved by file name there; no
network. APBUILD_OVF_SCHEMAS may name another directory holding the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from apbuild import ova
from apbuild.run import run

lxml_etree = pytest.importorskip("lxml.etree", reason="lxml is in requirements-test.txt")

NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"}
OVF = "{%s}" % NS["ovf"]
VM = ova.VirtualMachine(name="app-platform-x86_64", description="fixture <&> VM", version="140001",
                        cpus=1, ram_mb=512, capacity=64 << 20)


def fixture_disk(tmp_path: Path) -> Path:
    """A 64 MiB sparse raw disk with data in two places (one grain each)."""
    raw = tmp_path / "disk.img"
    with open(raw, "wb") as f:
        f.truncate(VM.capacity)
        f.seek(512)
        f.write(b"boot sector-ish data")
        f.seek(40 << 20)
        f.write(os.urandom(1000))
    return raw


@pytest.fixture
def built_ova(tmp_path) -> Path:
    work = tmp_path / "ova"
    work.mkdir()
    return ova.make_ova(fixture_disk(tmp_path), work, VM, "app-platform-x86_64.ova", 1700000000, "seed")


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_ova_layout_manifest_and_tar_headers(built_ova):
    with tarfile.open(built_ova) as tar:
        infos = tar.getmembers()
    assert [m.name for m in infos] == ["app-platform-x86_64.ovf", "app-platform-x86_64-disk1.vmdk",
                                       "app-platform-x86_64.mf"]
    for m in infos:
        assert (m.mtime, m.uid, m.gid, m.mode) == (1700000000, 0, 0, 0o644), m.name
    data = members(built_ova)
    lines = data["app-platform-x86_64.mf"].decode().splitlines()
    assert lines == [f"SHA256({n})= {hashlib.sha256(data[n]).hexdigest()}"
                     for n in ("app-platform-x86_64.ovf", "app-platform-x86_64-disk1.vmdk")]
    assert built_ova.read_bytes()[257:262] == b"ustar"


def test_vmdk_is_stream_optimized_and_reproducible(tmp_path, built_ova):
    vmdk = tmp_path / "app-platform-x86_64-disk1.vmdk"
    vmdk.write_bytes(members(built_ova)[vmdk.name])
    info = json.loads(run(["qemu-img", "info", "--output=json", vmdk]).stdout)
    assert info["format"] == "vmdk"
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert info["virtual-size"] == VM.capacity
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", tmp_path / "disk.img", vmdk]).returncode == 0
    # qemu-img writes a random CID: a second conversion must still give the same bytes.
    again = tmp_path / "again"
    again.mkdir()
    ova.make_ova(tmp_path / "disk.img", again, VM, "app-platform-x86_64.ova", 1700000000, "seed")
    assert (again / "app-platform-x86_64.ova").read_bytes() == built_ova.read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    ova.make_ova(tmp_path / "disk.img", other, VM, "app-platform-x86_64.ova", 1700000000, "new content")
    assert (other / "app-platform-x86_64.ova").read_bytes() != built_ova.read_bytes(), \
        "the CID must follow the content"


def _descriptor(built_ova: Path):
    return lxml_etree.fromstring(members(built_ova)["app-platform-x86_64.ovf"])


def test_ovf_says_what_the_board_says(built_ova):
    root = _descriptor(built_ova)
    vmdk_size = len(members(built_ova)["app-platform-x86_64-disk1.vmdk"])
    f = root.find("ovf:References/ovf:File", NS)
    assert f.get(OVF + "href") == "app-platform-x86_64-disk1.vmdk"
    assert int(f.get(OVF + "size")) == vmdk_size
    disk = root.find("ovf:DiskSection/ovf:Disk", NS)
    assert int(disk.get(OVF + "capacity")) == VM.capacity
    assert disk.get(OVF + "format").endswith("#streamOptimized")
    assert int(disk.get(OVF + "populatedSize")) == 2 * ova.GRAIN  # the two grains with data
    items = {int(i.findtext("rasd:ResourceType", namespaces=NS)): i
             for i in root.iterfind(".//ovf:VirtualHardwareSection/ovf:Item", NS)}
    assert sorted(items) == [3, 4, 6, 10, 17]  # CPU, memory, SCSI controller, NIC, disk
    assert items[3].findtext("rasd:VirtualQuantity", namespaces=NS) == "1"
    assert items[4].findtext("rasd:VirtualQuantity", namespaces=NS) == "512"
    assert items[4].findtext("rasd:AllocationUnits", namespaces=NS) == "byte * 2^20"
    assert items[6].findtext("rasd:ResourceSubType", namespaces=NS) == "lsilogic"
    assert items[17].findtext("rasd:HostResource", namespaces=NS) == "ovf:/disk/vmdisk1"
    assert items[17].findtext("rasd:Parent", namespaces=NS) == items[6].findtext("rasd:InstanceID", namespaces=NS)
    assert items[10].findtext("rasd:Connection", namespaces=NS) == \
        root.find("ovf:NetworkSection/ovf:Network", NS).get(OVF + "name")
    assert root.findtext("ovf:VirtualSystem/ovf:ProductSection/ovf:Product", namespaces=NS) == "fixture <&> VM"


def test_ovf_structure_follows_dsp8023(built_ova):
    """What the envelope schema requires of the parts we write: References first, sections,
    then the VirtualSystem; Info first in every section; CIM properties in the schema's
    (alphabetical) xs:sequence order; unique InstanceIDs."""
    root = _descriptor(built_ova)
    assert root.tag == OVF + "Envelope"
    assert [c.tag for c in root] == [OVF + "References", OVF + "DiskSection", OVF + "NetworkSection",
                                     OVF + "VirtualSystem"]
    vs = root.find("ovf:VirtualSystem", NS)
    assert vs.get(OVF + "id")
    sections = [root.find("ovf:DiskSection", NS), root.find("ovf:NetworkSection", NS)] + \
        [c for c in vs if c.tag.endswith("Section")]
    for section in sections + [vs]:
        assert section[0].tag == OVF + "Info", section.tag
    assert [c.tag for c in vs][:2] == [OVF + "Info", OVF + "Name"]
    ids = []
    hw = vs.find("ovf:VirtualHardwareSection", NS)
    system = hw.find("ovf:System", NS)
    names = [lxml_etree.QName(c).localname for c in system]
    assert names == sorted(names) and all(c.tag.startswith("{%s}" % NS["vssd"]) for c in system)
    for item in hw.iterfind("ovf:Item", NS):
        names = [lxml_etree.QName(c).localname for c in item]
        assert names == sorted(names), names
        assert all(c.tag.startswith("{%s}" % NS["rasd"]) for c in item)
        assert {"ElementName", "InstanceID", "ResourceType"} <= set(names)
        ids.append(item.findtext("rasd:InstanceID", namespaces=NS))
    assert len(ids) == len(set(ids))


DMTF_SCHEMAS = Path(__file__).parent / "data" / "dmtf-ovf"


def _dmtf_schema() -> Path | None:
    directory = os.environ.get("APBUILD_OVF_SCHEMAS") or DMTF_SCHEMAS
    found = sorted(Path(directory).rglob("dsp8023_1.*.xsd"))
    return found[-1] if found else None


def test_ovf_validates_against_the_dmtf_schema(built_ova):
    schema_file = _dmtf_schema()
    if schema_file is None:
        pytest.skip("the DMTF OVF schema (DSP8023 1.x + CIM RASD/VSSD) is in no package this "
                    "machine can install; set APBUILD_OVF_SCHEMAS to a directory holding it "
                    "(see this file's docstring for where we looked)")
    local = {p.name: p for p in schema_file.parent.rglob("*.xsd")}

    class Local(lxml_etree.Resolver):
        """The schema imports the CIM schemas by their dmtf.org URLs: use the local copies."""

        def resolve(self, url, pubid, context):
            name = url.rsplit("/", 1)[-1]
            return self.resolve_filename(str(local[name]), context) if name in local else None

    parser = lxml_etree.XMLParser(no_network=True)
    parser.resolvers.add(Local())
    schema = lxml_etree.XMLSchema(lxml_etree.parse(str(schema_file), parser))
    doc = lxml_etree.fromstring(members(built_ova)["app-platform-x86_64.ovf"])
    assert schema.validate(doc), schema.error_log


@pytest.mark.parametrize("old,new,key,words", [
    ('formats = ["qcow2", "ova", "vhdx"]', 'formats = ["qcow2", "ovf"]', "image.formats", "qcow2, ova, vhdx"),
    ('arch = "amd64"', 'arch = "arm64"', "image.formats", "ova is made for an amd64 virtual machine"),
    ('raw_size = "disk"', 'raw_size = "content"', "image.formats", "whose raw image is the whole disk"),
])
def test_bad_ova_setting_names_file_and_key(tmp_path, old, new, key, words):
    from apbuild.config import find_root
    from apbuild.errors import ConfigError
    from apbuild.machines import load_machine

    text = (find_root() / "machines" / "x86_64-vm.toml").read_text()
    assert old in text
    path = tmp_path / "x86_64-vm.toml"
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_machine(path)
    assert (err.value.file, err.value.key) == (path, key)
    assert words in str(err.value) and str(path) in str(err.value)


def test_a_stale_tail_after_the_descriptor_changes_nothing(tmp_path):
    """qemu-img writes the descriptor twice; when the second (its random CID is "%x", 6 or 7
    digits now and then) is the shorter, the first's last byte stays after the NUL: seen in
    two builds' OVAs that differed by that one byte. The VMDK must not depend on it."""
    import struct

    raw = fixture_disk(tmp_path)
    clean, stale = tmp_path / "clean.vmdk", tmp_path / "stale.vmdk"
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, clean])
    data = bytearray(clean.read_bytes())
    offset = struct.unpack_from("<QQ", data, 28)[0] * 512
    end = data.index(b"\0", offset)
    # This conversion's own CID may have been the short one (a stale byte already): the
    # clean copy gets NULs after the descriptor, the stale one "...\n\0\n", as the two
    # builds' showed.
    data[end + 1:end + 3] = b"\0\0"
    clean.write_bytes(bytes(data))
    data[end + 1] = ord("\n")
    stale.write_bytes(bytes(data))
    for vmdk in (clean, stale):
        ova.set_cid(vmdk, 0x12345678)
    assert stale.read_bytes() == clean.read_bytes()
    assert b"\nCID=12345678\n" in clean.read_bytes()[offset:offset + 1024]
