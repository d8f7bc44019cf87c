"""A real SMTP server for the tests (aiosmtpd, the aio-libs project's) on 127.0.0.1: it keeps
every message it is given, with who logged in to send it. A guest reaches it at 10.0.2.2
through QEMU's user network; with a certificate it offers STARTTLS and takes AUTH only after
it, as a mail provider does."""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from apbuild.qemu import free_port

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError as exc:  # a clear line, not a traceback deep in a fixture
    raise ImportError("the tests' SMTP server needs aiosmtpd (./build.py test installs it from "
                      "PyPI, or Debian's python3-aiosmtpd)") from exc


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    login: str | None            # the user that authenticated, None without AUTH
    message: EmailMessage


class _Handler:
    def __init__(self, box: list[Received], lock: threading.Lock):
        self.box, self.lock = box, lock

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.lock:
            self.box.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), login, message))
        return "250 OK"


class MailServer:
    """with MailServer() as smtp: ... smtp.port, smtp.wait_for(subject=...)"""

    def __init__(self, cert: Path | None = None, key: Path | None = None,
                 users: dict[str, str] | None = None):
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.port = free_port()
        kwargs: dict = {}
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert), str(key))
            kwargs.update(tls_context=context, require_starttls=True)
        if users is not None:
            def check(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and \
                    users.get(auth_data.login.decode()) == auth_data.password.decode()
                return AuthResult(success=ok, auth_data=auth_data if ok else None, handled=False)
            kwargs.update(authenticator=check, auth_required=True, auth_require_tls=cert is not None)
        self._controller = Controller(_Handler(self.messages, self._lock), hostname="127.0.0.1",
                                      port=self.port, **kwargs)

    def __enter__(self) -> "MailServer":
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()

    def received(self, subject: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if subject in str(m.message["Subject"])]

    def wait_for(self, subject: str, timeout: float) -> Received:
        """The first message whose subject contains subject; fails naming what came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.received(subject):
                return found[0]
            time.sleep(0.5)
        with self._lock:
            got = [str(m.message["Subject"]) for m in self.messages]
        raise AssertionError(f"no e-mail with '{subject}' within {timeout:.0f}s (received: {got})")
