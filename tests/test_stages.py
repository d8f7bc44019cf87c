"""Stages are their declared inputs: every field of every stage's inputs record reaches the
stage's key (change it: the key changes), what the machine alone differs in does not, and
reading a build's inputs writes nothing. The rebuild after one template change is checked on
a real build: only that layer and what follows it run again."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apbuild import signing
from apbuild.cache import Cache, fingerprint
from apbuild.config import find_root, list_boards, load_project
from apbuild.errors import ApbuildError
from apbuild.inputs import BuildInputs
from apbuild.lockfile import Lockfile
from apbuild.packages import Packages
from apbuild.rootfs import ImageBoard
from apbuild.stage import Content, Runner, canonical
from apbuild.testing.seeding import definitions_copy
from apbuild.testing.stages import stage_records, stages

ROOT = find_root()


def mutations(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(field path, a copy of value with that one leaf changed), for every leaf."""
    if isinstance(value, Content):
        yield f"{where}.digest", dataclasses.replace(value, digest=value.digest + "0")
    elif isinstance(value, Packages):
        first = value.lock.packages[0]
        changed = (dataclasses.replace(first, sha256="0" * 64),) + value.lock.packages[1:]
        yield f"{where}.lock", Packages(dataclasses.replace(value.lock, packages=changed), value.cache)
    elif isinstance(value, ImageBoard):
        board = value._board
        for f in dataclasses.fields(board):
            if f.name in value.stage_key():  # what a template may read (refused otherwise)
                for path, new in mutations(getattr(board, f.name), f"{where}.{f.name}"):
                    yield path, ImageBoard(dataclasses.replace(board, **{f.name: new}))
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            if isinstance(current, Path):
                continue  # a location, named in errors: never content
            for path, new in mutations(current, f"{where}.{f.name}"):
                yield path, dataclasses.replace(value, **{f.name: new})
    elif isinstance(value, tuple):
        if value:
            for path, new in mutations(value[0], f"{where}[0]"):
                yield path, (new,) + value[1:]
            yield f"{where}[-1] removed", value[:-1]
        else:
            yield f"{where} + one", ("x",)
    elif isinstance(value, dict):
        if value:
            k = next(iter(value))
            for path, new in mutations(value[k], f"{where}[{k!r}]"):
                yield path, {**value, k: new}
        yield f"{where} + one", {**value, "added": "x"}
    elif isinstance(value, bool):
        yield where, not value
    elif isinstance(value, int):
        yield where, value + 1
    elif isinstance(value, str):
        yield where, value + "x"
    elif value is None:
        yield where, "x"
    else:
        raise TypeError(f"{where}: no mutation for {type(value).__name__}")


@pytest.mark.parametrize("board", list_boards(ROOT))
def test_every_input_field_reaches_its_stage_key(board, tmp_path, update_key):
    runner = Runner(Cache(tmp_path / "cache"))
    records = stages(load_project(ROOT, board), runner.cache)
    assert {"kernel", "rootfs-system", "rootfs-config", "boot", "disk", "sbom", "manifest"} <= set(records)
    checked = 0
    for stage, (make, record) in records.items():
        key = runner.key(stage, make, record)
        for path, changed in mutations(record):
            assert runner.key(stage, make, changed) != key, f"{stage}: {path} is not in the key"
            checked += 1
    assert checked > 200, checked


def test_what_only_the_machine_differs_in_stays_out_of_the_keys(tmp_path, update_key):
    """ipx10 and ipx11 share the image: a template must not see RAM or the board's name."""
    runner = Runner(Cache(tmp_path / "cache"))
    make, record = stages(load_project(ROOT, "ipx10"), runner.cache)["rootfs-config"]
    board = record.context.board._board
    other = dataclasses.replace(board, name="other", ram_mb=board.ram_mb * 2, storage="x", cpus=4)
    moved = dataclasses.replace(record, context=dataclasses.replace(record.context, board=ImageBoard(other)))
    assert runner.key("rootfs-config", make, moved) == runner.key("rootfs-config", make, record)


def test_a_path_is_never_part_of_a_key():
    assert canonical(Content(Path("/a/b"), "d")) == "d"
    with pytest.raises(TypeError, match="use Content"):
        canonical({"file": Path("/etc/passwd")})


