"""A stage's key covers the apbuild code it runs and nothing more (apbuild.codedigest): an
edit of a module that a stage does not run keeps the stage's key, an edit of one it runs,
however deep in its imports, changes it."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from apbuild import codedigest
from apbuild.cache import Cache
from apbuild.config import find_root, load_project
from apbuild.stage import Runner
from apbuild.testing.stages import stages

ROOT = find_root()
IMAGE = {"kernel", "ramdisk-system", "ramdisk-config", "ramdisk-ext2", "ramdisk", "rootfs-system",
         "rootfs-config", "rootfs"}
OUTPUT = {"qcow2", "vhdx", "ova", "sbom", "raw-sha256", "manifest"}


def test_every_form_of_import_in_the_package_is_read():
    source = """
import os
import apbuild.lockfile
from . import log, run as runner
from .files import replacing
from apbuild import mirror
from apbuild.debian import x
from .. import elsewhere
from os import path

def late():
    from .users import y
"""
    assert codedigest.imported(source, "apbuild") == {"lockfile", "log", "run", "files", "mirror",
                                                       "debian", "users"}


def package(tmp: Path, modules: dict[str, str]) -> Path:
    pkg = tmp / "pkg"
    pkg.mkdir()
    for name, source in modules.items():
        (pkg / f"{name}.py").write_text(source)
    return pkg


def test_the_digest_follows_imports_and_only_them(tmp_path):
    pkg = package(tmp_path, {"__init__": "__version__ = '1'\n", "a": "from . import b\n",
                             "b": "from .c import f\nfrom . import a\n", "c": "def f(): pass\n",
                             "d": "from . import a\n"})
    assert codedigest.closure(["a"], pkg) == ["__init__", "a", "b", "c"]   # a cycle is fine
    before = codedigest.digest(["a"], pkg)
    (pkg / "d.py").write_text("# d imports a; a does not import d\n")
    assert codedigest.digest(["a"], pkg) == before
    for name in ("c", "__init__"):
        (pkg / f"{name}.py").write_text((pkg / f"{name}.py").read_text() + "# edited\n")
        assert codedigest.digest(["a"], pkg) != before, f"{name}.py is run by a but not in its digest"
        before = codedigest.digest(["a"], pkg)


def test_a_build_parses_only_the_sources_earlier_builds_have_not_read(tmp_path, monkeypatch):
    """What each source imports is kept in a file in the cache (ImportMemo): a later build
    parses only the modules edited since, with the same digests, and a damaged memo file is
    read as empty."""
    pkg = package(tmp_path, {"__init__": "", "a": "from . import b\n", "b": "from .c import f\n",
                             "c": "def f(): pass\n"})
    path = tmp_path / "cache" / "code-imports.json"
    memo = codedigest.ImportMemo(path)
    before = codedigest.digest(["a"], pkg, memo)
    memo.save()
    assert before == codedigest.digest(["a"], pkg) and path.is_file()
    parsed: list[str] = []
    real = codedigest.imported
    monkeypatch.setattr(codedigest, "imported", lambda source, name: parsed.append(source) or real(source, name))
    assert codedigest.digest(["a"], pkg, codedigest.ImportMemo(path)) == before and parsed == []
    (pkg / "c.py").write_text("from . import d\n")
    (pkg / "d.py").write_text("X = 1\n")
    memo = codedigest.ImportMemo(path)
    after = codedigest.digest(["a"], pkg, memo)
    memo.save()
    assert sorted(parsed) == sorted(["from . import d\n", "X = 1\n"])      # c and d only
    assert after == codedigest.digest(["a"], pkg) != before
    assert codedigest.closure(["a"], pkg, codedigest.ImportMemo(path)) == ["__init__", "a", "b", "c", "d"]
    for damaged in ("not json", '{"k": 5}', "[]"):
        path.write_text(damaged)
        assert codedigest.ImportMemo(path).known == {}
        assert codedigest.digest(["a"], pkg, codedigest.ImportMemo(path)) == after


@dataclasses.dataclass(frozen=True)
class _Record:
    nested: tuple


def test_the_classes_in_a_record_count_as_code_the_stage_runs():
    from apbuild.lockfile import Lockfile
    from apbuild.stage import Content, code_modules

    record = _Record(({"k": Content(Path("/x"), "d")}, Lockfile))
    assert code_modules(codedigest.closure, record) == {"codedigest", "stage"}
    # A class object is a value like any other: only instances lend their class's module.
    assert "lockfile" not in code_modules(len, record)


@pytest.fixture(scope="module")
def vm_stages(update_key, tmp_path_factory):
    """The VM's stages (make function, record), read once for the module's tests."""
    return stages(load_project(ROOT, "x86_64-vm"), Cache(tmp_path_factory.mktemp("cache")))


def copy_of_apbuild(tmp_path: Path) -> Path:
    copy = tmp_path / "apbuild"
    shutil.copytree(ROOT / "apbuild", copy, ignore=shutil.ignore_patterns("__pycache__", "testing"))
    return copy


def edited_keys(tmp_path: Path, records: dict, module: str) -> set[str]:
    """The stages whose key changes when apbuild/<module>.py is edited."""
    copy = copy_of_apbuild(tmp_path)
    cache = Cache(tmp_path / "cache")
    runner = Runner(cache, copy)            # a runner reads each closure's code once
    before = {name: runner.key(name, make, r) for name, (make, r) in records.items()}
    source = copy / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited by a test\n")
    runner = Runner(cache, copy)
    after = {name: runner.key(name, make, r) for name, (make, r) in records.items()}
    return {name for name in records if before[name] != after[name]}


EVERY = IMAGE | OUTPUT | {"boot", "disk"}


# Modules are the unit. outputs.py runs all six output stages, so an edit of what it imports
# (manifest, ova, leakscan) reaches all six; it also makes their records from the build's
# inputs (it imports inputs.py, which imports the definitions), so an edit of config.py or
# rootfs.py reaches them as it reaches the image stages, whose records hold those classes.
@pytest.mark.parametrize("module, changed", [
    ("cli", set()), ("pipeline", set()), ("update", set()),
    ("manifest", OUTPUT), ("ova", OUTPUT), ("leakscan", OUTPUT), ("outputs", OUTPUT),
    ("bootfs", {"boot", "disk"}), ("disk", {"boot", "disk"}), ("images", IMAGE),
    ("rootfs", EVERY), ("config", EVERY), ("stage", EVERY), ("__init__", EVERY),
])
def test_an_edit_changes_the_keys_of_the_stages_that_run_it(module, changed, vm_stages, tmp_path):
    assert edited_keys(tmp_path, vm_stages, module) == changed & set(vm_stages), module


def key_after_edit(key, copy: Path, module: str) -> tuple[str, str]:
    """key(copy) before and after apbuild/<module>.py is edited in the copy."""
    codedigest.module_digest.cache_clear()       # it holds each module's digest for the process
    before = key(copy)
    source = copy / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited by a test\n")
    codedigest.module_digest.cache_clear()
    return before, key(copy)


# Made outside the stage runner, once per .deb and per virtualenv: keyed by their code too.
@pytest.mark.parametrize("module, changes", [
    ("debpkg", True), ("tree", True), ("__init__", True), ("pipeline", False), ("rootfs", False)])
def test_a_debs_unpacked_files_are_keyed_by_the_code_that_unpacks_them(module, changes, tmp_path):
    from apbuild.debpkg import unpack_key

    before, after = key_after_edit(lambda pkg: unpack_key("ab" * 32, pkg), copy_of_apbuild(tmp_path), module)
    assert before.startswith("ab" * 32)
    assert (before != after) == changes, module


@pytest.mark.parametrize("module, changes", [
    ("pypi", True), ("lockfile", True), ("debpkg", False), ("images", False)])
def test_a_virtualenv_is_keyed_by_the_code_that_installs_it(module, changes, tmp_path):
    from apbuild.lockfile import Venv
    from apbuild.pypi import venv_key

    venv = Venv(path="/opt/x/venv", requirements=("x==1",), dists=())
    before, after = key_after_edit(lambda pkg: venv_key(venv, "3.11.2", "amd64", b"", pkg),
                                   copy_of_apbuild(tmp_path), module)
    assert (before != after) == changes, module
