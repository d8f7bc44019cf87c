"""The one way apbuild runs a subprocess: logs the command, raises with its stderr.

run() is for a command whose output fits in memory; spawn() is for one that streams (a
pipeline's end, an archive read as it comes): both raise CommandError carrying the end of
stderr, and CommandTimeout when a deadline passes. interactive() hands the terminal over.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from . import log
from .errors import CommandError, CommandTimeout, MissingToolError

PIPE, DEVNULL = subprocess.PIPE, subprocess.DEVNULL
Popen = subprocess.Popen

# Every host tool apbuild or its tests call, the Debian package that provides it, and who
# needs it: "build" (./build.py BOARD installs these) or "test" (./build.py test adds these).
# A missing one names its package; hosttools installs them; build.py's fallback reads it.
HOST_TOOLS: dict[str, tuple[str, str]] = {
    "apt-get": ("apt", "build"),
    "debugfs": ("e2fsprogs", "build"),
    "dpkg-deb": ("dpkg", "build"),
    "gpgv": ("gpgv", "build"),
    "grub-mkimage": ("grub-pc-bin", "build"),
    "mcopy": ("mtools", "build"),
    "mke2fs": ("e2fsprogs", "build"),
    "mkfs.fat": ("dosfstools", "build"),
    "mtype": ("mtools", "build"),
    "qemu-img": ("qemu-utils", "build"),
    "sfdisk": ("fdisk", "build"),
    "xz": ("xz-utils", "build"),
    "zstd": ("zstd", "build"),
    "qemu-system-x86_64": ("qemu-system-x86", "test"),
    "qemu-system-aarch64": ("qemu-system-arm", "test"),
    "qemu-system-arm": ("qemu-system-arm", "test"),
    # The manual's reader's side: an SSH, SCP and SFTP client that is not ours, a PostgreSQL
    # client for the outside access the manual opens, openssl for the test's own HTTPS
    # server (and the update signing key).
    "ssh": ("openssh-client", "test"),
    "scp": ("openssh-client", "test"),
    "sftp": ("openssh-client", "test"),
    "psql": ("postgresql-client", "test"),
    "openssl": ("openssl", "test"),
    # test_ntp.py's own network: a namespace with a tap, DHCP and an NTP server.
    "ip": ("iproute2", "test"),
    "dnsmasq": ("dnsmasq-base", "test"),
    "chronyd": ("chrony", "test"),
    # tests/test_device_scripts.py: every shell script the images carry.
    "shellcheck": ("shellcheck", "test"),
    # tests/test_alarm_mail.py: the device's alarm e-mail goes out through curl.
    "curl": ("curl", "test"),
    # The shared-cache tests' registry (the CNCF distribution registry), on the loopback.
    "docker-registry": ("docker-registry", "test"),
}

# Keep the environment small and stable: tools must not pick up the user's locale or
# settings, and what they write must not depend on the machine's clock zone.
_BASE_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}


def tools(use: str) -> dict[str, str]:
    """tool -> Debian package, for the tools that use ("build" or "test") needs."""
    return {tool: package for tool, (package, needed_by) in HOST_TOOLS.items() if needed_by == use}


def require(tool: str) -> str:
    """Return the path of a host tool, or raise naming the Debian package to install."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise MissingToolError(tool, HOST_TOOLS.get(tool, (tool, ""))[0])
    return path


def _prepare(argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    args = [os.fspath(a) for a in argv]
    args[0] = require(args[0]) if "/" not in args[0] else args[0]
    log.detail("+ " + shlex.join(args))
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"}
    full_env.update(_BASE_ENV)
    if env:
        full_env.update(env)
    return args, full_env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    stdout: int | None = PIPE,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv; log it with -v; raise CommandError carrying stderr when it fails (with
    check), CommandTimeout when it runs longer than timeout seconds (it is killed)."""
    args, full_env = _prepare(argv, env)
    try:
        proc = subprocess.run(args, cwd=cwd, env=full_env, input=input,
                              stdin=None if input is not None else DEVNULL,
                              stdout=stdout, stderr=PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandTimeout(args, timeout or 0) from None
    if log.verbosity() >= 2 and proc.stderr:
        log.detail(proc.stderr.decode(errors="replace").rstrip())
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


@contextlib.contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[Any] = DEVNULL,
    stdout: int | IO[Any] = PIPE,
    timeout: float | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start argv and give the block its Popen, to feed its stdin or read its stdout as the
    data comes. When the block ends, stdin is closed, what is left of stdout is read and
    dropped, and the command is waited for (up to timeout seconds from then): CommandError with the end of its
    stderr if it failed, CommandTimeout if it did not finish. If the block raises, the
    command is killed. stderr goes to a file, not a pipe, so a chatty command cannot stall
    while the block is busy with its stdout."""
    args, full_env = _prepare(argv, env)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdin=stdin, stdout=stdout, stderr=errors)
        try:
            yield proc
        except BaseException:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            raise
        if proc.stdin is not None:
            proc.stdin.close()
            proc.stdin = None  # closed: communicate() must not flush it
        if proc.stdout is not None and proc.stdout.closed:
            proc.stdout = None
        try:
            # Reads and drops what the block left of stdout: a closed pipe would kill a
            # command that is still writing (a tar's padding after its end-of-archive).
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CommandTimeout(args, timeout or 0) from None
        returncode = proc.returncode
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if log.verbosity() >= 2 and stderr:
        log.detail(stderr.rstrip())
    if returncode != 0:
        raise CommandError(args, returncode, stderr)


def interactive(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> int:
    """Run argv on the user's terminal with the user's environment (QEMU's console, pytest)
    and return its exit status: what it prints is the user's to read, not an error."""
    args = [os.fspath(a) for a in argv]
    log.detail("+ " + shlex.join(args))
    return subprocess.call(args, cwd=cwd)
