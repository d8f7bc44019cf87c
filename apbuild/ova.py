"""The VM as an OVA: OVF descriptor, streamOptimized VMDK and SHA-256 manifest in one tar.

What VMware, VirtualBox and Proxmox import: an OVF 1.0 envelope (DSP8023) describing one
virtual system (CPUs, RAM, an LSI Logic SCSI controller with the disk, one E1000 NIC), the
disk as a streamOptimized VMDK, and a `.mf` file with `SHA256(name)= hex` lines. The OVF
must be the tar's first member (importers stream the archive), the manifest comes last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import struct
import tarfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .cache import sha256_file
from .errors import ApbuildError
from .files import data_blocks, replacing, tar_member
from .run import run

VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
GRAIN = 64 * 1024  # a streamOptimized VMDK stores the disk in 64 KiB grains


@dataclasses.dataclass(frozen=True)
class VirtualMachine:
    """What the OVF says about the machine: from the board file."""

    name: str            # the platform: VirtualSystem id and file name stem
    description: str
    version: str         # the image version (label)
    cpus: int
    ram_mb: int
    capacity: int        # virtual disk size in bytes


@dataclasses.dataclass(frozen=True)
class DiskFile:
    href: str            # member name in the OVA
    size: int            # bytes of the VMDK file
    populated: int       # bytes of the virtual disk that hold data


def _attrs(**values: object) -> str:
    # ovf_ and friends: keyword arguments can't carry a colon.
    return " ".join(f"{k.replace('_', ':', 1)}={quoteattr(str(v))}" for k, v in values.items())


def _item(instance: int, resource_type: int, name: str, description: str, **rasd: str) -> str:
    """One RASD item; the CIM schema is an xs:sequence in alphabetical order, so the
    elements are sorted by name (ovftool and the DMTF schema both reject any other order)."""
    fields = {"Description": description, "ElementName": name, "InstanceID": str(instance),
              "ResourceType": str(resource_type), **rasd}
    body = "".join(f"        <rasd:{k}>{escape(v)}</rasd:{k}>\n" for k, v in sorted(fields.items()))
    return f"      <Item>\n{body}      </Item>\n"


def ovf_descriptor(vm: VirtualMachine, disk: DiskFile) -> bytes:
    """The OVF 1.0 envelope for one VM with one disk and one NIC."""
    network = "VM Network"  # the name VMware gives its default port group
    items = (
        _item(1, 3, f"{vm.cpus} virtual CPU(s)", "Number of virtual CPUs",
              AllocationUnits="hertz * 10^6", VirtualQuantity=str(vm.cpus))
        + _item(2, 4, f"{vm.ram_mb} MB of memory", "Memory size",
                AllocationUnits="byte * 2^20", VirtualQuantity=str(vm.ram_mb))
        # LSI Logic SCSI: every importer knows it and the image loads mptspi at boot.
        + _item(3, 6, "SCSI controller 0", "SCSI controller", Address="0", ResourceSubType="lsilogic")
        + _item(4, 17, "Hard disk 1", "Disk", AddressOnParent="0",
                HostResource="ovf:/disk/vmdisk1", Parent="3")
        + _item(5, 10, "Network adapter 1", f"E1000 ethernet adapter on {network}",
                AddressOnParent="7", AutomaticAllocation="true", Connection=network,
                ResourceSubType="E1000")
    )
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File {_attrs(ovf_href=disk.href, ovf_id="file1", ovf_size=disk.size)}/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk {_attrs(ovf_capacity=vm.capacity, ovf_capacityAllocationUnits="byte", ovf_diskId="vmdisk1",
                  ovf_fileRef="file1", ovf_format=VMDK_FORMAT, ovf_populatedSize=disk.populated)}/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network {_attrs(ovf_name=network)}>
      <Description>The network the appliance is connected to</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem {_attrs(ovf_id=vm.name)}>
    <Info>A virtual machine</Info>
    <Name>{escape(vm.name)}</Name>
    <ProductSection>
      <Info>The appliance</Info>
      <Product>{escape(vm.description)}</Product>
      <Version>{escape(vm.version)}</Version>
    </ProductSection>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian GNU/Linux 12 (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(vm.name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-10</vssd:VirtualSystemType>
      </System>
{items.rstrip()}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
    return text.encode()


def populated_size(raw: Path) -> int:
    """Bytes in 64 KiB grains of the raw disk that are not all zero: what the VMDK holds.
    Holes are skipped with SEEK_DATA, so a sparse 16 GiB disk reads only its data."""
    with open(raw, "rb") as f:
        total = sum(GRAIN for _, data in data_blocks(f, GRAIN) if data.rstrip(b"\0"))
    return min(total, raw.stat().st_size)


def to_vmdk(raw: Path, out: Path, cid: int) -> Path:
    """streamOptimized VMDK, the same bytes for the same disk and cid. qemu-img also writes
    the output's file name into the descriptor: convert straight to the final member name."""
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk",
         "-o", "subformat=streamOptimized,adapter_type=lsilogic", raw, out])
    set_cid(out, cid)
    return out


