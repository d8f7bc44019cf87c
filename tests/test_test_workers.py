"""How many QEMU guests `./build.py test` runs at a time: a core each and one more, at most 4;
APBUILD_TEST_WORKERS chooses, and a value that is not a count is refused by name."""

from __future__ import annotations

import pytest

from apbuild import cli
from apbuild.errors import ApbuildError


@pytest.mark.parametrize("cores, workers", [(1, 2), (2, 3), (3, 4), (16, 4), (None, 2)])
def test_a_core_each_and_one_more_at_most_four(monkeypatch, cores, workers):
    monkeypatch.delenv("APBUILD_TEST_WORKERS", raising=False)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: cores)
    assert cli.test_workers() == workers


def test_the_setting_chooses_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setenv("APBUILD_TEST_WORKERS", "1")
    assert cli.test_workers() == 1
    assert cli._parallel([]) == []                      # one worker: in this process
    monkeypatch.setenv("APBUILD_TEST_WORKERS", "6")
    assert cli._parallel([]) == ["-n", "6", "--dist", "loadgroup"]
    assert cli._parallel(["-n", "2"]) == []             # the caller's own choice stands
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("APBUILD_TEST_WORKERS", bad)
        with pytest.raises(ApbuildError, match=f"APBUILD_TEST_WORKERS='{bad}': a whole number of workers"):
            cli.test_workers()
