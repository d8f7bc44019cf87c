"""`./build.py clean`: stage results nobody used for a while go; running builds are safe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from apbuild.cache import MANIFEST, Cache
from apbuild.retention import clean

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


def _result(cache: Cache, stage: str, key: str, last_used_days_ago: float) -> Path:
    path, _ = cache.produce(stage, key, lambda w: (w / "data").write_bytes(b"x" * 8192))
    then = time.time() - last_used_days_ago * DAY
    os.utime(path / MANIFEST, (then, then))
    return path


def test_clean_removes_what_no_build_used_within_the_days_kept(tmp_path):
    cache = Cache(tmp_path)
    old = _result(cache, "rootfs", "a" * 64, last_used_days_ago=30)
    recent = _result(cache, "rootfs", "b" * 64, last_used_days_ago=1)
    reused = _result(cache, "disk", "c" * 64, last_used_days_ago=30)
    assert cache.lookup("disk", "c" * 64) == reused  # a build just used it again
    abandoned = tmp_path / "stages" / "disk" / ".tmp-dddddddddddd-999999999-x"
    abandoned.mkdir()

    done = clean(cache, keep_days=14)
    assert (done.removed, done.kept) == (1, 2) and done.freed >= 8192
    assert not old.exists() and not abandoned.exists()
    assert recent.is_dir() and reused.is_dir()
    assert cache.lookup("rootfs", "b" * 64) == recent

    assert clean(cache, keep_days=0).removed == 2
    assert list((tmp_path / "stages").glob("*/*")) == []


def test_clean_waits_for_a_running_build(tmp_path):
    cache = Cache(tmp_path)
    old = _result(cache, "rootfs", "a" * 64, last_used_days_ago=30)
    # Another process runs a build: it holds the builds lock shared, as pipeline.build does.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from apbuild.cache import Cache\n"
         "with Cache(Path(sys.argv[1])).in_use():\n    print('in', flush=True); time.sleep(2)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "in\n"
    cleaner = threading.Thread(target=clean, args=(cache, 14))
    cleaner.start()
    cleaner.join(1.0)
    assert cleaner.is_alive() and old.exists(), "clean must wait while a build runs"
    holder.wait()
    cleaner.join(10)
    assert not cleaner.is_alive() and not old.exists()


def test_clean_refuses_a_negative_number_of_days(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "clean", "--keep-days", "-1",
                           "--cache", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("error: --keep-days: -1 is negative; give 0 or more days")
