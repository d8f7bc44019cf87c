"""The default accounts, as the recipes define them (recipes/base.toml's [[users]], with the
passwords of the product's recipe): tests log in with what the image was built with, never
with a copy of it."""

from __future__ import annotations

import functools

from apbuild.config import find_root, load_project
from apbuild.users import accounts


@functools.cache
def _passwords(board: str) -> dict[str, str]:
    """user -> default password, as the image's /etc/shadow has it."""
    return {name: u.password for name, u in accounts(load_project(find_root(), board).recipes).items()}


def account(user: str, board: str = "x86_64-vm") -> tuple[str, str]:
    """(user, default password) on a board (the App Platform's VM unless named)."""
    return user, _passwords(board)[user]


# The App Platform's (every board of it has the same).
ROOT = account("root")     # the serial console's and su's login
ADMIN = account("admin")   # SSH, and the manager's HTTP basic authentication
