"""What the tests and benchmarks share: a QEMU guest driven over its serial console and QMP
(machine), the manual's reader at an SSH terminal (terminal), the recipes' default accounts
(accounts), disks made from built images (disks), private caches seeded with the locked
packages (seeding), an App Platform's life of updates and power cuts (lifecycle), and the
VM installed once per run for the tests that are not about installing (installed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def run_dir(factory) -> Path:
    """This run's temporary directory, the same for every pytest-xdist worker (each worker's
    own base temporary directory sits inside it): what the workers share lives here."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def scratch(request, name: str) -> Iterator[Path]:
    """A module's temporary directory (its disks, caches, outputs), removed when the fixture
    using it ends unless a test failed meanwhile, as pytest.ini's tmp_path_retention_policy
    does for a test's own tmp_path. Kept to the end, the suite's disks and caches reached
    19 GB, and CI's machine, whose free space varies, ran out of it."""
    session = request.session
    failed = session.testsfailed
    path = request.getfixturevalue("tmp_path_factory").mktemp(name)
    try:
        yield path
    finally:
        if session.testsfailed == failed:
            shutil.rmtree(path, ignore_errors=True)
