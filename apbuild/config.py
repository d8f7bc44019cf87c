"""Boards, partition layouts and recipes: the typed, validated definitions a build reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .cache import sha256_file
from .errors import ConfigError, ConfigErrors
from .schema import load, load_layers, one_of, parse_size, positive, read_toml, setting, size_check

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


# -- partition layouts --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Partition:
    number: int = setting("partition number: 1 is /dev/sda1", check=positive)
    name: str = setting("what it holds (boot, data, rootfs, swap)", check=_name)
    filesystem: str = setting("filesystem", check=one_of("ext2", "ext4", "fat32", "swap"))
    size: str = setting("maximum size (350M, 500M) or 'rest' for the rest of the disk",
                        check=lambda v: None if v == "rest" else size_check(v))
    mount: str = setting("where the running system mounts it ('' for none)", default="")
    made_by: str = setting("'build' (in the installation image) or 'installer' (on the device)",
                           default="installer", check=one_of("build", "installer"))

    @property
    def size_bytes(self) -> int | None:
        return None if self.size == "rest" else parse_size(self.size)

    @property
    def mbr_type(self) -> str:
        return {"fat32": "c", "swap": "82"}.get(self.filesystem, "83")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    name: str = setting("layout name", check=_name)
    description: str = setting("one line for humans", default="")
    alignment: str = setting("start of the first partition and alignment of every one",
                             default="1M", check=size_check)
    partitions: tuple[Partition, ...] = setting("partitions in physical order on the disk")
    path: Path = dataclasses.field(default=Path(), compare=False)

    def partition(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(name)


def load_layout(path: Path) -> Layout:
    layout = load(Layout, read_toml(path), path)
    numbers = [p.number for p in layout.partitions]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(path, "partitions", f"partition numbers repeat: {numbers}")
    if not 1 <= len(numbers) <= 4 or max(numbers) > 4:
        raise ConfigError(path, "partitions", "an MBR table holds partitions 1 to 4")
    rest = [p for p in layout.partitions if p.size == "rest"]
    if len(rest) > 1 or (rest and rest[0] is not layout.partitions[-1]):
        raise ConfigError(path, "partitions", "only the physically last partition may be size = 'rest'")
    boot = [p for p in layout.partitions if p.made_by == "build"]
    if len(boot) != 1 or boot[0] is not layout.partitions[0]:
        raise ConfigError(path, "partitions", "exactly one partition, the first, has made_by = 'build'")
    return dataclasses.replace(layout, path=path)


# -- recipes --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class User:
    name: str = setting("login name", check=_name)
    uid: int = setting("numeric user id")
    gid: int = setting("numeric primary group id")
    home: str = setting("home directory", check=_abs_glob)
    shell: str = setting("login shell", default="/bin/sh")
    password: str = setting("default password (stored as a SHA-512 crypt hash); '' locks it",
                            default="")
    groups: tuple[str, ...] = setting("extra groups", default=())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Group:
    name: str = setting("group name", check=_name)
    gid: int = setting("numeric group id")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selection:
    """What a recipe puts into one image (the rootfs or the rescue ramdisk)."""

    keep: tuple[str, ...] = setting("globs of package files to keep ('**' crosses directories)",
                                    default=(), check=_abs_glob)
    drop: tuple[str, ...] = setting("globs removed after keep (and after the ELF closure)",
                                    default=(), check=_abs_glob)
    modules: tuple[str, ...] = setting("kernel modules to include, with their dependencies",
                                       default=())
    modes: dict = setting("path -> 'MODE UID:GID' for overlay files, e.g. '0600 0:0'",
                          default_factory=dict)
    dirs: tuple[str, ...] = setting("empty directories to create (mode 0755, or as in modes)",
                                    default=(), check=_abs_glob)
    links: dict = setting("symlinks to create: path -> target", default_factory=dict)
    busybox: str = setting("a busybox binary whose applets get links in /usr/bin and /usr/sbin "
                           "(where no package file has the name)", default="")
    login_shell: str = setting("every user's login shell in this image instead of their own "
                               "(a rescue ramdisk without their shell)", default="",
                               check=lambda v: _abs_glob(v) if v else None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    description: str = setting("one line for humans")
    packages: tuple[str, ...] = setting("Debian binary packages to install", default=())
    exclude_packages: tuple[str, ...] = setting(
        "dependencies not to download (their files are never needed)", default=())
    common: Selection = setting("what goes into both the root filesystem and the ramdisk "
                                "(added to each one's own selection, which wins on a clash)",
                                default=Selection())
    rootfs: Selection = setting("what goes into the root filesystem", default=Selection())
    ramdisk: Selection = setting("what goes into the rescue/installer ramdisk",
                                 default=Selection())
    users: tuple[User, ...] = setting("users this recipe adds", default=())
    groups: tuple[Group, ...] = setting("groups this recipe adds", default=())
    name: str = dataclasses.field(default="", compare=False)
    path: Path = dataclasses.field(default=Path(), compare=False)

    def overlay(self, image: str) -> Path:
        """recipes/<name>/<image>/: files and *.j2 templates copied into that image."""
        return self.path.parent / self.name / image


def _with_common(common: Selection, own: Selection) -> Selection:
    """One image's selection with the recipe's common one added: lists joined (common
    first, no repeats), tables merged (own wins), a value own leaves empty taken from common."""
    values = {}
    for f in dataclasses.fields(Selection):
        a, b = getattr(common, f.name), getattr(own, f.name)
        if isinstance(a, tuple):
            values[f.name] = tuple(dict.fromkeys(a + b))
        elif isinstance(a, dict):
            values[f.name] = {**a, **b}
        else:
            values[f.name] = b or a
    return Selection(**values)


def load_recipe(path: Path) -> Recipe:
    recipe = load(Recipe, read_toml(path), path)
    errors = [ConfigError(path, f"{image}.modes.{target}", f"{spec!r} is not 'MODE UID:GID' (e.g. '0600 0:0')")
              for image in ("common", "rootfs", "ramdisk")
              for target, spec in getattr(recipe, image).modes.items()
              if not re.fullmatch(r"[0-7]{3,4} \d+:\d+", str(spec))]
    if errors:
        raise ConfigErrors.of(errors)
    return dataclasses.replace(recipe, name=path.stem, path=path,
                               rootfs=_with_common(recipe.common, recipe.rootfs),
                               ramdisk=_with_common(recipe.common, recipe.ramdisk))


# -- boards ---------------------------------------------------------------------------------

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
    disk: str = setting("how the disk is attached",
                        default="virtio-scsi", check=one_of("virtio-scsi", "ide", "ahci", "virtio-blk",
                                                            "lsi53c895a", "pvscsi"))
    nic: str = setting("network card model", default="virtio-net-pci")
    console: str = setting("guest serial console device", default="ttyS0")
    extra: tuple[str, ...] = setting("extra QEMU arguments", default=())


def _file_name(suffix: str):
    """Check for an output's file name: plain (no directory) and ending in its format's suffix."""
    def check(value: str) -> str | None:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*" + re.escape(suffix), value):
            return f"{value!r} must be a plain file name ending in '{suffix}'"
        return None
    return check


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outputs:
    raw: str = setting("file name of the raw disk or installation image", default="")
    raw_size: str = setting("'disk': the raw image has the board's disk_size (sparse); "
                            "'content': it ends with sda1 (an installation image to write "
                            "onto a card or disk)", default="disk", check=one_of("disk", "content"))
    qcow2: str = setting("file name of the qcow2 image ('' for none)", default="")
    ova: str = setting("file name of the OVA (OVF descriptor + streamOptimized VMDK + SHA-256 "
                       "manifest) that VMware, VirtualBox and Proxmox import ('' for none)",
                       default="", check=_file_name(".ova"))
    vhdx: str = setting("file name of the VHDX (dynamic) that Hyper-V (a generation 1 VM: the "
                        "image boots by BIOS) and Azure Stack HCI attach ('' for none)",
                        default="", check=_file_name(".vhdx"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Board:
    name: str = setting("board name", check=_name)
    description: str = setting("one line for humans")
    arch: str = setting("Debian architecture of the userspace", check=one_of(*ARCHES))
    storage: str = setting("the device's storage, for humans (CF card, mSATA SSD ...)")
    ram_mb: int = setting("RAM in MB (also what QEMU gives the guest)", check=positive)
    cpus: int = setting("CPU count", default=1, check=positive)
    disk_size: str = setting("size of the disk the image is made for (virtual size)",
                             check=size_check)
    layout: str = setting("partition layout: a name under partitions/", check=_name)
    bootloader: str = setting("how the board boots", check=one_of("grub-bios", "gateway"))
    recipes: tuple[str, ...] = setting("recipes under recipes/, applied in order", check=_name)
    image_version: str = setting("the image version written to sda1's label (e.g. 140001)",
                                 check=lambda v: None if v.isdigit() else f"{v!r} must be digits")
    platform: str = setting("the image's name: boards with the same platform and image "
                            "settings share one image (ipx10 and ipx11 run the same armel "
                            "image); it is the hostname and seeds the image's fixed ids",
                            check=_name)
    kernel: Kernel = setting("the kernel")
    qemu: Qemu = setting("how QEMU emulates the board")
    outputs: Outputs = setting("output file names", default=Outputs())
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
                   else "ramdisk.cpio.xz")
        return {"kernel": "vmlinuz", "ramdisk": ramdisk, "rootfs": "rootfs.tar.xz", "label": "label",
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


def _board_layers(path: Path) -> list[tuple[Path, dict]]:
    """The board file, after the shared base it names with `include` (boards/common/NAME.toml,
    next to the board): boards that differ in a few keys write only those."""
    table = read_toml(path)
    if "include" not in table:
        return [(path, table)]
    name = table.pop("include")
    common = path.parent / "common"
    known = ", ".join(sorted(p.stem for p in common.glob("*.toml"))) or "none"
    if not isinstance(name, str) or _name(name) is not None:
        raise ConfigError(path, "include", f"{name!r} is not the name of a shared base; bases: {known}")
    base = common / f"{name}.toml"
    if not base.is_file():
        raise ConfigError(path, "include", f"no shared base {name!r} in {common}; bases: {known}")
    base_table = read_toml(base)
    if "include" in base_table:
        raise ConfigError(base, "include", "a shared base cannot include another; one level only")
    return [(base, base_table), (path, table)]


def load_board(path: Path) -> Board:
    board = load_layers(Board, _board_layers(path))
    errors: list[ConfigError] = []
    if board.name != path.stem:
        errors.append(ConfigError(path, "name", f"{board.name!r} must match the file name {path.stem!r}"))
    # The OVA's descriptor says 64-bit x86 Debian on a disk of disk_size; a VHDX is the VM's
    # whole disk for Hyper-V, which runs x86 guests only.
    for key, what in (("ova", "an OVA"), ("vhdx", "a VHDX")):
        if getattr(board.outputs, key) and (board.arch != "amd64" or board.outputs.raw_size != "disk"):
            errors.append(ConfigError(path, f"outputs.{key}", f"{what} is made for an amd64 virtual machine "
                                      "whose raw image is the whole disk (arch = 'amd64', outputs.raw_size = 'disk')"))
    k = board.kernel
    if bool(k.file) != bool(k.sha256):
        errors.append(ConfigError(path, "kernel.sha256" if k.file else "kernel.file",
                                  "a vendor kernel needs both kernel.file and kernel.sha256"))
    elif k.file:
        vendor = (path.parent / k.file).resolve()
        if not vendor.is_file():
            errors.append(ConfigError(path, "kernel.file", f"{vendor} does not exist"))
        elif (found := sha256_file(vendor)) != k.sha256:
            errors.append(ConfigError(path, "kernel.sha256", f"{vendor} has SHA-256 {found}, "
                                      f"not the {k.sha256} the board names; refused"))
    if errors:
        raise ConfigErrors.of(errors)
    return dataclasses.replace(board, path=path)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Project:
    """A board with everything it names, loaded and cross-checked."""

    board: Board
    layout: Layout
    recipes: tuple[Recipe, ...]
    root: Path

    @property
    def packages(self) -> tuple[str, ...]:
        names = dict.fromkeys(p for r in self.recipes for p in r.packages)
        names.setdefault(self.board.kernel_request)
        for package in BOOTLOADER_PACKAGES[self.board.bootloader]:
            names.setdefault(package)
        return tuple(names)

    @property
    def exclude_packages(self) -> tuple[str, ...]:
        return tuple(sorted({p for r in self.recipes for p in r.exclude_packages}))


def find_root() -> Path:
    """The project directory: where boards/ lives (the checkout this module belongs to)."""
    return Path(__file__).resolve().parent.parent


def board_path(root: Path, name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        return candidate
    path = root / "boards" / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(list_boards(root)) or "none"
        raise ConfigError(path, "", f"no board named {name_or_path!r}; boards: {known}")
    return path


def list_boards(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "boards").glob("*.toml"))


def load_project(root: Path, board_ref: str) -> Project:
    board = load_board(board_path(root, board_ref))
    layout_path = root / "partitions" / f"{board.layout}.toml"
    if not layout_path.exists():
        known = ", ".join(sorted(p.stem for p in (root / "partitions").glob("*.toml")))
        raise ConfigError(board.path, "layout", f"no layout {board.layout!r}; layouts: {known}")
    layout = load_layout(layout_path)
    recipes = []
    for i, name in enumerate(board.recipes):
        path = root / "recipes" / f"{name}.toml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in (root / "recipes").glob("*.toml")))
            raise ConfigError(board.path, f"recipes[{i}]", f"no recipe {name!r}; recipes: {known}")
        recipes.append(load_recipe(path))
    if parse_size(board.disk_size) < sum(p.size_bytes or 0 for p in layout.partitions):
        raise ConfigError(board.path, "disk_size",
                          f"{board.disk_size} is smaller than the layout {layout.name!r} needs")
    return Project(board=board, layout=layout, recipes=tuple(recipes), root=root)
