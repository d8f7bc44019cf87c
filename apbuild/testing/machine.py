"""Drive a QEMU guest over its serial console (Buildroot support/testing style) and QMP.

Only what the guest sends is logged. Every command's output ends with a marker that carries
its exit code and that the echoed command line cannot match, so no prompt is ever parsed.
QMP (the QEMU project's qemu.qmp) cuts the power, and its SHUTDOWN event tells a guest's
reset from its power-off. Every timeout is multiplied by APBUILD_TIMEOUT_MULTIPLIER for
slow machines.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pexpect

from apbuild.board import Board
from apbuild.qemu import command, free_ports, gateway_loader, log_launch

from .accounts import account

MULTIPLIER = float(os.environ.get("APBUILD_TIMEOUT_MULTIPLIER", "1"))
# A GRUB menu on the serial console: its banner, its entries (the highlighted one drawn in
# reverse video and marked '*'), then the line that counts down to the default entry (2 s,
# spent spinning: under TCG, 2 s of a host core at every boot). When the countdown ends GRUB
# says which entry it boots; after a key it says nothing.
GRUB_MENU = re.compile(rb"GNU GRUB  version")
GRUB_HIGHLIGHTED = re.compile(rb"\x1b\[7m\x1b\[\d+;\d+H\*(.*?) *\x1b\[m")
GRUB_COUNTDOWN = re.compile(rb"executed automatically in \d+s")
GRUB_BOOTING = re.compile(rb"Booting `([^']*)'")
QMP_MISSING = ("qemu.qmp is not installed (PyPI's qemu.qmp, not in Debian bookworm): "
               "the QEMU tests need it; ./build.py test installs it when PyPI answers")


def qmp_available() -> bool:
    try:
        import qemu.qmp  # noqa: F401
    except ImportError:
        return False
    return True


def scaled(seconds: float) -> float:
    return seconds * MULTIPLIER


class Machine:
    """One QEMU guest. Use as a context manager: QEMU is always killed at exit.

    At a GRUB menu that counts down, the machine presses Enter while it waits for the
    console: GRUB boots the highlighted entry (the default one) at once, as after the
    countdown; expect_boot() checks which entry that was. wait_for_grub=True lets the
    countdown run out, as on an unattended device (test_vm's first boot does)."""

    def __init__(self, board: Board, disk: Path, logdir: Path, name: str = "vm",
                 guest_ports: tuple[int, ...] = (22, 80, 443, 5432), wait_for_grub: bool = False,
                 **launch_args) -> None:
        self.board = board
        self.wait_for_grub = wait_for_grub
        self._menu_open = False                   # a GRUB menu read, not answered yet
        self._entered: str | None = None          # the entry of the last menu answered with Enter
        self.disk = disk
        self.logdir = logdir
        self.name = name
        self.ports = dict(zip(guest_ports, free_ports(len(guest_ports))))
        self.qmp_path = Path(f"/tmp/apbuild-qmp-{uuid.uuid4().hex[:12]}.sock")
        # Every guest's reset ends its QEMU, and the next boot is a QEMU of its own (see
        # _restart_after_reboot), unless the caller asks for no_reboot=False (bench/reboot.py).
        self.launch_args = {"no_reboot": True, **launch_args}
        self.child: pexpect.spawn | None = None
        self._qmp: Any = None    # qemu.qmp.legacy.QEMUMonitorProtocol, connected at start
        self.log_path = logdir / f"{name}.serial.log"
        self.boots = 0
        self.mode = ""           # gateway boards: the mode the loader booted (normal, rescue)

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> Machine:
        for attempt in range(3):
            try:
                return self._start()
            except AssertionError:
                # Another process (the other worker's guest, a test's server) took one of the
                # ports between their choice and QEMU's bind: choose again.
                if attempt == 2 or "host forwarding rule" not in self.tail():
                    raise
                self.ports = dict(zip(self.ports, free_ports(len(self.ports))))
                self.boots -= 1

    def _start(self) -> Machine:
        boot = {}
        if self.board.bootloader == "gateway":
            # The emulated gateway firmware: kernel, initrd and mode from the disk's sda1.
            loaded = gateway_loader(self.board, self.disk, self.logdir / f"{self.name}.loader")
            self.mode = loaded.mode
            boot = loaded.qemu_args()
        launch = command(self.board, self.disk, serial="stdio", qmp_socket=self.qmp_path,
                         forwards=self.ports, **boot, **self.launch_args)
        log_launch(launch)
        self.logdir.mkdir(parents=True, exist_ok=True)
        logfile = open(self.log_path, "ab", buffering=0)
        logfile.write(f"\n=== start{' (' + self.mode + ')' if self.mode else ''}: {' '.join(launch.argv)}\n".encode())
        self.child = pexpect.spawn(launch.argv[0], launch.argv[1:], timeout=None, maxread=65536,
                                   searchwindowsize=200000, echo=False)
        self.child.logfile_read = logfile
        self.started_at = time.monotonic()
        self.boots += 1
        self._connect_qmp()
        return self

    def _connect_qmp(self) -> None:
        """Connect at start, so that the SHUTDOWN event of this boot is kept for rebooted()."""
        from qemu.qmp import ConnectError
        from qemu.qmp.legacy import QEMUMonitorProtocol

        deadline = time.monotonic() + scaled(20)
        while True:
            self._qmp = QEMUMonitorProtocol(str(self.qmp_path))
            self._qmp.settimeout(scaled(60))
            try:
                self._qmp.connect()
                return
            except ConnectError:
                if not self.child.isalive():
                    # QEMU stopped at once: its own words (still unread on the pty) into the log.
                    try:
                        self.child.expect(pexpect.EOF, timeout=5)
                    except pexpect.TIMEOUT:
                        pass
                    raise AssertionError(f"{self.name}: QEMU exited at start:\n{self.tail()}") from None
                # QEMU makes its socket while it starts; before that there is nothing to reach.
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name}: no QMP socket:\n{self.tail()}") from None
                time.sleep(0.05)

    def __enter__(self) -> Machine:
        return self if self.child is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def kill(self) -> None:
        if self._qmp is not None:
            try:
                self._qmp.close()
            except (EOFError, OSError):
                pass   # the QEMU is gone already: closing finds the end of its socket
            self._qmp = None
        if self.child is not None and self.child.isalive():
            self.child.terminate(force=True)
        self.child = None
        self.qmp_path.unlink(missing_ok=True)

    def cpu_seconds(self) -> float:
        """The CPU this boot's QEMU has used so far, user and system, from /proc."""
        assert self.child is not None, "machine not started"
        fields = Path(f"/proc/{self.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_exit(self, timeout: float = 60) -> None:
        assert self.child is not None
        self.child.expect(pexpect.EOF, timeout=scaled(timeout))
        self.child.wait()

    # -- serial console ------------------------------------------------------------------
    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rebooted(self) -> bool:
        """Did this QEMU end because the guest reset (not powered off, not killed)? With
        -no-reboot a guest's reset is QMP's SHUTDOWN event with the reason guest-reset; QEMU
        sent it before it exited, so it waits on the connection made at start."""
        assert self._qmp is not None
        try:
            while (event := self._qmp.pull_event(wait=scaled(5.0))) is not None:
                if event["event"] == "SHUTDOWN":
                    return event["data"]["reason"] == "guest-reset"
        except (asyncio.TimeoutError, EOFError, OSError):
            pass   # no more events: QEMU ended without a SHUTDOWN (killed, crashed)
        return False

    def _restart_after_reboot(self) -> bool:
        """QEMU runs with -no-reboot: on a guest reset it exits and the next boot starts in a
        QEMU of its own, with the same disk and ports. A gateway's emulated firmware loads
        that boot from sda1, as the real gateway does. A GRUB board's BIOS and GRUB would
        boot the same in the QEMU that reset, but under TCG several CPU-seconds slower, most
        of them in loading the kernel and ramdisk (bench/reboot.py; the user guide's figures)."""
        if self.child is None or not self.rebooted():
            return False
        self.child.expect(pexpect.EOF, timeout=30)
        self.kill()
        self.start()
        return True

    def expect(self, pattern, timeout: float = 60, until_entered: bool = False) -> re.Match | None:
        """Wait for `pattern` on the console; until_entered: or until the machine answers a
        GRUB menu with Enter (then None)."""
        assert self.child is not None, "machine not started"
        deadline = time.monotonic() + scaled(timeout)
        patterns = [pattern]
        if self.board.bootloader == "grub-bios" and not self.wait_for_grub:
            patterns += [GRUB_MENU, GRUB_COUNTDOWN]
        while True:
            try:
                index = self.child.expect(patterns, timeout=max(1.0, deadline - time.monotonic()))
                if index == 0:
                    break
                if self._at_grub_menu(countdown=index == 2) and until_entered:
                    return None
            except pexpect.EOF:
                if not self._restart_after_reboot():
                    raise AssertionError(f"{self.name}: QEMU exited while waiting for {pattern!r}; "
                                         f"serial console ends with:\n{self.tail()}") from None
            except pexpect.TIMEOUT:
                raise AssertionError(f"{self.name}: no {pattern!r} within {scaled(timeout):.0f}s; "
                                     f"serial console ends with:\n{self.tail()}") from None
        return self.child.match

    def _at_grub_menu(self, countdown: bool) -> bool:
        """Enter at a menu's countdown: once per menu, and only while it still counts (the
        console read so far has not gone on to GRUB's "Booting" line; a menu read late, after
        the countdown ended, gets no key). True when it pressed Enter."""
        if not countdown:
            self._menu_open = True
            return False
        if not self._menu_open or GRUB_BOOTING.search(self.child.buffer):
            return False
        self._menu_open = False
        drawn = GRUB_HIGHLIGHTED.findall(self.child.before)   # the menu, read since its banner
        self._entered = drawn[-1].decode(errors="replace") if drawn else ""
        self.child.send("\r")
        return True

    def expect_boot(self, title: str, timeout: float = 180) -> None:
        """GRUB's next boot is of the entry `title`: the one it names when its countdown ends,
        or the highlighted one of the menu the machine answered with Enter."""
        self._entered = None
        match = self.expect(GRUB_BOOTING, timeout, until_entered=True)
        booted = self._entered if match is None else match.group(1).decode(errors="replace")
        assert booted == title, f"{self.name}: GRUB booted {booted!r}, not {title!r}:\n{self.tail()}"

    def send(self, text: str) -> None:
        assert self.child is not None
        self.child.send(text)

    def login(self, user: str = "root", password: str | None = None, timeout: float = 180) -> None:
        """Log in on the serial console (the board's default password unless given)."""
        self.expect(r"login: ", timeout)
        self.send(user + "\n")
        self.expect(r"Password: ", 30)
        self.send((password if password is not None else account(user, self.board.name)[1]) + "\n")
        self.expect(r"[#$] ", 60)
        marker = uuid.uuid4().hex[:8]
        # No echo and no prompt: what comes back is only what commands print.
        self.send(f"stty -echo; export PS1= PS2= PAGER=cat; dmesg -n 1 2>/dev/null; echo RE\"\"ADY{marker}\n")
        self.expect(f"READY{marker}", 30)

    def install(self, label: str | None = None, user: str = "root", password: str | None = None,
                login: bool = True) -> None:
        """First boot: the rescue system installs and reboots into the installed system (GRUB
        boards: its normal entry `label`, the board's version unless given); then log in."""
        self.expect("running install_step1.sh install", 180)
        self.expect(re.compile(rb"^finished", re.M), 300)
        if self.board.bootloader == "grub-bios":
            self.expect_boot(f"{self.board.title} {label or self.board.image_version}")
        if login:
            self.login(user, password, 300)

    def run(self, cmd: str, timeout: float = 60) -> tuple[str, int]:
        marker = uuid.uuid4().hex[:10]
        self.send(f"{cmd}; echo \"@@M\"\"{marker}@@$?@@\"\n")
        match = self.expect(re.compile(rf"@@M{marker}@@(\d+)@@".encode()), timeout)
        before = self.child.before.decode(errors="replace") if self.child else ""
        return before.replace("\r", "").strip("\n"), int(match.group(1))

    def ok(self, cmd: str, timeout: float = 60) -> str:
        out, rc = self.run(cmd, timeout)
        assert rc == 0, f"{self.name}: '{cmd}' exited {rc}:\n{out}"
        return out

    def password_hash(self, user: str) -> str:
        """The user's hash field in the guest's /etc/shadow."""
        return self.ok(f"awk -F: '$1 == \"{user}\" {{ print $2 }}' /etc/shadow")

    def choose_grub_entry(self, index: int, timeout: float = 180) -> None:
        """At the next GRUB menu, select entry `index` (0 = rescue/setup) and boot it."""
        self.expect("to select which entry is highlighted", timeout)
        self._menu_open = False
        self.send("\x1b[A" * 4 + "\x1b[B" * index + "\r")

    # -- QMP -----------------------------------------------------------------------------
    def qmp(self, cmd: str, **args: object) -> object:
        assert self._qmp is not None, "machine not started"
        return self._qmp.cmd(cmd, **args)

    # -- host side -----------------------------------------------------------------------
    def http_get(self, path: str, timeout: float = 10, auth: tuple[str, str] | None = None,
                 tls: ssl.SSLContext | None = None, post: bytes | None = None) -> tuple[int, str]:
        """GET from the forwarded port 80, or 443 when a TLS context is given; auth is
        (user, password) for HTTP basic authentication; post: POST this body instead.
        Returns (status, body), an error's body as well."""
        url = (f"https://127.0.0.1:{self.ports[443]}" if tls else f"http://127.0.0.1:{self.ports[80]}") + path
        request = urllib.request.Request(url, data=post)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=tls) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def wait_http(self, path: str = "/manager/ramdisk.log", timeout: float = 120,
                  auth: tuple[str, str] | None = None) -> float:
        """Seconds since QEMU started when the guest first answered on port 80."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            try:
                status, _ = self.http_get(path, timeout=3, auth=auth)
                if status == 200:
                    return time.monotonic() - self.started_at
            except (OSError, urllib.error.URLError):
                pass
            if self.child is not None and not self.child.isalive():
                break
            time.sleep(0.5)
        raise AssertionError(f"{self.name}: no HTTP answer on {path} within {scaled(timeout):.0f}s;"
                             f" serial console ends with:\n{self.tail()}")

    def ssh_user(self, user: str, password: str, timeout: float = 90) -> str:
        """Log in over SSH (forwarded port 22) and return `id -un`; paramiko raises
        AuthenticationException when the login is refused."""
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect("127.0.0.1", port=self.ports[22], username=user, password=password,
                           timeout=scaled(timeout), banner_timeout=scaled(timeout),
                           auth_timeout=scaled(timeout), allow_agent=False, look_for_keys=False)
            _, out, _ = client.exec_command("id -un")
            return out.read().decode().strip()
        finally:
            client.close()

    def host_keys(self, timeout: float = 120) -> set[str]:
        """The guest's SSH host keys, ed25519 and ECDSA (ssh-keyscan, asking again until SSH
        has answered for both: under TCG one type's exchange may time out)."""
        deadline = time.monotonic() + scaled(timeout)
        keys: set[str] = set()
        while True:
            scan = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519,ecdsa", "-p",
                                   str(self.ports[22]), "127.0.0.1"], capture_output=True, text=True)
            keys |= {line.split(None, 1)[1] for line in scan.stdout.splitlines()
                     if line and not line.startswith("#")}
            if {k.split()[0] for k in keys} >= {"ssh-ed25519", "ecdsa-sha2-nistp256"}:
                return keys
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no SSH answer within {scaled(timeout):.0f}s;"
                                     f" serial console ends with:\n{self.tail()}")
            time.sleep(1)

    def tls_certificate(self, timeout: float = 120) -> str:
        """The PEM certificate the guest's port 443 presents, waiting until it answers."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            try:
                return ssl.get_server_certificate(("127.0.0.1", self.ports[443]), timeout=10)
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name}: no TLS answer on 443 within "
                                         f"{scaled(timeout):.0f}s:\n{self.tail()}") from None
                time.sleep(1)

    def tcp_probe(self, guest_port: int, payload: bytes, timeout: float = 5) -> bytes:
        """Send payload to a forwarded guest port; return what came back (b'' if closed)."""
        with socket.create_connection(("127.0.0.1", self.ports[guest_port]), timeout=timeout) as s:
            s.sendall(payload)
            try:
                return s.recv(64)
            except (ConnectionResetError, socket.timeout):
                return b""
