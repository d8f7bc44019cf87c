"""apbuild.parallel: a step beside the main ones runs at the same time, keeps its progress
lines together, hands over its result or its error, and is waited for when the main steps
fail."""

from __future__ import annotations

import re
import threading

import pytest
from apbuild import log
from apbuild.parallel import beside


def err_lines(capsys) -> list[str]:
    """stderr's lines, each step's time as N (a loaded machine takes longer than 0.0s)."""
    return [re.sub(r"\d+\.\ds", "Ns", line) for line in capsys.readouterr().err.splitlines()]


def test_a_step_beside_runs_at_the_same_time_and_prints_its_lines_whole(capsys):
    started, main_done = threading.Event(), threading.Event()

    def ramdisk() -> str:
        with log.step("ramdisk-system"):
            started.set()
            # It is still running while the main thread's step runs and ends.
            assert main_done.wait(10)
            log.info("inside the ramdisk step")
        return "ramdisk.cpio.xz"

    with beside("ramdisk", ramdisk) as job:
        assert started.wait(10)
        with log.step("rootfs-system"):
            log.info("inside the rootfs step")
        main_done.set()
    assert job.result() == "ramdisk.cpio.xz"
    lines = err_lines(capsys)
    assert lines == ["‣ rootfs-system", "inside the rootfs step", "  rootfs-system: Ns",
                     "‣ ramdisk-system", "inside the ramdisk step", "  ramdisk-system: Ns"], lines


def test_its_error_is_raised_by_result_and_named_in_its_lines(capsys):
    def fails() -> None:
        with log.step("raw-sha256"):
            raise OSError("disk.img: read error")

    with beside("raw-sha256", fails) as job:
        pass
    with pytest.raises(OSError, match="read error"):
        job.result()
    assert "(raw-sha256 failed)" in capsys.readouterr().err


def test_a_failing_main_step_waits_for_it():
    finished = threading.Event()

    def slow() -> None:
        threading.Event().wait(0.3)
        finished.set()

    with pytest.raises(ValueError):
        with beside("slow", slow):
            raise ValueError("the rootfs failed")
    assert finished.is_set(), "the block ended before the step beside it"


def test_its_own_worker_threads_write_into_its_lines(capsys):
    """The unpacking's two workers (apbuild.packages), started by a step beside: their lines
    are the step's, printed with it, not between the main thread's."""
    from concurrent.futures import ThreadPoolExecutor

    def unpack() -> None:
        with log.step("unpack"):
            with ThreadPoolExecutor(2, initializer=log.same_lines()) as workers:
                list(workers.map(lambda n: log.info(f"worker line {n}"), [1]))

    with beside("ramdisk", unpack) as job:
        job.join()
        log.info("main line")
    lines = err_lines(capsys)
    assert lines == ["‣ unpack", "worker line 1", "  unpack: Ns", "main line"], lines
