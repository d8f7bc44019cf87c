"""The test machine's answer to a GRUB menu, against a small program that draws GRUB's menu
as GRUB 2.06 does on the VM's serial console (entries in reverse video and marked '*' when
highlighted, a countdown line each second, "Booting `…'" only when the countdown ends) and
says which keys came: Enter once at a fresh menu, none at a menu read after its countdown
ended, none with wait_for_grub, none after choose_grub_entry's own keys; expect_boot() names
the entry booted either way."""

from __future__ import annotations

import ast
import sys
import textwrap
import time
from pathlib import Path

import pexpect
import pytest

from apbuild.config import find_root, load_project
from apbuild.testing.machine import Machine

TITLES = ["App Platform 1 rescue/setup", "App Platform 1"]
GUEST = textwrap.dedent(f"""\
    import os, select, sys, tty
    tty.setraw(0)
    TITLES = {TITLES!r}
    def out(text):
        os.write(1, text.encode())
    def menu(default):
        rows = ""
        for i, title in enumerate(TITLES):
            mark, video = ("*", "\\x1b[7m") if i == default else (" ", "\\x1b[m")
            rows += f"{{video}}\\x1b[{{5 + i}};3H{{mark}}{{title:<75}}\\x1b[m\\x1b[{{5 + i}};78H\\x1b[m"
        return ("GNU GRUB  version 2.06-13+deb12u2\\r\\n   Use the ^ and v keys to select which entry "
                "is highlighted.\\r\\n" + rows)
    def countdown(n):
        return f"\\x1b[22;1H   The highlighted entry will be executed automatically in {{n}}s.  "
    def keys(seconds):
        got = b""
        while select.select([0], [], [], seconds)[0]:
            got += os.read(0, 64)
            seconds = 0.5           # what follows the first key closely
        return got
    def chosen(default, got):
        entry = default
        for key in got.replace(b"\\x1b[A", b"u").replace(b"\\x1b[B", b"d"):
            entry = max(entry - 1, 0) if key == ord("u") else min(entry + 1, 1) if key == ord("d") else entry
        return entry
    for boot in sys.argv[1:]:
        kind, default = boot.split(":")
        default = int(default)
        if kind == "late":          # the whole menu and the boot after it, before anyone reads
            out(menu(default) + countdown(2) + countdown(1) + countdown(0) +
                f"\\r\\n  Booting `{{TITLES[default]}}'\\r\\n")
            got = keys(1.5)
        else:
            out(menu(default))
            for n in (2, 1, 0):
                out(countdown(n))
                got = keys(1.0)
                if got:
                    break
            if got:                 # a key stops the countdown: GRUB boots and says nothing
                out(f"\\r\\nboot: {{TITLES[chosen(default, got)]}}\\r\\n")
            else:
                out(f"\\r\\n  Booting `{{TITLES[default]}}'\\r\\n")
        out(f"KEYS[{{got!r}}]\\r\\n")
    """)


@pytest.fixture
def machine(tmp_path: Path):
    made: list[Machine] = []

    def make(*boots: str, **args) -> Machine:
        board = load_project(find_root(), "x86_64-vm").board
        m = Machine(board, tmp_path / "disk.qcow2", tmp_path, name="grub", **args)
        m.child = pexpect.spawn(sys.executable, ["-c", GUEST, *boots], timeout=None, echo=False,
                                maxread=65536, searchwindowsize=200000)
        made.append(m)
        return m
    yield make
    for m in made:
        m.child.terminate(force=True)


def keys(m: Machine) -> bytes:
    return ast.literal_eval(m.expect(rb"KEYS\[(b'.*?')\]", 10).group(1).decode())


def test_enter_at_each_fresh_menu_and_the_highlighted_entry_named(machine):
    m = machine("fresh:0", "fresh:1")          # a reboot of one QEMU shows a new menu
    m.expect_boot("App Platform 1 rescue/setup", 10)
    assert keys(m) == b"\r"
    m.expect_boot("App Platform 1", 10)
    assert keys(m) == b"\r"


def test_another_entry_highlighted_fails_expect_boot(machine):
    m = machine("fresh:0")
    with pytest.raises(AssertionError, match="GRUB booted 'App Platform 1 rescue/setup', not 'App Platform 1'"):
        m.expect_boot("App Platform 1", 10)


def test_one_enter_for_a_menu_read_a_second_late(machine):
    m = machine("fresh:1")
    time.sleep(1.3)                             # two countdown lines wait on the console
    m.expect_boot("App Platform 1", 10)
    assert keys(m) == b"\r"


def test_no_key_for_a_menu_read_after_its_countdown_ended(machine):
    m = machine("late:1")
    m.expect_boot("App Platform 1", 10)         # GRUB's own line names it
    assert keys(m) == b""


def test_no_key_when_the_test_waits_for_grub(machine):
    m = machine("fresh:1", wait_for_grub=True)
    m.expect_boot("App Platform 1", 10)
    assert keys(m) == b""


def test_choose_grub_entry_keys_are_the_only_ones(machine):
    m = machine("fresh:1")
    m.choose_grub_entry(0, timeout=10)
    assert m.expect(rb"boot: (.*?)\r", 10).group(1) == b"App Platform 1 rescue/setup"
    assert keys(m) == b"\x1b[A" * 4 + b"\r"
