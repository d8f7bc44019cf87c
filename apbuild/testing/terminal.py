"""The manual's reader at the host's OpenSSH programs: ssh (then su), scp and sftp, each
asking for a password as a person would type it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pexpect

from .machine import scaled


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

    def type_last(self, cmd: str, timeout: float = 120) -> None:
        """Type a command that ends the session (reboot), and wait until the session ends."""
        self.child.sendline(cmd)
        self.child.expect(pexpect.EOF, timeout=scaled(timeout))

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


def admin_su_root(port: int, logdir: Path, name: str) -> ReaderTerminal:
    """The manual's way to a root shell: SSH as admin (port: the guest's forwarded 22),
    then `su root`, both with the App Platform's default passwords."""
    from .accounts import ADMIN, ROOT

    term = ReaderTerminal(port, *ADMIN, logdir / f"{name}.ssh.log")
    said = term.su(ROOT[1])
    assert term.ok("id -u") == "0", said
    return term
