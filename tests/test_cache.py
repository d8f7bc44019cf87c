"""The stage cache between processes: two builds of one stage at once make it once."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from apbuild.cache import Cache


def _produce(root: str, marks: str) -> str:
    def make(work: Path) -> None:
        with open(marks, "a") as f:
            f.write("made\n")
        time.sleep(0.5)  # long enough for the other process to ask meanwhile
        (work / "result").write_text("the one result\n")
    path, _ = Cache(Path(root)).produce("demo", "k" * 64, make)
    return (path / "result").read_text()


def test_two_processes_asking_for_one_stage_build_it_once(tmp_path):
    marks = tmp_path / "marks"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_produce, [(str(tmp_path / "cache"), str(marks))] * 2)
    assert results == ["the one result\n"] * 2
    assert marks.read_text() == "made\n"


def test_a_finished_result_is_reused_without_building(tmp_path):
    cache = Cache(tmp_path)
    first, built = cache.produce("demo", "a" * 64, lambda w: (w / "x").write_text("1"))
    assert built
    again, built = cache.produce("demo", "a" * 64, lambda w: (_ for _ in ()).throw(AssertionError))
    assert (again, built) == (first, False)
