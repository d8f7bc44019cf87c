"""/usr/lib/apbuild/lock.sh, the device scripts' lock (busybox has no flock), run on the build
host with sh: one holder at a time, a lock given back when its shell exits or is killed,
and a dead holder's lock taken over. The replication check it serialises is booted in
qemu-tests/test_replication.py (the alarm's "back" e-mail once per side)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from apbuild.config import find_root

LIB = find_root() / "recipes" / "base" / "common" / "usr" / "lib" / "apbuild" / "lock.sh"


def holder(lock: Path, then: str) -> list[str]:
    return ["sh", "-c", f'. "{LIB}"\nlock_take "{lock}" || exit 9\n{then}']


def test_one_holder_at_a_time(tmp_path):
    # Four shells each add one to a counter 15 times, reading and writing it with a pause
    # between: without the lock, updates are lost.
    lock, counter = tmp_path / "check.lock", tmp_path / "counter"
    counter.write_text("0\n")
    step = f'n=$(cat "{counter}"); sleep 0.01; echo $((n + 1)) > "{counter}"'
    loop = f'for _ in $(seq 15); do sh -c {shlex.quote(holder(lock, step)[2])} || exit 1; done'
    procs = [subprocess.Popen(["sh", "-c", loop]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert counter.read_text() == "60\n"
    assert os.listdir(tmp_path) == ["counter"]         # every lock given back, no .PID left


def test_a_killed_holder_gives_the_lock_back_and_a_dead_ones_is_taken(tmp_path):
    lock = tmp_path / "check.lock"
    p = subprocess.Popen(holder(lock, "echo held; sleep 5 & wait $!"), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n" and lock.read_text() == f"{p.pid}\n"
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    p.stdout.close()
    assert not lock.exists()
    # SIGKILL runs no trap: the file stays, naming a process that is gone.
    p = subprocess.Popen(holder(lock, "echo held; sleep 5 & wait $!"), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n"
    p.kill()
    p.wait(timeout=10)
    p.stdout.close()
    assert lock.read_text() == f"{p.pid}\n"
    start = time.monotonic()
    out = subprocess.run(holder(lock, "echo taken"), capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout) == (0, "taken\n") and time.monotonic() - start < 2, out
    assert not lock.exists()


def test_a_live_holder_is_waited_for(tmp_path):
    lock = tmp_path / "check.lock"
    first = subprocess.Popen(holder(lock, "echo held; sleep 1.5"), stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline() == "held\n"
    start = time.monotonic()
    out = subprocess.run(holder(lock, "echo taken"), capture_output=True, text=True, timeout=10)
    waited = time.monotonic() - start
    assert first.wait(timeout=10) == 0
    first.stdout.close()
    assert out.stdout == "taken\n" and waited > 1.0, (out, waited)



def trier(lock: Path, then: str) -> list[str]:
    # update-feed's use: refused at once while held; its own EXIT trap gives the lock back.
    return ["sh", "-c", f'. "{LIB}"\nlock_try "{lock}" || {{ echo busy; exit 3; }}\n'
                        f'trap \'echo cleaned; lock_give\' EXIT\n{then}']


def test_lock_try_refuses_a_live_holder_at_once_and_takes_a_dead_ones(tmp_path):
    lock = tmp_path / "update-feed.lock"
    first = subprocess.Popen(trier(lock, "echo held; sleep 5 & wait $!"), stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline() == "held\n"
    out = subprocess.run(trier(lock, "echo taken"), capture_output=True, text=True, timeout=1)
    assert (out.returncode, out.stdout) == (3, "busy\n"), out
    assert lock.read_text() == f"{first.pid}\n"         # the refused one changed nothing
    first.send_signal(signal.SIGTERM)                     # the caller's own trap gives it back
    first.wait(timeout=10)
    assert first.stdout.read() == "cleaned\n" and not lock.exists()
    first.stdout.close()
    # Killed with SIGKILL: no trap runs, and the next one takes the lock at once.
    first = subprocess.Popen(trier(lock, "echo held; sleep 5 & wait $!"), stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline() == "held\n"
    first.kill()
    first.wait(timeout=10)
    first.stdout.close()
    out = subprocess.run(trier(lock, "echo taken"), capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout) == (0, "taken\ncleaned\n"), out
    assert os.listdir(tmp_path) == []
