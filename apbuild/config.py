"""Boards, partition layouts and recipes: the typed, validated definitions a build reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .board import (ARCHES, BOOTLOADER_PACKAGES, MACHINE_ONLY, Board, Kernel, Outputs, Qemu,  # noqa: F401
                    _abs_glob, _name)
from .errors import ConfigError, ConfigErrors
from .machines import SEPARATOR, load_board, target_path
from .schema import load, one_of, parse_size, positive, read_toml, setting, size_check

# -- partition layouts --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Partition:
    number: int = setting("partition number: 1 is /dev/sda1", check=positive)
    name: str = setting("what it holds (boot, data, rootfs, swap)", check=_name)
    filesystem: str = setting("filesystem", check=one_of("ext2", "ext4", "fat32", "swap"))
    size: str = setting("maximum size (350M, 500M) or 'rest' for the rest of the disk",
                        check=lambda v: None if v == "rest" else size_check(v))
    mount: str = setting("where the running system mounts it ('' for none)", default="")
    made_by: str = setting("'build' (in the installation image) or 'installer' (on the device)",
                           default="installer", check=one_of("build", "installer"))

    @property
    def size_bytes(self) -> int | None:
        return None if self.size == "rest" else parse_size(self.size)

    @property
    def mbr_type(self) -> str:
        return {"fat32": "c", "swap": "82"}.get(self.filesystem, "83")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    name: str = setting("layout name", check=_name)
    description: str = setting("one line for humans", default="")
    alignment: str = setting("start of the first partition and alignment of every one",
                             default="1M", check=size_check)
    partitions: tuple[Partition, ...] = setting("partitions in physical order on the disk")
    path: Path = dataclasses.field(default=Path(), compare=False)

    def partition(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(name)


def load_layout(path: Path) -> Layout:
    layout = load(Layout, read_toml(path), path)
    numbers = [p.number for p in layout.partitions]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(path, "partitions", f"partition numbers repeat: {numbers}")
    if not 1 <= len(numbers) <= 4 or max(numbers) > 4:
        raise ConfigError(path, "partitions", "an MBR table holds partitions 1 to 4")
    rest = [p for p in layout.partitions if p.size == "rest"]
    if len(rest) > 1 or (rest and rest[0] is not layout.partitions[-1]):
        raise ConfigError(path, "partitions", "only the physically last partition may be size = 'rest'")
    boot = [p for p in layout.partitions if p.made_by == "build"]
    if len(boot) != 1 or boot[0] is not layout.partitions[0]:
        raise ConfigError(path, "partitions", "exactly one partition, the first, has made_by = 'build'")
    return dataclasses.replace(layout, path=path)


# -- recipes --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class User:
    name: str = setting("login name", check=_name)
    uid: int = setting("numeric user id")
    gid: int = setting("numeric primary group id")
    home: str = setting("home directory", check=_abs_glob)
    shell: str = setting("login shell", default="/bin/sh")
    password: str = setting("default password (stored as a SHA-512 crypt hash); '' locks it",
                            default="")
    groups: tuple[str, ...] = setting("extra groups", default=())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Group:
    name: str = setting("group name", check=_name)
    gid: int = setting("numeric group id")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selection:
    """What a recipe puts into one image (the rootfs or the rescue ramdisk)."""

    keep: tuple[str, ...] = setting("globs of package files to keep ('**' crosses directories)",
                                    default=(), check=_abs_glob)
    drop: tuple[str, ...] = setting("globs removed after keep (and after the ELF closure)",
                                    default=(), check=_abs_glob)
    modules: tuple[str, ...] = setting("kernel modules to include, with their dependencies",
                                       default=())
    modes: dict = setting("path -> 'MODE UID:GID' for overlay files, e.g. '0600 0:0'",
                          default_factory=dict)
    dirs: tuple[str, ...] = setting("empty directories to create (mode 0755, or as in modes)",
                                    default=(), check=_abs_glob)
    links: dict = setting("symlinks to create: path -> target", default_factory=dict)
    busybox: str = setting("a busybox binary whose applets get links in /usr/bin and /usr/sbin "
                           "(where no package file has the name)", default="")
    login_shell: str = setting("every user's login shell in this image instead of their own "
                               "(a rescue ramdisk without their shell)", default="",
                               check=lambda v: _abs_glob(v) if v else None)


def _requirement(value: str) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(value)
    except InvalidRequirement as e:
        return f"{value!r} is not a Python requirement (e.g. 'biuletyn-bip==0.7.1'): {e}"
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PythonEnv:
    """Python distributions from PyPI, pinned in the lockfile and installed at build time."""

    venv: str = setting("the virtualenv's directory in the root filesystem (e.g. /opt/bip/venv)",
                        default="", check=lambda v: _abs_glob(v) if v else None)
    requirements: tuple[str, ...] = setting("requirements pip resolves (PEP 508: 'biuletyn-bip==0.7.1', "
                                            "'gunicorn>=20')", default=(), check=_requirement)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    description: str = setting("one line for humans")
    packages: tuple[str, ...] = setting("Debian binary packages to install", default=())
    exclude_packages: tuple[str, ...] = setting(
        "dependencies not to download (their files are never needed)", default=())
    common: Selection = setting("what goes into both the root filesystem and the ramdisk "
                                "(added to each one's own selection, which wins on a clash)",
                                default=Selection())
    rootfs: Selection = setting("what goes into the root filesystem", default=Selection())
    ramdisk: Selection = setting("what goes into the rescue/installer ramdisk",
                                 default=Selection())
    users: tuple[User, ...] = setting("users this recipe adds", default=())
    passwords: dict = setting("default passwords (user -> password) for users that a recipe before "
                              "this one defines: a product's own, replacing theirs", default_factory=dict)
    groups: tuple[Group, ...] = setting("groups this recipe adds", default=())
    python: PythonEnv = setting("a virtualenv of PyPI distributions in the root filesystem",
                                default=PythonEnv())
    name: str = dataclasses.field(default="", compare=False)
    path: Path = dataclasses.field(default=Path(), compare=False)

    def overlay(self, image: str) -> Path:
        """recipes/<name>/<image>/: files and *.j2 templates copied into that image."""
        return self.path.parent / self.name / image


def _with_common(common: Selection, own: Selection) -> Selection:
    """One image's selection with the recipe's common one added: lists joined (common
    first, no repeats), tables merged (own wins), a value own leaves empty taken from common."""
    values = {}
    for f in dataclasses.fields(Selection):
        a, b = getattr(common, f.name), getattr(own, f.name)
        if isinstance(a, tuple):
            values[f.name] = tuple(dict.fromkeys(a + b))
        elif isinstance(a, dict):
            values[f.name] = {**a, **b}
        else:
            values[f.name] = b or a
    return Selection(**values)


def load_recipe(path: Path) -> Recipe:
    recipe = load(Recipe, read_toml(path), path)
    errors = [ConfigError(path, f"{image}.modes.{target}", f"{spec!r} is not 'MODE UID:GID' (e.g. '0600 0:0')")
              for image in ("common", "rootfs", "ramdisk")
              for target, spec in getattr(recipe, image).modes.items()
              if not re.fullmatch(r"[0-7]{3,4} \d+:\d+", str(spec))]
    py = recipe.python
    if bool(py.venv) != bool(py.requirements):
        errors.append(ConfigError(path, "python.venv" if py.requirements else "python.requirements",
                                  "a virtualenv needs both its directory (venv) and its requirements"))
    if errors:
        raise ConfigErrors.of(errors)
    rootfs = recipe.rootfs
    if py.venv:
        # The virtualenv is in the package pool (packages.Packages): the image keeps it all,
        # and the ELF closure brings what its wheels' shared objects need.
        rootfs = dataclasses.replace(rootfs, keep=rootfs.keep + (f"{py.venv}/**",))
    return dataclasses.replace(recipe, name=path.stem, path=path,
                               rootfs=_with_common(recipe.common, rootfs),
                               ramdisk=_with_common(recipe.common, recipe.ramdisk))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Project:
    """A board with everything it names, loaded and cross-checked."""

    board: Board
    layout: Layout
    recipes: tuple[Recipe, ...]
    root: Path

    @property
    def packages(self) -> tuple[str, ...]:
        names = dict.fromkeys(p for r in self.recipes for p in r.packages)
        names.setdefault(self.board.kernel_request)
        for package in BOOTLOADER_PACKAGES[self.board.bootloader]:
            names.setdefault(package)
        return tuple(names)

    @property
    def python_envs(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(venv, requirements) of each recipe that has a virtualenv, in recipe order."""
        return tuple((r.python.venv, r.python.requirements) for r in self.recipes if r.python.venv)

    @property
    def exclude_packages(self) -> tuple[str, ...]:
        # A package one recipe asks for is kept even where another's dependencies leave it out.
        wanted = set(self.packages)
        return tuple(sorted({p for r in self.recipes for p in r.exclude_packages} - wanted))


