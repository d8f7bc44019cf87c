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


def arm_elf(flags: int, interp: str, e_type: int = 2) -> bytes:
    """A minimal 32-bit ARM executable: ELF header, one PT_INTERP program header, the path."""
    import struct

    path = interp.encode() + b"\0"
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIIIIIHHHHHH", e_type, 40, 1, 0x10000, 52, 0, flags,
                                 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", 3, 84, 0, 0, len(path), len(path), 4, 1)
    return header + phdr + path + bytes(64)


def armel_image(binary: bytes) -> Tree:
    t = Tree()
    t.add("/usr/lib/arm-linux-gnueabi/ld-linux.so.3", Entry(FILE, 0o755, data=arm_elf(0x5000200, "", 3)))
    t.add("/lib", Entry(SYMLINK, target="usr/lib"))
    t.add("/usr/lib/ld-linux.so.3", Entry(SYMLINK, target="arm-linux-gnueabi/ld-linux.so.3"))
    t.add("/usr/bin/tool", Entry(FILE, 0o755, data=binary))
    return t


def test_armel_binary_passes_in_an_armel_rootfs():
    assert elfcheck.check_tree(armel_image(arm_elf(0x5000200, "/lib/ld-linux.so.3")), "armel") == 2


def test_armhf_binary_in_an_armel_rootfs_names_the_file():
    hard = arm_elf(0x5000400, "/lib/ld-linux.so.3")
    with pytest.raises(elfcheck.ElfCheckError, match=r"/usr/bin/tool: uses the hard-float ARM ABI, armel is soft-float"):
        elfcheck.check_tree(armel_image(hard), "armel")
    # No float flag, but the armhf loader: still refused.
    loader = arm_elf(0x5000000, "/lib/ld-linux-armhf.so.3")
    with pytest.raises(elfcheck.ElfCheckError, match=r"/usr/bin/tool: its interpreter /lib/ld-linux-armhf.so.3 is armhf's"):
        elfcheck.check_tree(armel_image(loader), "armel")


def test_arm_binary_in_an_arm64_rootfs_names_the_file():
    with pytest.raises(elfcheck.ElfCheckError, match=r"/usr/bin/tool: built for EM_ARM/32-bit, the board's arch arm64"):
        elfcheck.check_tree(armel_image(arm_elf(0x5000200, "/lib/ld-linux.so.3")), "arm64")
