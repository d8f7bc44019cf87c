"""Earlier releases built as they shipped, for the update-path tests and bench/powercut.py:
the release's commit is taken out of this repository's history (git archive) into a
directory of its own and built there by its own build.py, with its own code, recipes and
lockfile, and this run's Python environment, cache and signing key (the key the tree's
updates are signed with). A release is built once per run for every pytest-xdist worker
(a file lock), and its outputs get their final directory only when the build succeeded."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import sys
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
