"""A real build of x86_64-vm, interrupted at the worst moment, then resumed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apbuild.cache import Cache
from apbuild.config import find_root
from apbuild.testing import scratch
from apbuild.testing.builds import start_build
from apbuild.testing.packed import unpacked
from apbuild.testing.seeding import seeded_cache

ROOT = find_root()
BOARD = "x86_64-vm"


def private_cache(tmp_path: Path, store: Cache) -> Path:
    """A cache of this test's own, its packages linked from the downloads in `store`."""
    return seeded_cache(tmp_path / "cache", [BOARD], store).root


def final_results(cache: Path, stage: str) -> list[Path]:
    """The stage's results under their final names (a build writes into .tmp-* first)."""
    stage_dir = cache / "stages" / stage
    return [p for p in stage_dir.iterdir() if not p.name.startswith(".tmp-")] if stage_dir.is_dir() else []


def start(cache: Path, out: Path) -> tuple[subprocess.Popen, list[str]]:
    return start_build(BOARD, "--output", str(out), env={"APBUILD_CACHE": str(cache)})


@pytest.fixture(scope="module")
def resumed(request, build_cache) -> Iterator[tuple[Path, Path, str]]:
    """A cold build in a cache of its own, killed inside the rootfs stage and run again to
    the end: (its cache, its output directory, what the killed run had logged)."""
    with scratch(request, "resumed") as tmp:
        cache = private_cache(tmp, build_cache)
        out = tmp / "out"
        proc, seen = start(cache, out)
        deadline = time.monotonic() + 600
        # The ramdisk's stages run beside the rootfs's (apbuild.parallel), and print their
        # lines when they end: the cache says when the ramdisk's result is final. Then the
        # rootfs's xz is still writing its layer (it takes about twice as long).
        while "‣ rootfs-system" not in "".join(seen) or not final_results(cache, "ramdisk"):
            assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            time.sleep(0.2)
        assert not final_results(cache, "rootfs-system"), "the rootfs's stage ended before the ramdisk's"
        proc.kill()      # a power cut for the build: no handler runs
        proc.wait()
        yield cache, out, "".join(seen)


# One worker runs both (pytest --dist loadgroup), in this order: they share the cold build.
@pytest.mark.xdist_group("cold-build")
def test_interrupted_build_leaves_nothing_final_and_resumes(resumed):
    cache, out, _ = resumed
    finals = list(out.glob("app-platform-*")) if out.exists() else []
    assert finals == [], f"half-written outputs under final names: {finals}"
    stage_dirs = cache / "stages" / "rootfs-system"
    assert final_results(cache, "rootfs-system") == []
    assert final_results(cache, "ramdisk")

    proc, seen = start(cache, out)
    assert proc.wait() == 0, "".join(seen)
    log = "".join(seen)
    assert "‣ rootfs-system" in log
    assert "ramdisk-system" not in log, "finished stages must be reused:\n" + log
    assert (out / "app-platform-x86_64.qcow2").is_file() and (out / "app-platform-x86_64.img").is_file()
    assert [p.name for p in stage_dirs.iterdir() if p.name.startswith(".tmp-")] == []

    proc, seen = start(cache, out)
    assert proc.wait() == 0
    log = "".join(seen)
    assert "‣" not in log and "up to date" in log, "a second build must do no work:\n" + log


def first_difference(a: Path, b: Path) -> str:
    """Name the first file that differs inside two builds' rootfs/ramdisk archives and sda1."""
    import io
    import tarfile

    def members(path: Path) -> dict[str, bytes]:
        with tarfile.open(fileobj=io.BytesIO(unpacked(path)), mode="r|") as tar:
            return {m.name: (tar.extractfile(m).read() if m.isfile() else repr((m.mode, m.uid, m.gid, m.linkname)).encode())
                    for m in tar}

    rootfs = "rootfs.tar.zst" if (a / "rootfs.tar.zst").exists() else "rootfs.tar.xz"
    ramdisk = next(n for n in ("ramdisk.cpio.zst", "ramdisk.cpio.xz", "ramdisk.ext2.xz") if (a / n).exists())
    for name in ("vmlinuz", ramdisk, rootfs, "boot.img"):
        if (a / name).read_bytes() != (b / name).read_bytes():
            if name == rootfs:
                ma, mb = members(a / name), members(b / name)
                for member in sorted(ma.keys() | mb.keys()):
                    if ma.get(member) != mb.get(member):
                        return f"{rootfs}: {member}"
            return name
    return "the disk image around sda1 (partition table or GRUB)"


