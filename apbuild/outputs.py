"""The stages after the disk image: qcow2, VHDX, OVA, SBOM, the raw disk's SHA-256, manifest,
the host-leak scan, and publishing into the output directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from . import debpkg, leakscan, lockfile, manifest, mirror, ova, sbom, vhdx
from .cache import sha256_file
from .files import replacing
from .inputs import BuildInputs
from .packages import Packages
from .run import run
from .schema import parse_size
from .stage import Content, Runner
from .tree import FILE, SYMLINK


def to_qcow2(raw: Path, out: Path) -> Path:
    """qcow2 without compression: deterministic, and a guest writes to it at full speed."""
    with replacing(out) as tmp:
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, tmp])
    return out


@dataclasses.dataclass(frozen=True)
class DiskOutputInputs:
    raw: Content


@dataclasses.dataclass(frozen=True)
class OvaInputs:
    raw: Content
    vm: ova.VirtualMachine      # name, description, version, CPUs, RAM, capacity: as the OVF says
    name: str
    epoch: int


@dataclasses.dataclass(frozen=True)
class SbomInputs:
    packages: Packages
    mirrors: tuple[tuple[str, str], ...]   # suite -> URI, for each package's download location
    platform: str
    title: str
    version: str
    arch: str
    epoch: int


@dataclasses.dataclass(frozen=True)
class ManifestInputs:
    files: tuple[tuple[str, str, Content], ...]   # (name, kind, file) about to be published
    hashed: tuple[tuple[str, Content], ...]       # (name, its SHA-256's file: make_sha256)
    board: str
    platform: str
    version: str
    lockfile: Content
    epoch: int


@dataclasses.dataclass(frozen=True)
class LeakScanInputs:
    files: tuple[tuple[str, Content], ...]
    needles: dict[str, str]


def make_qcow2(inp: DiskOutputInputs, work: Path) -> None:
    to_qcow2(inp.raw.path, work / "disk.qcow2")


def make_vhdx(inp: DiskOutputInputs, work: Path) -> None:
    """The VM for Hyper-V: a dynamic VHDX whose identifiers come from the disk's content."""
    vhdx.to_vhdx(inp.raw.path, work / "disk.vhdx", inp.raw.digest)


def make_ova(inp: OvaInputs, work: Path) -> None:
    """The VM for VMware/VirtualBox/Proxmox: OVF + streamOptimized VMDK + manifest."""
    ova.make_ova(inp.raw.path, work, inp.vm, inp.name, inp.epoch, inp.raw.digest)


def ova_inputs(b: BuildInputs, raw: Content) -> OvaInputs:
    board = b.board
    # RAM and CPUs are not image settings: they are named here, as the OVF says them.
    vm = ova.VirtualMachine(name=board.platform, description=board.description,
                            version=board.image_version, cpus=board.cpus, ram_mb=board.ram_mb,
                            capacity=parse_size(board.disk_size))
    return OvaInputs(raw, vm, board.outputs.ova, b.epoch)


def _copyright_of(packages: Packages, pkg: lockfile.LockedPackage) -> str | None:
    """usr/share/doc/<pkg>/copyright from the .deb; a doc directory that is a link to another
    package's (libfoo1 -> libfoo-common, allowed within one source) is followed to it."""
    debs = packages.debs()
    names = {p.name: p for p in packages.lock.packages}
    for _ in range(3):
        tree = debpkg.unpack(packages.cache, debs[pkg.name], pkg.sha256, pkg.name)
        entry = tree.get(f"/usr/share/doc/{pkg.name}/copyright")
        if entry is not None and entry.kind == FILE:
            return entry.read().decode(errors="replace")
        link = tree.get(f"/usr/share/doc/{pkg.name}")
        if link is None or link.kind != SYMLINK or os.path.basename(link.target) not in names:
            return None
        pkg = names[os.path.basename(link.target)]
    return None


def make_sbom(inp: SbomInputs, work: Path) -> None:
    """<platform>.spdx.json: every locked package, its .deb hash, origin and licences."""
    uris = dict(inp.mirrors)

    def url(p: lockfile.LockedPackage) -> str:
        return f"{uris[p.suite]}/{p.filename}" if p.suite in uris else sbom.NOASSERTION

    lock = inp.packages.lock
    infos = sbom.package_infos(lock, url, lambda p: _copyright_of(inp.packages, p))
    doc = sbom.document(inp.platform, inp.title, inp.version, inp.arch, lock, infos, inp.epoch)
    (work / f"{inp.platform}.spdx.json").write_bytes(sbom.dumps(doc))


def sbom_inputs(b: BuildInputs) -> SbomInputs:
    board = b.board
    return SbomInputs(packages=b.packages, mirrors=tuple(sorted((s.suite, s.uri) for s in mirror.sources())),
                      platform=board.platform, title=board.title, version=board.image_version,
                      arch=board.arch, epoch=b.epoch)


def make_sha256(inp: DiskOutputInputs, work: Path) -> None:
    """The raw disk's SHA-256 for the manifest, a stage of its own so that the build takes it
    (8 s for a VM's 16 GiB: every zero is hashed) beside the other outputs."""
    (work / "sha256").write_text(manifest.sha256_sparse(inp.raw.path) + "\n")


def make_manifest(inp: ManifestInputs, work: Path) -> None:
    """<platform>.manifest.json for the files about to be published."""
    ahead = {name: file.path.read_text().strip() for name, file in inp.hashed}
    outputs = [manifest.describe(name, kind, file.path, ahead.get(name)) for name, kind, file in inp.files]
    (work / f"{inp.platform}.manifest.json").write_bytes(manifest.render(
        board=inp.board, platform=inp.platform, image_version=inp.version,
        lockfile_name=f"boards/{inp.lockfile.path.name}", lockfile_sha256=inp.lockfile.digest,
        epoch=inp.epoch, outputs=outputs))


def manifest_inputs(b: BuildInputs, files: dict[str, tuple[str, Content]],
                    hashed: dict[str, Content]) -> ManifestInputs:
    board = b.board
    return ManifestInputs(files=tuple((n, kind, c) for n, (kind, c) in files.items()),
                          hashed=tuple(sorted(hashed.items())), board=board.name,
                          platform=board.platform, version=board.image_version,
                          lockfile=Content(board.lockfile, sha256_file(board.lockfile)), epoch=b.epoch)


def make_leak_scan(inp: LeakScanInputs, work: Path) -> None:
    leakscan.check({n: c.path for n, c in inp.files}, inp.needles)
    (work / "clean").write_text("".join(f"{n}\n" for n in sorted(n for n, _ in inp.files)))


def leak_scan(runner: Runner, files: dict[str, Content], work_tree: Path, name: str = "leakscan") -> None:
    """Fail before publishing if any output or boot file names the build host; the clean
    verdict is cached by the files' hashes and the host strings, so a no-op build is fast."""
    needles = leakscan.host_needles(work_tree, runner.cache.root)
    runner.run(name, make_leak_scan, LeakScanInputs(tuple(files.items()), needles))


def publish(src: Path, dest: Path) -> bool:
    """Copy into the output directory under a temporary name, then rename; skip if unchanged."""
    stamp = dest.with_name(f".{dest.name}.source")
    ident = f"{src}:{src.stat().st_size}:{src.stat().st_mtime_ns}"
    if dest.exists() and stamp.exists() and stamp.read_text() == ident:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with replacing(dest) as tmp:
        run(["cp", "--sparse=always", "--reflink=auto", src, tmp])
    stamp.write_text(ident)
    return True
