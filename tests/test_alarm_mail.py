"""The manager's alarm e-mail (alarm-mail) on the host, through curl to a real SMTP server on
the loopback: plain, and STARTTLS with a login, whose certificate is checked unless the
settings say not to; what is not set or not valid is said in one line and nothing is sent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from apbuild.testing.smtp import MailServer

SCRIPT = Path(__file__).parents[1] / "recipes/manager/rootfs/usr/lib/manager/alarm-mail"


def alarm_mail(settings: Path, *args: str, body: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), "-c", str(settings), *args], input=body,
                          capture_output=True, text=True, timeout=90)


def write(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: no CA in Debian's list vouches for it."""
    d = tmp_path_factory.mktemp("smtp-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def test_an_alarm_goes_to_the_address_with_its_text(tmp_path):
    with MailServer() as smtp:
        settings = write(tmp_path / "mail.settings", alarmEmail="ops@example.com",
                         smtpServer="127.0.0.1", smtpPort=str(smtp.port), smtpFrom="ap7@example.com")
        out = alarm_mail(settings, "send", "App Platform ap7: replication alarm",
                         body="replication broken: standby_b disconnected\nmode primary\n")
        assert out.returncode == 0, out.stderr
        got = smtp.wait_for("replication alarm", 10)
    assert got.mail_from == "ap7@example.com" and got.rcpt_tos == ("ops@example.com",)
    assert got.login is None
    assert got.message["To"].addresses[0].addr_spec == "ops@example.com"
    text = got.message.get_content()
    assert "replication broken: standby_b disconnected" in text and "mode primary" in text


def test_starttls_with_a_login_and_the_certificate_check(tmp_path, certificate):
    cert, key = certificate
    with MailServer(cert, key, users={"ap-mailer": "S3cret!pass"}) as smtp:
        common = dict(alarmEmail="ops@example.com", smtpServer="127.0.0.1", smtpPort=str(smtp.port),
                      smtpSecurity="starttls", smtpUser="ap-mailer", smtpPassword="S3cret!pass")
        # Checked against Debian's CA certificates: a self-signed server is refused, not sent to.
        out = alarm_mail(write(tmp_path / "checked", **common), "send", "first", body="x\n")
        assert out.returncode == 1 and "cannot send to ops@example.com" in out.stderr, out
        assert "S3cret!pass" not in out.stderr
        # The administrator's choice for a LAN server with its own certificate.
        out = alarm_mail(write(tmp_path / "unchecked", **common, smtpVerify="no"), "send", "second", body="x\n")
        assert out.returncode == 0, out.stderr
        assert smtp.wait_for("second", 10).login == "ap-mailer"
        # A wrong password: refused by the server, said, nothing delivered.
        out = alarm_mail(write(tmp_path / "wrong", **{**common, "smtpPassword": "wrong"}, smtpVerify="no"),
                         "send", "third", body="x\n")
        assert out.returncode == 1 and "cannot send" in out.stderr, out
        assert not smtp.received("first") and not smtp.received("third")


def test_not_configured_and_the_delay(tmp_path):
    empty = write(tmp_path / "empty")
    assert alarm_mail(empty, "configured").returncode == 1
    out = alarm_mail(empty, "send", "nothing", body="x\n")
    assert out.returncode == 3 and "no alarm e-mail address or SMTP server is set" in out.stderr
    assert alarm_mail(empty, "delay").stdout.strip() == "300"          # the manual's 5 minutes
    assert alarm_mail(tmp_path / "missing", "delay").stdout.strip() == "300"
    set_ = write(tmp_path / "set", alarmEmail="a@example.com", smtpServer="mail.example.com",
                 alarmMailDelay="45", smtpSecurity="ssl3")
    assert alarm_mail(set_, "configured").returncode == 0
    assert alarm_mail(set_, "delay").stdout.strip() == "45"
    out = alarm_mail(set_, "send", "s", body="x\n")
    assert out.returncode == 2 and "smtpSecurity is none, starttls or tls, not 'ssl3'" in out.stderr


def test_usage():
    out = subprocess.run(["sh", str(SCRIPT), "sideways"], capture_output=True, text=True,
                         env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "alarm-mail [-c FILE] send SUBJECT" in out.stderr
