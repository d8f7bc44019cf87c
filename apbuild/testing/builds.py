"""./build.py run as a user runs it, in a process of its own, for the tests that interrupt a
build (a killed build, a registry gone mid-build): what it prints to stderr is collected as
it comes, so a test can wait for a stage's line and then strike."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from apbuild.config import find_root


def start_build(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, list[str]]:
    """(the process, the list its stderr chunks are appended to)."""
    proc = subprocess.Popen([sys.executable, str(find_root() / "build.py"), *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env={**os.environ, "APBUILD_NO_INSTALL": "1", **(env or {})})
    seen: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):
            seen.append(chunk.decode(errors="replace"))
    threading.Thread(target=read, daemon=True).start()
    return proc, seen
