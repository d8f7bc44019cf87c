"""The shared helpers: the sparse walk, the temp-and-rename write, the streaming door."""

import hashlib
import os

import pytest

from apbuild import files, run
from apbuild.errors import CommandError, CommandTimeout


def _sparse(path, size, writes):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)


def test_data_blocks_read_each_data_block_once_and_skip_holes(tmp_path):
    path = tmp_path / "sparse"
    block = 1 << 20
    # Data starting mid-block after a hole, two regions sharing a block, a trailing hole.
    _sparse(path, 64 << 20, [(3 * block + 100, b"a" * 10), (3 * block + 900_000, b"b"),
                             (20 * block - 5, b"c" * 10)])
    with open(path, "rb") as f:
        blocks = list(files.data_blocks(f, block))
    offsets = [at for at, _ in blocks]
    assert offsets == sorted(set(offsets))
    assert {3 * block, 19 * block, 20 * block} <= set(offsets)
    assert len(offsets) < 10
    data = path.read_bytes()
    assert all(chunk == data[at:at + block] for at, chunk in blocks)


def test_sparse_sha256_and_populated_size_match_a_dense_read(tmp_path):
    from apbuild.manifest import sha256_sparse
    from apbuild.ova import GRAIN, populated_size

    path = tmp_path / "disk"
    _sparse(path, 9 << 20, [(5000, os.urandom(70_000)), (8 << 20, os.urandom(10))])
    data = path.read_bytes()
    assert sha256_sparse(path) == hashlib.sha256(data).hexdigest()
    assert populated_size(path) == sum(GRAIN for i in range(0, len(data), GRAIN) if data[i:i + GRAIN].strip(b"\0"))


def test_replacing_leaves_nothing_when_the_block_fails(tmp_path):
    final = tmp_path / "out.img"
    final.write_text("old")
    with pytest.raises(RuntimeError), files.replacing(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]
    files.atomic_write(final, b"new")
    assert final.read_bytes() == b"new"


def test_spawn_streams_and_raises_with_stderr(tmp_path):
    with run.spawn(["sh", "-c", "cat; echo done"], stdin=run.PIPE) as proc:
        proc.stdin.write(b"fed ")
        proc.stdin.close()
        assert proc.stdout.read() == b"fed done\n"
    with pytest.raises(CommandError, match="broken"), run.spawn(["sh", "-c", "echo broken >&2; exit 3"]):
        pass
    with pytest.raises(CommandTimeout), run.spawn(["sleep", "5"], timeout=0.2):
        pass
    with pytest.raises(CommandTimeout):
        run.run(["sleep", "5"], timeout=0.2)


def test_every_tool_belongs_to_the_build_or_the_tests():
    assert {use for _, use in run.HOST_TOOLS.values()} == {"build", "test"}
    assert run.tools("build")["xz"] == "xz-utils"


def test_link_or_copy_links_and_never_writes_over_a_file(tmp_path):
    source, dest = tmp_path / "rootfs.tar.xz", tmp_path / "boot" / "rootfs.tar.xz"
    source.write_bytes(b"layer")
    dest.parent.mkdir()
    files.link_or_copy(source, dest)
    assert os.path.samefile(source, dest)
    other = tmp_path / "other"
    other.write_bytes(b"another")
    with pytest.raises(FileExistsError):
        files.link_or_copy(other, dest)
    assert source.read_bytes() == dest.read_bytes() == b"layer"


def test_link_or_copy_copies_across_filesystems(tmp_path, monkeypatch):
    import errno

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", cross_device)
    source, dest = tmp_path / "vmlinuz", tmp_path / "copy"
    source.write_bytes(b"kernel")
    files.link_or_copy(source, dest)
    assert dest.read_bytes() == b"kernel" and not os.path.samefile(source, dest)
