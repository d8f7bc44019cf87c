"""Earlier releases built as they shipped, for the update-path tests and bench/powercut.py:
the release's commit is taken out of this repository's history (git archive) into a
directory of its own and built there by its own build.py, with its own code, recipes and
lockfile, and this run's Python environment, cache and signing key (the key the tree's
updates are signed with). Two settings of its tree are the tests' own (for_tests): neither
reaches a device's files. A release is built once per run for every pytest-xdist worker
(a file lock), and its outputs get their final directory only when the build succeeded."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import sys
import tomllib
from pathlib import Path

from apbuild import signing
from apbuild.config import Project, find_root, load_project
from apbuild.errors import ApbuildError, CommandError
from apbuild.pipeline import BuildResult
from apbuild.releases import Release
from apbuild.run import run

ROOT = find_root()
# A built output's kind, as BuildResult.outputs names it, by its file name's ending.
KINDS = {".img": "raw", ".qcow2": "qcow2", ".manifest.json": "manifest"}


def release_project(board: str, release: Release) -> Project:
    """The board as the release's image knows itself: today's machine, the release's label."""
    project = load_project(ROOT, board)
    return dataclasses.replace(project, board=dataclasses.replace(project.board, image_version=release.version))


def release_build(board: str, release: Release, shared: Path, cache_root: Path) -> BuildResult:
    """The release's outputs for `board`, built under `shared` (the run's directory)."""
    key = f"{board}-{release.version}-{release.commit[:12]}"
    out = shared / key
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # released when the file closes
        if not out.exists():
            tree, partial = shared / f"{key}.tree", shared / f"{key}.partial"
            for path in (tree, partial):
                shutil.rmtree(path, ignore_errors=True)
            checkout(release, tree)
            for_tests(tree, board)
            # The run's apbuild settings (a mirror, say), less a shared cache's registry.
            env = {k: v for k, v in os.environ.items()
                   if k.startswith("APBUILD_") and k != "APBUILD_CACHE_REMOTE"}
            env |= {"HOME": os.environ.get("HOME", "/root"), "APBUILD_CACHE": str(cache_root),
                   "APBUILD_KEY_DIR": str(signing.default_dir()), "APBUILD_VENV": sys.prefix,
                   "APBUILD_NO_INSTALL": "1"}
            try:
                run([sys.executable, tree / "build.py", board, "--image-version", release.version,
                     "--output", partial], cwd=tree, env=env)
            except CommandError as e:
                raise ApbuildError(f"release {release.version} ({release.commit[:12]}) of {board} "
                                   f"did not build in {tree}: {e}") from None
            partial.rename(out)
            shutil.rmtree(tree)
    outputs = {kind: path for path in sorted(out.iterdir()) if not path.name.startswith(".")
               for ending, kind in KINDS.items() if path.name.endswith(ending)}
    return BuildResult(board=board, outputs=outputs, boot_files={}, did_work=False)


# The rootfs payload's xz preset in a release built for the tests: the release shipped -9.
TEST_ROOTFS_XZ = 1


def for_tests(tree: Path, board: str) -> None:
    """The release's tree as the tests build it. The rootfs payload is packed with xz -1, not
    the product's -9: the installer unpacks the same files onto sda3, at about the same cost
    (xz decodes -1 and -9 alike), and the update replaces that sda1 whole. Packing the VM's
    118 MB rootfs tar takes 25 CPU-s at -1 and 133 at -9, of about 180 for the whole build,
    and a run builds six releases. A VM release builds its qcow2 alone: the tests boot
    nothing else (no OVA, no VHDX). A tree whose files already say otherwise is left as it is."""
    with open(tree / "boards" / f"{board}.toml", "rb") as f:
        names = tomllib.load(f)
    product = tree / "products" / f"{names['product']}.toml"
    text = product.read_text()
    settings = tomllib.loads(text)
    if "rootfs_xz" not in settings and settings.get("rootfs_compression", "xz") == "xz":
        # A top-level key goes before the file's first table.
        first_table = re.search(r"^\[", text, re.M)
        at = first_table.start() if first_table else len(text)
        product.write_text(f"{text[:at]}rootfs_xz = {TEST_ROOTFS_XZ}\n{text[at:]}")
    machine = tree / "machines" / f"{names['machine']}.toml"
    text = machine.read_text()
    formats = tomllib.loads(text).get("image", {}).get("formats", [])
    if "qcow2" in formats and len(formats) > 1:
        machine.write_text(re.sub(r"^formats = \[.*\]$", 'formats = ["qcow2"]', text, count=1, flags=re.M))


def checkout(release: Release, dest: Path) -> None:
    """The release's tree at `dest`, from this clone's history."""
    try:
        run(["git", "-C", ROOT, "cat-file", "-e", f"{release.commit}^{{commit}}"])
    except CommandError:
        raise ApbuildError(f"release {release.version}: commit {release.commit} is not in this "
                           f"clone's history ({ROOT}); a shallow clone lacks it: git fetch --unshallow") from None
    dest.mkdir(parents=True)
    archive = dest.with_name(dest.name + ".tar")
    run(["git", "-C", ROOT, "archive", "--format=tar", "-o", archive, release.commit])
    run(["tar", "-xf", archive, "-C", dest])
    archive.unlink()
