"""Every stage's inputs record for a board, without building anything: earlier stages'
results stand in as placeholders (the same for every board), so tests can compare keys
across boards and prove that each field of a record reaches its key."""

from __future__ import annotations

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
    b = BuildInputs.read(project, cache)
    ramdisk_format = project.board.kernel.ramdisk_format
    raw = placeholder("disk.img")
    records: dict[str, Any] = {"kernel": images.kernel_inputs(b)}
    for image in ("ramdisk", "rootfs"):
        records[f"{image}-system"] = images.system_inputs(b, image)
        records[f"{image}-config"] = images.config_inputs(b, image)
        if image == "ramdisk" and ramdisk_format == "ext2":
            records["ramdisk-ext2"] = records["ramdisk-config"]
        else:
            name = project.board.boot_files["rootfs"] if image == "rootfs" else "ramdisk.cpio.xz"
            records[image] = images.JoinInputs(name, placeholder(f"{image}-system"), placeholder(f"{image}-config"))
    records["boot"] = bootfs.boot_inputs(b, placeholder("kernel"), placeholder("ramdisk"), placeholder("rootfs"))
    records["disk"] = bootfs.disk_inputs(b, placeholder("boot.img"))
    outs = project.board.outputs
    if outs.qcow2:
        records["qcow2"] = outputs.DiskOutputInputs(raw)
    if outs.vhdx:
        records["vhdx"] = outputs.DiskOutputInputs(raw)
    if outs.ova:
        records["ova"] = outputs.ova_inputs(b, raw)
    records["sbom"] = outputs.sbom_inputs(b)
    records["manifest"] = outputs.manifest_inputs(b, {"disk.img": ("raw", raw)})
    return records


def image_stage_keys(project: Project, cache: Cache) -> dict[str, str]:
    """The keys of the stages that make the image (not the manifest, which names the board)."""
    runner = Runner(cache)
    return {name: runner.key(name, record) for name, record in stage_records(project, cache).items()
            if name != "manifest"}
