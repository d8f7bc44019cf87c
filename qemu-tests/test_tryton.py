"""The tryton product (products/tryton.toml) on the x86_64 VM, deployed as the OpenERP
deployment page (../shared/seeds/003_59918abf214225ee.txt) says: the web client over HTTPS,
a test and a production database. Tested as its user works: the web client's page over
HTTPS, a login through the web client's JSON-RPC, a record made in the test database and
absent from production."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from apbuild.testing import scratch
from apbuild.testing.accounts import account
from apbuild.testing.disks import fresh_disk
from apbuild.testing.lifecycle import unverified_tls
from apbuild.testing.machine import Machine, scaled
from apbuild.testing.terminal import ReaderTerminal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tryton(request, build_board, logdir, accel):
    project, result = build_board("tryton@x86_64-vm")
    with scratch(request, "tryton") as tmp, \
            Machine(project.board, fresh_disk(result, tmp, "tryton"), logdir, name="tryton",
                    guest_ports=(22, 80, 443, 8000, 5432), accel=accel) as m:
        m.install(login=False)
        m.login(timeout=1200)
        # trytond-admin makes the production database (minutes under emulation), then test.
        deadline = time.monotonic() + scaled(2400)
        while m.run("test -e /mnt/sda2/tryton/.databases-made")[1] != 0:
            assert time.monotonic() < deadline, m.ok("tail -20 /var/log/tryton/databases.log")
            time.sleep(10)
        # Then the server starts, on the modules trytond-admin compiled (a minute of TCG).
        while m.run("netstat -tln | grep -q '127.0.0.1:8000 '")[1] != 0:
            assert time.monotonic() < deadline, m.ok("tail -20 /var/log/tryton/trytond.log")
            time.sleep(5)
        # What the administrator reads, read their way: SSH as admin, su root.
        m.term = ReaderTerminal(m.ports[22], *account("admin", m.board.name), logdir / "tryton.ssh.log")
        m.term.su(account("root", m.board.name)[1])
        m.admin_password = m.term.ok("cat /mnt/sda2/etc/tryton/admin-password")
        yield m
        m.term.close()


class Client:
    """What the sao web client does: JSON-RPC over HTTPS, one database per URL."""

    def __init__(self, m: Machine, database: str) -> None:
        self.url = f"https://127.0.0.1:{m.ports[443]}/" + (f"{database}/" if database else "")
        self.auth = ""
        self.id = 0

    def call(self, method: str, *params):
        self.id += 1
        request = urllib.request.Request(self.url, json.dumps({"id": self.id, "method": method,
                                                               "params": list(params)}).encode())
        request.add_header("Content-Type", "application/json")
        if self.auth:
            request.add_header("Authorization", self.auth)
        with urllib.request.urlopen(request, timeout=scaled(120), context=unverified_tls()) as r:
            reply = json.loads(r.read())
        assert "error" not in reply or reply["error"] is None, reply
        return reply["result"]

    def login(self, user: str, password: str) -> None:
        user_id, session = self.call("common.db.login", user, {"password": password}, "en")[:2]
        self.auth = "Session " + base64.b64encode(f"{user}:{user_id}:{session}".encode()).decode()


def test_web_client_over_https_and_http_redirects(tryton):
    with urllib.request.urlopen(f"https://127.0.0.1:{tryton.ports[443]}/", timeout=scaled(60),
                                context=unverified_tls()) as r:
        page = r.read().decode()
    assert r.status == 200 and "sao" in page.lower() and "tryton" in page.lower()
    request = urllib.request.Request(f"http://127.0.0.1:{tryton.ports[80]}/production/")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(NoRedirect).open(request, timeout=scaled(60))
    assert e.value.code == 301 and e.value.headers["Location"].startswith("https://")
    # trytond itself listens on the loopback only.
    assert "127.0.0.1:8000" in tryton.term.ok("netstat -tln")


def test_both_databases_are_listed(tryton):
    assert sorted(Client(tryton, "").call("common.db.list")) == ["production", "test"]


def test_a_record_made_in_test_is_absent_from_production(tryton):
    test, production = Client(tryton, "test"), Client(tryton, "production")
    test.login("admin", tryton.admin_password)
    production.login("admin", tryton.admin_password)
    name = f"Trial Customer {time.time_ns()}"
    [party] = test.call("model.party.party.create", [{"name": name}], {})
    assert test.call("model.party.party.search", [["name", "=", name]], 0, None, None, {}) == [party]
    assert production.call("model.party.party.search", [["name", "=", name]], 0, None, None, {}) == []


def test_a_wrong_password_is_refused(tryton):
    client = Client(tryton, "production")
    with pytest.raises((AssertionError, urllib.error.HTTPError)):
        client.login("admin", "not-the-password")
