"""The build, top to bottom: each stage a function from typed inputs to a cached artifact."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from . import __version__, debian, debpkg, elfcheck, kernel, lockfile, log, mirror, rootfs, signing
from .cache import Cache, key_of
from .config import Project
from .errors import ApbuildError
from .files import replacing
from .layout import by_name, place
from .run import PIPE, spawn
from .tree import FILE, Entry, Tree


@dataclasses.dataclass(frozen=True)
class BuildResult:
    board: str
    outputs: dict[str, Path]      # kind -> file under the output directory
    boot_files: dict[str, Path]   # sda1 content as built (kernel, ramdisk, rootfs, label ...)
    did_work: bool
    boot_image: Path | None = None  # the sda1 filesystem image: the payload of a signed update


def code_digest() -> str:
    """Hash of apbuild's own source: a code change must never reuse a stale stage result."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _dir_digest(directory: Path) -> str:
    h = hashlib.sha256()
    if directory.is_dir():
        for path in sorted(directory.rglob("*")):
            rel = str(path.relative_to(directory)).encode()
            if path.is_symlink():
                h.update(b"L" + rel + b"\0" + str(path.readlink()).encode())
            elif path.is_file():
                h.update(b"F" + rel + b"\0" + bytes([path.stat().st_mode & 0o111 != 0]))
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def definition_digest(project: Project) -> str:
    """Everything the user wrote that shapes the images: board, layout, recipes, overlays."""
    h = hashlib.sha256(board_settings(project).encode())
    for path in [project.layout.path] + [r.path for r in project.recipes]:
        h.update(path.read_bytes())
    for recipe in project.recipes:
        for image in ("common", "rootfs", "ramdisk", "boot", f"boot-{project.board.bootloader}"):
            h.update(_dir_digest(recipe.overlay(image)).encode())
    h.update(_dir_digest(project.root / "rootfs-overlay").encode())
    return h.hexdigest()


def board_settings(project: Project) -> str:
    """The board as far as it shapes the image (not its name, RAM or QEMU), plus the vendor
    kernel's hash: boards that agree here share stages and outputs."""
    return json.dumps(project.board.image_settings(), sort_keys=True, default=str)


def ensure_lock(project: Project, cache: Cache) -> lockfile.Lockfile:
    path = project.board.lockfile
    if not path.exists():
        with log.step(f"lock: resolve {len(project.packages)} packages for {project.board.arch}"):
            lock = debian.lock(project.board.arch, project.packages, project.exclude_packages,
                               mirror.sources(), cache)
            lockfile.write(path, lock)
        return lock
    lock = lockfile.read(path)
    if tuple(lock.requested) != tuple(project.packages) or tuple(lock.excluded) != project.exclude_packages:
        raise ApbuildError(f"{path}: the recipes ask for other packages than the lockfile pins; "
                           f"refresh it with './build.py lock {project.board.name}'")
    return lock


