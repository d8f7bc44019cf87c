"""The default accounts, as the recipes define them (recipes/base.toml's [[users]]): tests log
in with what the image was built with, never with a copy of it."""

from __future__ import annotations

import functools

from apbuild.config import find_root, load_project

# Every board applies base.toml, which defines root and admin.
_BOARD = "x86_64-vm"


@functools.cache
def _passwords() -> dict[str, str]:
    project = load_project(find_root(), _BOARD)
    return {u.name: u.password for recipe in project.recipes for u in recipe.users}


def account(user: str) -> tuple[str, str]:
    """(user, default password)."""
    return user, _passwords()[user]


ROOT = account("root")     # the serial console's and su's login
ADMIN = account("admin")   # SSH, and the manager's HTTP basic authentication
