"""The stages that make sda1's payload: the kernel, the rescue ramdisk and the root
filesystem. Each image is two cached layers (packages, then configuration), each its own xz
(or, for a zstd product's rootfs, zstd) stream (tar and initramfs both accept
concatenation, and so do xz and zstd), so a changed template recompresses only the small
configuration layer."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

from . import bytecode, elfcheck, fsimage, kernel, log, rootfs
from .board import Kernel
from .config import Recipe
from .inputs import BuildInputs, TemplateContext
from .packages import Packages
from .files import replacing
from .run import PIPE, spawn
from .stage import Content, Runner
from .tree import Tree


@dataclasses.dataclass(frozen=True)
class SystemInputs:
    """The package layer of one image: what the recipes keep of the locked packages."""

    image: str                    # "rootfs" or "ramdisk"
    arch: str
    kernel: Kernel                # its module lists and image glob
    recipes: tuple[Recipe, ...]   # their selections
    packages: Packages
    epoch: int
    compression: str              # "xz" or "zstd" (the product's rootfs, the machine's ramdisk)
    xz: int                       # the xz preset of the layer (xz only)
    where: Path                   # the board, named in errors (not in the key)


@dataclasses.dataclass(frozen=True)
class ConfigInputs:
    """The configuration layer: users, overlays and rendered templates over the package layer."""

    system: SystemInputs
    overlays: tuple[tuple[str, Content], ...]   # (origin, directory) in the order they apply
    context: TemplateContext


@dataclasses.dataclass(frozen=True)
class JoinInputs:
    name: str
    system: Content
    config: Content


@dataclasses.dataclass(frozen=True)
class KernelImageInputs:
    compress: str
    image: str                    # the glob of the image in the kernel package
    vendor: Content | None        # the vendor's file (board kernel.file), else the package's
    packages: Packages | None     # the kernel package alone


def system_inputs(b: BuildInputs, image: str) -> SystemInputs:
    rootfs = image == "rootfs"
    return SystemInputs(image=image, arch=b.board.arch, kernel=b.board.kernel,
                        recipes=b.project.recipes, packages=b.packages, epoch=b.epoch,
                        # The ramdisk's own setting (the machine's kernel): xz -9 on the
                        # gateways, whose admin types its name; zstd where GRUB loads it.
                        compression=b.board.rootfs_compression if rootfs else b.board.kernel.ramdisk_compression,
                        xz=b.board.rootfs_xz if rootfs else 9, where=b.board.path)


def config_inputs(b: BuildInputs, image: str) -> ConfigInputs:
    overlays = b.overlays("common", image)
    if image == "rootfs":
        overlays += (("rootfs-overlay", b.global_overlay()),)
    return ConfigInputs(system=system_inputs(b, image), overlays=overlays, context=b.context())


def kernel_inputs(b: BuildInputs) -> KernelImageInputs:
    k = b.board.kernel
    if k.file:
        return KernelImageInputs(k.compress, k.image, Content(b.board.path.parent / k.file, k.sha256), None)
    name = f"linux-image-{b.context().kernel_version}"
    return KernelImageInputs(k.compress, k.image, None, b.packages.only(name))


# -- the stages ------------------------------------------------------------------------------

def system_tree(inp: SystemInputs) -> tuple[Tree, dict[str, list[str]]]:
    """The image's package layer, and the insmod orders of the ramdisk's modules: the
    disk drivers it loads at every boot ("boot_modules") and the running system's
    (NICs) that the rescue system loads as well ("rescue_modules")."""
    pool = inp.packages.pool()
    kinfo = inp.packages.kernel(inp.kernel.image)
    extra = tuple(m for r in inp.recipes for m in getattr(r, inp.image).modules)
    what = f"{inp.where}: kernel"
    k = inp.kernel
    if inp.image == "ramdisk":
        if inp.compression == "zstd":
            kernel.check_initramfs_zstd(pool, kinfo, f"{inp.where}: kernel.ramdisk_compression")
        boot = kernel.closure(pool, kinfo, k.boot_modules + extra, what)
        order = kernel.closure(pool, kinfo, k.boot_modules + extra + k.modules, what)
    else:
        order = boot = kernel.closure(pool, kinfo, k.modules + extra, what)
    tree = rootfs.system_layer(inp.recipes, inp.image, inp.arch, pool, kernel.module_tree(pool, kinfo, order))
    base = f"/usr/lib/modules/{kinfo.version}/"
    return tree, {"boot_modules": [p[len(base):] for p in boot],
                  "rescue_modules": [p[len(base):] for p in order if p not in boot]}


def layers(inp: ConfigInputs) -> tuple[Tree, Tree]:
    """The image's package layer and its configuration layer."""
    system, order = system_tree(inp.system)
    overlays = [(origin, content.path) for origin, content in inp.overlays]
    config = rootfs.config_layer(inp.system.recipes, inp.system.image, system,
                                 inp.context.variables(**order), overlays, inp.context.platform, inp.system.where)
    return system, config


