"""Unit and integration tests run as a stranger to the user's home: HOME, the XDG
directories, the signing key directory and the cache point into this session's temporary
directory. Builds (marked integration) use a private cache seeded with the locked packages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apbuild.cache import Cache, default_root
from apbuild.testing import run_dir
from apbuild.testing.seeding import seeded_cache

# The user's downloads, read before private_home hides them: the seed of build_cache.
STORE = Cache(default_root())


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # The workers share one private home and one build cache (apbuild.testing.run_dir), so a
    # board is built once per run: the cache's lock per stage lets one worker build while
    # the other waits and reuses it.
    home = run_dir(tmp_path_factory) / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(home))
        for name, sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                          ("XDG_DATA_HOME", ".local/share")):
            env.setenv(name, str(home / sub))
        env.setenv("APBUILD_KEY_DIR", str(home / "keys"))
        env.setenv("APBUILD_CACHE", str(home / "cache"))
        yield home


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that builds says so: whatever uses build_cache is an integration test."""
    for item in items:
        if "build_cache" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """One cache for the session's builds: the first build of a board fills its stages."""
    return seeded_cache(run_dir(tmp_path_factory) / "build-cache", ("x86_64-vm", "ipx10"), STORE)


@pytest.fixture(scope="session")
def update_key(private_home: Path) -> Path:
    """The private home's update signing key (a build makes it; reading inputs does not)."""
    from apbuild import signing

    return signing.ensure_key(signing.default_dir()).public