def test_reading_the_inputs_writes_nothing(tmp_path, monkeypatch):
    """Constructing a build's inputs makes no lockfile, no key and no cache entry; without
    them it says which command makes them."""
    definitions_copy(tmp_path)
    keys, cache = tmp_path / "keys", tmp_path / "cache"
    monkeypatch.setenv("APBUILD_KEY_DIR", str(keys))
    (tmp_path / "boards" / "ipx13.lock").unlink()
    project = load_project(tmp_path, "ipx13")
    with pytest.raises(ApbuildError, match=r"ipx13.lock does not exist: './build.py lock ipx13'"):
        BuildInputs.read(project, Cache(cache))
    shutil.copy(ROOT / "boards" / "ipx13.lock", tmp_path / "boards" / "ipx13.lock")
    with pytest.raises(ApbuildError, match=r"no update signing key .*'./build.py keygen'"):
        BuildInputs.read(project, Cache(cache))
    assert not keys.exists() and not cache.exists()
    signing.ensure_key(keys)
    before = sorted(p for p in tmp_path.rglob("*"))
    inputs = BuildInputs.read(project, Cache(cache))
    stage_records(project, Cache(cache))
    assert isinstance(inputs.packages.lock, Lockfile)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def project_copy(dest: Path) -> Path:
    """The project's definitions in another directory (the cache is shared: keys hold no paths)."""
    for name in ("boards", "machines", "products", "partitions", "recipes", "rootfs-overlay"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, symlinks=True)
    return dest


def test_one_template_changed_rebuilds_only_its_layer_and_what_follows(tmp_path, build_cache):
    from apbuild.pipeline import build

    root = project_copy(tmp_path / "project")
    first = build(load_project(root, "x86_64-vm"), build_cache, tmp_path / "out1")
    # Another checkout, the same definitions: every stage is reused.
    again = build(load_project(root, "x86_64-vm"), build_cache, tmp_path / "out2")
    assert again.built == (), again.built
    # The stages the tests key (apbuild.testing.stages) are the build's: same make functions
    # (their code is in the key), same records. Those keyed by no earlier stage's result:
    runner = Runner(build_cache)
    table = stages(load_project(root, "x86_64-vm"), build_cache)
    unchained = [n for n in table if n in ("kernel", "sbom") or n.endswith(("-system", "-config"))]
    assert len(unchained) == 6, unchained
    for name in unchained:
        make, record = table[name]
        assert build_cache.lookup(name, runner.key(name, make, record)) is not None, name

    template = root / "recipes" / "base" / "rootfs" / "etc" / "fstab.j2"
    assert template.is_file(), "the test edits the rootfs's fstab template"
    template.write_text(template.read_text() + "# {{ platform }}: edited by a test\n")
    changed = build(load_project(root, "x86_64-vm"), build_cache, tmp_path / "out3")
    assert changed.built[0] == "rootfs-config", changed.built
    assert not {"kernel", "rootfs-system", "ramdisk-system", "ramdisk-config", "ramdisk", "sbom"} & set(changed.built)
    assert {"rootfs", "boot", "disk", "qcow2", "manifest"} <= set(changed.built)
    assert fingerprint(first.outputs["raw"]) != fingerprint(changed.outputs["raw"])


@dataclasses.dataclass(frozen=True)
class _TemplateInputs:
    overlay: Content


def test_a_source_edited_during_its_stage_keeps_nothing(tmp_path):
    """A template saved while the stage reads it: the result would be the new text under the
    old text's key, so it is not kept, and the build says why."""
    from apbuild.errors import ApbuildError
    from apbuild.stage import directory

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "motd.j2").write_text("old\n")
    runner = Runner(Cache(tmp_path / "cache"))
    inputs = _TemplateInputs(directory(overlay))

    def make(inp: _TemplateInputs, work: Path) -> None:
        (inp.overlay.path / "motd.j2").write_text("new\n")     # the user saves meanwhile
        (work / "motd").write_text((inp.overlay.path / "motd.j2").read_text())

    with pytest.raises(ApbuildError, match=r"overlay changed while the demo stage was built from it"):
        runner.run("demo", make, inputs, "motd")
    assert runner.cache.lookup("demo", runner.key("demo", make, inputs)) is None
    # Built again from what is there now: kept, under the new content's key.
    again = _TemplateInputs(directory(overlay))
    def make_again(inp: _TemplateInputs, work: Path) -> None:
        (work / "motd").write_text("new\n")

    result = runner.run("demo", make_again, again, "motd")
    assert result.path.read_text() == "new\n"
    assert runner.cache.lookup("demo", runner.key("demo", make_again, again)) is not None
