#!/usr/bin/env python3
"""Build benchmark for one board: prints figures, asserts nothing (targets are in the issue).

Measures, in a private copy of the project and a private cache whose downloads are seeded
from the normal cache (so "cold" means every stage runs but no package is downloaded):
cold build, no-op rebuild, rebuild after one template changed and after one apbuild module
changed (pipeline.py, then manifest.py), sizes of sda1's payload and
of each output, peak memory, and QEMU start to the manager's first HTTP answer (normal boot).

usage: bench/build.py [BOARD ...|--all] [--no-boot]
With several boards it also times `./build.py --all` cold and no-op in one shared cache.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def private_copy(work: Path) -> tuple[Path, dict[str, str], str]:
    """A copy of the project and an empty stage cache seeded with the downloaded packages."""
    from apbuild.cache import Cache, default_root
    from apbuild.testing.seeding import with_downloads

    project = work / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", "out", ".git", "__pycache__"))
    cache = with_downloads(work / "cache", Cache(default_root())).root
    env = {**os.environ, "APBUILD_CACHE": str(cache), "APBUILD_VENV": str(ROOT / ".venv")}
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    return project, env, python


def bench_board(board: str, work: Path, boot: bool) -> list[tuple[str, str]]:
    project, env, python = private_copy(work)
    cache = Path(env["APBUILD_CACHE"])
    cmd = [python, str(project / "build.py"), board]
    figures: list[tuple[str, str]] = []
    figures.append(("cold build (downloads cached)", f"{timed(cmd, env):.1f} s"))
    figures.append(("no-op rebuild", f"{timed(cmd, env):.2f} s"))
    templates = sorted((project / "recipes").rglob("*.j2"))
    target = next((t for t in templates if "S50postgresql" in t.name or "rootfs" in str(t)), templates[0])
    target.write_text(target.read_text() + "\n# bench: one changed template\n")
    figures.append((f"rebuild after {target.relative_to(project)} changed", f"{timed(cmd, env):.1f} s"))
    # apbuild's own code: a stage's key covers the modules it runs only (apbuild.codedigest).
    for module in ("pipeline", "manifest"):
        source = project / "apbuild" / f"{module}.py"
        source.write_text(source.read_text() + "\n# bench: one changed module\n")
        figures.append((f"rebuild after apbuild/{module}.py changed", f"{timed(cmd, env):.1f} s"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures.append(("peak memory of the builds (largest process)", f"{peak:.0f} MiB"))

    from apbuild.config import load_project

    proj = load_project(ROOT, board)
    out = project / "out" / board
    boot_dirs = sorted((cache / "stages" / "boot").glob("*/"), key=lambda p: p.stat().st_mtime)
    if boot_dirs:
        b = boot_dirs[-1]
        payload = 0
        for name in ("vmlinuz", proj.board.boot_files["ramdisk"], proj.board.boot_files["rootfs"]):
            if (b / name).exists():
                size = (b / name).stat().st_size
                payload += size
                figures.append((f"sda1: {name}", f"{size / 1e6:.1f} MB"))
        figures.append(("sda1 payload (kernel + ramdisk + rootfs)", f"{payload / 1e6:.1f} MB"))
    for f in sorted(out.glob("*")):
        if f.name.startswith("."):
            continue
        used = f.stat().st_blocks * 512
        figures.append((f"output {f.name}", f"{f.stat().st_size / 1e6:.1f} MB apparent, {used / 1e6:.1f} MB on disk"))
    if boot:
        image = out / (proj.board.outputs.qcow2 or proj.board.outputs.raw)
        figures.extend(boot_figures(proj, image, work))
    return figures


def bench_all(work: Path) -> list[tuple[str, str]]:
    project, env, python = private_copy(work)
    cmd = [python, str(project / "build.py"), "--all"]
    return [("--all cold (downloads cached, shared stages)", f"{timed(cmd, env):.1f} s"),
            ("--all no-op", f"{timed(cmd, env):.2f} s")]


def show(title: str, figures: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in figures)
    print(title)
    for k, v in figures:
        print(f"  {k:<{width}}  {v}", flush=True)


def main() -> int:
    from apbuild.config import list_boards

    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    boards = list_boards(ROOT) if "--all" in sys.argv else words or ["x86_64-vm"]
    boot = "--no-boot" not in sys.argv
    print(f"apbuild benchmark: {os.cpu_count()} CPUs, boards {' '.join(boards)}", flush=True)
    if len(boards) == 1:
        with tempfile.TemporaryDirectory(prefix="apbuild-bench-") as tmp:
            show(f"board {boards[0]}", bench_board(boards[0], Path(tmp), boot))
        return 0
    for board in boards:  # one process per board: its peak memory is its own
        subprocess.run([sys.executable, __file__, board, *(["--no-boot"] if not boot else [])],
                       check=True)
    with tempfile.TemporaryDirectory(prefix="apbuild-bench-") as tmp:
        show("all boards", bench_all(Path(tmp)))
    return 0


def boot_figures(proj, image: Path, work: Path) -> list[tuple[str, str]]:
    """First boot (install + reboot) and normal boot, each to the manager's first answer.
    A gateway boots through the emulated loader, as in the tests."""
    from apbuild.qemu import command, free_port, gateway_loader

    gateway = proj.board.bootloader == "gateway"
    disk = work / ("bench.img" if gateway else "bench.qcow2")
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    if gateway:
        subprocess.run(["truncate", "-s", "4G", str(disk)], check=True)
    out = []
    for label in ("first boot (install, reboot) to manager's first answer",
                  "normal boot to manager's first answer"):
        port = free_port()
        start = time.monotonic()
        answered = None
        while answered is None and time.monotonic() - start < 600:
            boot = {}
            if gateway:  # each QEMU run is one boot; the loader picks the next from sda1
                loaded = gateway_loader(proj.board, disk, work / "loader")
                boot = loaded.qemu_args()
            launch = command(proj.board, disk, serial="null", forwards={80: port}, **boot)
            proc = subprocess.Popen(launch.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while time.monotonic() - start < 600 and proc.poll() is None:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/manager/ramdisk.log", timeout=2)
                        answered = time.monotonic() - start
                        break
                    except OSError:
                        time.sleep(0.5)
            finally:
                if answered is not None or not gateway:
                    proc.kill()
                proc.wait()
            if not gateway:
                break
        out.append((label, f"{answered:.1f} s" if answered else "no answer within 600 s"))
    return out


if __name__ == "__main__":
    sys.exit(main())
