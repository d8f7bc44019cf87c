"""Read ELF files with pyelftools: what they need (closure) and whether they fit the board.

The check is what keeps a trimmed rootfs honest: every ELF file must be for the board's
machine and ABI (armel is EABI soft-float, armhf hard-float: the same EM_ARM), have its
interpreter, and find every DT_NEEDED library in the image.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath

from .errors import ApbuildError
from .tree import FILE, Tree

EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400


@dataclasses.dataclass(frozen=True)
class ArchInfo:
    machine: str            # pyelftools e_machine name
    elfclass: int
    triplet: str
    interpreter: str
    float_abi: str = ""     # "soft" / "hard" for 32-bit ARM


ARCH = {
    "amd64": ArchInfo("EM_X86_64", 64, "x86_64-linux-gnu", "/lib64/ld-linux-x86-64.so.2"),
    "arm64": ArchInfo("EM_AARCH64", 64, "aarch64-linux-gnu", "/lib/ld-linux-aarch64.so.1"),
    "armel": ArchInfo("EM_ARM", 32, "arm-linux-gnueabi", "/lib/ld-linux.so.3", "soft"),
    "armhf": ArchInfo("EM_ARM", 32, "arm-linux-gnueabihf", "/lib/ld-linux-armhf.so.3", "hard"),
}


@dataclasses.dataclass(frozen=True)
class ElfInfo:
    machine: str
    elfclass: int
    float_abi: str
    interpreter: str
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    is_kernel_module: bool


class ElfCheckError(ApbuildError):
    pass


def is_elf(head: bytes) -> bool:
    return head[:4] == b"\x7fELF"


def read_elf(data: bytes) -> ElfInfo | None:
    if not is_elf(data):
        return None
    # Imported here: a build whose stages are all cached reads no ELF file (a no-op build
    # is 20 ms faster without pyelftools).
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        needed: list[str] = []
        runpath: list[str] = []
        interp = ""
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                        value = getattr(tag, "runpath", None) or getattr(tag, "rpath", "")
                        runpath.extend(value.split(":"))
        flags = elf["e_flags"]
        float_abi = ""
        if elf["e_machine"] == "EM_ARM" and elf["e_type"] in ("ET_EXEC", "ET_DYN"):
            float_abi = "hard" if flags & EF_ARM_ABI_FLOAT_HARD else "soft" if flags & EF_ARM_ABI_FLOAT_SOFT else ""
        return ElfInfo(elf["e_machine"], elf.elfclass, float_abi, interp, tuple(needed),
                       tuple(p for p in runpath if p), elf.get_section_by_name(".modinfo") is not None)
    except (ELFError, ValueError, KeyError) as e:
        raise ElfCheckError(f"cannot read ELF file: {e}") from None


def library_dirs(arch: str) -> tuple[str, ...]:
    t = ARCH[arch].triplet
    return (f"/usr/lib/{t}", f"/lib/{t}", "/usr/lib", "/lib")


def find_library(tree: Tree, name: str, dirs: tuple[str, ...]) -> str | None:
    """The path (as the loader names it, maybe a symlink) of a library that resolves to a file."""
    for d in dirs:
        candidate = posixpath.join(d, name)
        resolved = tree.resolve(candidate)
        if resolved is not None:
            entry = tree.get(resolved)
            if entry is not None and entry.kind == FILE:
                return tree.resolve(d) + "/" + name if tree.resolve(d) else candidate
    return None


def _search_dirs(path: str, info: ElfInfo, arch: str) -> tuple[str, ...]:
    origin = posixpath.dirname(path)
    extra = tuple(p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in info.runpath)
    return extra + library_dirs(arch)


def needs(tree: Tree, path: str, data: bytes, arch: str) -> list[str]:
    """Paths (in tree) of the interpreter and libraries path needs; names not found are skipped."""
    info = read_elf(data)
    if info is None:
        return []
    from .debpkg import merged  # the package pool has merged-/usr paths only

    found = []
    if info.interpreter and tree.resolve(merged(info.interpreter)):
        found.append(merged(info.interpreter))
    dirs = tuple(merged(d) for d in _search_dirs(path, info, arch))
    for lib in info.needed:
        if (p := find_library(tree, lib, dirs)) is not None:
            found.append(p)
    return found


def check_tree(tree: Tree, arch: str) -> int:
    """Raise naming the file and the problem; return how many ELF files were checked."""
    want = ARCH[arch]
    problems: list[str] = []
    checked = 0
    for path, entry in tree:
        if entry.kind != FILE or entry.size < 64:
            continue
        data = entry.read()
        if not is_elf(data):
            continue
        try:
            info = read_elf(data)
        except ElfCheckError as e:
            problems.append(f"{path}: {e}")
            continue
        assert info is not None
        checked += 1
        if info.machine != want.machine or info.elfclass != want.elfclass:
            problems.append(f"{path}: built for {info.machine}/{info.elfclass}-bit, "
                            f"the board's arch {arch} needs {want.machine}/{want.elfclass}-bit")
            continue
        if want.float_abi and info.float_abi and info.float_abi != want.float_abi:
            problems.append(f"{path}: uses the {info.float_abi}-float ARM ABI, "
                            f"{arch} is {want.float_abi}-float")
            continue
        foreign = [a for a, i in ARCH.items() if i.interpreter == info.interpreter and a != arch]
        if info.interpreter and foreign and info.interpreter != want.interpreter:
            problems.append(f"{path}: its interpreter {info.interpreter} is {foreign[0]}'s, "
                            f"{arch} uses {want.interpreter}")
            continue
        if info.interpreter and tree.resolve(info.interpreter) is None:
            problems.append(f"{path}: interpreter {info.interpreter} is missing")
        dirs = _search_dirs(path, info, arch)
        for lib in info.needed:
            if find_library(tree, lib, dirs) is None:
                problems.append(f"{path}: needs {lib}, which is not in the image")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ElfCheckError(f"ELF check failed ({len(problems)} problems):\n  {shown}{more}")
    return checked
