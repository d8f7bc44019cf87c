"""Machines, products and the targets that pair them (Buildroot's defconfigs, Yocto's
MACHINE x image, mkosi's profiles).

A machine (machines/NAME.toml) is hardware: arch, kernel, storage, RAM, CPUs, the disk it
boots from, QEMU's emulation, the bootloader, the kind of image it takes. A product
(products/NAME.toml) is what runs on it: recipes, layout, image name and version. A target
is a product on a machine: a named one is boards/NAME.toml (`./build.py x86_64-vm`), and any
compatible pairing builds as PRODUCT@MACHINE (`./build.py app-platform@ipx13`). Both become
the one `Board` the pipeline reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .board import ARCHES, Board, Kernel, Outputs, Qemu, _name
from .cache import sha256_file
from .errors import ConfigError, ConfigErrors
from .schema import load, load_layers, one_of, positive, read_toml, setting, size_check

FORMATS = ("qcow2", "ova", "vhdx")
ROOTFS_COMPRESSIONS = ("xz", "zstd")
SEPARATOR = "@"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MachineImage:
    raw_size: str = setting("'disk': the raw image is the whole disk (disk_size, sparse), a VM's; "
                            "'content': it ends with sda1, an installation image for a card or disk",
                            default="disk", check=one_of("disk", "content"))
    formats: tuple[str, ...] = setting("virtual machine formats made beside the raw image: "
                                       + ", ".join(FORMATS), default=(), check=one_of(*FORMATS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Machine:
    name: str = setting("machine name", check=_name)
    description: str = setting("one line for humans")
    arch: str = setting("Debian architecture of the userspace", check=one_of(*ARCHES))
    storage: str = setting("the device's storage, for humans (CF card, mSATA SSD ...)")
    ram_mb: int = setting("RAM in MB (also what QEMU gives the guest)", check=positive)
    cpus: int = setting("CPU count", default=1, check=positive)
    disk_size: str = setting("size of the disk the image is made for (virtual size)", check=size_check)
    bootloader: str = setting("how the machine boots", check=one_of("grub-bios", "gateway"))
    image_arch: str = setting("the machine's part of image names (app-platform-x86_64): machines "
                              "that take the same image share it", check=_name)
    recipes: tuple[str, ...] = setting("recipes the hardware needs (guest agents, firmware), "
                                       "applied after the product's", default=(), check=_name)
    kernel: Kernel = setting("the kernel")
    qemu: Qemu = setting("how QEMU emulates the machine")
    image: MachineImage = setting("the kind of image the machine takes", default=MachineImage())
    path: Path = dataclasses.field(default=Path(), compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Product:
    description: str = setting("one line for humans")
    title: str = setting("the product's name as its users read it: GRUB's entries, the rescue "
                         "system's greeting, the SBOM, messages on the device",
                         check=lambda v: None if v.strip() else "an empty title")
    recipes: tuple[str, ...] = setting("recipes under recipes/, applied in order", check=_name)
    image_name: str = setting("the first part of image names (app-platform): the image is "
                              "IMAGE_NAME-IMAGE_ARCH, its hostname and the seed of its fixed ids",
                              check=_name)
    image_version: str = setting("the image version written to sda1's label (e.g. 140001)",
                                 check=lambda v: None if v.isdigit() else f"{v!r} must be digits")
    layouts: dict = setting("bootloader -> partition layout under partitions/; a machine whose "
                            "bootloader is not listed cannot run the product")
    arches: tuple[str, ...] = setting("the architectures the product runs on (all if empty)",
                                      default=(), check=one_of(*ARCHES))
    rootfs_compression: str = setting("how rootfs.tar on sda1 is packed: 'xz' (rootfs.tar.xz, "
                                      "smallest) or 'zstd' (rootfs.tar.zst: unpacks in seconds "
                                      "where xz takes minutes; needs the zstd recipe)",
                                      default="xz", check=one_of(*ROOTFS_COMPRESSIONS))
    rootfs_xz: int = setting("the xz preset (0-9) of rootfs.tar.xz: 9 packs smallest; a large "
                             "product may pick a lower one to build faster", default=9,
                             check=lambda v: None if type(v) is int and 0 <= v <= 9
                             else f"{v!r} is not an xz preset; use a whole number from 0 to 9")
    name: str = dataclasses.field(default="", compare=False)
    path: Path = dataclasses.field(default=Path(), compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    product: str = setting("the product: a name under products/", check=_name)
    machine: str = setting("the machine: a name under machines/", check=_name)
    description: str = setting("one line for humans (default: the product's and the machine's)",
                               default="")


def _layers(path: Path) -> list[tuple[Path, dict]]:
    """A machine file after the shared base it names with `include` (machines/common/NAME.toml):
    machines that differ in a few keys write only those."""
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


def load_machine(path: Path) -> Machine:
    machine = load_layers(Machine, _layers(path))
    errors: list[ConfigError] = []
    if machine.name != path.stem:
        errors.append(ConfigError(path, "name", f"{machine.name!r} must match the file name {path.stem!r}"))
    # The OVA's descriptor says 64-bit x86 Debian on a disk of disk_size; a VHDX is the VM's
    # whole disk for Hyper-V, which runs x86 guests only.
    for fmt in ("ova", "vhdx"):
        if fmt in machine.image.formats and (machine.arch != "amd64" or machine.image.raw_size != "disk"):
            errors.append(ConfigError(path, "image.formats", f"{fmt} is made for an amd64 virtual machine "
                                      "whose raw image is the whole disk (arch = 'amd64', image.raw_size = 'disk')"))
    k = machine.kernel
    # The manual has a gateway's admin type "ramdisk.ext2.xz" into the Initrd field: xz only.
    if k.ramdisk_compression != "xz" and (machine.bootloader == "gateway" or k.ramdisk_format == "ext2"):
        errors.append(ConfigError(path, "kernel.ramdisk_compression", f"{k.ramdisk_compression!r} is for "
                                  "an initramfs that GRUB loads; a gateway's ramdisk (and an ext2 RAM disk) "
                                  "is ramdisk.ext2.xz, packed with 'xz'"))
    if bool(k.file) != bool(k.sha256):
        errors.append(ConfigError(path, "kernel.sha256" if k.file else "kernel.file",
                                  "a vendor kernel needs both kernel.file and kernel.sha256"))
    elif k.file:
        vendor = (path.parent / k.file).resolve()
        if not vendor.is_file():
            errors.append(ConfigError(path, "kernel.file", f"{vendor} does not exist"))
        elif (found := sha256_file(vendor)) != k.sha256:
            errors.append(ConfigError(path, "kernel.sha256", f"{vendor} has SHA-256 {found}, "
                                      f"not the {k.sha256} the machine names; refused"))
    if errors:
        raise ConfigErrors.of(errors)
    # A vendor kernel's path is kept relative to the machine file (the build reads it there).
    if k.file:
        machine = dataclasses.replace(machine, kernel=dataclasses.replace(k, file=str((path.parent / k.file).resolve())))
    return dataclasses.replace(machine, path=path)


def load_product(path: Path) -> Product:
    table = read_toml(path)
    product = load(Product, table, path)
    errors = [ConfigError(path, f"layouts.{key}", f"unknown bootloader; allowed: grub-bios, gateway")
              for key in product.layouts if key not in ("grub-bios", "gateway")]
    if product.rootfs_compression == "zstd" and "zstd" not in product.recipes:
        errors.append(ConfigError(path, "rootfs_compression", "'zstd' needs the recipe 'zstd' in "
                                  "recipes: the rescue ramdisk unpacks rootfs.tar.zst with it"))
    # An xz preset beside zstd would be silently ignored: the file must still say what is built.
    if "rootfs_xz" in table and product.rootfs_compression != "xz":
        errors.append(ConfigError(path, "rootfs_xz", f"an xz preset, but rootfs_compression is "
                                  f"{product.rootfs_compression!r}: drop rootfs_xz or pack with xz"))
    errors += [ConfigError(path, f"layouts.{key}", f"{value!r} is not a layout name")
               for key, value in product.layouts.items() if not isinstance(value, str) or _name(value)]
    if errors:
        raise ConfigErrors.of(errors)
    return dataclasses.replace(product, name=path.stem, path=path)


def _definition(root: Path, kind: str, name: str, where: Path, key: str) -> Path:
    path = root / kind / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (root / kind).glob("*.toml"))) or "none"
        raise ConfigError(where, key, f"no {kind[:-1]} named {name!r}; {kind}: {known}")
    return path


def compose(product: Product, machine: Machine, name: str, path: Path, description: str = "") -> Board:
    """The board of a product on a machine; an incompatible pairing names the product's key."""
    if product.arches and machine.arch not in product.arches:
        raise ConfigError(product.path, "arches", f"{product.name} runs on {', '.join(product.arches)}, "
                          f"not on machine {machine.name} ({machine.arch}, {machine.path})")
    if machine.bootloader not in product.layouts:
        raise ConfigError(product.path, "layouts", f"no layout for bootloader {machine.bootloader!r} "
                          f"of machine {machine.name} ({machine.path}); {product.name} has: "
                          f"{', '.join(sorted(product.layouts)) or 'none'}")
    platform = f"{product.image_name}-{machine.image_arch}"
    formats = machine.image.formats
    outputs = Outputs(raw=f"{platform}.img", raw_size=machine.image.raw_size,
                      **{fmt: f"{platform}.{fmt}" if fmt in formats else "" for fmt in FORMATS})
    return Board(name=name, description=description or f"{product.description}, on {machine.description}",
                 arch=machine.arch, storage=machine.storage, ram_mb=machine.ram_mb, cpus=machine.cpus,
                 disk_size=machine.disk_size, layout=product.layouts[machine.bootloader],
                 bootloader=machine.bootloader, recipes=product.recipes + machine.recipes,
                 title=product.title, image_name=product.image_name, image_version=product.image_version,
                 rootfs_compression=product.rootfs_compression, rootfs_xz=product.rootfs_xz,
                 platform=platform, kernel=machine.kernel,
                 qemu=machine.qemu, outputs=outputs, path=path)