class Build:
    """One board's build: holds the inputs every stage needs, computes keys, runs stages."""

    def __init__(self, project: Project, cache: Cache) -> None:
        self.project = project
        self.board = project.board
        self.cache = cache
        self.did_work = False
        self.lock = ensure_lock(project, cache)
        self.epoch = lockfile.source_date_epoch(self.lock)
        # The image carries the public half: it accepts only updates signed with this key.
        self.update_key = signing.ensure_key(signing.default_dir())
        self.base_inputs = {
            "update_key": hashlib.sha256(self.update_key.public_pem).hexdigest(),
            "code": code_digest(),
            "definitions": definition_digest(project),
            "lock": self.lock.digest,
            "epoch": self.epoch,
        }
        self.placements = place(project.layout)
        self._debs: dict[str, Path] | None = None
        self._pool: Tree | None = None
        self._kernel: kernel.KernelInfo | None = None

    # -- lazily computed inputs: a cached build never needs them ------------------------
    def debs(self) -> dict[str, Path]:
        if self._debs is None:
            missing = [p for p in self.lock.packages if not self.cache.has_blob(p.sha256)]
            label = f"fetch: {len(missing)} of {len(self.lock.packages)} packages" if missing else "fetch: all packages cached"
            with log.step(label):
                self._debs = debian.fetch(self.lock, mirror.sources() if missing else (), self.cache,
                                          board=self.board.name)
        return self._debs

    def pool(self) -> Tree:
        if self._pool is None:
            debs = self.debs()
            with log.step(f"unpack: {len(debs)} packages"):
                pool = debpkg.merged_links()
                for pkg in self.lock.packages:
                    pool.merge(debpkg.unpack(self.cache, debs[pkg.name], pkg.sha256, pkg.name))
                self._pool = pool
        return self._pool

    def kernel(self) -> kernel.KernelInfo:
        if self._kernel is None:
            self._kernel = kernel.inspect(self.pool(), self.board.kernel.image)
        return self._kernel

    def context(self, **extra: Any) -> dict[str, Any]:
        parts = by_name(self.placements)
        return {
            "board": rootfs.ImageBoard(self.board),
            "label": self.board.image_version,
            "part": parts,
            "partitions_physical": self.placements,
            "disk_id": f"0x{self.disk_id:08x}",
            "boot_files": self.board.boot_files,
            "cmdline": self.board.kernel.cmdline,
            "kernel_version": lockfile.kernel_version(self.lock),
            "platform": self.board.platform,
            "salt": self.board.platform,
            "update_public_key": self.update_key.public_pem.decode().strip(),
            # Where the manager stages a checked update for the rescue system.
            "staged": f"{parts['data'].mount}/update/staged.update",
            **extra,
        }

    @property
    def disk_id(self) -> int:
        return int(hashlib.sha256(self.board.platform.encode()).hexdigest()[:8], 16)

    # -- stage plumbing ---------------------------------------------------------------
    def stage(self, name: str, inputs: dict[str, Any], func, *, base: bool = True) -> Path:
        """Reuse or build a stage. base=False: the key leaves out the definitions digest
        (for stages whose inputs name exactly the definitions they read)."""
        common = self.base_inputs if base else {k: v for k, v in self.base_inputs.items() if k != "definitions"}
        key = key_of(name, {**common, **inputs})
        path, built = self.cache.produce(name, key, func, on_build=lambda: log.step(name))
        if built:
            self.did_work = True
        else:
            log.detail(f"{name}: reused {key[:12]}")
        return path

    # -- stages -----------------------------------------------------------------------
    def system_tree(self, image: str) -> tuple[Tree, dict[str, list[str]]]:
        """The image's package layer, and the insmod orders of the ramdisk's modules: the
        disk drivers it loads at every boot ("boot_modules") and the running system's
        (NICs) that the rescue system loads as well ("rescue_modules")."""
        kinfo, pool = self.kernel(), self.pool()
        extra = tuple(m for r in self.project.recipes for m in getattr(r, image).modules)
        what = f"{self.board.path}: kernel"
        if image == "ramdisk":
            boot = kernel.closure(pool, kinfo, self.board.kernel.boot_modules + extra, what)
            order = kernel.closure(pool, kinfo, self.board.kernel.boot_modules + extra
                                   + self.board.kernel.modules, what)
        else:
            order = boot = kernel.closure(pool, kinfo, self.board.kernel.modules + extra, what)
        tree = rootfs.system_layer(self.project, image, pool, kernel.module_tree(pool, kinfo, order))
        base = f"/usr/lib/modules/{kinfo.version}/"
        return tree, {"boot_modules": [p[len(base):] for p in boot],
                      "rescue_modules": [p[len(base):] for p in order if p not in boot]}

    def image(self, image: str) -> Path:
        """rootfs.tar.xz or ramdisk.cpio.xz: the system layer's archive, then the config's.

        Each layer is its own cached stage and its own xz stream (tar and initramfs both
        accept concatenation), so a changed template recompresses only the small layer.
        """
        fmt = "cpio" if image == "ramdisk" else "tar"
        # The system layer depends on the packages and the recipes' selections only.
        recipes = [r.path.read_bytes().decode() for r in self.project.recipes]
        sys_inputs = {"image": image, "recipes": recipes, "board": board_settings(self.project)}

        def write(tree: Tree, out: Path, end: bool) -> None:
            if fmt == "tar":
                _xz_pipe(lambda f: tree.write_tar(f, self.epoch, end=end), out)
            else:
                _xz_pipe(lambda f: tree.write_cpio(f, self.epoch), out)

        def build_system(work: Path) -> None:
            tree, _ = self.system_tree(image)
            write(tree, work / "layer.xz", end=False)
        system_xz = self.stage(f"{image}-system", sys_inputs, build_system, base=False) / "layer.xz"

        def build_config(work: Path) -> None:
            system, config = self.layers(image)
            checked = elfcheck.check_tree(rootfs.union(system, config), self.board.arch)
            log.detail(f"{image}: {len(system.entries)} + {len(config.entries)} entries, "
                       f"{checked} ELF files checked")
            write(config, work / "layer.xz", end=True)
        config_xz = self.stage(f"{image}-config", {"image": image, "system": self.cache.recorded(system_xz)},
                               build_config) / "layer.xz"

        if image == "ramdisk" and self.board.kernel.ramdisk_format == "ext2":
            return self.ext2_ramdisk(system_xz, config_xz)
        name = "rootfs.tar.xz" if image == "rootfs" else "ramdisk.cpio.xz"

        def join(work: Path) -> None:
            with open(work / name, "wb") as out:
                for part in (system_xz, config_xz):
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
        return self.stage(image, {"system": self.cache.recorded(system_xz), "config": self.cache.recorded(config_xz)},
                          join, base=False) / name

    def layers(self, image: str) -> tuple[Tree, Tree]:
        """The image's package layer and its config layer (overlays, templates, users)."""
        system, order = self.system_tree(image)
        config = rootfs.config_layer(self.project, image, system, self.context(**order),
                                     self.project.root / "rootfs-overlay")
        return system, config

    def ext2_ramdisk(self, system_xz: Path, config_xz: Path) -> Path:
        """ramdisk.ext2.xz: the same ramdisk as an ext2 RAM disk image, for a kernel with the
        RAM disk built in (root=/dev/ram0 mounts it; inittab runs /init as sysinit)."""
        from . import fsimage

        def make(work: Path) -> None:
            tree = rootfs.union(*self.layers("ramdisk"))
            tree.entries.pop("/", None)
            files = work / "files"
            tree.write_dir(files)
            fsimage.make_ext("ext2", files, work / "ramdisk.ext2", label="ramdisk",
                             uuid=fsimage.uuid_from(self.board.platform, "ramdisk"), epoch=self.epoch)
            shutil.rmtree(files)
            with open(work / "ramdisk.ext2", "rb") as image:
                _xz_pipe(lambda f: shutil.copyfileobj(image, f, 1 << 20), work / "ramdisk.ext2.xz")
            (work / "ramdisk.ext2").unlink()
        rec = self.cache.recorded
        return self.stage("ramdisk-ext2", {"system": rec(system_xz), "config": rec(config_xz)},
                          make) / "ramdisk.ext2.xz"

    def rootfs(self) -> Path:
        return self.image("rootfs")

    def ramdisk(self) -> Path:
        return self.image("ramdisk")

    def kernel_image(self) -> Path:
        """sda1's kernel: the package's image (gzipped if the board says so), or the vendor's
        file, whose SHA-256 was checked when the board was loaded."""
        k = self.board.kernel

        def build(work: Path) -> None:
            if k.file:
                data = (self.board.path.parent / k.file).read_bytes()
            else:
                entry = self.pool().get(self.kernel().image)
                assert entry is not None
                data = entry.read()
            if k.compress == "gzip":
                data = gzip.compress(data, compresslevel=9, mtime=0)
            (work / "vmlinuz").write_bytes(data)
        package = next(p for p in self.lock.packages if p.name == f"linux-image-{lockfile.kernel_version(self.lock)}")
        source = {"vendor": k.sha256} if k.file else {"package": package.sha256, "image": k.image}
        return self.stage("kernel", {**source, "compress": k.compress}, build, base=False) / "vmlinuz"


