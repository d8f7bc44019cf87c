#!/usr/bin/env python3
"""apbuild's entry point. Bootstraps its own virtualenv (.venv), then runs apbuild.cli."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("APBUILD_VENV", ROOT / ".venv"))


def _requirements(with_tests: bool) -> list[Path]:
    files = [ROOT / "requirements.txt"]
    return files + [ROOT / "requirements-test.txt"] if with_tests else files


# When PyPI cannot be reached, the same libraries come from the Debian mirror the build
# needs anyway; the requirement files' lower bounds are what bookworm ships.
DEBIAN_PACKAGES = {"jinja2": "python3-jinja2", "pyelftools": "python3-pyelftools",
                   "python-debian": "python3-debian", "installer": "python3-installer",
                   "packaging": "python3-packaging",
                   "pytest": "python3-pytest", "pytest-xdist": "python3-pytest-xdist",
                   "pexpect": "python3-pexpect",
                   "paramiko": "python3-paramiko", "lxml": "python3-lxml",
                   "aiosmtpd": "python3-aiosmtpd"}
# Libraries bookworm does not package. Without PyPI: the SBOM tests skip (spdx-tools), the
# QEMU tests stop with one line (qemu.qmp), the gateway loader reads FAT with mtools (pyfatfs).
NOT_IN_DEBIAN = {"spdx-tools", "qemu.qmp", "pyfatfs", "oras"}


def _requirement_name(line: str) -> str:
    """The distribution name of a requirement line ('' for a comment or blank line)."""
    line = line.split("#")[0].strip()
    return re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0].lower() if line else ""


def _requirement_names(reqs: list[Path]) -> list[str]:
    return [n for req in reqs for line in req.read_text().splitlines() if (n := _requirement_name(line))]


def _make_venv(python: Path, system_site: bool) -> None:
    shutil.rmtree(VENV, ignore_errors=True)
    print(f"‣ creating {VENV}", file=sys.stderr)
    base = "/usr/bin/python3" if system_site else sys.executable
    argv = [base, "-m", "venv", str(VENV)] + (["--system-site-packages"] if system_site else [])
    if subprocess.call(argv) != 0:
        sys.exit("error: could not create a virtualenv: install python3-venv "
                 "(apt-get install python3-venv)")


def _pip(python: Path, reqs: list[Path], *extra: str) -> bool:
    argv = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--retries", "2", "--timeout", "20", *extra]
    for req in reqs:
        argv += ["-r", str(req)]
    return subprocess.call(argv) == 0


def _from_debian(python: Path, reqs: list[Path]) -> bool:
    """PyPI unreachable: install the libraries as Debian packages, see them from a new venv."""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        return False
    sys.path.insert(0, str(ROOT))
    from apbuild import hosttools
    from apbuild.errors import ApbuildError

    packages = sorted({DEBIAN_PACKAGES[n] for n in _requirement_names(reqs) if n in DEBIAN_PACKAGES})
    print("‣ PyPI unreachable: using Debian's " + " ".join(packages), file=sys.stderr)
    try:
        hosttools.install_packages(packages + ["python3-venv"])
    except ApbuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    _make_venv(python, system_site=True)
    missing = sorted(set(_requirement_names(reqs)) & NOT_IN_DEBIAN)
    if missing:
        print("‣ not in Debian, left out: " + " ".join(missing), file=sys.stderr)
    # Only checks that the versions satisfy; requirements Debian lacks are left out.
    checked = VENV / "requirements-debian.txt"
    checked.write_text("".join(line + "\n" for req in reqs for line in req.read_text().splitlines()
                               if _requirement_name(line) not in NOT_IN_DEBIAN))
    return _pip(python, [checked], "--no-index")


def _bootstrap(with_tests: bool) -> None:
    python = VENV / "bin" / "python"
    reqs = _requirements(with_tests)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in reqs)).hexdigest()
    stamp = VENV / f".apbuild-{'test' if with_tests else 'build'}-{digest[:16]}"
    if stamp.exists() and python.exists():
        return
    if not python.exists():
        _make_venv(python, system_site=False)
    print("‣ installing Python packages: " + ", ".join(p.name for p in reqs), file=sys.stderr)
    if not _pip(python, reqs) and not _from_debian(python, reqs):
        sys.exit("error: could not install the Python packages, from PyPI or as Debian "
                 "packages (see above)")
    stamp.touch()


if __name__ == "__main__":
    if Path(sys.prefix).resolve() != VENV.resolve():
        _bootstrap(with_tests="test" in sys.argv[1:2])
        os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])
    sys.path.insert(0, str(ROOT))
    from apbuild.cli import main

    sys.exit(main())
