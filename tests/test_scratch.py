"""apbuild.testing.scratch, which keeps the suite's disk use down: a module fixture's
directory goes when the fixture ends, unless a test failed meanwhile. Run in a pytest of
its own on two small modules, one passing and one failing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from apbuild.config import find_root

MODULE = '''
import pytest
from apbuild.testing import scratch

@pytest.fixture(scope="module")
def work(request):
    with scratch(request, "{name}") as d:
        (d / "disk.qcow2").write_bytes(b"a booted disk")
        yield d

def test_one(work):
    assert (work / "disk.qcow2").exists()

def test_two(work):
    assert {outcome}
'''


def test_a_module_directory_goes_when_its_tests_pass_and_stays_when_one_fails(tmp_path):
    tests = tmp_path / "inner"
    tests.mkdir()
    (tests / "test_passing.py").write_text(textwrap.dedent(MODULE.format(name="passed", outcome="True")))
    (tests / "test_failing.py").write_text(textwrap.dedent(MODULE.format(name="failed", outcome="False")))
    base = tmp_path / "base"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--basetemp", str(base), "-o", "addopts=", str(tests)],
                          cwd=tests, env={"PYTHONPATH": str(find_root()), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert "1 failed, 3 passed" in proc.stdout, proc.stdout + proc.stderr
    assert not (base / "passed0").exists()
    assert (base / "failed0" / "disk.qcow2").read_bytes() == b"a booted disk"
