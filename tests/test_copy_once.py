"""/usr/sbin/copy-once, which the start scripts use to put a file on sda2 at the first boot
(an image's default: /etc/hosts, the reference manager, crontabs, bip's site.json; or a
secret made there: the erp's, Redis's and RabbitMQ's passwords, tryton's admin password,
bip's SECRET_KEY), run on the build host with sh: it writes once, never over a file that is
there, again over an empty one, a secret private from its first byte, and has the file on
the disk before it takes its name. The first boot it protects is power-cut in
qemu-tests/test_vm_lifecycle.py."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from apbuild.config import find_root

TOOL = find_root() / "recipes" / "base" / "rootfs" / "usr" / "sbin" / "copy-once"


@pytest.fixture
def traced(tmp_path: Path) -> tuple[Path, Path]:
    """A bin directory whose sync and mv note each call, then run the host's own."""
    bin_dir, trace = tmp_path / "bin", tmp_path / "trace"
    bin_dir.mkdir()
    for name in ("sync", "mv"):
        real = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{trace}"\nexec {real} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir, trace


def copy_once(bin_dir: Path, *args: object, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(["sh", str(TOOL), *map(str, args)], env=env, input=stdin, capture_output=True,
                          text=True)


def test_copies_a_missing_file_synced_before_it_takes_its_name(tmp_path, traced):
    bin_dir, trace = traced
    src, dest = tmp_path / "manager", tmp_path / "apps" / "manager"
    src.write_bytes(b"#!/bin/sh\nexec sleep 1\n")
    dest.parent.mkdir()
    proc = copy_once(bin_dir, src, dest, 755)
    assert proc.returncode == 0 and proc.stdout == f"{dest}\n", proc
    assert dest.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert os.listdir(dest.parent) == ["manager"]     # no .new left beside it
    assert trace.read_text().splitlines() == [f"sync {dest}.new", f"mv {dest}.new {dest}", f"sync {dest.parent}"]


def test_a_file_that_is_there_is_never_replaced(tmp_path, traced):
    bin_dir, trace = traced
    src, dest = tmp_path / "hosts.default", tmp_path / "hosts"
    src.write_text("127.0.0.1 localhost\n")
    dest.write_text("10.8.0.1 vpn-gateway\n")       # the admin's, as the manual's VPN note says
    proc = copy_once(bin_dir, src, dest)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert dest.read_text() == "10.8.0.1 vpn-gateway\n"
    assert not trace.exists()


def test_an_empty_file_left_by_a_power_cut_is_copied_again(tmp_path, traced):
    bin_dir, _ = traced
    src, dest = tmp_path / "crontab.root", tmp_path / "root"
    src.write_text("0 * * * * rotate-log\n")
    dest.touch()
    proc = copy_once(bin_dir, src, dest)
    assert proc.returncode == 0 and proc.stdout == f"{dest}\n", proc
    assert dest.read_text() == src.read_text()


def test_a_copy_that_fails_leaves_the_destination_as_it_was(tmp_path, traced):
    bin_dir, _ = traced
    dest = tmp_path / "site.json"
    proc = copy_once(bin_dir, tmp_path / "missing", dest)
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert f"copy-once: could not write {dest} from {tmp_path / 'missing'}" in proc.stderr
    assert not dest.exists() and not dest.with_name("site.json.new").exists()
    bad_mode = copy_once(bin_dir, TOOL, dest, "not-a-mode")
    assert bad_mode.returncode == 1 and not dest.exists() and not dest.with_name("site.json.new").exists()


def test_wrong_usage_says_how(tmp_path, traced):
    bin_dir, _ = traced
    proc = copy_once(bin_dir, tmp_path / "only-one")
    assert proc.returncode == 2 and "usage: copy-once SRC|- DEST [MODE [OWNER]]" in proc.stderr


def test_a_secret_from_standard_input_is_private_before_it_has_its_name(tmp_path, traced):
    bin_dir, trace = traced
    # chown (only noted: the host has no redis user) and chmod note the mode the file had before them.
    (bin_dir / "chown").write_text(f'#!/bin/sh\necho "chown $* $(stat -c %a "$2")" >> "{trace}"\n')
    (bin_dir / "chmod").write_text(f'#!/bin/sh\necho "chmod $* $(stat -c %a "$2")" >> "{trace}"\n'
                                   f'exec /bin/chmod "$@"\n')
    for tool in ("chown", "chmod"):
        (bin_dir / tool).chmod(0o755)
    dest = tmp_path / "redis.conf"
    proc = copy_once(bin_dir, "-", dest, 640, "root:redis", stdin="requirepass 5ecret\n")
    assert proc.returncode == 0 and proc.stdout == f"{dest}\n", proc
    assert dest.read_text() == "requirepass 5ecret\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    # Owned, with its mode, synced, then named: never readable by others under either name.
    assert trace.read_text().splitlines() == [f"chmod 640 {dest}.new 600", f"chown root:redis {dest}.new 640",
                                              f"sync {dest}.new", f"mv {dest}.new {dest}",
                                              f"sync {dest.parent}"]


def test_an_empty_secret_is_refused(tmp_path, traced):
    """What a generator that failed gives (copy-once cannot see its status through the pipe):
    written, it would count as missing and be made again, unlike what it was used for."""
    bin_dir, _ = traced
    dest = tmp_path / "userside.pgpass"
    proc = copy_once(bin_dir, "-", dest, 600, stdin="")
    assert proc.returncode == 1 and not dest.exists() and not dest.with_name("userside.pgpass.new").exists()