def find_root() -> Path:
    """The project directory: where boards/ lives (the checkout this module belongs to)."""
    return Path(__file__).resolve().parent.parent


def board_path(root: Path, name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        return candidate
    if SEPARATOR in name_or_path:
        return target_path(root, name_or_path)
    path = root / "boards" / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(list_boards(root)) or "none"
        raise ConfigError(path, "", f"no board named {name_or_path!r}; boards: {known} "
                          f"(or PRODUCT{SEPARATOR}MACHINE: ./build.py --list)")
    return path


def list_boards(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "boards").glob("*.toml"))


def load_project(root: Path, board_ref: str) -> Project:
    board = load_board(board_path(root, board_ref))
    layout_path = root / "partitions" / f"{board.layout}.toml"
    if not layout_path.exists():
        known = ", ".join(sorted(p.stem for p in (root / "partitions").glob("*.toml")))
        raise ConfigError(board.path, "layout", f"no layout {board.layout!r}; layouts: {known}")
    layout = load_layout(layout_path)
    recipes = []
    for i, name in enumerate(board.recipes):
        path = root / "recipes" / f"{name}.toml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in (root / "recipes").glob("*.toml")))
            raise ConfigError(board.path, f"recipes[{i}]", f"no recipe {name!r}; recipes: {known}")
        recipes.append(load_recipe(path))
    if parse_size(board.disk_size) < sum(p.size_bytes or 0 for p in layout.partitions):
        raise ConfigError(board.path, "disk_size",
                          f"{board.disk_size} is smaller than the layout {layout.name!r} needs")
    return Project(board=board, layout=layout, recipes=tuple(recipes), root=root)
