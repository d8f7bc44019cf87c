"""An HTTPS server on the host side of QEMU's user network, serving update feeds as a web
server or CDN would: static files, HTTP Range for resumed downloads. A guest reaches it at
10.0.2.2:PORT. It records what it was asked, and can drop a download half way once (a
connection lost in the middle), which is what a device must resume from."""

from __future__ import annotations

import dataclasses
import http.server
import re
import ssl
import threading
from pathlib import Path

from apbuild.run import run

GUEST_HOST = "10.0.2.2"   # the host, as QEMU's user network shows it to the guest


@dataclasses.dataclass(frozen=True)
class Request:
    path: str
    range: str          # the Range header, "" when none
    status: int
    sent: int           # body bytes sent


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for GUEST_HOST and its key (the device does not check it: the feed's
    signature is what it trusts)."""
    cert, key = directory / "feed.crt", directory / "feed.key"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={GUEST_HOST}", "-addext", f"subjectAltName=IP:{GUEST_HOST}",
         "-keyout", key, "-out", cert])
    return cert, key


class FeedServer:
    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.requests: list[Request] = []
        self.cut_after: int | None = None    # drop the next download after this many bytes
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

        cert, key = self_signed(workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, feed: str) -> str:
        return f"https://{GUEST_HOST}:{self.port}/{feed}"

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        rel = h.path.split("?")[0].lstrip("/")
        path = (self.root / rel).resolve()
        asked = h.headers.get("Range", "")
        if not path.is_file() or self.root.resolve() not in path.parents:
            self._reply(h, rel, asked, 404, b"")
            return
        data = path.read_bytes()
        start = 0
        if m := re.fullmatch(r"bytes=(\d+)-", asked):
            start = int(m.group(1))
            if start >= len(data):
                self._reply(h, rel, asked, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        headers = {"Accept-Ranges": "bytes"}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut = None
        if path.suffix == ".update":    # the drop is for a download, not the index
            cut, self.cut_after = self.cut_after, None
        self._reply(h, rel, asked, 206 if start else 200, body, headers, cut)

    def _reply(self, h, rel: str, asked: str, status: int, body: bytes, headers: dict | None = None,
               cut: int | None = None) -> None:
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        sent = body if cut is None else body[:cut]
        try:
            h.wfile.write(sent)
            h.wfile.flush()
        except OSError:
            pass
        if cut is not None:
            h.close_connection = True   # the connection is lost half way
        self.requests.append(Request("/" + rel, asked, status, len(sent)))
