"""The build, top to bottom: the steps of one board's build, each stage a function of its
declared inputs (stage.py) to a cached artifact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import bootfs, debian, images, lockfile, log, mirror, outputs, pypi, signing
from .cache import Cache
from .config import Project, find_root
from .errors import ApbuildError
from .inputs import BuildInputs
from .parallel import beside
from .stage import Content, Runner


@dataclasses.dataclass(frozen=True)
class BuildResult:
    board: str
    outputs: dict[str, Path]      # kind -> file under the output directory
    boot_files: dict[str, Path]   # sda1 content as built (kernel, ramdisk, rootfs, label ...)
    did_work: bool
    boot_image: Path | None = None  # the sda1 filesystem image: the payload of a signed update
    built: tuple[str, ...] = ()     # the stages this build ran (the others were reused)


def ensure_lock(project: Project, cache: Cache) -> lockfile.Lockfile:
    """The board's lockfile, resolved and written when there is none yet."""
    path = project.board.lockfile
    if not path.exists():
        with log.step(f"lock: resolve {len(project.packages)} packages for {project.board.arch}"):
            lock = debian.lock(project.board.arch, project.packages, project.exclude_packages,
                               mirror.sources(), cache)
        lock = lock_python(project, lock, cache)
        lockfile.write(path, lock)
        return lock
    lock = lockfile.read(path)
    if tuple(lock.requested) != tuple(project.packages) or tuple(lock.excluded) != project.exclude_packages:
        raise ApbuildError(f"{path}: the recipes ask for other packages than the lockfile pins; "
                           f"refresh it with './build.py lock {project.board.name}'")
    if tuple((v.path, v.requirements) for v in lock.venvs) != project.python_envs:
        raise ApbuildError(f"{path}: the recipes ask for other Python requirements than the lockfile "
                           f"pins; refresh it with './build.py lock {project.board.name}'")
    return lock


def lock_python(project: Project, lock: lockfile.Lockfile, cache: Cache) -> lockfile.Lockfile:
    """The Debian lock with the recipes' PyPI requirements pinned for its Python and arch."""
    venvs = []
    for venv, requirements in project.python_envs:
        with log.step(f"lock: resolve {len(requirements)} Python requirements for {venv} ({lock.arch})"):
            dists = pypi.resolve(requirements, lock.arch, pypi.python_version(lock.packages),
                                 pypi.glibc_minor(lock.packages), cache, f"{project.board.name}: {venv}")
        venvs.append(pypi.Venv(venv, requirements, dists))
    return dataclasses.replace(lock, venvs=tuple(venvs))


def build(project: Project, cache: Cache, output: Path) -> BuildResult:
    # `./build.py clean` waits until no build runs before it removes anything.
    with cache.in_use():
        return _build(project, cache, output)


def boot_image(project: Project, cache: Cache) -> Path:
    """Only as far as sda1's filesystem image (boot.img, in the cache): what a signed update
    carries. The disk and the outputs made from it are not built."""
    with cache.in_use():
        _, _, boot_dir = _boot(project, cache)
        return boot_dir.path / "boot.img"


def _boot(project: Project, cache: Cache) -> tuple[BuildInputs, Runner, Content]:
    """The steps every build takes: kernel, ramdisk and rootfs, then sda1's content."""
    # What a build writes before any stage: the lockfile (resolved on first build) and the
    # update key (made on first build: the image carries its public half).
    ensure_lock(project, cache)
    signing.ensure_key(signing.default_dir())
    b = BuildInputs.read(project, cache)
    runner = Runner(cache)

    kernel = images.kernel_image(runner, b)
    # The ramdisk's stages run beside the rootfs's: on two cores a cold build takes the
    # longer of the two, not their sum.
    with beside("ramdisk", lambda: images.image(runner, b, "ramdisk")) as ramdisk:
        root = images.image(runner, b, "rootfs")
    return b, runner, bootfs.boot(runner, b, kernel, ramdisk.result(), root)


def _build(project: Project, cache: Cache, output: Path) -> BuildResult:
    b, runner, boot_dir = _boot(project, cache)
    raw = bootfs.disk_image(runner, b, boot_dir)

    outs = project.board.outputs
    names = {"raw": outs.raw, "qcow2": outs.qcow2, "vhdx": outs.vhdx, "ova": outs.ova,
             "sbom": f"{project.board.platform}.spdx.json",
             "manifest": f"{project.board.platform}.manifest.json"}
    boot_scan = {f"sda1/{p.name}": Content(p, cache.recorded(p)) for p in sorted(boot_dir.path.iterdir())
                 if p.is_file() and not p.name.startswith(".")}

    def raw_sha256() -> dict[str, Content]:
        if not outs.raw:
            return {}
        return {outs.raw: runner.run("raw-sha256", outputs.make_sha256, outputs.DiskOutputInputs(raw), "sha256")}

    # The raw disk's SHA-256 (one core; 8 s for a VM's 16 GiB) is taken beside the other
    # outputs and their leak scan; the manifest waits for it, and is scanned on its own.
    with beside("raw-sha256", raw_sha256) as hashed:
        produced: dict[str, Content] = {"raw": raw} if outs.raw else {}
        if outs.qcow2:
            produced["qcow2"] = runner.run("qcow2", outputs.make_qcow2, outputs.DiskOutputInputs(raw), "disk.qcow2")
        if outs.vhdx:
            produced["vhdx"] = runner.run("vhdx", outputs.make_vhdx, outputs.DiskOutputInputs(raw), "disk.vhdx")
        if outs.ova:
            produced["ova"] = runner.run("ova", outputs.make_ova, outputs.ova_inputs(b, raw), outs.ova)
        produced["sbom"] = runner.run("sbom", outputs.make_sbom, outputs.sbom_inputs(b), names["sbom"])
        outputs.leak_scan(runner, {**{names[k]: c for k, c in produced.items()}, **boot_scan}, find_root())
    produced["manifest"] = runner.run(
        "manifest", outputs.make_manifest,
        outputs.manifest_inputs(b, {names[k]: (k, c) for k, c in produced.items()}, hashed.result()),
        names["manifest"])
    outputs.leak_scan(runner, {names["manifest"]: produced["manifest"]}, find_root(), "manifest-leakscan")

    published = {}
    changed = False
    for kind, content in produced.items():
        dest = output / names[kind]
        changed |= outputs.publish(content.path, dest)
        published[kind] = dest
    boot_files = {k: boot_dir.path / v for k, v in project.board.boot_files.items()
                  if (boot_dir.path / v).exists()}
    return BuildResult(project.board.name, published, boot_files, runner.did_work or changed,
                       boot_image=boot_dir.path / "boot.img", built=tuple(runner.built))
