"""The device's replication command on the host: what it refuses, it refuses before it
touches PostgreSQL or a file (the settings are validated first), with a line that says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "recipes/replication/rootfs/usr/sbin/replication"


def replication(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_help_lists_every_mode():
    out = replication("--help")
    assert out.returncode == 0
    for word in ("status", "off", "primary [NAME..]", "remove NAME", "standby HOST[:PORT] NAME PASSWORD"):
        assert word in out.stdout, out.stdout


@pytest.mark.parametrize("args, said", [
    (("standby", "bad host!", "sb1.example", "a" * 24), "'bad host!' is not a host name"),
    (("standby", "10.0.0.1:99999", "sb1.example", "a" * 24), "'99999' is not a port"),
    (("standby", "10.0.0.1:0", "sb1.example", "a" * 24), "'0' is not a port"),
    (("standby", "10.0.0.1", "Under_Score", "a" * 24), "'Under_Score' is not a valid standby name"),
    (("standby", "10.0.0.1", "sb1.example", "short"), "the password is the one the primary handed out"),
    (("standby", "10.0.0.1", "sb1.example", "a" * 20 + ";rm"), "the password is the one the primary handed out"),
    (("primary", "-leading-dash"), "'-leading-dash' is not a valid standby name"),
    (("primary", "x" * 64), "is not a valid standby name"),
    (("remove", "no such"), "'no such' is not a standby of this primary"),
])
def test_bad_settings_are_refused_naming_the_value(args, said):
    out = replication(*args)
    assert out.returncode == 1, out
    assert out.stderr.startswith("replication: refused: ") and said in out.stderr, out.stderr


def test_unknown_words_print_the_usage():
    out = replication("sideways")
    assert out.returncode == 2 and "replication status" in out.stdout
