"""sda1's filesystem (kernel, ramdisk, rootfs payload, label, sums, boot configuration) and
the installation disk that carries it."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

from . import bootloader, disk, fsimage, rootfs
from .errors import ApbuildError
from .files import link_or_copy
from .inputs import BuildInputs, TemplateContext
from .layout import Placement
from .packages import Packages
from .schema import parse_size
from .stage import Content, Runner
from .tree import FILE, Entry, Tree


@dataclasses.dataclass(frozen=True)
class BootInputs:
    kernel: Content
    ramdisk: Content
    rootfs: Content
    overlays: tuple[tuple[str, Content], ...]   # each recipe's boot and boot-<bootloader>
    context: TemplateContext                    # names, label, bootloader, partition, platform
    epoch: int


@dataclasses.dataclass(frozen=True)
class DiskInputs:
    boot: Content                 # boot.img, sda1's filesystem
    partition: Placement          # sda1
    whole_disk: int | None        # the image's size; None: it ends where sda1 ends
    disk_id: int
    grub: Packages | None         # grub-pc-bin, for a board that boots with GRUB
    layout: Path                  # named in errors (not in the key)
    board: Path                   # named in errors (not in the key)


def boot_inputs(b: BuildInputs, kernel: Content, ramdisk: Content, root: Content) -> BootInputs:
    return BootInputs(kernel=kernel, ramdisk=ramdisk, rootfs=root,
                      overlays=b.overlays("boot", f"boot-{b.board.bootloader}"),
                      context=b.context(), epoch=b.epoch)


def disk_inputs(b: BuildInputs, boot: Content) -> DiskInputs:
    # An installation image ends with sda1; a VM disk has its full virtual size.
    whole = None if b.board.outputs.raw_size == "content" else parse_size(b.board.disk_size)
    grub = b.packages.only("grub-pc-bin") if b.board.bootloader == "grub-bios" else None
    return DiskInputs(boot=boot, partition=b.placements[0], whole_disk=whole, disk_id=b.disk_id, grub=grub,
                      layout=b.project.layout.path, board=b.board.path)


def make_boot(inp: BootInputs, work: Path) -> None:
    ctx = inp.context
    names = ctx.boot_files
    tree = Tree()
    for kind in ("kernel", "ramdisk", "rootfs"):
        tree.add("/" + names[kind], Entry(FILE, 0o644, source=getattr(inp, kind).path))
    tree.add("/" + names["label"], Entry(FILE, 0o644, data=f"{ctx.label}\n".encode()))
    variables = ctx.variables()
    for origin, overlay in inp.overlays:
        tree.merge(rootfs.render_overlay(overlay.path, variables, origin))
    # Changed on the device, so not summed: the boot configuration (default entry, boot
    # mode) and the label (the manual's "echo 110000 > /mnt/sda1/label" allows an update).
    mutable = {"/grub/grub.cfg", "/" + names["mode"], "/" + names["label"]}
    sums = "".join(f"{hashlib.sha256(e.read()).hexdigest()}  {p.lstrip('/')}\n"
                   for p, e in tree if e.kind == FILE and p not in mutable)
    tree.add("/" + names["sums"], Entry(FILE, 0o644, data=sums.encode()))
    # Outside the sums: the installer removes "pending" when it has finished, and switches
    # a gateway's loader from rescue to normal through the mode file.
    tree.add("/" + names["pending"], Entry(FILE, 0o644, data=b"install\n"))
    if ctx.board.bootloader == "gateway":
        tree.add("/" + names["mode"], Entry(FILE, 0o644, data=b"rescue\n"))
    tree.entries.pop("/", None)
    files = work / "files"
    tree.write_dir(files)
    boot = ctx.partitions_physical[0]
    if boot.filesystem == "fat32":
        fsimage.make_fat(files, work / "boot.img", label="boot", epoch=inp.epoch)
    else:
        fsimage.make_ext(boot.filesystem, files, work / "boot.img", label="boot",
                         uuid=fsimage.uuid_from(ctx.platform, "boot"), epoch=inp.epoch)
    shutil.rmtree(files)
    # Kept beside the image (the benchmark reports their sizes, the tests read them) as links
    # to their stages' files: a cold run of the tests left 8.5 GB in its cache with links,
    # 9.4 GB with copies. A link's new ctime has the stage's next lookup hash its file once more.
    for kind in ("kernel", "ramdisk", "rootfs"):
        link_or_copy(getattr(inp, kind).path, work / names[kind])


def make_disk(inp: DiskInputs, work: Path) -> None:
    """The installation image: MBR with sda1 only, GRUB in the gap before it (VM)."""
    first = inp.partition
    size = inp.boot.path.stat().st_size
    # An update writes the new sda1 beside the old one: each may use half the reserve.
    if first.update_slot_sectors is not None and size > first.update_slot_sectors * 512:
        raise ApbuildError(f"sda1 content is {size} bytes, more than half of the {first.reserved_sectors * 512} "
                           f"bytes the layout reserves ({inp.layout}), which an "
                           f"update needs to write the new sda1 beside the old one")
    raw = work / "disk.img"
    disk.make_mbr_disk(raw, inp.whole_disk or first.start + size, inp.disk_id, [
        disk.Placed(number=first.number, start=first.start, size=size, type=first.mbr_type,
                    bootable=True, image=inp.boot.path)])
    if inp.grub is not None:
        bootloader.install_from_pool(raw, inp.grub.pool(), first.start, work, inp.board)


def boot(runner: Runner, b: BuildInputs, kernel: Content, ramdisk: Content, root: Content) -> Content:
    """sda1's files and its filesystem image (the stage's directory: boot.img and its files)."""
    return runner.run("boot", make_boot, boot_inputs(b, kernel, ramdisk, root))


def disk_image(runner: Runner, b: BuildInputs, boot_dir: Content) -> Content:
    boot_img = Content(boot_dir.path / "boot.img", runner.cache.recorded(boot_dir.path / "boot.img"))
    return runner.run("disk", make_disk, disk_inputs(b, boot_img), "disk.img")
