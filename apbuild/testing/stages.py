"""Every stage's inputs record for a board, without building anything: earlier stages'
results stand in as placeholders (the same for every board), so tests can compare keys
across boards and prove that each field of a record reaches its key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from apbuild import bootfs, images, outputs
from apbuild.cache import Cache
from apbuild.config import Project
from apbuild.inputs import BuildInputs
from apbuild.stage import Content, Runner


def placeholder(name: str) -> Content:
    return Content(Path("/nonexistent") / name, f"digest-of-{name}")


def stage_records(project: Project, cache: Cache) -> dict[str, Any]:
    """stage name -> its inputs record, for every stage the board's build runs."""
    return {name: record for name, (_, record) in stages(project, cache).items()}


def stages(project: Project, cache: Cache) -> dict[str, tuple[Callable[..., None], Any]]:
    """stage name -> (its make function, its inputs record), as the build runs them."""
    b = BuildInputs.read(project, cache)
    ramdisk_format = project.board.kernel.ramdisk_format
    raw = placeholder("disk.img")
    found: dict[str, tuple[Callable[..., None], Any]] = {"kernel": (images.make_kernel, images.kernel_inputs(b))}
    for image in ("ramdisk", "rootfs"):
        found[f"{image}-system"] = (images.make_system, images.system_inputs(b, image))
        found[f"{image}-config"] = (images.make_config, images.config_inputs(b, image))
        if image == "ramdisk" and ramdisk_format == "ext2":
            found["ramdisk-ext2"] = (images.make_ext2_ramdisk, images.config_inputs(b, image))
        else:
            name = project.board.boot_files[image]
            found[image] = (images.make_join, images.JoinInputs(
                name, placeholder(f"{image}-system"), placeholder(f"{image}-config")))
    found["boot"] = (bootfs.make_boot, bootfs.boot_inputs(b, placeholder("kernel"), placeholder("ramdisk"),
                                                          placeholder("rootfs")))
    found["disk"] = (bootfs.make_disk, bootfs.disk_inputs(b, placeholder("boot.img")))
    outs = project.board.outputs
    if outs.qcow2:
        found["qcow2"] = (outputs.make_qcow2, outputs.DiskOutputInputs(raw))
    if outs.vhdx:
        found["vhdx"] = (outputs.make_vhdx, outputs.DiskOutputInputs(raw))
    if outs.ova:
        found["ova"] = (outputs.make_ova, outputs.ova_inputs(b, raw))
    found["sbom"] = (outputs.make_sbom, outputs.sbom_inputs(b))
    if outs.raw:
        found["raw-sha256"] = (outputs.make_sha256, outputs.DiskOutputInputs(raw))
    found["manifest"] = (outputs.make_manifest, outputs.manifest_inputs(
        b, {"disk.img": ("raw", raw)}, {"disk.img": placeholder("raw-sha256")}))
    return found


def image_stage_keys(project: Project, cache: Cache) -> dict[str, str]:
    """The keys of the stages that make the image (not the manifest, which names the board)."""
    runner = Runner(cache)
    return {name: runner.key(name, make, record) for name, (make, record) in stages(project, cache).items()
            if name != "manifest"}
