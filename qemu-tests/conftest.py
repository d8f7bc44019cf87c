"""Fixtures for the QEMU tests: build the real images once per session, boot them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import find_root, load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402

ROOT = find_root()


@pytest.fixture(scope="session")
def build_board(tmp_path_factory):
    """Build a board by the real pipeline, once per session (stages from the user's cache)."""
    built: dict[str, tuple] = {}

    def get(name: str):
        if name not in built:
            project = load_project(ROOT, name)
            out = tmp_path_factory.mktemp(f"out-{name}")
            built[name] = (project, build(project, Cache(default_root()), out))
        return built[name]
    return get


@pytest.fixture(scope="session")
def vm_build(build_board):
    return build_board("x86_64-vm")


@pytest.fixture(scope="session")
def accel(vm_build) -> str:
    """TCG, or KVM where a probe boot proves that Linux guests run under it."""
    from apbuild.qemu import choose_accel

    project, result = vm_build
    return choose_accel(project.board, result.boot_files.get("kernel"), default_root())


@pytest.fixture(scope="session")
def logdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serial-logs")


def fresh_disk(result, tmp: Path, name: str) -> Path:
    """A private copy of the built qcow2: each machine installs onto its own disk."""
    disk = tmp / f"{name}.qcow2"
    shutil.copyfile(result.outputs["qcow2"], disk)
    return disk


def installation_disk(result, tmp: Path, name: str, size: str = "4G") -> Path:
    """A gateway's storage: the installation image written to the start of an empty disk."""
    disk = tmp / f"{name}.img"
    subprocess.run(["cp", "--sparse=always", str(result.outputs["raw"]), str(disk)], check=True)
    subprocess.run(["truncate", "-s", size, str(disk)], check=True)
    return disk
