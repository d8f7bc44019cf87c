"""The installer's provisioning (/usr/lib/apbuild/provision.sh), run on the build host with
sh: provision.conf read as data, the manual's rule for root and admin, every mistake one
line naming the file and the key, and the hashes applied to a shadow file. The install
that uses it is booted in qemu-tests/test_hardening.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from apbuild.config import find_root

LIB = find_root() / "recipes" / "base" / "common" / "usr" / "lib" / "apbuild" / "provision.sh"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is missing")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """busybox's `mkpasswd -m sha512 -P 0` (the password on stdin) as the host has it."""
    d = tmp_path / "bin"
    d.mkdir()
    tool = d / "mkpasswd"
    tool.write_text('#!/bin/sh\n[ "$*" = "-m sha512 -P 0" ] || exit 2\n'
                    'IFS= read -r pw\nprintf "%s\\n" "$pw" | openssl passwd -6 -stdin\n')
    tool.chmod(0o755)
    return d


def sh(script: str, bin_dir: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(["sh", "-c", f'. "{LIB}"\n{script}'], env=env, capture_output=True, text=True)


def hashes(conf: Path, bin_dir: Path) -> dict[str, str]:
    proc = sh(f'provision_hashes "{conf}"', bin_dir)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(":", 1) for line in proc.stdout.splitlines())


def matches(hashed: str, password: str) -> bool:
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                           capture_output=True, text=True, check=True).stdout.strip()
    return again == hashed


def test_the_admin_password_replaces_both_defaults(tmp_path, bin_dir):
    conf = tmp_path / "provision.conf"
    conf.write_bytes(b"# the installation's passwords\r\nADMIN_PASSWORD=Adm1n secret\r\n")
    got = hashes(conf, bin_dir)
    assert sorted(got) == ["admin", "root"]
    assert matches(got["admin"], "Adm1n secret") and matches(got["root"], "Adm1n secret")
    assert got["admin"] != got["root"]          # a fresh salt each


def test_root_keeps_its_own_quoted_password(tmp_path, bin_dir):
    conf = tmp_path / "provision.conf"
    conf.write_text("ADMIN_PASSWORD=\"Adm1n secret\"\nROOT_PASSWORD='R00t:secret'")  # no final newline
    got = hashes(conf, bin_dir)
    assert matches(got["root"], "R00t:secret") and matches(got["admin"], "Adm1n secret")
    assert "R00t" not in "".join(got.values()) and "Adm1n" not in "".join(got.values())


def test_a_root_hash_alone_leaves_admin_as_it_was(tmp_path, bin_dir):
    hashed = subprocess.run(["openssl", "passwd", "-6", "Only-Root"], check=True,
                            capture_output=True, text=True).stdout.strip()
    conf = tmp_path / "provision.conf"
    conf.write_text(f"ROOT_PASSWORD_HASH={hashed}\n")
    assert hashes(conf, bin_dir) == {"root": hashed}
    kept = tmp_path / "kept"
    kept.write_text(f"root:{hashed}\n")
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$old$root:19000:0:99999:7:::\nadmin:$6$old$admin:19000:0:99999:7:::\n"
                      "postgres:!:19000::::::\n")
    proc = sh(f'shadow_apply "{kept}" "{shadow}"', bin_dir)
    assert proc.returncode == 0, proc.stderr
    assert shadow.read_text() == (f"root:{hashed}:19000:0:99999:7:::\nadmin:$6$old$admin:19000:0:99999:7:::\n"
                                  "postgres:!:19000::::::\n")
    assert os.stat(shadow).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text, says", [
    ("ROOT_PASSWORD=x\nPASSWORD\n", "line 2: not KEY=VALUE"),
    ("ROOT_PASSWORD=\n", "ROOT_PASSWORD is empty"),
    ("ADMIN_PASSWORD=''\n", "ADMIN_PASSWORD is empty"),
    ("ROOT_PASWORD=x\n", "unknown key ROOT_PASWORD (ROOT_PASSWORD, ADMIN_PASSWORD, ROOT_PASSWORD_HASH, "
                         "ADMIN_PASSWORD_HASH)"),
    ("ROOT_PASSWORD_HASH=$1$abc$def\n", "ROOT_PASSWORD_HASH is not a SHA-512 or SHA-256 crypt hash"),
    ("ADMIN_PASSWORD_HASH=$6$a:b\n", "ADMIN_PASSWORD_HASH must not contain ':'"),
    ("# nothing but a comment\n\n", "sets no password"),
])
def test_a_mistake_is_one_line_naming_the_file_and_key(tmp_path, bin_dir, text, says):
    conf = tmp_path / "provision.conf"
    conf.write_text(text)
    proc = sh(f'provision_hashes "{conf}"', bin_dir)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(str(conf)) and says in proc.stderr, proc.stderr


def test_a_password_that_cannot_be_hashed_stops_it(tmp_path, bin_dir):
    (bin_dir / "mkpasswd").write_text("#!/bin/sh\nexit 1\n")
    conf = tmp_path / "provision.conf"
    conf.write_text("ADMIN_PASSWORD=secret\n")
    proc = sh(f'provision_hashes "{conf}"', bin_dir)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert "cannot hash ADMIN_PASSWORD" in proc.stderr and "secret" not in proc.stderr.replace(str(conf), "")
