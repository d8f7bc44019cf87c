#!/usr/bin/env python3
"""apbuild beside its peers, in one run, on one package set: the x86_64-vm board's.

- apbuild: a cold `./build.py x86_64-vm` (every stage runs; the .debs are in the cache).
- mmdebstrap (Debian's, run as root): a root filesystem tarball of the same packages (plus
  Debian's Essential set, which dpkg needs to run their maintainer scripts), its .debs taken
  from a first, untimed run, so it too starts from cached downloads.
- diskimage-builder (PyPI): `disk-image-create debian-minimal` with the same packages, a tar
  of the tree (its partitioned images need loop-device partitions, which this machine's
  kernel does not show); it downloads through debootstrap on every run.

Prints one table (time, output, size); asserts nothing. A tool that is missing or fails gets
its reason in the table. usage: bench/compare.py [--no-dib] [--no-mmdebstrap]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BOARD = "x86_64-vm"


def run_timed(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> tuple[float, str]:
    """(seconds, '' or the reason it failed)."""
    start = time.monotonic()
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    took = time.monotonic() - start
    if proc.returncode == 0:
        return took, ""
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log else []
    return took, f"exit {proc.returncode}: {tail[0] if tail else ''}"[:120]


def size_of(path: Path) -> str:
    if not path.exists():
        return "-"
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{total / 1e6:.1f} MB"


def packages() -> tuple[list[str], str]:
    """The board's requested packages (apt names, no foreign arch) and its mirror."""
    from apbuild import mirror
    from apbuild.config import load_project

    project = load_project(ROOT, BOARD)
    names = [p.split(":")[0] for p in project.packages]
    source = next(s for s in mirror.sources() if s.suite == "bookworm")
    return names, source.uri


def security_uri() -> str:
    """The host's bookworm-security archive (DIB would ask security.debian.org itself)."""
    from apbuild import mirror

    return next((s.uri for s in mirror.sources() if s.suite.endswith("-security")), "")


def bench_apbuild(work: Path) -> tuple[str, float, str, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_build", ROOT / "bench" / "build.py")
    assert spec is not None and spec.loader is not None
    bench_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_build)
    project, env, python = bench_build.private_copy(work / "apbuild")
    took, error = run_timed([python, str(project / "build.py"), BOARD], env, work / "apbuild.log")
    from apbuild.config import load_project

    board = load_project(ROOT, BOARD).board
    outputs = project / "out" / BOARD
    what = f"bootable VM ({board.outputs.qcow2}, .img, .ova, .vhdx, SBOM)"
    return "apbuild (cold, .debs cached)", took, error or what, size_of(outputs / board.outputs.qcow2)


def bench_mmdebstrap(work: Path, names: list[str], uri: str) -> tuple[str, float, str, str]:
    label = "mmdebstrap 1.3.5 (.debs cached)"
    if shutil.which("mmdebstrap") is None:
        return label, 0.0, "not installed (apt-get install mmdebstrap)", "-"
    debs = work / "mmdebstrap-debs"
    debs.mkdir(parents=True)
    common = ["mmdebstrap", "--mode=root", "--variant=essential", f"--include={','.join(names)}",
              "--skip=essential/unlink", "--skip=cleanup/apt/cache"]
    # The untimed first run downloads what apt picks; the timed one starts from those files.
    _, error = run_timed(common + [f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
                                   "bookworm", str(work / "first.tar"), uri], log=work / "mmdebstrap-1.log")
    if error:
        return label, 0.0, f"failed: {error}", "-"
    out = work / "mmdebstrap.tar.xz"
    took, error = run_timed(common + [f"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
                                      f"--setup-hook=sync-in {debs} /var/cache/apt/archives",
                                      "bookworm", str(out), uri], log=work / "mmdebstrap-2.log")
    return label, took, error or "rootfs tarball (tar.xz), not bootable", size_of(out)


def bench_dib(work: Path, names: list[str], uri: str) -> tuple[str, float, str, str]:
    label = "diskimage-builder 3.43 (downloads)"
    venv = work / "dib-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _, error = run_timed([str(venv / "bin" / "pip"), "install", "-q", "diskimage-builder==3.43.0"],
                         log=work / "dib-pip.log")
    if error:
        return label, 0.0, f"cannot install from PyPI: {error}", "-"
    missing = [t for t in ("debootstrap", "qemu-img", "sudo") if shutil.which(t) is None]
    if missing:
        return label, 0.0, f"host tools missing: {' '.join(missing)} (apt-get install debootstrap qemu-utils sudo)", "-"
    env = {**os.environ, "DIB_RELEASE": "bookworm", "DIB_DISTRIBUTION_MIRROR": uri,
           **({"DIB_DEBIAN_SECURITY_MIRROR": sec} if (sec := security_uri()) else {}),
           "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "TMPDIR": str(work)}
    # The kernel and GRUB are left out: a tar has no boot sector, and DIB's own elements add them.
    wanted = [n for n in names if not n.startswith(("linux-image", "grub"))]
    out = work / "dib"
    took, error = run_timed(["disk-image-create", "-a", "amd64", "-t", "tar", "-o", str(out),
                             "-p", ",".join(wanted), "debian-minimal"], env, work / "dib.log")
    return label, took, error or "root filesystem tar, not bootable", size_of(Path(f"{out}.tar"))


def main() -> int:
    names, uri = packages()
    print(f"apbuild beside its peers: board {BOARD}, {len(names)} requested packages, "
          f"{os.cpu_count()} CPUs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="apbuild-compare-") as tmp:
        work = Path(tmp)
        rows.append(bench_apbuild(work))
        if "--no-mmdebstrap" not in sys.argv:
            rows.append(bench_mmdebstrap(work, names, uri))
        if "--no-dib" not in sys.argv:
            rows.append(bench_dib(work, names, uri))
    width = max(len(r[0]) for r in rows)
    print(f"  {'tool':<{width}}  {'time':>8}  {'size':>10}  output")
    for label, took, what, size in rows:
        print(f"  {label:<{width}}  {took:>7.1f}s  {size:>10}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
