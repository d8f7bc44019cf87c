"""Make sure the host has the Debian tools a command needs, installing them when allowed.

On a fresh Debian 12 machine the README's build and test commands must just work, so as
root we install missing tools with apt-get (retrying: a mirror in the middle of a sync
briefly serves inconsistent indexes). Elsewhere, or with APBUILD_NO_INSTALL=1, we stop
with the exact apt-get command instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from . import log
from .errors import ApbuildError

BUILD_TOOLS = {  # tool -> Debian package
    "dpkg-deb": "dpkg", "gpgv": "gpgv", "apt-get": "apt", "xz": "xz-utils",
    "mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "sfdisk": "fdisk",
    "grub-mkimage": "grub-pc-bin", "qemu-img": "qemu-utils", "mcopy": "mtools",
    "mkfs.fat": "dosfstools",
}
KEYRING_PACKAGE = ("/usr/share/keyrings/debian-archive-keyring.gpg", "debian-archive-keyring")
TEST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "qemu-system-arm": "qemu-system-arm",
              "qemu-system-aarch64": "qemu-system-arm",
              # The manual's reader's side: an SSH, SCP and SFTP client that is not ours, a
              # PostgreSQL client for the outside access the manual opens, openssl for the
              # test's own HTTPS server.
              "ssh": "openssh-client", "scp": "openssh-client", "sftp": "openssh-client",
              "psql": "postgresql-client", "openssl": "openssl",
              # test_ntp.py's own network: a namespace with a tap, DHCP and an NTP server.
              "ip": "iproute2", "dnsmasq": "dnsmasq-base", "chronyd": "chrony"}


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
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(1, 5):
        # An index that fails (a foreign repository, a mirror mid-sync) must not stop us
        # if the packages we need can still be installed: try the install anyway.
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                              env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            return
        log.detail(proc.stderr.strip())
        if attempt < 4:
            time.sleep(5 * attempt)
    command = "apt-get install --no-install-recommends " + " ".join(packages)
    raise ApbuildError(f"could not install {command}:\n{proc.stderr.strip()[-2000:]}")
