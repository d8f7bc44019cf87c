"""A board's build inputs, gathered without side effects: reading them writes nothing (no
lockfile, no key, no cache entry). The build command makes the lockfile and the key first
and says so (pipeline.build); the stages get records cut from these inputs."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from . import lockfile, signing
from .cache import Cache
from .config import Project
from .errors import ApbuildError
from .layout import Placement, by_name, place
from .packages import Packages
from .rootfs import ImageBoard
from .stage import Content, directory


@dataclasses.dataclass(frozen=True)
class TemplateContext:
    """Everything a template (*.j2) can see: a stage that renders templates has this in its
    inputs record, so a value a template reads is always in the stage's key."""

    board: ImageBoard
    label: str
    partitions_physical: tuple[Placement, ...]
    disk_id: str
    boot_files: dict[str, str]
    cmdline: str
    kernel_version: str
    platform: str
    update_public_key: str

    @property
    def part(self) -> dict[str, Placement]:
        return by_name(list(self.partitions_physical))

    def variables(self, **extra: Any) -> dict[str, Any]:
        """The template's variables; `extra` adds what a stage finds out (module orders)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "part": self.part, "salt": self.platform,
                # Where the manager stages a checked update for the rescue system.
                "staged": f"{self.part['data'].mount}/update/staged.update", **extra}


@dataclasses.dataclass(frozen=True)
class BuildInputs:
    project: Project
    lock: lockfile.Lockfile
    epoch: int
    update_public_key: str
    packages: Packages
    placements: tuple[Placement, ...]

    @classmethod
    def read(cls, project: Project, cache: Cache) -> BuildInputs:
        """The inputs of a board's build; the lockfile and the update key must exist."""
        board = project.board
        if not board.lockfile.exists():
            raise ApbuildError(f"{board.lockfile} does not exist: './build.py lock {board.name}' "
                               f"makes it (a build makes it too)")
        key = signing.key_in(signing.default_dir())
        if not key.public.exists():
            raise ApbuildError(f"no update signing key in {key.public.parent}: './build.py keygen' "
                               f"makes one (a build makes it too)")
        lock = lockfile.read(board.lockfile)
        return cls(project=project, lock=lock, epoch=lockfile.source_date_epoch(lock),
                   update_public_key=key.public_pem.decode().strip(),
                   packages=Packages(lock, cache, board.name),
                   placements=tuple(place(project.layout)))

    @property
    def board(self):
        return self.project.board

    @property
    def disk_id(self) -> int:
        return int(hashlib.sha256(self.board.platform.encode()).hexdigest()[:8], 16)

    def context(self) -> TemplateContext:
        b = self.board
        return TemplateContext(
            board=ImageBoard(b), label=b.image_version, partitions_physical=self.placements,
            disk_id=f"0x{self.disk_id:08x}", boot_files=b.boot_files, cmdline=b.kernel.cmdline,
            kernel_version=lockfile.kernel_version(self.lock), platform=b.platform,
            update_public_key=self.update_public_key)

    def overlays(self, *kinds: str) -> tuple[tuple[str, Content], ...]:
        """(origin, directory) of each recipe's overlays of these kinds, in the order they
        apply: recipe by recipe, kind by kind."""
        return tuple((r.name, directory(r.overlay(kind))) for r in self.project.recipes for kind in kinds)

    def global_overlay(self) -> Content:
        """rootfs-overlay/ in the project: the user's own files on top of every recipe."""
        return directory(self.project.root / "rootfs-overlay")

