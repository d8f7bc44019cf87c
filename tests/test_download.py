"""Downloads (apbuild.debian.download, which fetches the mirror's packages and PyPI's files)
against a real HTTP server on loopback that fails on purpose: a server that answers again
after a while is waited for, a missing file is said at once, and a failed download leaves
no file behind."""

from __future__ import annotations

import http.server
import threading

import pytest
from apbuild import debian
from apbuild.errors import ApbuildError

BODY = b"a package's bytes\n" * 1000


class Flaky(http.server.BaseHTTPRequestHandler):
    failures = 0          # how many GETs of /file are answered 503 before the file is served
    seen = 0

    def do_GET(self):
        type(self).seen += 1
        if self.path != "/file":
            self.send_error(404)
        elif type(self).seen <= type(self).failures:
            self.send_error(503)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Flaky.seen = Flaky.failures = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_server_that_comes_back_is_waited_for(server, tmp_path):
    Flaky.failures = 5
    dest = tmp_path / "file"
    debian.download(f"{server}/file", dest, tries=6, wait=0.01)
    assert dest.read_bytes() == BODY and Flaky.seen == 6


def test_a_server_that_stays_away_is_an_error_and_leaves_no_file(server, tmp_path):
    Flaky.failures = 3
    dest = tmp_path / "file"
    with pytest.raises(ApbuildError, match=r"cannot download .*/file: .*\(tried 3 times"):
        debian.download(f"{server}/file", dest, tries=3, wait=0.01)
    assert not dest.exists() and Flaky.seen == 3


def test_a_missing_file_is_said_at_once(server, tmp_path):
    with pytest.raises(debian.NotFound):
        debian.download(f"{server}/gone.deb", tmp_path / "gone.deb", tries=6, wait=0.01)
    assert Flaky.seen == 1
