"""What the tests and benchmarks share: a QEMU guest driven over its serial console and QMP
(machine), the manual's reader at an SSH terminal (terminal), the recipes' default accounts
(accounts), disks made from built images (disks), private caches seeded with the locked
packages (seeding), an App Platform's life of updates and power cuts (lifecycle), and the
VM installed once per run for the tests that are not about installing (installed)."""

from __future__ import annotations

import os
from pathlib import Path


def run_dir(factory) -> Path:
    """This run's temporary directory, the same for every pytest-xdist worker (each worker's
    own base temporary directory sits inside it): what the workers share lives here."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