def set_cid(vmdk: Path, cid: int) -> None:
    """Rewrite the embedded descriptor with a CID (content id) derived from the content.
    qemu-img writes a random one, unpadded ("%x": 6 or 7 digits now and then), and has no
    option for it. It writes the descriptor twice, and when the second is the shorter, the
    first's last bytes stay after the second's NUL, a stray newline (seen once in 40
    conversions of the VM's disk; it made two builds' OVAs differ). The descriptor is a C
    string: its text up to the first NUL is kept, the rest of its fixed-size region zeroed."""
    with open(vmdk, "r+b") as f:
        header = f.read(512)
        # SparseExtentHeader: magic "KDMV", then descriptorOffset/descriptorSize (sectors).
        offset, size = struct.unpack_from("<QQ", header, 28)
        if header[:4] != b"KDMV" or not offset or not size:
            raise ApbuildError(f"{vmdk}: qemu-img wrote no VMDK descriptor; cannot make it reproducible")
        f.seek(offset * 512)
        region = f.read(size * 512)
        text, count = re.subn(rb"\nCID=[0-9a-f]{1,8}\n", b"\nCID=%08x\n" % (cid & 0xFFFFFFFE),
                              region.split(b"\0", 1)[0], count=1)  # 0xffffffff means "none"
        if count != 1 or len(text) > len(region):
            raise ApbuildError(f"{vmdk}: no CID line in the VMDK descriptor qemu-img wrote; "
                               f"cannot make it reproducible")
        f.seek(offset * 512)
        f.write(text.ljust(len(region), b"\0"))


def make_ova(raw: Path, work: Path, vm: VirtualMachine, ova_name: str, epoch: int, seed: str) -> Path:
    """Write work/<ova_name>. seed identifies the raw disk's content (its fingerprint):
    the VMDK's CID comes from it, as VMware changes the CID whenever the content changes."""
    stem = Path(ova_name).stem
    ovf_name, vmdk_name, mf_name = f"{stem}.ovf", f"{stem}-disk1.vmdk", f"{stem}.mf"
    members = work / "members"
    members.mkdir()
    cid = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big")
    vmdk = to_vmdk(raw, members / vmdk_name, cid)
    disk = DiskFile(vmdk_name, vmdk.stat().st_size, populated_size(raw))
    (members / ovf_name).write_bytes(ovf_descriptor(vm, disk))
    manifest = "".join(f"SHA256({n})= {sha256_file(members / n)}\n" for n in (ovf_name, vmdk_name))
    (members / mf_name).write_text(manifest)
    out = work / ova_name
    with replacing(out) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in (ovf_name, vmdk_name, mf_name):  # the order importers expect
            with open(members / name, "rb") as f:
                tar.addfile(tar_member(name, epoch, size=os.fstat(f.fileno()).st_size), f)
    shutil.rmtree(members)
    return out
