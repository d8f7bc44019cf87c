#!/usr/bin/env python3
"""apbuild's entry point. Bootstraps its own virtualenv (.venv), then runs apbuild.cli."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("APBUILD_VENV", ROOT / ".venv"))


def _requirements(with_tests: bool) -> list[Path]:
    files = [ROOT / "requirements.txt"]
    return files + [ROOT / "requirements-test.txt"] if with_tests else files


def _bootstrap(with_tests: bool) -> None:
    python = VENV / "bin" / "python"
    reqs = _requirements(with_tests)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in reqs)).hexdigest()
    stamp = VENV / f".apbuild-{'test' if with_tests else 'build'}-{digest[:16]}"
    if stamp.exists() and python.exists():
        return
    if not python.exists():
        print(f"‣ creating {VENV}", file=sys.stderr)
        if subprocess.call([sys.executable, "-m", "venv", str(VENV)]) != 0:
            sys.exit("error: could not create a virtualenv: install python3-venv "
                     "(apt-get install python3-venv)")
    print("‣ installing Python packages: " + ", ".join(p.name for p in reqs), file=sys.stderr)
    argv = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for req in reqs:
        argv += ["-r", str(req)]
    if subprocess.call(argv) != 0:
        sys.exit("error: pip could not install the Python packages (see above)")
    stamp.touch()


if __name__ == "__main__":
    if Path(sys.prefix).resolve() != VENV.resolve():
        _bootstrap(with_tests="test" in sys.argv[1:2])
        os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])
    sys.path.insert(0, str(ROOT))
    from apbuild.cli import main

    sys.exit(main())
