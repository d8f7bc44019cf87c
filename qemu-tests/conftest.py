"""Fixtures for the QEMU tests: build the real images once per session, boot them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apbuild.cache import Cache, default_root
from apbuild.config import find_root, load_project
from apbuild.pipeline import build
from apbuild.remote import Remote
from apbuild.testing import run_dir
from apbuild.testing.installed import installed_base, overlay
from apbuild.testing.machine import QMP_MISSING, qmp_available
from apbuild.testing.releases import release_build as build_release
from apbuild.testing.releases import release_project

ROOT = find_root()
HERE = Path(__file__).parent
# The user's cache, read before tests/conftest.py points APBUILD_CACHE elsewhere for its tests.
USER_CACHE = default_root()
# CI's shared cache (.github/workflows/boards.yml): a job's boot tests pull what its build pushed.
REMOTE = os.environ.get("APBUILD_CACHE_REMOTE", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked boards(NAME, ...) runs on those of its module's boards only (the others
    are deselected, not skipped: they were never meant to run). Without qemu.qmp no guest can
    be driven: every QEMU test skips, with one reason."""
    kept, dropped = [], []
    for item in items:
        mark = item.get_closest_marker("boards")
        spec = getattr(item, "callspec", None)
        # The board a test runs on: its module fixture's parameter (a board's name).
        board = next((v for v in spec.params.values() if isinstance(v, str)), None) if spec else None
        (dropped if mark and board not in mark.args else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    if qmp_available():
        return
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=QMP_MISSING))


@pytest.fixture(scope="session")
def build_board(tmp_path_factory):
    """Build a board by the real pipeline, once per session (stages from the user's cache)."""
    built: dict[str, tuple] = {}

    def get(name: str):
        if name not in built:
            project = load_project(ROOT, name)
            out = tmp_path_factory.mktemp(f"out-{name}")
            cache = Cache(USER_CACHE, remote=Remote(REMOTE) if REMOTE else None)
            built[name] = (project, build(project, cache, out))
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
    return choose_accel(project.board, result.boot_files.get("kernel"), USER_CACHE)


@pytest.fixture(scope="session")
def logdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serial-logs")


@pytest.fixture(scope="session")
def installed(build_board, tmp_path_factory, logdir, accel):
    """installed(board, tmp, name): a private disk (a qcow2 overlay; a gateway's, a sparse
    copy) of one on which the board's image was installed and first booted once in this run,
    shared by every worker (see apbuild.testing.installed). For tests whose subject is not
    the install."""
    shared = run_dir(tmp_path_factory) / "installed"

    def get(name: str, tmp: Path, disk_name: str) -> Path:
        project, result = build_board(name)
        base = installed_base(project, result, shared, logdir, accel)
        return overlay(base, tmp / f"{disk_name}{base.suffix}")
    return get


@pytest.fixture(scope="session")
def release_build(build_board, tmp_path_factory):
    """release_build(board, release): (the board as the release knows itself, the release's
    outputs), built from its commit once per run for every worker (apbuild.testing.releases).
    The tree's own build comes first: it makes the signing key both images trust."""
    shared = run_dir(tmp_path_factory) / "releases"

    def get(board: str, release):
        build_board(board)
        return release_project(board, release), build_release(board, release, shared, USER_CACHE)
    return get
