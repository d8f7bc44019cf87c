"""The stages after the disk image: qcow2, VHDX, OVA, SBOM, manifest, the host-leak scan, and
publishing into the output directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import debpkg, lockfile, mirror
from .files import replacing
from .run import run
from .tree import FILE

if TYPE_CHECKING:
    from .pipeline import Build


def to_qcow2(raw: Path, out: Path) -> Path:
    """qcow2 without compression: deterministic, and a guest writes to it at full speed."""
    with replacing(out) as tmp:
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, tmp])
    return out


def qcow2_stage(build: Build, raw: Path) -> Path:
    def make(work: Path) -> None:
        to_qcow2(raw, work / "disk.qcow2")
    return build.stage("qcow2", {"raw": build.cache.recorded(raw)}, make, base=False) / "disk.qcow2"


def vhdx_stage(build: Build, raw: Path) -> Path:
    """The VM for Hyper-V: a dynamic VHDX whose identifiers come from the disk's content."""
    from . import vhdx

    seed = build.cache.recorded(raw)

    def make(work: Path) -> None:
        vhdx.to_vhdx(raw, work / "disk.vhdx", seed)
    return build.stage("vhdx", {"raw": seed}, make, base=False) / "disk.vhdx"


def ova_stage(build: Build, raw: Path) -> Path:
    """The VM for VMware/VirtualBox/Proxmox: OVF + streamOptimized VMDK + manifest."""
    from . import ova
    from .schema import parse_size

    board = build.board
    vm = ova.VirtualMachine(name=board.platform, description=board.description,
                            version=board.image_version, cpus=board.cpus, ram_mb=board.ram_mb,
                            capacity=parse_size(board.disk_size))
    seed = build.cache.recorded(raw)

    def make(work: Path) -> None:
        ova.make_ova(raw, work, vm, board.outputs.ova, build.epoch, seed)
    # RAM and CPUs are not image settings: they are named here, as the OVF says them.
    inputs = {"raw": seed, "vm": vm, "name": board.outputs.ova}
    return build.stage("ova", inputs, make, base=False) / board.outputs.ova


def _copyright_of(build: Build, pkg: lockfile.LockedPackage) -> str | None:
    """usr/share/doc/<pkg>/copyright from the .deb; a doc directory that is a link to another
    package's (libfoo1 -> libfoo-common, allowed within one source) is followed to it."""
    from .tree import SYMLINK

    debs = build.debs()
    names = {p.name: p for p in build.lock.packages}
    for _ in range(3):
        tree = debpkg.unpack(build.cache, debs[pkg.name], pkg.sha256, pkg.name)
        entry = tree.get(f"/usr/share/doc/{pkg.name}/copyright")
        if entry is not None and entry.kind == FILE:
            return entry.read().decode(errors="replace")
        link = tree.get(f"/usr/share/doc/{pkg.name}")
        if link is None or link.kind != SYMLINK or os.path.basename(link.target) not in names:
            return None
        pkg = names[os.path.basename(link.target)]
    return None


def sbom_stage(build: Build) -> Path:
    """<platform>.spdx.json: every locked package, its .deb hash, origin and licences."""
    from . import sbom

    uris = {s.suite: s.uri for s in mirror.sources()}
    board = build.board
    name = f"{board.platform}.spdx.json"

    def url(p: lockfile.LockedPackage) -> str:
        return f"{uris[p.suite]}/{p.filename}" if p.suite in uris else sbom.NOASSERTION

    def make(work: Path) -> None:
        infos = sbom.package_infos(build.lock, url, lambda p: _copyright_of(build, p))
        doc = sbom.document(board.platform, board.image_version, board.arch, build.lock, infos, build.epoch)
        (work / name).write_bytes(sbom.dumps(doc))
    inputs = {"mirrors": sorted(uris.items()), "platform": board.platform,
              "version": board.image_version, "arch": board.arch}
    return build.stage("sbom", inputs, make, base=False) / name


def manifest_stage(build: Build, files: dict[str, tuple[str, Path]]) -> Path:
    """<platform>.manifest.json for the files about to be published (name -> (kind, path))."""
    from . import manifest
    from .cache import sha256_file

    board = build.board
    name = f"{board.platform}.manifest.json"
    lock_sha = sha256_file(board.lockfile)

    def make(work: Path) -> None:
        outputs = [manifest.describe(n, kind, path) for n, (kind, path) in files.items()]
        (work / name).write_bytes(manifest.render(
            board=board.name, platform=board.platform, image_version=board.image_version,
            lockfile_name=f"boards/{board.lockfile.name}", lockfile_sha256=lock_sha,
            epoch=build.epoch, outputs=outputs))
    inputs = {"board": board.name, "files": {n: [k, build.cache.recorded(p)] for n, (k, p) in files.items()},
              "lockfile": lock_sha, "version": board.image_version}
    return build.stage("manifest", inputs, make, base=False) / name


def leak_scan(build: Build, files: dict[str, Path]) -> None:
    """Fail before publishing if any output or boot file names the build host; the clean
    verdict is cached by the files' hashes and the host strings, so a no-op build is fast."""
    from . import leakscan
    from .config import find_root

    needles = leakscan.host_needles(find_root(), build.cache.root)

    def make(work: Path) -> None:
        leakscan.check(files, needles)
        (work / "clean").write_text("".join(f"{n}\n" for n in sorted(files)))
    inputs = {"files": {n: build.cache.recorded(p) for n, p in files.items()}, "needles": needles}
    build.stage("leakscan", inputs, make, base=False)


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
