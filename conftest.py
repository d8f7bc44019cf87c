"""Suite-wide: how the README's test command spreads over parallel workers, and the time
each test file and the slowest tests took (printed at the end: the suite's time is a budget).

Beside each file's time, the CPU its tests used: their worker's and that of the commands
they ran and waited for (QEMU, xz, a release's build). On 2 cores with 3 workers the times
grow with what the other workers do; the CPU is what a file costs wherever it runs."""

from __future__ import annotations

import collections
import resource
import time

import pytest

_file_seconds: dict[str, float] = collections.defaultdict(float)
_test_seconds: dict[str, float] = collections.defaultdict(float)
_file_cpu: dict[str, float] = collections.defaultdict(float)
_test_cpu: dict[str, float] = collections.defaultdict(float)
_started = time.monotonic()
_CPU_AT_SETUP = pytest.StashKey[float]()   # the worker's CPU when the test's setup began


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for, user and system."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def pytest_configure(config: pytest.Config) -> None:
    # Keep the order set below: xdist otherwise puts the groups with most tests first.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _module_params(item: pytest.Item) -> str:
    """The parameters of the module-scoped fixtures an item uses ('' if none)."""
    spec = getattr(item, "callspec", None)
    if spec is None:
        return ""
    defs = item._fixtureinfo.name2fixturedefs  # pytest has no public way to ask a fixture's scope
    return ",".join(f"{name}={spec.id}" for name in sorted(spec.params)
                    if name in defs and defs[name][-1].scope == "module")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker turns the marks into group names
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (--dist loadgroup), the tests that share a booted machine (a fixture
    of module scope, per parameter) stay on one worker; every other test goes wherever a
    worker is free. The longest come first (_order), so the short ones fill the end."""
    for item in items:
        fixtures = item._fixtureinfo.name2fixturedefs
        if any(defs[-1].scope == "module" for defs in fixtures.values()):
            group = item.nodeid.split("::")[0]
            if params := _module_params(item):
                group += f":{params}"  # no brackets: xdist reads a name ending in ']' as no group
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_order)


# The longest units of work first (a module's booted machine, or one test): a worker takes
# the next unit when it has finished one, so the short ones left for the end even out when
# the workers finish. Measured in CI at 0ea876b (minutes of one worker): tryton 21, erp 20
# and 13, replication 19.5, bip 17.5, the update paths 7.5 to 13 each, manual 9, feed 7.5.
# Before, in the files' order, the update paths came late and ipx10's (13 min) ended the run.
LONGEST_FIRST = ("qemu-tests/test_tryton.py", "qemu-tests/test_erp.py", "qemu-tests/test_replication.py",
                 "qemu-tests/test_bip.py", "qemu-tests/test_update_paths.py", "qemu-tests/test_manual.py",
                 "qemu-tests/test_feed.py", "qemu-tests/test_vm_lifecycle.py")
# Of the unit and build tests, those that build (5.8, 4.3 and 2.2 min in the same CI run).
BUILDS_FIRST = ("tests/test_build.py", "tests/test_remote_cache.py", "tests/test_pypi.py")


def _order(item: pytest.Item) -> tuple[int, int]:
    """The listed QEMU files, the other QEMU tests, the listed build tests, the rest (the
    sort is stable: within a file, the collection's order)."""
    path = item.nodeid.split("::")[0]
    if path in LONGEST_FIRST:
        return 0, LONGEST_FIRST.index(path)
    if path.startswith("qemu-tests/"):
        return 1, 0
    return 2, BUILDS_FIRST.index(path) if path in BUILDS_FIRST else len(BUILDS_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_CPU_AT_SETUP] = cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if call.when == "teardown" and _CPU_AT_SETUP in item.stash:
        # On the teardown's report, which xdist sends to the controller with its properties.
        outcome.get_result().user_properties.append(("cpu_seconds", cpu_seconds() - item.stash[_CPU_AT_SETUP]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = report.nodeid.split("::")[0]
    _file_seconds[name] += report.duration
    _test_seconds[report.nodeid] += report.duration
    cpu = sum(v for k, v in report.user_properties if k == "cpu_seconds")
    _file_cpu[name] += cpu
    _test_cpu[report.nodeid] += cpu


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _file_seconds or hasattr(config, "workerinput"):
        return
    tr = terminalreporter
    tr.section("time per file (setup + call + teardown, summed over its tests), and its CPU")
    for name, seconds in sorted(_file_seconds.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{seconds:8.1f} s  {_file_cpu[name]:8.1f} s CPU  {name}")
    workers = getattr(config.option, "numprocesses", None) or 1
    tr.write_line(f"{sum(_file_seconds.values()):8.1f} s  {sum(_file_cpu.values()):8.1f} s CPU  in all, "
                  f"on {workers} worker(s); wall clock {(time.monotonic() - _started) / 60:.1f} min")
    # A session fixture's build counts in the test that first asked for it. A module
    # fixture's guest counts in the module's last test: QEMU's CPU is a child's, counted when
    # it has exited and been waited for, at the module's teardown (in the run at 52b2364,
    # tryton's last test, 4.2 s long, had 700 CPU-seconds: the whole module's guest).
    for title, table in (("the 15 slowest tests (setup + call + teardown)", _test_seconds),
                         ("the 15 tests that used the most CPU", _test_cpu)):
        tr.section(title)
        for name in sorted(table, key=lambda n: -table[n])[:15]:
            tr.write_line(f"{_test_seconds[name]:8.1f} s  {_test_cpu[name]:8.1f} s CPU  {name}")
