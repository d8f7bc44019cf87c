"""`./build.py lock BOARD`: it names every package whose version changes before it writes."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from apbuild import cli, lockfile
from apbuild.cache import Cache, default_root
from apbuild.config import find_root
from apbuild.lockfile import LockedPackage, Lockfile

ROOT = find_root()


def package(name: str, version: str) -> LockedPackage:
    return LockedPackage(name, version, "amd64", "bookworm", f"pool/{name}_{version}.deb", 1, "0" * 64, name)


def test_diff_names_changed_new_and_removed_packages():
    def lock(*pkgs):
        return Lockfile("amd64", "Mon, 23 Nov 2026 11:22:37 UTC", (), (), pkgs)
    old = lock(package("a", "1"), package("b", "1"), package("c", "1"))
    new = lock(package("a", "1"), package("b", "2"), package("d", "1"))
    assert lockfile.diff(old, new) == [("b", "1", "2"), ("c", "1", None), ("d", None, "1")]
    assert lockfile.diff(new, new) == []


@pytest.mark.network
def test_lock_shows_what_changes_then_writes(tmp_path, capsys):
    """Against the real mirror: a lock with one version made older and one package left out
    is refreshed, and both are named with their old and new versions."""
    root = tmp_path / "project"
    for d in ("boards", "machines", "products", "partitions", "recipes"):
        shutil.copytree(ROOT / d, root / d)
    path = root / "boards" / "x86_64-vm.lock"
    current = lockfile.read(path)
    kept = tuple(dataclasses.replace(p, version="0.1-old") if p.name == "busybox-static" else p
                 for p in current.packages if p.name != "socat")
    assert len(kept) == len(current.packages) - 1
    lockfile.write(path, dataclasses.replace(current, packages=kept))

    assert cli.cmd_lock(root, "x86_64-vm", Cache(default_root())) == 0
    err = capsys.readouterr().err
    written = lockfile.read(path)
    busybox, socat = written.package("busybox-static"), written.package("socat")
    assert f"  busybox-static: 0.1-old -> {busybox.version}\n" in err, err
    assert f"  socat: (new) -> {socat.version}\n" in err, err
    # The lines come before the file is written.
    assert err.index("busybox-static: 0.1-old") < err.index(f"wrote {path}")
