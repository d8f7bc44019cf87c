"""PyPI requirements (apbuild/pypi.py): pinned per architecture in the lockfile, sdists built
only when they give pure Python, installed into a virtualenv from the pinned files. The
resolving tests ask PyPI itself (marked network), with small real distributions: PyYAML
(binary wheels for amd64 and arm64, an sdist with a C extension) and MarkupSafe 1.1.1 (no
wheel for Python 3.11: an sdist that builds pure Python without a compiler)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from apbuild import config, debian, lockfile, pypi
from apbuild.cache import Cache
from apbuild.elfcheck import read_elf
from apbuild.errors import ApbuildError, ConfigError

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("MarkupSafe==1.1.1", "PyYAML==6.0.1")


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text('description = "an app"\n' + text)
    return path


def test_a_lockfile_without_python_is_written_as_before():
    # The python key is absent when no recipe has a virtualenv: the boards' lockfiles (and so
    # every stage key made from them) are unchanged by this feature.
    for board in ("x86_64-vm", "ipx13", "erp@x86_64-vm"):
        path = ROOT / "boards" / f"{board}.lock"
        assert lockfile.dumps(lockfile.read(path)) == path.read_text()


def test_the_bip_lockfiles_pin_every_file_by_hash_and_read_back():
    for board in ("bip@x86_64-vm", "bip@ipx13"):
        path = ROOT / "boards" / f"{board}.lock"
        lock = lockfile.read(path)
        assert lockfile.dumps(lock) == path.read_text()
        (venv,) = lock.venvs
        assert venv.path == "/opt/bip/venv" and "biuletyn-bip==0.7.1" in venv.requirements
        assert all(len(d.sha256) == 64 and d.url.endswith(d.filename) for d in venv.dists)
        machine = {"amd64": "x86_64", "arm64": "aarch64"}[lock.arch]
        binary = [d.filename for d in venv.dists if not d.filename.endswith(("-any.whl", ".tar.gz"))]
        assert binary and all(machine in name for name in binary), binary


def test_a_virtualenv_needs_its_directory_and_valid_requirements(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load_recipe(_recipe(tmp_path, '[python]\nrequirements = ["flask"]\n'))
    assert "python.venv" in str(e.value) and "app.toml" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config.load_recipe(_recipe(tmp_path, '[python]\nvenv = "/opt/a"\nrequirements = ["flask>>1"]\n'))
    assert "python.requirements" in str(e.value) and "'flask>>1' is not a Python requirement" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config.load_recipe(_recipe(tmp_path, '[python]\nvenv = "opt/a"\nrequirements = ["flask"]\n'))
    assert "python.venv" in str(e.value) and "absolute path" in str(e.value)
    recipe = config.load_recipe(_recipe(tmp_path, '[python]\nvenv = "/opt/a"\nrequirements = ["flask"]\n'))
    assert "/opt/a/**" in recipe.rootfs.keep   # the image keeps the whole virtualenv


def test_wheel_platform_tags_follow_the_images_glibc():
    tags = pypi.platforms("arm64", 36)
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and "manylinux_2_37_aarch64" not in tags
    assert pypi.platforms("armel", 36) == ["linux_armel"]


def test_the_image_python_must_be_the_hosts(tmp_path):
    with pytest.raises(ApbuildError, match="the image's Python is 3.9.2"):
        pypi.resolve(REQUIREMENTS, "amd64", "3.9.2", 36, Cache(tmp_path), "test")


@pytest.mark.network
def test_resolve_pins_a_wheel_per_arch_and_builds_pure_sdists(tmp_path):
    cache = Cache(tmp_path / "cache")
    arm = {d.name: d for d in pypi.resolve(REQUIREMENTS, "arm64", "3.11.2", 36, cache, "test")}
    amd = {d.name: d for d in pypi.resolve(REQUIREMENTS, "amd64", "3.11.2", 36, cache, "test")}
    assert "aarch64" in arm["PyYAML"].filename and "x86_64" in amd["PyYAML"].filename
    assert arm["MarkupSafe"].filename == amd["MarkupSafe"].filename == "MarkupSafe-1.1.1.tar.gz"
    wheel = pypi.wheel_for(arm["MarkupSafe"], cache, "arm64")
    assert wheel.name == "markupsafe-1.1.1-py3-none-any.whl"
    # armel has no PyYAML wheel; its sdist needs a compiler: a clear error naming it.
    with pytest.raises(ApbuildError, match=r"PyYAML 6\.0\.1 has no wheel for armel, only an sdist .*"
                                           r"not a pure-Python wheel: it needs a compiler for armel"):
        pypi.resolve(REQUIREMENTS, "armel", "3.11.2", 36, cache, "test")

    # Installed from the pinned files: the console script runs the venv's Python, the
    # extension is the target's, and a second install (another cache) gives the same bytes.
    venv = lockfile.Venv("/opt/app/venv", REQUIREMENTS, tuple(arm.values()))
    tree = pypi.venv_tree(venv, "3.11.2", "arm64", cache, b"VIRTUAL_ENV=__VENV_DIR__\n")
    site = "/opt/app/venv/lib/python3.11/site-packages"
    assert tree.get("/opt/app/venv/bin/python3").target == "/usr/bin/python3.11"
    assert tree.get("/opt/app/venv/bin/activate").read() == b"VIRTUAL_ENV=/opt/app/venv\n"
    assert b"version = 3.11.2" in tree.get("/opt/app/venv/pyvenv.cfg").read()
    assert tree.get(f"{site}/markupsafe/__init__.py") is not None
    (so,) = [p for p in tree.entries if p.startswith(f"{site}/yaml/_yaml") and p.endswith(".so")]
    assert read_elf(tree.get(so).read()).machine == "EM_AARCH64"
    assert not [p for p in tree.entries if p.endswith(".pyc")]

    again = Cache(tmp_path / "again")
    for d in venv.dists:        # the downloads only: the install and the sdist build are redone
        again.put_blob(_copy(cache.blob(d.sha256), tmp_path / d.sha256), d.sha256, d.name)
    other = pypi.venv_tree(venv, "3.11.2", "arm64", again, b"VIRTUAL_ENV=__VENV_DIR__\n")
    assert _digest(other) == _digest(tree)


def _copy(src: Path, dest: Path) -> Path:
    dest.write_bytes(src.read_bytes())
    return dest


def _digest(tree) -> dict[str, tuple]:
    return {p: (e.kind, e.mode, e.target, hashlib.sha256(e.read()).hexdigest() if e.kind == "file" else "")
            for p, e in tree.entries.items()}


def test_pinned_files_are_checked_by_hash(tmp_path):
    cache = Cache(tmp_path)
    served = tmp_path / "pkg-1.0-py3-none-any.whl"
    served.write_bytes(b"not the pinned bytes")
    dist = lockfile.PythonDist("pkg", "1.0", served.name, served.as_uri(), "0" * 64)
    with pytest.raises(ApbuildError, match="sha256 is .*, expected 0{64}; refused"):
        pypi.fetch(dist, cache)
    assert not cache.has_blob(dist.sha256)
    assert dataclasses.replace(dist, filename="pkg-1.0.tar.gz").is_sdist


def test_the_sbom_lists_the_pypi_distributions():
    from apbuild import sbom

    lock = lockfile.read(ROOT / "boards" / "bip@ipx13.lock")
    doc = sbom.document("bip-arm64", "BIP", "100001", "arm64", lock, [], 0)
    purls = {ref["referenceLocator"] for p in doc["packages"] for ref in p.get("externalRefs", ())}
    assert "pkg:pypi/biuletyn-bip@0.7.1" in purls and "pkg:pypi/markupsafe@1.1.1" in purls
    cffi = next(p for p in doc["packages"] if p["name"] == "cffi")
    assert "aarch64" in cffi["downloadLocation"] and len(cffi["checksums"][0]["checksumValue"]) == 64


def test_an_unreachable_index_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.time, "sleep", lambda seconds: None)   # all six tries, no minute of waits
    dist = lockfile.PythonDist("pkg", "1.0", "pkg-1.0-py3-none-any.whl",
                               "http://127.0.0.1:9/pkg-1.0-py3-none-any.whl", "0" * 64)
    with pytest.raises(ApbuildError, match=r"^pkg 1\.0: cannot download pkg-1\.0-py3-none-any\.whl from PyPI \(.*; tried 6 times\)"):
        pypi.fetch(dist, Cache(tmp_path))
