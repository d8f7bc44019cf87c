"""The one way apbuild runs a subprocess: logs the command, raises with its stderr."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import log
from .errors import CommandError, MissingToolError

# Which Debian package provides each host tool we call, so a missing one names its fix.
HOST_TOOLS: dict[str, str] = {
    "apt-get": "apt",
    "cpio": "cpio",
    "debugfs": "e2fsprogs",
    "depmod": "kmod",
    "dpkg-deb": "dpkg",
    "e2fsck": "e2fsprogs",
    "gpgv": "gpgv",
    "grub-mkimage": "grub-pc-bin",
    "mcopy": "mtools",
    "mformat": "mtools",
    "mtype": "mtools",
    "mke2fs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-arm": "qemu-system-arm",
    "sfdisk": "fdisk",
    "xz": "xz-utils",
    "zstd": "zstd",
}

# Keep the environment small and stable: tools must not pick up the user's locale or
# settings, and what they write must not depend on the machine's clock zone.
_BASE_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}


def require(tool: str) -> str:
    """Return the path of a host tool, or raise naming the Debian package to install."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise MissingToolError(tool, HOST_TOOLS.get(tool, tool))
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    stdout: int | None = subprocess.PIPE,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv; log it with -v; raise CommandError carrying stderr when it fails."""
    args = [os.fspath(a) for a in argv]
    args[0] = require(args[0]) if "/" not in args[0] else args[0]
    log.detail("+ " + shlex.join(args))
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"}
    full_env.update(_BASE_ENV)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=full_env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    if log.verbosity() >= 2 and proc.stderr:
        log.detail(proc.stderr.decode(errors="replace").rstrip())
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc
