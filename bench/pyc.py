#!/usr/bin/env python3
"""What the image's compiled Python modules save: the guest's CPU seconds (QEMU, TCG) to
import a Python product's modules as its service user, with the image's pycs and with them
moved aside: what each start compiled before the image had them (the service user cannot
write beside the modules; a cache of its own on sda3 kept that to the first start after an
install or update). Alternated ROUNDS times on one installed guest. Prints figures, asserts
nothing.

usage: bench/pyc.py [BOARD] [ROUNDS]   (default bip@x86_64-vm, 3)
BOARD is a product on a machine whose image has Python: bip (its user bip, its virtualenv)
or tryton (its user tryton, trytond and its modules).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apbuild.cache import Cache, default_root  # noqa: E402
from apbuild.config import load_project  # noqa: E402
from apbuild.pipeline import build  # noqa: E402
from apbuild.testing.disks import fresh_disk, installation_disk  # noqa: E402
from apbuild.testing.machine import Machine  # noqa: E402

# product: (its service user, its Python, what the service imports at its start)
PRODUCTS = {
    "bip": ("bip", "/opt/bip/venv/bin/python3", "import flask, gunicorn.app.wsgiapp, bip.app"),
    "tryton": ("tryton", "/usr/bin/python3", "import trytond.pool, trytond.modules.party"),
}
# Every __pycache__ of the image's import paths, renamed away and back.
CACHES = ("find /usr/lib/python3* /opt -type d -name {0} 2>/dev/null | sort -r | "
          "while read -r d; do mv \"$d\" \"${{d%/*}}/{1}\"; done")


def imported(m: Machine, user: str, python: str, imports: str) -> float:
    before = m.cpu_seconds()
    out = m.ok(f"cd / && su {user} -s /bin/sh -c '{python} -c \"{imports}\"' 2>&1 | tail -3", 900)
    if out.strip():
        raise SystemExit(f"bench/pyc.py: {imports!r} as {user} failed: {out}")
    return m.cpu_seconds() - before


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "bip@x86_64-vm"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    product = name.split("@")[0]
    if product not in PRODUCTS:
        print(f"bench/pyc.py: {name}: give one of {', '.join(f'{p}@MACHINE' for p in PRODUCTS)}",
              file=sys.stderr)
        return 2
    user, python, imports = PRODUCTS[product]
    project = load_project(ROOT, name)
    with_pyc, without = [], []
    with tempfile.TemporaryDirectory(prefix="apbuild-pyc-") as tmp:
        work = Path(tmp)
        result = build(project, Cache(default_root()), work / "out")
        gateway = project.board.bootloader == "gateway"
        disk = installation_disk(result, work, "pyc", "8G") if gateway else fresh_disk(result, work, "pyc")
        with Machine(project.board, disk, work, name="pyc", accel="tcg", guest_ports=(22, 80)) as m:
            m.install(login=False)
            m.login(timeout=1200)
            for _ in range(rounds):
                with_pyc.append(imported(m, user, python, imports))
                m.ok(CACHES.format("__pycache__", "__pycache__.aside"))
                without.append(imported(m, user, python, imports))
                m.ok(CACHES.format("__pycache__.aside", "__pycache__"))
    print(f"{name}: guest CPU-s (QEMU, TCG) to run {imports!r} as {user}, {rounds} rounds:")
    print("  with the image's pycs:  " + "  ".join(f"{s:5.1f}" for s in with_pyc))
    print("  without (compiled):     " + "  ".join(f"{s:5.1f}" for s in without))
    return 0


if __name__ == "__main__":
    sys.exit(main())
