"""The test machine's answer to a GRUB menu, against a small program that prints what GRUB
prints on the serial console and says whether a key came while it counted down: Enter once
at a fresh menu, none at a menu read after the boot went on, none with wait_for_grub, none
after choose_grub_entry's own keys."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pexpect
import pytest

from apbuild.config import find_root, load_project
from apbuild.testing.machine import Machine

# GRUB's words, as the VM's console shows them (its redrawing escapes left out): the menu,
# then a countdown line each second until a key comes or it ends.
MENU = ("GNU GRUB  version 2.06-13+deb12u2\\r\\n   Use the ^ and v keys to select which entry is "
        "highlighted.\\r\\n")
GUEST = textwrap.dedent(f"""\
    import os, select, sys, tty
    tty.setraw(0)
    def out(text):
        os.write(1, text.encode())
    def keys(seconds):
        got = b""
        while select.select([0], [], [], seconds)[0]:
            got += os.read(0, 64)
            seconds = 0.5           # what follows the first key closely
        return got
    def menu():
        out("{MENU}")
        for n in (2, 1, 0):
            out(f"   The highlighted entry will be executed automatically in {{n}}s.\\r")
            got = keys(1.0)
            if got:
                return got
        return b""
    for boot in sys.argv[1:]:
        if boot == "late":          # the whole menu and the boot after it, before anyone reads
            out("{MENU}   The highlighted entry will be executed automatically in 2s.\\r\\n"
                "  Booting `App Platform 1'\\r\\n")
            got = keys(1.5)
        else:
            got = menu()
            out("\\r\\n  Booting `App Platform 1'\\r\\n")
        out(f"KEYS[{{got!r}}]\\r\\n")
    """)


@pytest.fixture
def machine(tmp_path: Path):
    def make(*boots: str, **args) -> Machine:
        board = load_project(find_root(), "x86_64-vm").board
        m = Machine(board, tmp_path / "disk.qcow2", tmp_path, name="grub", **args)
        m.child = pexpect.spawn(sys.executable, ["-c", GUEST, *boots], timeout=None, echo=False,
                                maxread=65536, searchwindowsize=200000)
        return m
    made: list[Machine] = []
    yield lambda *boots, **args: made.append(make(*boots, **args)) or made[-1]
    for m in made:
        m.child.terminate(force=True)


def keys(m: Machine) -> bytes:
    return eval(m.expect(rb"KEYS\[(b'.*?')\]", 10).group(1))


def test_enter_at_each_fresh_menu_once(machine):
    m = machine("fresh", "fresh")
    for _ in range(2):                  # two boots of one QEMU: a reboot shows a new menu
        m.expect("Booting `App Platform 1'", 10)
        assert keys(m) == b"\r"


def test_one_enter_for_a_menu_read_a_second_late(machine):
    # Two countdown lines wait on the console: one menu, one key.
    m = machine("fresh")
    time.sleep(1.3)
    assert keys(m) == b"\r"


def test_no_key_for_a_menu_read_after_the_boot_went_on(machine):
    m = machine("late")
    assert keys(m) == b""


def test_no_key_when_the_test_waits_for_grub(machine):
    m = machine("fresh", wait_for_grub=True)
    m.expect("Booting `App Platform 1'", 10)
    assert keys(m) == b""


def test_choose_grub_entry_keys_are_the_only_ones(machine):
    m = machine("fresh")
    m.choose_grub_entry(1, timeout=10)
    assert keys(m) == b"\x1b[A" * 4 + b"\x1b[B\r"