@pytest.mark.xdist_group("cold-build")
def test_two_builds_are_bit_identical(resumed, tmp_path, build_cache):
    """Same lockfile, other cache, other output directory, another time: the same bytes. The
    first build is the interrupted one, finished in its own cold cache; the second is the
    session's, in the cache the other integration tests build in."""
    from apbuild.cache import fingerprint, sha256_file
    from apbuild.config import load_project
    from apbuild.pipeline import build

    project = load_project(ROOT, BOARD)
    cache, out, _ = resumed
    first = build(project, Cache(cache), out)
    second = build(project, build_cache, tmp_path / "out2")
    # Every published file: the disks (raw, qcow2, VHDX), the OVA, the SBOM and the build manifest.
    assert set(first.outputs) >= {"raw", "qcow2", "vhdx", "ova", "sbom", "manifest"}
    assert set(first.outputs) == set(second.outputs)
    for kind in sorted(first.outputs):
        a, b = first.outputs[kind], second.outputs[kind]
        same = fingerprint(a) == fingerprint(b) if kind == "raw" else sha256_file(a) == sha256_file(b)
        boot_a = first.boot_files["kernel"].parent
        boot_b = second.boot_files["kernel"].parent
        assert same, f"{kind} differs; first difference: {first_difference(boot_a, boot_b)}"


@pytest.mark.xdist_group("cold-build")
def test_sign_writes_the_update_of_the_built_sda1_and_no_disk(resumed, tmp_path):
    """./build.py sign, as a user types it, after the build: the update's boot.img is the
    built sda1 filesystem, and signing builds no disk (an update does not carry one)."""
    import hashlib
    import tarfile

    from apbuild.config import load_project
    from apbuild.pipeline import boot_image
    from apbuild.update import file_name

    cache, _, _ = resumed
    proc, said = start_build("sign", BOARD, "--output", str(tmp_path), env={"APBUILD_CACHE": str(cache)})
    assert proc.wait(300) == 0, "".join(said)
    board = load_project(ROOT, BOARD).board
    update = tmp_path / file_name(board.platform, board.image_version)
    assert sorted(p.name for p in tmp_path.iterdir()) == [update.name]
    with tarfile.open(update) as tar:
        payload = tar.extractfile("boot.img").read()
    # The sda1 filesystem the build made (its boot stage, cached by the sign run).
    built = boot_image(load_project(ROOT, BOARD), Cache(cache))
    assert hashlib.sha256(payload).digest() == hashlib.sha256(built.read_bytes()).digest()


@pytest.mark.parametrize("rootfs", ["rootfs.tar.xz", "rootfs.tar.zst"])
def test_first_difference_names_the_member(tmp_path, rootfs):
    import io
    import lzma

    from apbuild.tree import FILE, Entry, Tree

    for name, content in (("a", b"one"), ("b", b"two")):
        d = tmp_path / name
        d.mkdir()
        t = Tree()
        t.add("/etc/same", Entry(FILE, data=b"x"))
        t.add("/etc/changed", Entry(FILE, data=content))
        buf = io.BytesIO()
        t.write_tar(buf, 0)
        packed = (subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), capture_output=True, check=True).stdout
                  if rootfs.endswith(".zst") else lzma.compress(buf.getvalue()))
        (d / rootfs).write_bytes(packed)
        for other in ("vmlinuz", "ramdisk.cpio.zst", "boot.img"):
            (d / other).write_bytes(b"same")
    assert first_difference(tmp_path / "a", tmp_path / "b") == f"{rootfs}: ./etc/changed"