def layer_name(inp: SystemInputs) -> str:
    return "layer.zst" if inp.compression == "zstd" else "layer.xz"


def _write(tree: Tree, inp: SystemInputs, out: Path, end: bool) -> None:
    if inp.image == "ramdisk" and inp.compression == "zstd":
        zstd_pipe(lambda f: tree.write_cpio(f, inp.epoch), out, RAMDISK_ZSTD_LEVEL)
    elif inp.image == "ramdisk":
        xz_pipe(lambda f: tree.write_cpio(f, inp.epoch), out, inp.xz)
    elif inp.compression == "zstd":
        zstd_pipe(lambda f: tree.write_tar(f, inp.epoch, end=end), out)
    else:
        xz_pipe(lambda f: tree.write_tar(f, inp.epoch, end=end), out, inp.xz)


def make_system(inp: SystemInputs, work: Path) -> None:
    tree, _ = system_tree(inp)
    if inp.image == "rootfs":
        # In this layer only: the configuration layer needs the package layer's files, not these.
        bytecode.compile_tree(tree, str(inp.where), work)
    _write(tree, inp, work / layer_name(inp), end=False)


def make_config(inp: ConfigInputs, work: Path) -> None:
    system, config = layers(inp)
    checked = elfcheck.check_tree(rootfs.union(system, config), inp.system.arch)
    log.detail(f"{inp.system.image}: {len(system.entries)} + {len(config.entries)} entries, "
               f"{checked} ELF files checked")
    _write(config, inp.system, work / layer_name(inp.system), end=True)


