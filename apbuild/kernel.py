"""The kernel image and the modules an image needs, in load order.

Debian's kernel packages ship no modules.dep (depmod runs at install time), so a module's
dependencies are read from its own .modinfo section; the result is both an insmod order for
the ramdisk and a modules.dep for modprobe on the rootfs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import posixpath


from .errors import ApbuildError
from .tree import DIR, FILE, Entry, Tree


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    version: str
    image: str                           # path of the kernel image in the package tree
    modules: dict[str, str]              # module name -> path in the tree


def _modname(path: str) -> str:
    base = posixpath.basename(path)
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.replace("-", "_")


def inspect(tree: Tree, image_glob: str) -> KernelInfo:
    images = [p for p, e in tree if e.kind == FILE and fnmatch.fnmatchcase(p, image_glob)]
    if len(images) != 1:
        raise ApbuildError(f"kernel image {image_glob!r}: expected one match in the kernel "
                           f"package, found {images or 'none'}")
    versions = {p.split("/")[4] for p, _ in tree if p.startswith("/usr/lib/modules/") and p.count("/") >= 5}
    if len(versions) != 1:
        raise ApbuildError(f"expected one kernel module tree under /usr/lib/modules, found {sorted(versions)}")
    (version,) = versions
    mods = {_modname(p): p for p, e in tree if e.kind == FILE and ".ko" in posixpath.basename(p)}
    return KernelInfo(version, images[0], mods)


def check_initramfs_zstd(tree: Tree, kernel: KernelInfo, what: str) -> None:
    """A zstd initramfs boots only a kernel built with CONFIG_RD_ZSTD: its package's
    /boot/config-VERSION says so (bookworm's amd64 kernel does)."""
    config = tree.get(f"/boot/config-{kernel.version}")
    if config is None:
        raise ApbuildError(f"{what}: 'zstd', but the kernel package has no /boot/config-{kernel.version} "
                           "to show that its kernel unpacks a zstd initramfs; use 'xz'")
    if "CONFIG_RD_ZSTD=y" not in config.read().decode(errors="replace").splitlines():
        raise ApbuildError(f"{what}: 'zstd', but kernel {kernel.version} is built without "
                           "CONFIG_RD_ZSTD and cannot unpack a zstd initramfs; use 'xz'")


def _depends(entry: Entry) -> list[str]:
    from elftools.elf.elffile import ELFFile   # here: a cached build reads no module

    elf = ELFFile(io.BytesIO(entry.read()))
    section = elf.get_section_by_name(".modinfo")
    if section is None:
        return []
    for field in section.data().split(b"\0"):
        if field.startswith(b"depends="):
            value = field[len(b"depends="):].decode()
            return [d.replace("-", "_") for d in value.split(",") if d]
    return []


def closure(tree: Tree, kernel: KernelInfo, wanted: tuple[str, ...], what: str) -> list[str]:
    """Module paths for `wanted` and everything they depend on, dependencies first."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if state.get(name) == "done":
            return
        if name not in kernel.modules:
            raise ApbuildError(f"{what}: kernel module {name!r} is not in kernel {kernel.version}"
                               + (f" (needed by {' -> '.join(chain)})" if chain else ""))
        if state.get(name) == "visiting":
            return  # a cycle: kernels don't have them, but don't loop if one appears
        state[name] = "visiting"
        path = kernel.modules[name]
        entry = tree.get(path)
        assert entry is not None
        for dep in _depends(entry):
            visit(dep, chain + (name,))
        state[name] = "done"
        order.append(path)

    for name in wanted:
        visit(name, ())
    return order


def module_tree(source: Tree, kernel: KernelInfo, paths: list[str]) -> Tree:
    """The chosen modules plus modules.dep/modules.builtin, ready to merge into an image."""
    out = Tree()
    base = f"/usr/lib/modules/{kernel.version}"
    deps: dict[str, list[str]] = {}
    for path in paths:
        entry = source.get(path)
        assert entry is not None
        out.add(path, entry)
        deps[path] = [kernel.modules[d] for d in _depends(entry)]
    for extra in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (entry := source.get(f"{base}/{extra}")) is not None:
            out.add(f"{base}/{extra}", entry)

    def transitive(path: str, seen: list[str]) -> list[str]:
        for dep in deps.get(path, []):
            if dep not in seen:
                seen.append(dep)
                transitive(dep, seen)
        return seen

    lines = []
    for path in sorted(paths):
        rel = lambda p: p[len(base) + 1:]  # noqa: E731
        lines.append(f"{rel(path)}: " + " ".join(rel(d) for d in transitive(path, [])))
    out.add(f"{base}/modules.dep", Entry(FILE, 0o644, data=("\n".join(lines) + "\n").encode()))
    out.add(base, Entry(DIR, 0o755))
    return out