def load_board(path: Path) -> Board:
    """A named target (boards/NAME.toml), or PRODUCT@MACHINE given as boards/PRODUCT@MACHINE.toml
    (which need not exist: its lockfile lives there)."""
    root = path.parent.parent
    if SEPARATOR in path.stem and not path.exists():
        product_name, _, machine_name = path.stem.partition(SEPARATOR)
        target = Target(product=product_name, machine=machine_name)
    else:
        target = load(Target, read_toml(path), path)
    product = load_product(_definition(root, "products", target.product, path, "product"))
    machine = load_machine(_definition(root, "machines", target.machine, path, "machine"))
    return compose(product, machine, path.stem, path, target.description)


def named_boards(root: Path) -> dict[tuple[str, str], Path]:
    """(product, machine) -> the board file that names that pairing."""
    out = {}
    for path in sorted((root / "boards").glob("*.toml")):
        table = read_toml(path)
        if isinstance(table.get("product"), str) and isinstance(table.get("machine"), str):
            out.setdefault((table["product"], table["machine"]), path)
    return out


def target_path(root: Path, name: str) -> Path:
    """The file of PRODUCT@MACHINE: the board that names the pairing (its lockfile is that
    board's), else boards/PRODUCT@MACHINE.toml, which need not exist."""
    product, _, machine = name.partition(SEPARATOR)
    return named_boards(root).get((product, machine), root / "boards" / f"{name}.toml")


def pairings(root: Path) -> list[tuple[str, str]]:
    """(PRODUCT@MACHINE, description) for every compatible pairing that no board names."""
    named = named_boards(root)
    out = []
    for p in sorted((root / "products").glob("*.toml")):
        product = load_product(p)
        for m in sorted((root / "machines").glob("*.toml")):
            if (p.stem, m.stem) in named:
                continue
            machine = load_machine(m)
            try:
                board = compose(product, machine, f"{p.stem}{SEPARATOR}{m.stem}", root / "boards")
            except ConfigError:
                continue
            out.append((board.name, board.description))
    return out