def make_join(inp: JoinInputs, work: Path) -> None:
    with open(work / inp.name, "wb") as out:
        for part in (inp.system, inp.config):
            with open(part.path, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def make_ext2_ramdisk(inp: ConfigInputs, work: Path) -> None:
    """ramdisk.ext2.xz: the same ramdisk as an ext2 RAM disk image, for a kernel with the
    RAM disk built in (root=/dev/ram0 mounts it; inittab runs /init as sysinit)."""
    tree = rootfs.union(*layers(inp))
    tree.entries.pop("/", None)
    files = work / "files"
    tree.write_dir(files)
    fsimage.make_ext("ext2", files, work / "ramdisk.ext2", label="ramdisk",
                     uuid=fsimage.uuid_from(inp.context.platform, "ramdisk"), epoch=inp.system.epoch)
    shutil.rmtree(files)
    with open(work / "ramdisk.ext2", "rb") as image:
        xz_pipe(lambda f: shutil.copyfileobj(image, f, 1 << 20), work / "ramdisk.ext2.xz")
    (work / "ramdisk.ext2").unlink()


def make_kernel(inp: KernelImageInputs, work: Path) -> None:
    """sda1's kernel: the package's image (gzipped if the board says so), or the vendor's
    file, whose SHA-256 was checked when the board was loaded."""
    if inp.vendor is not None:
        data = inp.vendor.path.read_bytes()
    else:
        assert inp.packages is not None
        pool = inp.packages.pool()
        entry = pool.get(inp.packages.kernel(inp.image).image)
        assert entry is not None
        data = entry.read()
    if inp.compress == "gzip":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    (work / "vmlinuz").write_bytes(data)


# -- the steps the pipeline calls ------------------------------------------------------------

def image(runner: Runner, b: BuildInputs, image: str) -> Content:
    """rootfs.tar.xz (or .zst), ramdisk.cpio.xz (or .zst) or ramdisk.ext2.xz: the package
    layer, then the configuration layer."""
    system_in = system_inputs(b, image)
    layer = layer_name(system_in)
    system = runner.run(f"{image}-system", make_system, system_in, layer)
    config_in = config_inputs(b, image)
    config = runner.run(f"{image}-config", make_config, config_in, layer)  # checks the ELF files
    if image == "ramdisk" and b.board.kernel.ramdisk_format == "ext2":
        return runner.run("ramdisk-ext2", make_ext2_ramdisk, config_in, "ramdisk.ext2.xz")
    name = b.board.boot_files[image]
    return runner.run(image, make_join, JoinInputs(name, system, config), name)


def kernel_image(runner: Runner, b: BuildInputs) -> Content:
    return runner.run("kernel", make_kernel, kernel_inputs(b), "vmlinuz")


def xz_pipe(writer, out: Path, level: int = 9) -> None:
    """Stream a writer's bytes through xz: two threads with a fixed block size give the same
    bytes on any machine; CRC32 checks because the kernel's xz decoder takes only those.
    -9 with 64 MiB blocks: 1.0 MB smaller than -6 with 8 MiB blocks on the arm64 rootfs and
    1.2 MB on the VM's (the 50 MB limit), 65 MiB to unpack (ipx10 has 256 MB), 1.3 GB and
    twice the time to pack (a cached stage). A product may ask for less (rootfs_xz): -3 packs
    erp's 369 MB in 131 s of CPU instead of 275 s, 113 MB instead of 102.5 MB."""
    with replacing(out) as tmp, open(tmp, "wb") as dest:
        with spawn(["xz", f"-{level}", "--check=crc32", "-T2", "--block-size=64MiB", "-c"],
                   stdin=PIPE, stdout=dest) as proc:
            assert proc.stdin is not None
            writer(proc.stdin)


# zstd's level for a rootfs.tar.zst (the figures are in zstd_pipe): no product setting, as
# no level above it paid for its time.
ZSTD_LEVEL = 10
# ...and for a ramdisk.cpio.zst, which GRUB reads at every boot and a build packs once: the
# VM's 24 MB cpio is 7.3 MB at -19 (9 s of CPU), 8.3 MB at -10 (0.8 s). In an emulated VM,
# GRUB's loading of the kernel and the ramdisk (14.6 MB with xz) and the kernel's unpacking
# of itself took about 6.9 s of a 15.6 s boot; with this ramdisk the boot took 14.3 s.
RAMDISK_ZSTD_LEVEL = 19


def zstd_pipe(writer, out: Path, level: int = ZSTD_LEVEL) -> None:
    """Stream a writer's bytes through zstd, for a product that unpacks its rootfs often
    (erp, tryton: every install and update of their tests). Unpacking erp's 367 MB tar
    takes 0.5 s on the host where xz -3 takes 17 s (267 s in an emulated arm64 guest).
    Packing it: -10 gives 115.4 MB for 14 s of CPU (8 s on two threads), -15 114.8 MB for
    54 s, -19 103.0 MB for 186 s (xz -3: 101.8 MB for 96 s): beyond -10 a level costs far
    more time than it saves bytes, and sda1 has room. zstd's multithreaded frames do not
    depend on the thread count (-T1 and -T2 give the same bytes), so -T2 only sets the speed."""
    with replacing(out) as tmp, open(tmp, "wb") as dest:
        with spawn(["zstd", f"-{level}", "-T2", "-q", "-c"], stdin=PIPE, stdout=dest) as proc:
            assert proc.stdin is not None
            writer(proc.stdin)