def _xz_pipe(writer, out: Path) -> None:
    """Stream a writer's bytes through xz: two threads with a fixed block size give the same
    bytes on any machine; CRC32 checks because the kernel's xz decoder takes only those.
    -9 with 64 MiB blocks: 1.0 MB smaller than -6 with 8 MiB blocks on the arm64 rootfs and
    1.2 MB on the VM's (the 50 MB limit), 65 MiB to unpack (ipx10 has 256 MB), 1.3 GB and
    twice the time to pack (a cached stage)."""
    with replacing(out) as tmp, open(tmp, "wb") as dest:
        with spawn(["xz", "-9", "--check=crc32", "-T2", "--block-size=64MiB", "-c"],
                   stdin=PIPE, stdout=dest) as proc:
            assert proc.stdin is not None
            writer(proc.stdin)


def _boot_stage(build: Build) -> Path:
    """sda1's files (kernel, ramdisk, rootfs payload, label, sums, pending, GRUB config)."""
    from . import fsimage

    kernel_file, ramdisk_file, rootfs_file = build.kernel_image(), build.ramdisk(), build.rootfs()
    ctx = build.context()
    names = ctx["boot_files"]
    rec = build.cache.recorded
    inputs = {"kernel": rec(kernel_file), "ramdisk": rec(ramdisk_file), "rootfs": rec(rootfs_file)}

    def make(work: Path) -> None:
        tree = Tree()
        tree.add("/" + names["kernel"], Entry(FILE, 0o644, source=kernel_file))
        tree.add("/" + names["ramdisk"], Entry(FILE, 0o644, source=ramdisk_file))
        tree.add("/" + names["rootfs"], Entry(FILE, 0o644, source=rootfs_file))
        tree.add("/" + names["label"], Entry(FILE, 0o644, data=f"{build.board.image_version}\n".encode()))
        for recipe in build.project.recipes:
            for overlay in ("boot", f"boot-{build.board.bootloader}"):
                tree.merge(rootfs.render_overlay(recipe.overlay(overlay), ctx, recipe.name))
        # Changed on the device, so not summed: the boot configuration (default entry, boot
        # mode) and the label (the manual's "echo 110000 > /mnt/sda1/label" allows an update).
        mutable = {"/grub/grub.cfg", "/" + names["mode"], "/" + names["label"]}
        sums = "".join(f"{hashlib.sha256(e.read()).hexdigest()}  {p.lstrip('/')}\n"
                       for p, e in tree if e.kind == FILE and p not in mutable)
        tree.add("/" + names["sums"], Entry(FILE, 0o644, data=sums.encode()))
        # Outside the sums: the installer removes "pending" when it has finished, and switches
        # a gateway's loader from rescue to normal through the mode file.
        tree.add("/" + names["pending"], Entry(FILE, 0o644, data=b"install\n"))
        if build.board.bootloader == "gateway":
            tree.add("/" + names["mode"], Entry(FILE, 0o644, data=b"rescue\n"))
        tree.entries.pop("/", None)
        files = work / "files"
        tree.write_dir(files)
        boot = build.placements[0]
        if boot.filesystem == "fat32":
            fsimage.make_fat(files, work / "boot.img", label="boot", epoch=build.epoch)
        else:
            fsimage.make_ext(boot.filesystem, files, work / "boot.img", label="boot",
                             uuid=fsimage.uuid_from(build.board.platform, "boot"), epoch=build.epoch)
        shutil.rmtree(files)
        # Kept beside the image: the benchmark reports their sizes, the tests read them.
        for name, source in ((names["kernel"], kernel_file), (names["ramdisk"], ramdisk_file),
                             (names["rootfs"], rootfs_file)):
            shutil.copyfile(source, work / name)

    return build.stage("boot", inputs, make)


