"""Assemble an image's tree (rootfs or ramdisk) from unpacked packages and recipes.

Selection is by path, not by package: a recipe keeps what the appliance runs (globs), the
ELF closure adds every library and interpreter those files need, and drop rules take the
rest away. That is what lets a PostgreSQL appliance fit in tens of megabytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import elfcheck
from .board import MACHINE_ONLY, Board
from .config import Recipe, Selection
from .errors import ApbuildError, ConfigError
from .tree import DIR, FILE, SYMLINK, Entry, Tree, norm
from .users import user_files


def glob_regex(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for pattern in patterns:
        out, i = [], 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
            elif pattern[i] == "*":
                out.append("[^/]*")
                i += 1
            elif pattern[i] == "?":
                out.append("[^/]")
                i += 1
            else:
                out.append(re.escape(pattern[i]))
                i += 1
        parts.append("".join(out))
    return re.compile("^(?:" + "|".join(parts) + ")$") if parts else None


def _add_with_parents(out: Tree, pool: Tree, path: str) -> None:
    parent = path.rsplit("/", 1)[0]
    missing = []
    while parent and parent not in out.entries:
        missing.append(parent)
        parent = parent.rsplit("/", 1)[0]
    for p in reversed(missing):
        out.entries[p] = pool.get(p) or Entry(DIR, 0o755)
    out.entries[path] = pool.entries[path]


def select(pool: Tree, keep: Iterable[str], arch: str) -> Tree:
    """Files of pool matching keep, plus symlink targets and the ELF closure, with parents."""
    regex = glob_regex(keep)
    out = Tree()
    todo = [p for p in pool.entries if regex is not None and regex.match(p)]
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        entry = pool.get(path)
        if entry is None:
            continue
        _add_with_parents(out, pool, path)
        if entry.kind == SYMLINK:
            base = path.rsplit("/", 1)[0] or "/"
            target = norm(entry.target if entry.target.startswith("/") else f"{base}/{entry.target}")
            # Walk the link's path: intermediate symlinks must come along too.
            resolved = pool.resolve(target)
            todo.append(target)
            if resolved:
                todo.append(resolved)
        elif entry.kind == FILE and entry.size > 64:
            data = entry.read()
            if elfcheck.is_elf(data):
                todo.extend(elfcheck.needs(pool, path, data, arch))
    return out


def busybox_applets(binary: bytes) -> list[str]:
    """Applet names from busybox's own name table ("[\\0[[\\0acpid\\0..."), for any arch."""
    start = binary.find(b"[\0[[\0")
    if start < 0:
        raise ApbuildError("busybox binary: applet name table not found")
    names = []
    for raw in binary[start:start + 8192].split(b"\0"):
        if not raw or not re.fullmatch(rb"[a-z0-9_.\[\-]+", raw):
            break
        names.append(raw.decode())
    return names


class ImageBoard:
    """The board as a template sees it: the machine-only keys are refused (a template that
    wrote ram_mb into a file gave ipx11 ipx10's value from the shared stage). What depends on
    the machine is found out on the device at run time."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def __getattr__(self, name: str):
        if name in MACHINE_ONLY or (name in Board.__dataclass_fields__ and name not in self.stage_key()):
            import jinja2

            raise jinja2.UndefinedError(
                f"board.{name} is the machine's, not the image's: boards that differ in it share "
                f"this image (read it on the device instead, e.g. /proc/meminfo for RAM)")
        return getattr(self._board, name)

    def stage_key(self) -> dict:
        return self._board.image_settings()


def render_overlay(directory: Path, context: Mapping[str, Any], origin: str) -> Tree:
    """Files of an overlay directory; *.j2 rendered with the build's context."""
    out = Tree()
    if not directory.is_dir():
        return out
    import jinja2   # here: a build whose stages are all cached renders nothing

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    for path in sorted(directory.rglob("*")):
        rel = "/" + str(path.relative_to(directory))
        if path.is_symlink():
            out.add(rel, Entry(SYMLINK, 0o777, target=str(path.readlink()), origin=origin))
        elif path.is_dir():
            continue  # directories come from the system layer or as plain parents
        elif path.suffix == ".j2":
            try:
                text = env.from_string(path.read_text()).render(**context)
            except jinja2.TemplateError as e:
                line = getattr(e, "lineno", None)
                raise ConfigError(path, f"line {line}" if line else "", f"template error: {e}") from None
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            out.add(rel[:-3], Entry(FILE, mode, data=text.encode(), origin=origin))
        else:
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            out.add(rel, Entry(FILE, mode, source=path, origin=origin))
    return out


