"""/etc/passwd, /etc/group and /etc/shadow from the recipes' users and groups."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from .config import Recipe, User
from .errors import ApbuildError, ConfigError
from .tree import FILE, Entry, Tree


def _libcrypt() -> ctypes.CDLL:
    # Python's crypt module is gone in 3.13; it wrapped this same C library (libxcrypt,
    # Debian's essential libcrypt1), which is also what the host's login checks against.
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise ApbuildError(f"libcrypt ({name}) cannot be loaded: {e}; install libcrypt1") from None
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    return lib


def sha512_crypt(password: str, salt_source: str) -> str:
    # The salt is derived from the inputs so that the image is reproducible; a device's
    # real passwords are set at install time (provisioning) and get fresh salts there.
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    digest = hashlib.sha256(salt_source.encode()).digest()
    salt = "".join(alphabet[b % 64] for b in digest[:16])
    hashed = _libcrypt().crypt(password.encode(), f"$6${salt}$".encode())
    if not hashed or not hashed.startswith(b"$6$"):
        raise ApbuildError("libcrypt made no SHA-512 crypt hash")
    return hashed.decode()


def accounts(recipes: Sequence[Recipe]) -> dict[str, User]:
    """The recipes' users, each with the default password the last recipe to name it gave."""
    users: dict[str, User] = {}
    for recipe in recipes:
        for u in recipe.users:
            if u.name in users:
                raise ConfigError(recipe.path, f"users.{u.name}", "user defined twice")
            users[u.name] = u
        for name, password in recipe.passwords.items():
            if name not in users:
                raise ConfigError(recipe.path, f"passwords.{name}", f"no user {name!r} in the recipes "
                                  f"before this one; users: {', '.join(sorted(users)) or 'none'}")
            if not isinstance(password, str):
                raise ConfigError(recipe.path, f"passwords.{name}", f"{password!r} is not a string")
            users[name] = dataclasses.replace(users[name], password=password)
    return users


def user_files(recipes: Sequence[Recipe], salt: str, shell: str = "", where: Path = Path()) -> Tree:
    """/etc/passwd, group and shadow of the recipes' users; `shell` replaces every user's
    login shell (an image that lacks theirs); `where` (the board) is named in errors."""
    users = accounts(recipes)
    groups: dict[str, int] = {}
    for recipe in recipes:
        for g in recipe.groups:
            if g.name in groups and groups[g.name] != g.gid:
                raise ConfigError(recipe.path, f"groups.{g.name}", f"gid {g.gid} conflicts with {groups[g.name]}")
            groups[g.name] = g.gid
    members: dict[str, list[str]] = {g: [] for g in groups}
    for u in users.values():
        for g in u.groups:
            if g not in groups:
                raise ConfigError(where, "recipes", f"user {u.name}: no group {g!r}")
            members[g].append(u.name)
    passwd = "".join(f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{shell or u.shell}\n"
                     for u in sorted(users.values(), key=lambda u: u.uid))
    shadow = "".join(
        f"{u.name}:{sha512_crypt(u.password, salt + u.name) if u.password else '!'}:0:0:99999:7:::\n"
        for u in sorted(users.values(), key=lambda u: u.uid))
    group = "".join(f"{name}:x:{gid}:{','.join(members[name])}\n"
                    for name, gid in sorted(groups.items(), key=lambda g: g[1]))
    tree = Tree()
    tree.add("/etc/passwd", Entry(FILE, 0o644, data=passwd.encode(), origin="users"))
    tree.add("/etc/group", Entry(FILE, 0o644, data=group.encode(), origin="users"))
    tree.add("/etc/shadow", Entry(FILE, 0o600, data=shadow.encode(), origin="users"))
    return tree
