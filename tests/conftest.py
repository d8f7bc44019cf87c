"""Unit and integration tests run as a stranger to the user's home: HOME, the XDG
directories, the signing key directory and the cache point into this session's temporary
directory. Builds (marked integration) share the user's cache with qemu-tests: a content-
addressed cache, so they reuse its package layers and add results under their own keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apbuild.cache import Cache, default_root
from apbuild.testing import run_dir
from apbuild.testing.seeding import fetched

# The user's downloads, read before private_home hides them: the seed of build_cache.
STORE = Cache(default_root())


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # The workers share one private home (apbuild.testing.run_dir), so their builds sign with
    # one key and a board is built once per run: the cache's lock per stage lets one worker
    # build while the other waits and reuses it.
    home = run_dir(tmp_path_factory) / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(home))
        for name, sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                          ("XDG_DATA_HOME", ".local/share")):
            env.setenv(name, str(home / sub))
        env.setenv("APBUILD_KEY_DIR", str(home / "keys"))
        env.setenv("APBUILD_CACHE", str(home / "cache"))
        # The shared cache is CI's: these tests are about the local one (test_remote_cache
        # names its own registry).
        env.delenv("APBUILD_CACHE_REMOTE", raising=False)
        yield home


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that builds says so: whatever uses build_cache is an integration test."""
    for item in items:
        if "build_cache" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def build_cache() -> Cache:
    """The cache of the session's builds: the user's, the one qemu-tests build in, so that a
    board's package layers (its slowest stages) are made once per run. What follows them is
    these tests' own, signed with the private home's key; a test that needs a cold build
    makes a private cache of its own (test_build)."""
    fetched(STORE, ("x86_64-vm", "ipx10"))
    return STORE


@pytest.fixture(scope="session")
def update_key(private_home: Path) -> Path:
    """The private home's update signing key (a build makes it; reading inputs does not)."""
    from apbuild import signing

    return signing.ensure_key(signing.default_dir()).public