def _is_real(tree: Tree, path: str, busybox: str) -> bool:
    """Is path in the tree as something other than a link to busybox?"""
    entry = tree.get(path)
    return entry is not None and not (entry.kind == SYMLINK and entry.target == busybox)


def _apply_selection_extras(tree: Tree, sel: Selection, pool: Tree, recipe: Recipe) -> None:
    for d in sel.dirs:
        tree.add(d, Entry(DIR, 0o755, origin=recipe.name))
    for link, target in sel.links.items():
        tree.add(link, Entry(SYMLINK, 0o777, target=target, origin=recipe.name))
    if sel.busybox:
        entry = tree.get(sel.busybox)
        if entry is None or entry.kind != FILE:
            raise ConfigError(recipe.path, "busybox", f"{sel.busybox} is not kept in the image")
        for name in busybox_applets(entry.read()):
            if name in ("busybox", "[", "[["):
                target_names = [name] if name != "busybox" else []
            else:
                target_names = [name]
            for n in target_names:
                # A real tool the recipes keep wins; one that is merely in the pool (a
                # dependency nothing keeps, e.g. coreutils) must not hide the applet.
                if any(_is_real(tree, f"{d}/{n}", sel.busybox) for d in ("/usr/bin", "/usr/sbin")):
                    continue
                for d in ("/usr/bin", "/usr/sbin"):
                    if f"{d}/{n}" not in tree:
                        tree.add(f"{d}/{n}", Entry(SYMLINK, 0o777, target=sel.busybox, origin="busybox"))


def _apply_modes(tree: Tree, sel: Selection, recipe: Recipe, image: str,
                 elsewhere: Tree | None = None) -> None:
    """The selection's mode overrides of the paths in `tree`; a path in neither `tree` nor
    `elsewhere` (the other layer) is an error, one only in `elsewhere` is left to it."""
    for path, spec in sel.modes.items():
        entry = tree.get(path)
        if entry is None:
            if elsewhere is None or elsewhere.get(path) is not None:
                continue
            raise ConfigError(recipe.path, f"{image}.modes.{path}", "no such file in the image")
        mode, owner = spec.split()
        uid, gid = owner.split(":")
        tree.entries[norm(path)] = Entry(entry.kind, int(mode, 8), int(uid), int(gid),
                                         entry.target, entry.source, entry.data, entry.origin)


def system_layer(recipes: Sequence[Recipe], image: str, arch: str, pool: Tree, modules: Tree) -> Tree:
    """What the packages give an image: kept files, ELF closure, modules, links, applets."""
    sels = [(r, getattr(r, image)) for r in recipes]
    tree = select(pool, [k for _, s in sels for k in s.keep], arch)
    drop = glob_regex(d for _, s in sels for d in s.drop)
    if drop is not None:
        for path in [p for p in tree.entries if drop.match(p)]:
            tree.entries.pop(path, None)
    tree.merge(modules)
    for recipe, sel in sels:
        _apply_selection_extras(tree, sel, pool, recipe)
    # Mode overrides of package files are applied here, in the layer that holds them: a copy
    # in the config layer would carry the file's bytes twice (busybox: 0.8 MB of xz).
    for recipe, sel in sels:
        _apply_modes(tree, sel, recipe, image)
    tree.entries.pop("/", None)
    return tree


def config_layer(recipes: Sequence[Recipe], image: str, system: Tree, context: Mapping[str, Any],
                 overlays: Sequence[tuple[str, Path]], salt: str, where: Path) -> Tree:
    """What the recipes write: users, overlays ((origin, directory) in the order they apply),
    rendered templates, and mode overrides (`where`: the board, named in errors).

    Kept apart from the system layer because it changes far more often: a template edit
    recompresses this small layer only. Mode overrides of system-layer paths were applied
    there (system_layer); those of the recipes' own files are applied here.
    """
    sels = [(r, getattr(r, image)) for r in recipes]
    shell = next((sel.login_shell for _, sel in sels if sel.login_shell), "")
    tree = user_files(recipes, salt, shell, where)
    for origin, directory in overlays:
        tree.merge(render_overlay(directory, context, origin))
    # Parent directories made implicitly must not override the system layer's modes ...
    for path, entry in list(tree.entries.items()):
        if entry.kind == DIR and entry.origin == "" and (sys_entry := system.get(path)) is not None:
            tree.entries[path] = sys_entry
    # ... and the recipes' mode overrides win over both.
    for recipe, sel in sels:
        _apply_modes(tree, sel, recipe, image, elsewhere=system)
    tree.entries.pop("/", None)
    return tree


def union(system: Tree, config: Tree) -> Tree:
    """The image as the device sees it after extracting both layers in order."""
    out = Tree()
    out.entries.update(system.entries)
    out.entries.update(config.entries)
    return out
