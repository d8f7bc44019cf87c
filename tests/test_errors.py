"""What users see when something is wrong: one clear line, the right exit code, nothing lost."""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apbuild import cli, debian, hosttools, run
from apbuild.cache import Cache
from apbuild.config import find_root
from apbuild.errors import IntegrityError, MissingToolError
from apbuild.lockfile import LockedPackage, Lockfile
from apbuild.mirror import Source

ROOT = find_root()


def bad_board(tmp_path: Path) -> Path:
    """x86_64-vm with a wrong value in its machine: the machine's file is named."""
    from apbuild.testing.seeding import definitions_copy

    root = definitions_copy(tmp_path)
    machine = root / "machines" / "x86_64-vm.toml"
    machine.write_text(machine.read_text().replace("ram_mb = 512", "ram_mb = -1"))
    return root / "boards" / "x86_64-vm.toml"


def test_malformed_board_exits_2_with_one_line_naming_file_and_key(tmp_path):
    path = bad_board(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), str(path)], capture_output=True,
                          text=True, env={**os.environ, "APBUILD_NO_INSTALL": "1"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    machine = path.parent.parent / "machines" / "x86_64-vm.toml"
    assert lines == [f"error: {machine}: ram_mb: -1 must be greater than 0"], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_board_lists_the_boards(capsys):
    assert cli.main(["no-such-board"]) == 2
    err = capsys.readouterr().err
    assert "no board named 'no-such-board'; boards: " in err and "x86_64-vm" in err


def test_missing_host_tool_names_the_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(run.shutil, "which", lambda *a, **k: None)
    with pytest.raises(MissingToolError, match=r"'sfdisk' is missing: install it with 'apt-get install fdisk'"):
        run.require("sfdisk")


def test_missing_tools_are_not_installed_without_permission(monkeypatch):
    monkeypatch.setenv("APBUILD_NO_INSTALL", "1")
    with pytest.raises(Exception, match=r"install them with: apt-get install --no-install-recommends no-such-pkg"):
        hosttools.ensure({"no-such-tool-apbuild": "no-such-pkg"})


@pytest.fixture
def http_dir(tmp_path):
    """A loopback HTTP server over a directory: a stand-in mirror for these tests."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hash_mismatch_names_the_package_and_refuses(tmp_path, http_dir):
    root, url = http_dir
    (root / "pool").mkdir()
    (root / "pool" / "tool_1.0_amd64.deb").write_bytes(b"not what the lockfile says")
    pkg = LockedPackage("tool", "1.0", "amd64", "bookworm", "pool/tool_1.0_amd64.deb", 26, "0" * 64, "tool")
    lock = Lockfile("amd64", "Mon, 23 Nov 2026 11:22:37 UTC", ("tool",), (), (pkg,))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(IntegrityError, match=r"tool 1.0: sha256 is [0-9a-f]{64}, expected 0{64}; refused"):
        debian.fetch(lock, (Source(url, "bookworm"),), cache)
    assert not cache.has_blob("0" * 64)
    assert list(cache.incoming().iterdir()) == []


class SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Sends a file in small pieces with pauses: two downloads of it overlap."""

    def copyfile(self, source, outputfile):
        while piece := source.read(4096):
            outputfile.write(piece)
            outputfile.flush()
            time.sleep(0.01)

    def log_message(self, *args):
        pass


def test_two_fetches_of_one_package_at_once_each_get_it_whole(tmp_path):
    # The suite's workers share one cache and may fetch the same .deb at the same moment;
    # with one shared download name each wrote into the other's file and refused the mix.
    root = tmp_path / "mirror"
    (root / "pool").mkdir(parents=True)
    data = bytes(range(256)) * 256                                        # 64 KiB: 16 pieces
    (root / "pool" / "tool_1.0_amd64.deb").write_bytes(data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SlowHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sha = hashlib.sha256(data).hexdigest()
    pkg = LockedPackage("tool", "1.0", "amd64", "bookworm", "pool/tool_1.0_amd64.deb", len(data), sha, "tool")
    lock = Lockfile("amd64", "Mon, 23 Nov 2026 11:22:37 UTC", ("tool",), (), (pkg,))
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = [f.result() for f in [pool.submit(debian.fetch, lock, (Source(url, "bookworm"),),
                                                        Cache(tmp_path / "cache")) for _ in range(2)]]
    finally:
        server.shutdown()
    assert [r["tool"].read_bytes() == data for r in results] == [True, True]
    assert list(Cache(tmp_path / "cache").incoming().iterdir()) == []


def test_package_gone_from_the_mirror_says_how_to_refresh(tmp_path, http_dir):
    _, url = http_dir
    pkg = LockedPackage("gone", "2.0", "amd64", "bookworm", "pool/gone_2.0_amd64.deb", 1, "1" * 64, "gone")
    lock = Lockfile("amd64", "Mon, 23 Nov 2026 11:22:37 UTC", ("gone",), (), (pkg,))
    with pytest.raises(Exception, match=r"gone 2.0 is no longer on the mirror \(bookworm\): refresh the lockfile with './build.py lock x86_64-vm'"):
        debian.fetch(lock, (Source(url, "bookworm"),), Cache(tmp_path / "c"), board="x86_64-vm")


def host_inrelease() -> bytes:
    lists = sorted(Path("/var/lib/apt/lists").glob("*_dists_bookworm_InRelease"))
    if not lists:
        pytest.skip("no InRelease in /var/lib/apt/lists (run apt-get update)")
    return lists[0].read_bytes()


def test_inrelease_signature_is_checked_against_the_keyring():
    data = host_inrelease()
    text = debian.verify_inrelease(data, debian.KEYRING, "bookworm")
    release = debian.parse_release(text, Source("http://mirror.invalid/debian", "bookworm"))
    assert "main/binary-amd64/Packages.xz" in release.sha256
    # One byte changed inside the signed text: refused.
    i = data.index(b"main/binary-amd64/Packages.xz") - 70
    tampered = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
    with pytest.raises(IntegrityError, match="bookworm: InRelease signature is not valid"):
        debian.verify_inrelease(tampered, debian.KEYRING, "bookworm")


def test_packages_index_must_match_inrelease(tmp_path, http_dir):
    root, url = http_dir
    index = root / "dists" / "bookworm" / "main" / "binary-amd64"
    index.mkdir(parents=True)
    (index / "Packages.xz").write_bytes(b"a different index")
    release = debian.Release(Source(url, "bookworm"), "Mon, 23 Nov 2026 11:22:37 UTC",
                             {"main/binary-amd64/Packages.xz": ("2" * 64, 17)})
    with pytest.raises(debian.MirrorSyncError, match="match InRelease"):
        debian.fetch_packages_index(release, "amd64", Cache(tmp_path / "c"))


def test_two_fetches_of_one_packages_index_at_once_each_get_it_whole(tmp_path):
    # Two workers locking at once download the same index; with one shared download name
    # each read the other's half-written file and blamed a syncing mirror.
    root = tmp_path / "mirror"
    index = root / "dists" / "bookworm" / "main" / "binary-amd64"
    index.mkdir(parents=True)
    data = b"".join(b"Package: p%d\nVersion: 1.0\n\n" % i for i in range(3000))
    (index / "Packages").write_bytes(data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SlowHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    release = debian.Release(Source(f"http://127.0.0.1:{server.server_address[1]}", "bookworm"),
                             "Mon, 23 Nov 2026 11:22:37 UTC",
                             {"main/binary-amd64/Packages": (hashlib.sha256(data).hexdigest(), len(data))})
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = [f.result() for f in [pool.submit(debian.fetch_packages_index, release, "amd64",
                                                        Cache(tmp_path / "cache")) for _ in range(2)]]
    finally:
        server.shutdown()
    assert results == [data.decode()] * 2
    assert list(Cache(tmp_path / "cache").incoming().iterdir()) == []