def _disk_stage(build: Build, boot_dir: Path) -> Path:
    """The installation image: MBR with sda1 only, GRUB in the gap before it (VM)."""
    from . import bootloader, disk
    from .schema import parse_size

    boot_img = boot_dir / "boot.img"
    inputs = {"boot": build.cache.recorded(boot_img), "board": board_settings(build.project),
              "layout": build.project.layout.path.read_text()}

    def make(work: Path) -> None:
        first = build.placements[0]
        size = boot_img.stat().st_size
        # An update writes the new sda1 beside the old one: each may use half the reserve.
        if first.update_slot_sectors is not None and size > first.update_slot_sectors * 512:
            raise ApbuildError(f"sda1 content is {size} bytes, more than half of the {first.reserved_sectors * 512} "
                               f"bytes the layout reserves ({build.project.layout.path}), which an "
                               f"update needs to write the new sda1 beside the old one")
        raw = work / "disk.img"
        # An installation image ends with sda1; a VM disk has its full virtual size.
        whole = first.start + size if build.board.outputs.raw_size == "content" else parse_size(build.board.disk_size)
        disk.make_mbr_disk(raw, whole, build.disk_id, [
            disk.Placed(number=first.number, start=first.start, size=size, type=first.mbr_type,
                        bootable=True, image=boot_img)])
        if build.board.bootloader == "grub-bios":
            bootloader.install_from_pool(raw, build.pool(), first.start, work, build.board.path)
    return build.stage("disk", inputs, make, base=False) / "disk.img"


