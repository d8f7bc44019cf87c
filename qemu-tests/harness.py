"""Drive a QEMU guest over its serial console (Buildroot support/testing style) and QMP.

Only what the guest sends is logged. Every command's output ends with a marker that carries
its exit code and that the echoed command line cannot match, so no prompt is ever parsed.
Every timeout is multiplied by APBUILD_TIMEOUT_MULTIPLIER for slow machines.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pexpect

from apbuild.config import Board
from apbuild.qemu import RESET_MARKER, command, free_port, gateway_loader, log_launch

MULTIPLIER = float(os.environ.get("APBUILD_TIMEOUT_MULTIPLIER", "1"))


def scaled(seconds: float) -> float:
    return seconds * MULTIPLIER


class QMP:
    """A minimal QMP client: JSON lines over QEMU's unix socket; events are skipped."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name: str, **args) -> object:
        self.file.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {name}: {reply['error']}")
        return reply.get("return")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Machine:
    """One QEMU guest. Use as a context manager: QEMU is always killed at exit."""

    def __init__(self, board: Board, disk: Path, logdir: Path, name: str = "vm",
                 guest_ports: tuple[int, ...] = (22, 80, 443, 5432), **launch_args) -> None:
        self.board = board
        self.disk = disk
        self.logdir = logdir
        self.name = name
        self.ports = {g: free_port() for g in guest_ports}
        self.qmp_path = Path(f"/tmp/apbuild-qmp-{uuid.uuid4().hex[:12]}.sock")
        self.launch_args = launch_args
        self.child: pexpect.spawn | None = None
        self._qmp: QMP | None = None
        self.log_path = logdir / f"{name}.serial.log"
        self.boots = 0
        self.mode = ""           # gateway boards: the mode the loader booted (normal, rescue)
        self._log_offset = 0

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> Machine:
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
        self._log_offset = self.log_path.stat().st_size
        self.child = pexpect.spawn(launch.argv[0], launch.argv[1:], timeout=None, maxread=65536,
                                   searchwindowsize=200000, echo=False)
        self.child.logfile_read = logfile
        self.started_at = time.monotonic()
        self.boots += 1
        return self

    def __enter__(self) -> Machine:
        return self if self.child is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def kill(self) -> None:
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        if self.child is not None and self.child.isalive():
            self.child.terminate(force=True)
        self.child = None
        self.qmp_path.unlink(missing_ok=True)

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
        """Did the guest ask for a reset since the last start (not a power-off)?"""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return RESET_MARKER in f.read()

    def _restart_after_reboot(self) -> bool:
        """QEMU runs gateways with -no-reboot: on a guest reset it exits and the emulated
        firmware loads the next boot from sda1, as the real gateway does."""
        if self.board.bootloader != "gateway" or self.child is None or not self.rebooted():
            return False
        self.child.expect(pexpect.EOF, timeout=30)
        self.kill()
        self.start()
        return True

    def expect(self, pattern, timeout: float = 60) -> re.Match:
        assert self.child is not None, "machine not started"
        deadline = time.monotonic() + scaled(timeout)
        while True:
            try:
                self.child.expect(pattern, timeout=max(1.0, deadline - time.monotonic()))
                break
            except pexpect.EOF:
                if not self._restart_after_reboot():
                    raise AssertionError(f"{self.name}: QEMU exited while waiting for {pattern!r}; "
                                         f"serial console ends with:\n{self.tail()}") from None
            except pexpect.TIMEOUT:
                raise AssertionError(f"{self.name}: no {pattern!r} within {scaled(timeout):.0f}s; "
                                     f"serial console ends with:\n{self.tail()}") from None
        return self.child.match

    def send(self, text: str) -> None:
        assert self.child is not None
        self.child.send(text)

    def login(self, user: str = "root", password: str = "iplinux", timeout: float = 180) -> None:
        self.expect(r"login: ", timeout)
        self.send(user + "\n")
        self.expect(r"Password: ", 30)
        self.send(password + "\n")
        self.expect(r"[#$] ", 60)
        marker = uuid.uuid4().hex[:8]
        # No echo and no prompt: what comes back is only what commands print.
        self.send(f"stty -echo; export PS1= PS2= PAGER=cat; dmesg -n 1 2>/dev/null; echo RE\"\"ADY{marker}\n")
        self.expect(f"READY{marker}", 30)

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
        self.send("\x1b[A" * 4 + "\x1b[B" * index + "\r")

    # -- QMP -----------------------------------------------------------------------------
    def qmp(self, cmd: str, **args):
        if self._qmp is None:
            deadline = time.monotonic() + scaled(20)
            while not self.qmp_path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            self._qmp = QMP(self.qmp_path, scaled(60))
        return self._qmp.cmd(cmd, **args)

    # -- host side -----------------------------------------------------------------------
    def http_get(self, path: str, timeout: float = 10, auth: tuple[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> tuple[int, str]:
        """GET from the forwarded port 80, or 443 when a TLS context is given; auth is
        (user, password) for HTTP basic authentication."""
        url = (f"https://127.0.0.1:{self.ports[443]}" if tls else f"http://127.0.0.1:{self.ports[80]}") + path
        request = urllib.request.Request(url)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=tls) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, ""

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
        import subprocess

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


class ReaderTerminal:
    """The manual's reader at a terminal: the system's OpenSSH client (not the project's
    code) logs in with a password, then `su root` as the manual types it. Commands are typed
    one by one; after the login the echo is switched off and a marker that carries the exit
    code ends each command's output, as on the serial console."""

    SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "PubkeyAuthentication=no", "-o", "LogLevel=ERROR")

    def __init__(self, port: int, user: str, password: str, logfile: Path) -> None:
        self.child = pexpect.spawn("ssh", ["-tt", "-p", str(port), *self.SSH_OPTIONS, f"{user}@127.0.0.1"],
                                   timeout=scaled(90), encoding="utf-8", codec_errors="replace")
        self.child.logfile_read = open(logfile, "a")
        self.child.expect("password: ")
        self.child.sendline(password)
        self.child.expect(r"[$#] ")
        self._quiet()

    def _quiet(self) -> None:
        marker = uuid.uuid4().hex[:8]
        self.child.sendline(f"stty -echo; PS1= PS2=; echo RE\"\"ADY{marker}")
        self.child.expect(f"READY{marker}")

    def su(self, password: str, login: bool = False) -> str:
        """`su root` (or `su - root`) with the password; returns what came before the prompt
        (an error message, when su refused)."""
        self.child.sendline("su - root" if login else "su root")
        self.child.expect("Password: ")
        self.child.sendline(password)
        index = self.child.expect([r"# ", r"\$ ", "incorrect password", "must be suid"], timeout=scaled(60))
        said = self.child.before + (self.child.after if index else "")
        if index >= 2:
            # su waits a moment after a wrong password and drops what was typed meanwhile.
            time.sleep(scaled(4))
        self._quiet()
        return said

    def run(self, cmd: str, timeout: float = 60) -> tuple[str, int]:
        marker = uuid.uuid4().hex[:10]
        self.child.sendline(f"{cmd}; echo \"@@M\"\"{marker}@@$?@@\"")
        self.child.expect(rf"@@M{marker}@@(\d+)@@", timeout=scaled(timeout))
        return self.child.before.replace("\r", "").strip("\n"), int(self.child.match.group(1))

    def ok(self, cmd: str, timeout: float = 60) -> str:
        out, rc = self.run(cmd, timeout)
        assert rc == 0, f"'{cmd}' exited {rc}:\n{out}"
        return out

    def close(self) -> None:
        self.child.close(force=True)


def host_client(argv: list[str], password: str, timeout: float = 120,
                commands: tuple[str, ...] = ()) -> str:
    """Run an OpenSSH client program of the host (scp, sftp) that asks for a password once;
    commands are typed at its "sftp> " prompt. Returns its output, raises with it when the
    program fails."""
    child = pexpect.spawn(argv[0], argv[1:], timeout=scaled(timeout), encoding="utf-8",
                          codec_errors="replace")
    child.expect("password: ")
    child.sendline(password)
    said = ""
    for command in (*commands, "bye") if commands else ():
        child.expect("sftp> ")
        said += child.before
        child.sendline(command)
    child.expect(pexpect.EOF)
    child.before = said + child.before
    child.close()
    out = child.before
    assert child.exitstatus == 0, f"{' '.join(argv)} exited {child.exitstatus}:\n{out}"
    return out
