"""The shared cache in an OCI registry (--cache-remote), against a real registry on the
loopback (Debian's docker-registry): a cold runner pulls every stage and gets the same bytes;
a damaged blob is refused and its stage built; a registry that goes away mid-build costs the
build nothing but one warning."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from apbuild import lockfile
from apbuild.cache import Cache, fingerprint, sha256_file
from apbuild.config import find_root, load_project
from apbuild.errors import ApbuildError
from apbuild.pipeline import build
from apbuild.remote import Remote, pack, parse, unpack
from apbuild.testing import scratch
from apbuild.testing.builds import start_build
from apbuild.testing.registry import registry
from apbuild.testing.seeding import seeded_cache

ROOT = find_root()
BOARD = "x86_64-vm"
# Every test here uses the one registry and the first one's pushes: one worker, in order.
pytestmark = pytest.mark.xdist_group("remote-cache")


@pytest.mark.parametrize("url,host,repo,insecure", [
    ("oci://registry.example.com/apbuild/cache", "registry.example.com", "apbuild/cache", False),
    ("oci://127.0.0.1:5000/cache", "127.0.0.1:5000", "cache", True),
    ("oci://localhost:5000/a.b-c/d_e", "localhost:5000", "a.b-c/d_e", True),
])
def test_a_remote_is_oci_host_and_repository(url, host, repo, insecure):
    got = parse(url)
    assert (got.host, got.repository, got.insecure) == (host, repo, insecure)


@pytest.mark.parametrize("url", ["https://registry.example.com/cache", "oci://registry.example.com",
                                 "oci://registry.example.com/Cache", "registry.example.com/cache"])
def test_a_wrong_remote_is_one_line_that_shows_the_form(url):
    with pytest.raises(ApbuildError, match=r"expected oci://HOST\[:PORT\]/REPOSITORY") as err:
        parse(url)
    assert "\n" not in str(err.value)


def test_a_layer_keeps_a_sparse_file_sparse_and_whole(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir(), dest.mkdir()
    with open(src / "disk.img", "wb") as f:      # 1 GiB apparent, 3 MiB of data in two places
        f.truncate(1 << 30)
        f.seek(5 << 20)
        f.write(b"x" * 100_000)
        f.seek(700 << 20)
        f.write(os.urandom(3 << 20))
    (src / "small").write_bytes(b"hello")
    pack(src, tmp_path / "layer.tar")
    assert (tmp_path / "layer.tar").stat().st_size < 4 << 20
    unpack(tmp_path / "layer.tar", dest)
    for name in ("disk.img", "small"):
        assert sha256_file(src / name) == sha256_file(dest / name)
    assert os.stat(dest / "disk.img").st_blocks * 512 < 8 << 20


@pytest.fixture(scope="module")
def reg(request):
    with scratch(request, "registry") as tmp, registry(tmp) as r:
        yield r


@pytest.fixture(scope="module")
def pushed(request, reg, build_cache):
    """A runner that built the VM with the registry set: every stage is in the registry, and
    so is every package (pushed as a runner pushes what it downloads from the mirror)."""
    project = load_project(ROOT, BOARD)
    remote = Remote(reg.url())
    for p in lockfile.read(project.board.lockfile).packages:
        remote.push_blob(p.sha256, build_cache.blob(p.sha256))
    with scratch(request, "pushed") as out:
        result = build(project, Cache(build_cache.root, remote=remote), out)
        assert remote.gone is None, remote.gone
        yield project, result


def _same_outputs(a, b) -> None:
    assert set(a.outputs) == set(b.outputs)
    for kind in a.outputs:   # fingerprint: the raw disk's holes are not read
        assert fingerprint(a.outputs[kind]) == fingerprint(b.outputs[kind]), kind


def _no_mirror(monkeypatch) -> None:
    """The mirror, asked for anything, fails the test: what comes, comes from the registry.
    (APBUILD_MIRROR cannot say it: the SBOM names each package's mirror URL, so another
    mirror is another SBOM.)"""
    from apbuild import debian

    def asked(url: str, *args, **kwargs):
        raise AssertionError(f"the mirror was asked for {url}")
    monkeypatch.setattr(debian, "download", asked)


def test_a_cold_runner_pulls_every_stage_and_builds_the_same_bytes(pushed, reg, tmp_path, monkeypatch):
    project, first = pushed
    _no_mirror(monkeypatch)
    cache = Cache(tmp_path / "cold", remote=Remote(reg.url()))
    second = build(project, cache, tmp_path / "out")
    # The leak scans are every runner's own: it looks for this runner's host strings (its
    # cache's path among them), which are in its key.
    assert second.built == ("leakscan", "manifest-leakscan"), second.built
    _same_outputs(first, second)
    assert not (tmp_path / "cold" / "blobs").exists(), "no stage was built: no package is needed"


def _manifest(reg, tag: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{reg.port}/v2/apbuild/cache/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request) as r:
        return json.load(r)


def _stage_key(reg, stage: str) -> str:
    """The key of a stage of the pushed build, read off its tag in the registry."""
    with urllib.request.urlopen(f"http://127.0.0.1:{reg.port}/v2/apbuild/cache/tags/list") as r:
        tags = json.load(r)["tags"]
    keys = [t[len(stage) + 1:] for t in tags if t.startswith(f"{stage}-") and len(t) == len(stage) + 65]
    assert len(keys) == 1, tags
    return keys[0]


def test_a_damaged_blob_is_refused_and_its_stage_built(pushed, reg, tmp_path, monkeypatch, capfd):
    project, first = pushed
    _no_mirror(monkeypatch)
    damaged = {}
    for stage in ("qcow2", "rootfs-config"):   # the second needs every package again
        tag = f"{stage}-{_stage_key(reg, stage)}"
        blob = reg.blob_file(_manifest(reg, tag)["layers"][0]["digest"])
        damaged[blob] = blob.read_bytes()
        data = bytearray(damaged[blob])
        data[len(data) // 2] ^= 0x01      # one bit, in the middle of the file
        blob.write_bytes(bytes(data))
    try:
        second = build(project, Cache(tmp_path / "cold", remote=Remote(reg.url())), tmp_path / "out")
    finally:
        for blob, data in damaged.items():
            blob.write_bytes(data)
    assert sorted(second.built) == ["leakscan", "manifest-leakscan", "qcow2", "rootfs-config"], second.built
    _same_outputs(first, second)
    err = capfd.readouterr().err
    assert err.count("; refused") == 2, err
    # The packages the configuration layer needed came from the registry.
    lock = lockfile.read(project.board.lockfile)
    assert all((tmp_path / "cold").joinpath("blobs", "sha256", p.sha256).is_file() for p in lock.packages)


def test_the_registry_going_away_mid_build_costs_one_warning(pushed, reg, build_cache, tmp_path):
    project, first = pushed
    cache = seeded_cache(tmp_path / "cache", [BOARD], build_cache)   # its downloads, no stage
    out = tmp_path / "out"
    proc, seen = start_build(BOARD, "--cache", str(cache.root), "--cache-remote", reg.url(), "--output", str(out))
    deadline = time.monotonic() + 300
    while "‣ rootfs (from" not in "".join(seen):   # the root filesystem came from the registry
        assert proc.poll() is None and time.monotonic() < deadline, "".join(seen)
        time.sleep(0.05)
    reg.stop()                                     # then the registry is gone
    assert proc.wait(timeout=900) == 0, "".join(seen)
    time.sleep(0.5)    # the reader's last chunk
    log = "".join(seen)
    assert log.count("warning: remote cache") == 1, log
    assert "going on with the local cache only" in log
    assert "‣ boot" in log and "‣ boot (from" not in log, "the stages after it are built:\n" + log
    for kind, path in first.outputs.items():
        assert fingerprint(out / path.name) == fingerprint(path), kind
