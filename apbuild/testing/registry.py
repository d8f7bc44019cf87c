"""A real OCI registry on the loopback for the shared-cache tests and benchmark: Debian's
docker-registry (the CNCF distribution registry), storing on the filesystem under `storage`
(where a test can damage a blob, as a broken disk or a malicious mirror would)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from apbuild.hosttools import TEST_TOOLS, ensure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, storage: Path, port: int, proc: subprocess.Popen) -> None:
        self.storage, self.port, self.proc = storage, port, proc

    def url(self, repository: str = "apbuild/cache") -> str:
        return f"oci://127.0.0.1:{self.port}/{repository}"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob (sha256:HEX)."""
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def registry(workdir: Path) -> Iterator[Registry]:
    """A registry of its own (empty storage, a free port), stopped on leaving."""
    ensure({"docker-registry": TEST_TOOLS["docker-registry"]})
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = open(workdir / "registry.log", "wb")
    proc = subprocess.Popen([shutil.which("docker-registry") or "/usr/bin/docker-registry", "serve", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    reg = Registry(storage, port, proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(workdir / 'registry.log').read_text()}")
                time.sleep(0.2)
        yield reg
    finally:
        reg.stop()
        log.close()
