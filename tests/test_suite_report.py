"""The suite's closing report (the root conftest.py): each file's time and the CPU its tests
used, their own and their commands', also when pytest-xdist runs them in workers. Run on two
small test files in a directory of their own, by pytest in a subprocess."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from apbuild.config import find_root

BUSY = '''
import subprocess, sys
def test_a_command_spins():
    # 0.8 s of CPU in a child process, which the worker waits for.
    subprocess.run([sys.executable, "-c",
                    "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.8: pass"], check=True)
'''
IDLE = '''
import time
def test_it_sleeps():
    time.sleep(0.8)
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_each_file_has_the_cpu_its_tests_used(tmp_path: Path, workers: list[str]):
    shutil.copy(find_root() / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_busy.py").write_text(BUSY)
    (tmp_path / "test_idle.py").write_text(IDLE)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *workers],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120).stdout
    assert "2 passed" in out, out
    rows = {m[3]: (float(m[1]), float(m[2]))
            for m in re.finditer(r"^\s*([\d.]+) s\s+([\d.]+) s CPU  (\S+)$", out, re.M)}
    busy, idle = rows["test_busy.py"], rows["test_idle.py"]
    assert busy[1] >= 0.8 and idle[1] < 0.4 and idle[0] >= 0.8, out
    total = re.search(r"^\s*[\d.]+ s\s+([\d.]+) s CPU  in all", out, re.M)
    assert total and float(total[1]) >= busy[1] + idle[1] - 0.11, out
    # Each test's own line, the busiest first in the CPU table.
    by_cpu = out.split("the 15 tests that used the most CPU")[1]
    first = re.search(r"^\s*([\d.]+) s\s+([\d.]+) s CPU  (\S+)$", by_cpu, re.M)
    assert first and first[3] == "test_busy.py::test_a_command_spins" and float(first[2]) >= 0.8, out


def test_the_longest_units_go_out_first():
    """The root conftest.py's order: the listed QEMU files (each of which exists: a renamed
    one would drop out of the list unseen), the other QEMU tests, the listed build tests,
    the unit tests; a file's tests keep the collection's order."""
    root = find_root()
    spec = importlib.util.spec_from_file_location("root_conftest", root / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    for path in (*conftest.LONGEST_FIRST, *conftest.BUILDS_FIRST):
        assert (root / path).is_file(), path
    collected = ["tests/test_cache.py::test_a", "qemu-tests/test_accel.py::test_b",
                 "tests/test_build.py::test_c", "qemu-tests/test_update_paths.py::test_d[ipx10-N-2]",
                 "qemu-tests/test_tryton.py::test_e", "qemu-tests/test_update_paths.py::test_d[ipx10-N-1]",
                 "tests/test_cache.py::test_f"]
    items = [SimpleNamespace(nodeid=n) for n in collected]
    assert [i.nodeid for i in sorted(items, key=conftest._order)] == [
        "qemu-tests/test_tryton.py::test_e", "qemu-tests/test_update_paths.py::test_d[ipx10-N-2]",
        "qemu-tests/test_update_paths.py::test_d[ipx10-N-1]", "qemu-tests/test_accel.py::test_b",
        "tests/test_build.py::test_c", "tests/test_cache.py::test_a", "tests/test_cache.py::test_f"]
