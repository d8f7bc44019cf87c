"""The board a build reads: a product composed onto a machine (machines.py), every key the
pipeline, the templates and QEMU use, and the definitions' shared checks."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .schema import one_of, setting

ARCHES = ("amd64", "arm64", "armel", "armhf")
# What each way of booting needs from Debian: GRUB's i386-pc modules come from the
# lockfile like everything else, so the boot code is pinned too.
BOOTLOADER_PACKAGES = {"grub-bios": ("grub-pc-bin",), "gateway": ()}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _name(value: str) -> str | None:
    return None if _NAME.match(value) else f"{value!r} is not a name (lower-case letters, digits, '-', '_', '.')"


def _abs_glob(value: str) -> str | None:
    if not value.startswith("/") or "/../" in value + "/":
        return f"{value!r} must be an absolute path inside the image (no '..')"
    return None


def _sha256(value: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-f]{64}", value) else f"{value!r} is not a SHA-256 (64 hex digits)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Kernel:
    package: str = setting("Debian package that provides the kernel and its modules")
    arch: str = setting("Debian architecture of the kernel package ('' = the board's): the "
                        "armhf armmp kernel runs an armel userspace", default="",
                        check=lambda v: None if v == "" else one_of(*ARCHES)(v))
    image: str = setting("glob of the kernel image inside that package", check=_abs_glob)
    compress: str = setting("'gzip' to compress an uncompressed kernel image (arm64 Image) "
                            "for sda1; '' to copy it as it is", default="", check=one_of("", "gzip"))
    file: str = setting("a vendor kernel image for real hardware, as a local file (relative to "
                        "the board file); it replaces the package's image in sda1", default="")
    sha256: str = setting("SHA-256 of `file`: a build refuses any other content", default="",
                          check=lambda v: None if v == "" else _sha256(v))
    cmdline: str = setting("kernel arguments common to every boot entry", default="")
    ramdisk_format: str = setting("'initramfs' (Debian kernels) or 'ext2' (RAM disk built in)",
                                  default="initramfs", check=one_of("initramfs", "ext2"))
    ramdisk_compression: str = setting(
        "how the initramfs on sda1 is packed: 'xz' (ramdisk.cpio.xz, the smallest) or 'zstd' "
        "(ramdisk.cpio.zst, which the kernel unpacks faster at every boot; needs CONFIG_RD_ZSTD). "
        "A gateway's is xz: its admin types ramdisk.ext2.xz", default="xz", check=one_of("xz", "zstd"))
    boot_modules: tuple[str, ...] = setting(
        "modules the ramdisk loads to reach the disk and its filesystems", default=())
    modules: tuple[str, ...] = setting(
        "modules the running system may load with modprobe (network cards ...)", default=())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Qemu:
    binary: str = setting("QEMU system emulator", check=one_of(
        "qemu-system-x86_64", "qemu-system-aarch64", "qemu-system-arm"))
    machine: str = setting("-M value")
    cpu: str = setting("-cpu value", default="")
    tcg_thread: str = setting(
        "how TCG (emulation) runs a board of several CPUs: 'multi', a host thread per CPU "
        "(QEMU's default), or 'single', its CPUs in turn on one thread", default="multi",
        check=one_of("multi", "single"))
    disk: str = setting("how the disk is attached",
                        default="virtio-scsi", check=one_of("virtio-scsi", "ide", "ahci", "virtio-blk",
                                                            "lsi53c895a", "pvscsi"))
    nic: str = setting("network card model", default="virtio-net-pci")
    console: str = setting("guest serial console device", default="ttyS0")
    extra: tuple[str, ...] = setting("extra QEMU arguments", default=())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outputs:
    """The files a build publishes: named after the image, made as the machine's image says."""

    raw: str = ""            # the raw disk or installation image
    raw_size: str = "disk"   # 'disk': the whole disk (sparse); 'content': it ends with sda1
    qcow2: str = ""          # '' for none, likewise below
    ova: str = ""
    vhdx: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Board:
    """A product on a machine (machines.compose): everything the pipeline, the templates and
    QEMU read. Its values were checked where they were written, in the machine's and the
    product's files."""

    name: str                   # the board (or PRODUCT@MACHINE)
    description: str
    arch: str                   # the machine's
    storage: str
    ram_mb: int
    cpus: int
    disk_size: str
    layout: str                 # the product's layout for the machine's bootloader
    bootloader: str
    recipes: tuple[str, ...]    # the product's, then the machine's
    title: str                  # the product's name as its users read it
    image_name: str             # the product's image name: the hostname, the first part of platform
    image_version: str
    rootfs_compression: str     # the product's: "xz" (rootfs.tar.xz) or "zstd" (rootfs.tar.zst)
    rootfs_xz: int              # the product's xz preset for rootfs.tar.xz
    platform: str               # the image's name: IMAGE_NAME-IMAGE_ARCH
    kernel: Kernel
    qemu: Qemu
    outputs: Outputs = Outputs()
    path: Path = dataclasses.field(default=Path(), compare=False)

    @property
    def lockfile(self) -> Path:
        return self.path.with_suffix(".lock")

    @property
    def kernel_arch(self) -> str:
        return self.kernel.arch or self.arch

    @property
    def kernel_request(self) -> str:
        """The kernel package as apt is asked for it (name:arch when foreign)."""
        k = self.kernel
        return k.package if self.kernel_arch == self.arch else f"{k.package}:{self.kernel_arch}"

    @property
    def boot_files(self) -> dict[str, str]:
        """Names of the files on sda1, shared by the build, the templates and the loader."""
        # A gateway's admin types "ramdisk.ext2.xz" into the gateway's Initrd field (the
        # manual), whatever the board's kernel takes: the kernel tells an initramfs (cpio)
        # from an ext2 RAM disk by its content, not by its name.
        ramdisk = ("ramdisk.ext2.xz" if self.kernel.ramdisk_format == "ext2" or self.bootloader == "gateway"
                   else "ramdisk.cpio.zst" if self.kernel.ramdisk_compression == "zstd" else "ramdisk.cpio.xz")
        rootfs = "rootfs.tar.zst" if self.rootfs_compression == "zstd" else "rootfs.tar.xz"
        return {"kernel": "vmlinuz", "ramdisk": ramdisk, "rootfs": rootfs, "label": "label",
                "sums": "SHA256SUMS", "pending": "pending", "mode": "bootmode"}

    def image_settings(self) -> dict:
        """What shapes the image, and nothing about the machine it runs on (name, RAM,
        storage, QEMU): two boards with equal settings share every stage and output."""
        data = dataclasses.asdict(self)
        for key in MACHINE_ONLY:
            data.pop(key)
        if self.outputs.raw_size == "content":  # an installation image fits any disk size
            data.pop("disk_size")
        return data


# The board's keys about the machine, not the image: boards that differ only in these share
# every stage, so nothing that goes into an image may read them.
MACHINE_ONLY = ("name", "description", "storage", "ram_mb", "cpus", "qemu", "path")