def build(project: Project, cache: Cache, output: Path) -> BuildResult:
    # `./build.py clean` waits until no build runs before it removes anything.
    with cache.in_use():
        return _build(project, cache, output)


def _build(project: Project, cache: Cache, output: Path) -> BuildResult:
    b = Build(project, cache)
    boot_dir = _boot_stage(b)
    raw = _disk_stage(b, boot_dir)
    from . import outputs as out

    produced: dict[str, Path] = {}
    outs = project.board.outputs
    if outs.raw:
        produced["raw"] = raw
    if outs.qcow2:
        produced["qcow2"] = out.qcow2_stage(b, raw)
    if outs.vhdx:
        produced["vhdx"] = out.vhdx_stage(b, raw)
    if outs.ova:
        produced["ova"] = out.ova_stage(b, raw)
    names = {"raw": outs.raw, "qcow2": outs.qcow2, "vhdx": outs.vhdx, "ova": outs.ova,
             "sbom": f"{project.board.platform}.spdx.json",
             "manifest": f"{project.board.platform}.manifest.json"}
    produced["sbom"] = out.sbom_stage(b)
    produced["manifest"] = out.manifest_stage(b, {names[k]: (k, p) for k, p in produced.items()})
    boot_scan = {f"sda1/{p.name}": p for p in sorted(boot_dir.iterdir())
                 if p.is_file() and not p.name.startswith(".")}
    out.leak_scan(b, {**{names[k]: p for k, p in produced.items()}, **boot_scan})
    published = {}
    changed = False
    for kind, src in produced.items():
        dest = output / names[kind]
        changed |= out.publish(src, dest)
        published[kind] = dest
    ctx = b.context()["boot_files"]
    boot_files = {k: boot_dir / v for k, v in ctx.items() if (boot_dir / v).exists()}
    return BuildResult(project.board.name, published, boot_files, b.did_work or changed,
                       boot_image=boot_dir / "boot.img")
