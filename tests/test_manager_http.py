"""The manager's web front (/usr/lib/manager/http-connection and cgi-bin/page) run on the
build host with the image's own busybox (httpd, from the locked busybox-static package):
the status page, which the manager replaces every 5 s, is always one whole page.

busybox httpd sends a file with the length it read by stat() before it opened the file again
by name; a page replaced in between went out cut (CI's failure at stop 28: "IncompleteRead
(2395 bytes read, 90 more expected)", the alarm's line gone from the new page). Here a writer
replaces the page as fast as it can, a long and a short one in turn, while each of the URLs
that show it is asked for many times."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from apbuild import lockfile
from apbuild.config import find_root
from apbuild.packages import Packages

MANAGER = find_root() / "recipes" / "manager" / "rootfs" / "usr" / "lib" / "manager"
AUTH = "Authorization: Basic YWRtaW46c2VjcmV0"        # admin:secret
SHORT = b"<!DOCTYPE html><html><body>" + b"<p>status</p>\n" * 170 + b"</body></html>\n"
LONG = SHORT.replace(b"</body>", b"<p id=alarm><b>ALARM:</b> replication broken: standby b " + b"!" * 40 + b"</p></body>")


@pytest.fixture(scope="module")
def applets(build_cache, tmp_path_factory) -> Path:
    """A directory of the image's busybox applets that http-connection and the CGI call."""
    lock = lockfile.read(find_root() / "boards" / "x86_64-vm.lock")
    deb = Packages(lock, build_cache).only("busybox-static").debs()["busybox-static"]
    root = tmp_path_factory.mktemp("busybox")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    busybox = root / "bin" / "busybox"
    bin_dir = root / "applets"
    bin_dir.mkdir()
    for name in ("sh", "httpd", "head", "tr", "cat"):
        (bin_dir / name).symlink_to(busybox)
    return bin_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """/run/manager as the manager lays it out: the web root with the CGIs, ramdisk.log's own."""
    run = tmp_path / "run"
    (run / "www").mkdir(parents=True)
    (run / "www" / "cgi-bin").symlink_to(MANAGER / "cgi-bin")
    (run / "public" / "manager").mkdir(parents=True)
    (run / "public" / "manager" / "ramdisk.log").write_text("step 1 of 3\n")
    (run / "page.html").write_bytes(SHORT)
    (tmp_path / "httpd.conf").write_text("/:admin:secret\n")
    return run


def ask(applets: Path, run: Path, request: str) -> tuple[str, dict[str, str], bytes]:
    """One connection through http-connection: (status line, headers, body)."""
    env = {"PATH": str(applets), "MANAGER_RUN": str(run), "MANAGER_HTTPD_CONF": str(run.parent / "httpd.conf")}
    out = subprocess.run([str(applets / "sh"), str(MANAGER / "http-connection")], input=request.encode(),
                         env=env, capture_output=True, timeout=30).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


@pytest.mark.parametrize("url", ["/", "/index.html", "/manager/", "/manager/index.html", "/manager/?x=1"])
def test_the_status_page_is_whole_while_the_manager_replaces_it(applets, run_dir, url):
    stop = threading.Event()

    def replace() -> None:
        page, new = run_dir / "page.html", run_dir / "page.html.new"
        while not stop.is_set():
            for text in (LONG, SHORT):
                new.write_bytes(text)
                os.replace(new, page)

    writer = threading.Thread(target=replace)
    writer.start()
    try:
        seen = set()
        for _ in range(100):
            status, headers, body = ask(applets, run_dir, f"GET {url} HTTP/1.1\r\nHost: ap\r\n{AUTH}\r\n\r\n")
            assert status.split()[1] == "200", (status, body[:200])
            assert body in (SHORT, LONG), f"a cut or mixed page: {len(body)} bytes, {headers}"
            assert int(headers.get("content-length", len(body))) == len(body), headers
            seen.add(body)
    finally:
        stop.set()
        writer.join()
    assert seen, "no page was read"


def test_the_page_asks_for_the_password_and_ramdisk_log_does_not(applets, run_dir):
    for url in ("/", "/manager/", "/manager/index.html", "/cgi-bin/page", "/manager/ramdisk.log/../index.html"):
        status, _, _ = ask(applets, run_dir, f"GET {url} HTTP/1.1\r\n\r\n")
        assert status.split()[1] == "401", (url, status)
    status, _, body = ask(applets, run_dir, "GET /manager/ramdisk.log HTTP/1.1\r\n\r\n")
    assert status.split()[1] == "200" and body == b"step 1 of 3\n", (status, body)
    status, headers, body = ask(applets, run_dir, f"HEAD /manager/ HTTP/1.1\r\n{AUTH}\r\n\r\n")
    assert status.split()[1] == "200" and headers["content-type"] == "text/html" and body == b"", (status, body)


def test_a_page_not_made_yet_is_a_clear_error(applets, run_dir):
    (run_dir / "page.html").unlink()
    status, _, body = ask(applets, run_dir, f"GET /manager/ HTTP/1.1\r\n{AUTH}\r\n\r\n")
    assert status.split()[1] == "503" and b"not made yet" in body, (status, body)


def test_urls_are_case_sensitive(applets, run_dir):
    # The manual: "The app platform webserver interprets URLs case-sensitive".
    (run_dir / "www" / "Notes.txt").write_text("spelt so\n")
    for url, code in (("/manager/ramdisk.log", "200"), ("/MANAGER/RAMDISK.LOG", "404"), ("/Manager/ramdisk.log", "404"),
                      ("/Notes.txt", "200"), ("/notes.txt", "404"), ("/NOTES.TXT", "404"),
                      ("/manager/", "200"), ("/MANAGER/", "404"), ("/Index.html", "404")):
        status, _, body = ask(applets, run_dir, f"GET {url} HTTP/1.1\r\n{AUTH}\r\n\r\n")
        assert status.split()[1] == code, (url, status, body[:100])
