"""The file tree and its writers: numeric owners, one timestamp, same bytes every time."""

import io
import shutil
import stat
import subprocess
import tarfile

from apbuild.tree import DIR, FILE, SYMLINK, Entry, Tree


def sample() -> Tree:
    t = Tree()
    t.add("/usr/bin/tool", Entry(FILE, 0o755, data=b"#!/bin/sh\necho hi\n"))
    t.add("/etc/shadow", Entry(FILE, 0o600, 0, 42, data=b"root:x:::\n"))
    t.add("/bin", Entry(SYMLINK, target="usr/bin"))
    t.add("/home/admin", Entry(DIR, 0o750, 1000, 1000))
    return t


def test_resolve_follows_links_component_by_component():
    t = sample()
    assert t.resolve("/bin/tool") == "/usr/bin/tool"
    assert t.resolve("/bin/missing") is None
    t.add("/usr/lib/x/libz.so.1", Entry(SYMLINK, target="libz.so.1.2"))
    t.add("/usr/lib/x/libz.so.1.2", Entry(FILE, data=b"z"))
    t.add("/lib", Entry(SYMLINK, target="/usr/lib"))
    assert t.resolve("/lib/x/libz.so.1") == "/usr/lib/x/libz.so.1.2"


def test_tar_is_reproducible_with_numeric_owners():
    a, b = io.BytesIO(), io.BytesIO()
    sample().write_tar(a, 1700000000)
    sample().write_tar(b, 1700000000)
    assert a.getvalue() == b.getvalue()
    with tarfile.open(fileobj=io.BytesIO(a.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    shadow = members["./etc/shadow"]
    assert (shadow.uid, shadow.gid, shadow.mode, shadow.uname) == (0, 42, 0o600, "")
    assert members["./home/admin"].uid == 1000
    assert members["./bin"].issym() and members["./bin"].linkname == "usr/bin"
    assert all(m.mtime == 1700000000 for m in members.values())


def test_cpio_is_what_cpio_reads(tmp_path):
    buf = io.BytesIO()
    sample().write_cpio(buf, 1700000000)
    archive = tmp_path / "x.cpio"
    archive.write_bytes(buf.getvalue())
    if shutil.which("cpio") is None:
        return
    listing = subprocess.run(["cpio", "-itv", "--quiet", "-F", str(archive)],
                             capture_output=True, text=True, check=True).stdout
    assert "etc/shadow" in listing and "usr/bin/tool" in listing
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames", "-F", str(archive)],
                   cwd=out, check=True)
    assert (out / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((out / "usr/bin/tool").stat().st_mode) == 0o755
    assert (out / "bin").is_symlink()
    assert (out / "etc/shadow").stat().st_gid == 42


def test_two_tar_layers_concatenate_into_one_archive(tmp_path):
    first, second = Tree(), Tree()
    first.add("/etc/a", Entry(FILE, data=b"a"))
    second.add("/etc/b", Entry(FILE, data=b"b"))
    buf = io.BytesIO()
    first.write_tar(buf, 0, end=False)
    second.write_tar(buf, 0)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        assert sorted(tar.getnames()) == ["./etc", "./etc", "./etc/a", "./etc/b"]


def test_fingerprint_depends_on_content_not_on_holes(tmp_path):
    from apbuild.cache import fingerprint

    sparse, dense = tmp_path / "sparse", tmp_path / "dense"
    with open(sparse, "wb") as f:
        f.truncate(8 << 20)
        f.seek(5 << 20)
        f.write(b"data")
    content = bytearray(8 << 20)
    content[5 << 20:(5 << 20) + 4] = b"data"
    dense.write_bytes(bytes(content))  # the same bytes, zeros written out
    assert fingerprint(sparse) == fingerprint(dense)
    content[0] = 1
    dense.write_bytes(bytes(content))
    assert fingerprint(sparse) != fingerprint(dense)
