"""Make sure the host has the Debian tools a command needs, installing them when allowed.

On a fresh Debian 12 machine the README's build and test commands must just work, so as
root we install missing tools with apt-get (retrying: a mirror in the middle of a sync
briefly serves inconsistent indexes). Elsewhere, or with APBUILD_NO_INSTALL=1, we stop
with the exact apt-get command instead.
"""

from __future__ import annotations

import os
import shutil
import time

from . import log
from .errors import ApbuildError
from .run import DEVNULL, run, tools

# Both from run.HOST_TOOLS, the one table of tools and their packages.
BUILD_TOOLS = tools("build")
TEST_TOOLS = tools("test")
KEYRING_PACKAGE = ("/usr/share/keyrings/debian-archive-keyring.gpg", "debian-archive-keyring")


def _have(tool: str) -> bool:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is not None


def missing(tools: dict[str, str]) -> list[str]:
    packages = {pkg for tool, pkg in tools.items() if not _have(tool)}
    if not os.path.exists(KEYRING_PACKAGE[0]):
        packages.add(KEYRING_PACKAGE[1])
    return sorted(packages)


def ensure(tools: dict[str, str]) -> None:
    packages = missing(tools)
    if not packages:
        return
    command = "apt-get install --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0 or os.environ.get("APBUILD_NO_INSTALL") == "1":
        raise ApbuildError(f"host tools are missing; install them with: {command}")
    with log.step(f"host tools: apt-get install {' '.join(packages)}"):
        install_packages(packages)


def install_packages(packages: list[str]) -> None:
    """apt-get install, retried: a mirror in the middle of a sync briefly fails."""
    # run() keeps the environment small; a proxy the user set is what apt needs to get out.
    env = {"DEBIAN_FRONTEND": "noninteractive",
           **{k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}}
    for attempt in range(1, 5):
        # An index that fails (a foreign repository, a mirror mid-sync) must not stop us
        # if the packages we need can still be installed: try the install anyway.
        run(["apt-get", "update"], env=env, stdout=DEVNULL, check=False)
        proc = run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env=env, check=False)
        stderr = proc.stderr.decode(errors="replace").strip()
        if proc.returncode == 0:
            return
        log.detail(stderr)
        if attempt < 4:
            time.sleep(5 * attempt)
    command = "apt-get install --no-install-recommends " + " ".join(packages)
    raise ApbuildError(f"could not install {command}:\n{stderr[-2000:]}")
