"""Output formats made from the raw disk image."""

from __future__ import annotations

import os
from pathlib import Path

from .run import run


def to_qcow2(raw: Path, out: Path) -> Path:
    """qcow2 without compression: deterministic, and a guest writes to it at full speed."""
    tmp = out.with_name(f".{out.name}.part")
    tmp.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, tmp])
    os.replace(tmp, out)
    return out
