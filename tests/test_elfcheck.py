"""The ELF check, on small programs the test compiles itself (gcc is the host compiler)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from apbuild import elfcheck
from apbuild.rootfs import select
from apbuild.tree import FILE, SYMLINK, Entry, Tree

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to make fixtures")


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("elf")
    (d / "foo.c").write_text("int foo(void) { return 42; }\n")
    (d / "main.c").write_text("int foo(void);\nint main(void) { return foo(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", d / "libfoo.so.1", "-Wl,-soname,libfoo.so.1",
                    d / "foo.c"], check=True)
    subprocess.run(["gcc", "-o", d / "main", d / "main.c", "-L", d, "-l:libfoo.so.1"], check=True)
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6").resolve()
    ld = Path("/lib64/ld-linux-x86-64.so.2").resolve()
    return {"main": (d / "main").read_bytes(), "libfoo": (d / "libfoo.so.1").read_bytes(),
            "libc": libc.read_bytes(), "ld": ld.read_bytes()}


def image(programs, *, with_foo=True) -> Tree:
    t = Tree()
    t.add("/usr/bin/main", Entry(FILE, 0o755, data=programs["main"]))
    t.add("/usr/lib/x86_64-linux-gnu/libc.so.6", Entry(FILE, data=programs["libc"]))
    t.add("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Entry(FILE, data=programs["ld"]))
    t.add("/usr/lib64/ld-linux-x86-64.so.2",
          Entry(SYMLINK, target="../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
    t.add("/lib64", Entry(SYMLINK, target="usr/lib64"))
    if with_foo:
        t.add("/usr/lib/x86_64-linux-gnu/libfoo.so.1", Entry(FILE, data=programs["libfoo"]))
    return t


def test_complete_image_passes(programs):
    assert elfcheck.check_tree(image(programs), "amd64") == 4


def test_missing_library_names_file_and_library(programs):
    with pytest.raises(elfcheck.ElfCheckError, match=r"/usr/bin/main: needs libfoo.so.1, which is not in the image"):
        elfcheck.check_tree(image(programs, with_foo=False), "amd64")


def test_wrong_machine_names_the_file(programs):
    data = bytearray(programs["main"])
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    t = image(programs)
    t.add("/usr/bin/main", Entry(FILE, 0o755, data=bytes(data)))
    with pytest.raises(elfcheck.ElfCheckError, match=r"/usr/bin/main: built for EM_AARCH64/64-bit"):
        elfcheck.check_tree(t, "amd64")


def test_wrong_arch_for_board(programs):
    with pytest.raises(elfcheck.ElfCheckError, match="the board's arch arm64 needs EM_AARCH64"):
        elfcheck.check_tree(image(programs), "arm64")


def test_selection_pulls_in_the_elf_closure(programs):
    pool = image(programs)
    pool.add("/usr/share/doc/foo/README", Entry(FILE, data=b"docs"))
    chosen = select(pool, ["/usr/bin/main"], "amd64")
    assert "/usr/lib/x86_64-linux-gnu/libfoo.so.1" in chosen
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in chosen
    assert "/usr/lib64/ld-linux-x86-64.so.2" in chosen  # the interpreter link and its target
    assert "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" in chosen
    assert "/usr/share/doc/foo/README" not in chosen
