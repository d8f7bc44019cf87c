"""The stage cache between processes: two builds of one stage at once make it once."""

from __future__ import annotations

import multiprocessing
import os
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


def _damage(path: Path) -> None:
    """Flip the file's first byte and put its mtime back: only the ctime tells."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_damaged_result_is_rebuilt_even_with_its_old_mtime(tmp_path):
    cache = Cache(tmp_path)
    first, _ = cache.produce("demo", "b" * 64, lambda w: (w / "x").write_text("the result"))
    cache.lookup("demo", "b" * 64)   # found whole: its stat is recorded
    _damage(first / "x")
    again, built = cache.produce("demo", "b" * 64, lambda w: (w / "x").write_text("the result"))
    assert built and (again / "x").read_text() == "the result"


def test_a_result_found_whole_is_not_hashed_again_until_its_stat_changes(tmp_path, monkeypatch):
    import apbuild.cache as cache_mod

    cache = Cache(tmp_path)
    path, _ = cache.produce("demo", "c" * 64, lambda w: (w / "x").write_bytes(b"y" * 4096))
    hashed = []
    real = cache_mod.fingerprint
    monkeypatch.setattr(cache_mod, "fingerprint", lambda p: hashed.append(p.name) or real(p))
    assert cache.lookup("demo", "c" * 64) == path
    assert hashed == []              # recorded when it was built
    os.link(path / "x", tmp_path / "a-link")   # a new link changes the ctime, not the bytes
    assert cache.lookup("demo", "c" * 64) == path
    assert hashed == ["x"]
    assert cache.lookup("demo", "c" * 64) == path
    assert hashed == ["x"]           # and recorded again
