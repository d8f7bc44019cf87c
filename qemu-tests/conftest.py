"""Fixtures for the QEMU tests: build the real images once per session, boot them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import find_root, load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402

ROOT = find_root()


@pytest.fixture(scope="session")
def vm_build(tmp_path_factory):
    """x86_64-vm built by the real pipeline (stages reused from the user's cache)."""
    project = load_project(ROOT, "x86_64-vm")
    out = tmp_path_factory.mktemp("out-x86_64-vm")
    result = build(project, Cache(default_root()), out)
    return project, result


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
