#!/usr/bin/env python3
"""Build benchmark for one board: prints figures, asserts nothing (targets are in the issue).

Measures, in a private copy of the project and a private cache whose downloads are seeded
from the normal cache (so "cold" means every stage runs but no package is downloaded):
cold build, no-op rebuild, rebuild after one template changed, sizes of sda1's payload and
of each output, peak memory, and QEMU start to the manager's first HTTP answer (normal boot).

usage: bench/build.py [BOARD] [--no-boot]
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


def main() -> int:
    board = next((a for a in sys.argv[1:] if not a.startswith("-")), "x86_64-vm")
    boot = "--no-boot" not in sys.argv
    from apbuild.cache import default_root

    with tempfile.TemporaryDirectory(prefix="apbuild-bench-") as tmp:
        work = Path(tmp)
        project = work / "project"
        shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", "out", ".git", "__pycache__"))
        cache = work / "cache"
        seed = default_root() / "blobs"
        if seed.is_dir():  # downloads cached: hard links, no copy
            shutil.copytree(seed, cache / "blobs", copy_function=os.link)
        env = {**os.environ, "APBUILD_CACHE": str(cache), "APBUILD_VENV": str(ROOT / ".venv")}
        python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
        cmd = [python, str(project / "build.py"), board]
        figures: list[tuple[str, str]] = []
        figures.append(("cold build (downloads cached)", f"{timed(cmd, env):.1f} s"))
        figures.append(("no-op rebuild", f"{timed(cmd, env):.2f} s"))
        templates = sorted((project / "recipes").rglob("*.j2"))
        target = next((t for t in templates if "S50postgresql" in t.name or "rootfs" in str(t)), templates[0])
        target.write_text(target.read_text() + "\n# bench: one changed template\n")
        figures.append((f"rebuild after {target.relative_to(project)} changed", f"{timed(cmd, env):.1f} s"))
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        figures.append(("peak memory (largest process)", f"{peak:.0f} MiB"))

        sys.path.insert(0, str(project))
        from apbuild.config import load_project

        proj = load_project(ROOT, board)
        out = project / "out" / board
        boot_dirs = sorted((cache / "stages" / "boot").glob("*/"), key=lambda p: p.stat().st_mtime)
        if boot_dirs:
            b = boot_dirs[-1]
            payload = 0
            for name in ("vmlinuz", "ramdisk.cpio.xz", "ramdisk.ext2.xz", "rootfs.tar.xz"):
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
        if boot and proj.board.outputs.qcow2:
            figures.extend(boot_figures(proj, out / proj.board.outputs.qcow2, work))
        width = max(len(k) for k, _ in figures)
        print(f"apbuild benchmark: board {board}, {os.cpu_count()} CPUs")
        for k, v in figures:
            print(f"  {k:<{width}}  {v}")
    return 0


def boot_figures(proj, image: Path, work: Path) -> list[tuple[str, str]]:
    """First boot (install + reboot) and normal boot, each to the manager's first answer."""
    from apbuild.qemu import command, free_port

    disk = work / "bench.qcow2"
    shutil.copyfile(image, disk)
    out = []
    for label in ("first boot (install, reboot) to manager's first answer", "normal boot to manager's first answer"):
        port = free_port()
        launch = command(proj.board, disk, serial="null", forwards={80: port})
        start = time.monotonic()
        proc = subprocess.Popen(launch.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            answered = None
            while time.monotonic() - start < 600 and proc.poll() is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/manager/", timeout=2)
                    answered = time.monotonic() - start
                    break
                except OSError:
                    time.sleep(0.5)
            out.append((label, f"{answered:.1f} s" if answered else "no answer within 600 s"))
        finally:
            proc.kill()
            proc.wait()
    return out


if __name__ == "__main__":
    sys.exit(main())
