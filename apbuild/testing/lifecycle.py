"""Driving an App Platform through its life in QEMU: signed updates made from a second build,
the manager's upload, what the reader changed and an update must keep, and power cuts at
named points. Used by qemu-tests/test_update_paths.py and test_update.py (a small fixed set
of cuts) and bench/powercut.py (a larger one)."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import re
import ssl
import threading
import time
from pathlib import Path

from apbuild import signing, update
from apbuild.cache import Cache, default_root
from apbuild.config import find_root, load_project
from apbuild.lockfile import read as read_lock
from apbuild.lockfile import source_date_epoch
from apbuild.pipeline import boot_image

from .accounts import ADMIN, ROOT
from .machine import Machine, scaled
from .terminal import ReaderTerminal

TREE = find_root()


@dataclasses.dataclass(frozen=True)
class Updates:
    old: str                 # the installed image's version
    new: str                 # the update's version
    good: Path               # signed with the key the image was built for
    other_key: Path          # signed with a key the image does not know
    tampered: Path           # good, with one byte of boot.img changed


def make_updates(name: str, tmp: Path, base_version: str | None = None, version: str | None = None) -> Updates:
    """Build the board as `version` (the next image version after the board's, or after
    base_version, the installed one) and sign it three ways."""
    project = load_project(TREE, name)
    old = base_version or project.board.image_version
    new = version or str(int(old) + 1)
    board = dataclasses.replace(project.board, image_version=new)
    payload = boot_image(dataclasses.replace(project, board=board), Cache(default_root()))
    epoch = source_date_epoch(read_lock(project.board.lockfile))
    platform = project.board.platform
    good = update.make(platform, new, payload, signing.key_in(signing.default_dir()),
                       tmp / "good.update", epoch)
    stranger = signing.keygen(tmp / "other-key")
    other = update.make(platform, new, payload, stranger, tmp / "other.update", epoch)
    tampered = tmp / "tampered.update"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01          # inside boot.img, the last and largest member
    tampered.write_bytes(data)
    return Updates(old, new, good, other, tampered)


# Root's password as the reader changed it on the device; the update's rootfs has the default.
CHANGED_ROOT_PASSWORD = "Changed-On-The-Device"


@dataclasses.dataclass(frozen=True)
class Kept:
    root_hash: str
    app_id: str


def change_the_device(m: Machine) -> Kept:
    """What the manual's reader changes and an update (a new sda3) must not take away."""
    m.ok("psql -h /run/postgresql -U postgres -c 'create table kept (n int)' "
         "-c 'insert into kept select generate_series(1, 1000)'")
    # Set as passwd would, without its prompts.
    m.ok(f"h=$(echo {CHANGED_ROOT_PASSWORD} | mkpasswd -m sha512 -P 0) && "
         "sed -i \"s|^root:[^:]*:|root:$h:|\" /etc/shadow")
    root_hash = m.password_hash("root")
    assert root_hash.startswith("$6$") and root_hash != m.password_hash("admin")
    # The VPN note's /etc/hosts line, a standby's /home/root/standby.conf, an app's own unix
    # user (useradd, as the manual's "each App has an own unix user"), a static address.
    m.ok("echo '10.8.0.1 vpn-host.example' >> /etc/hosts")
    m.ok("echo '{\"primary\": \"10.8.0.1\", \"name\": \"standby1\"}' > /home/root/standby.conf")
    m.ok("useradd -m app-demo && usermod -p \"$(echo App-Pass-1 | mkpasswd -m sha512 -P 0)\" app-demo")
    m.ok("echo app data > /mnt/sda2/home/app-demo/data && chown app-demo: /mnt/sda2/home/app-demo/data")
    app_id = m.ok("id app-demo")
    m.ok("setip --addr=10.0.2.15 --mask=255.255.255.0 --gateway=10.0.2.2 --dns1=10.0.2.3")
    m.wait_http("/manager/ramdisk.log", 120)
    return Kept(root_hash, app_id)


def refused_change_nothing(m: Machine, updates: Updates) -> None:
    """A tampered update and one signed with another key are refused; only the admin may
    upload; none of it changes the device."""
    before = boot_state(m)
    status, text = upload(m, updates.tampered)
    assert status == 422 and "checksum" in text, (status, text)
    status, text = upload(m, updates.other_key)
    assert status == 422 and "signature" in text, (status, text)
    status, _ = upload(m, updates.tampered, auth=("admin", "wrong"))
    assert status == 401
    assert boot_state(m) == before, "a refused update changed the device"


def kept_after_update(m: Machine, kept: Kept, updates: Updates) -> None:
    """The device runs the update, with everything change_the_device did."""
    assert m.ok("cat /mnt/sda1/label") == updates.new
    assert m.ok("psql -h /run/postgresql -U postgres -tAc 'select count(*), sum(n) from kept'") \
        == "1000|500500"
    assert m.run("test -e /mnt/sda1/pending")[1] == 1
    assert m.password_hash("root") == kept.root_hash
    assert "10.8.0.1 vpn-host.example" in m.ok("cat /etc/hosts")
    assert '"name": "standby1"' in m.ok("cat /home/root/standby.conf")
    assert m.ok("id app-demo") == kept.app_id
    assert m.ok("cat /mnt/sda2/home/app-demo/data") == "app data"
    assert m.ssh_user("app-demo", "App-Pass-1") == "app-demo"
    assert "MODE=static" in m.ok("cat /mnt/sda2/etc/network.conf")
    assert "inet 10.0.2.15/24" in m.ok("ip address show eth0") and m.run("pidof udhcpc")[1] == 1
    assert m.ok("ls /mnt/sda2/update 2>/dev/null | wc -l") == "0"
    m.wait_http("/manager/ramdisk.log", 120)
    status, log = m.http_get("/manager/ramdisk.log")
    assert status == 200
    assert f"update from image {updates.old} to {updates.new} started" in log
    assert log.rstrip().splitlines()[-1] == "finished"


def upload(m: Machine, path: Path, auth=ADMIN, timeout: float = 300) -> tuple[int, str]:
    """POST the file to the manager's update CGI, as the Update button would."""
    conn = http.client.HTTPConnection("127.0.0.1", m.ports[80], timeout=scaled(timeout))
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    with open(path, "rb") as body:
        conn.request("POST", "/cgi-bin/update", body=body, headers={
            "Authorization": f"Basic {token}", "Content-Type": "application/octet-stream",
            "Content-Length": str(path.stat().st_size)})
        reply = conn.getresponse()
        text = reply.read().decode(errors="replace")
    conn.close()
    return reply.status, text


def boot_state(m: Machine) -> str:
    """What an update must not change when it is refused: label, boot choice, sda1's place."""
    mode = ("grep '^set default' /boot/grub/grub.cfg" if m.board.bootloader == "grub-bios"
            else "cat /mnt/sda1/bootmode")
    return m.ok(f"cat /mnt/sda1/label; {mode}; sfdisk -d /dev/sda | grep '^/dev/sda1'; "
                f"ls /mnt/sda2/update 2>/dev/null | wc -l")


def applied(m: Machine, new: str, root_password: str = ROOT[1], follow: bool = False) -> None:
    """The rescue system (old image) writes the new sda1, the new one installs, then normal.
    follow: fetch https://IP/manager/ramdisk.log while the install runs, as the manual has
    the admin do ("You can check the installation process after the reboot")."""
    m.expect("running install_step1.sh update", 240)
    m.expect("running install_step1.sh install", 300)
    if follow:
        follow_install_log(m, new)
    m.expect(re.compile(rb"^finished", re.M), 300)
    booted(m, new, root_password)


def follow_install_log(m: Machine, new: str) -> None:
    """The new image's rescue system has started its install: its ramdisk.log, over HTTPS,
    says so (the manual: "You can check the installation process after the reboot")."""
    deadline, status, served = time.monotonic() + scaled(30), 0, ""
    while f"install of image {new} started" not in served:
        assert time.monotonic() < deadline, f"the rescue system's ramdisk.log: {status} {served!r}"
        try:
            status, served = m.http_get("/manager/ramdisk.log", timeout=5, tls=unverified_tls())
        except OSError:
            time.sleep(0.5)


def booted(m: Machine, label: str, root_password: str = ROOT[1]) -> None:
    """The installed system `label` boots (GRUB names it; a gateway's loader does not) and
    root logs in on the console."""
    if m.board.bootloader == "grub-bios":
        m.expect_boot(f"{m.board.title} {label}")
    m.login("root", root_password, 300)



def unverified_tls() -> ssl.SSLContext:
    """The manual's "wget --no-check-certificate": the device's certificate is self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def rescue_as_the_manual_says(m: Machine, logdir: Path, keys: set[str], certificate: str,
                              root_password: str = ROOT[1]) -> str:
    """The rescue system as the manual's reader meets it, started already: "use putty to log
    in ... use this to be root su - root (password iplinux) ... e2fsck -p -f /dev/sda2 ...
    e2fsck -p -f /dev/sda3", "cat /apps/install_step1.log" (ends with finished) and
    https://IP/manager/ramdisk.log, with the SSH host keys and TLS certificate the system has
    (`keys`, `certificate`) and root's password (`root_password`: the installed system's,
    changed or not). Returns the install_step1.log."""
    assert m.host_keys(300) == keys, "the rescue system's SSH host keys are not the device's"
    term = ReaderTerminal(m.ports[22], *ADMIN, logdir / f"{m.name}.rescue.ssh.log")
    try:
        said = term.su(root_password, login=True)
        assert term.ok("id -u") == "0", said
        assert "root=/dev/ram0" in term.ok("cat /proc/cmdline")
        term.ok("e2fsck -p -f /dev/sda2", 180)
        term.ok("e2fsck -p -f /dev/sda3", 180)
        log = term.ok("cat /apps/install_step1.log")
        assert log.splitlines()[-1] == "finished", log
    finally:
        term.close()
    assert m.tls_certificate() == certificate, "the rescue system's TLS certificate is not the device's"
    status, served = m.http_get("/manager/ramdisk.log", tls=unverified_tls())
    assert status == 200 and served.rstrip().splitlines()[-1] == "finished", (status, served)
    return log


def cut(m: Machine) -> None:
    """The power goes: QEMU quits at once. The harness's QEMU exits by itself at a reset
    (the next boot is a QEMU of its own): when the device reset before the cut (a phase
    shorter than the cut's delay), there is nothing to quit, and the cut lands as the next
    boot starts."""
    from qemu.qmp import QMPError

    try:
        m.qmp("quit")
    except QMPError:
        pass          # the QEMU that reset is gone already
    m.wait_exit(60)   # a QEMU that neither quit nor reset fails here, naming the wait
    m.kill()          # drops the QMP connection to the QEMU that is gone
    m.start()


@dataclasses.dataclass(frozen=True)
class UpdateCut:
    phase: str      # what the device is doing
    line: str       # the console line that starts it
    delay: float    # seconds after the line before the power goes (spreads cuts in a phase)


@dataclasses.dataclass
class Tally:
    cuts: int = 0
    recovered: int = 0
    rows_lost: int = 0

    def __str__(self) -> str:
        return f"{self.cuts} cuts, {self.recovered} recovered, {self.rows_lost} rows lost"


def cut_during_upload(m: Machine, updates: Updates, tally: Tally, root_password: str = ROOT[1]) -> None:
    """The power goes while the update is being uploaded: the old image boots and runs on,
    and the half-received file is cleaned away."""
    # The manager answers first: an upload refused at the door would leave nothing to cut.
    m.wait_http("/manager/ramdisk.log", 120)
    sender = threading.Thread(target=lambda: _try(upload, m, updates.good), daemon=True)
    sender.start()
    deadline = time.monotonic() + scaled(120)
    # Some way into the upload: a third of the file received.
    third = updates.good.stat().st_size // 3
    while m.run(f"test $(stat -c %s /mnt/sda2/update/upload.part 2>/dev/null || echo 0) -gt {third}")[1] != 0:
        assert time.monotonic() < deadline, "the upload did not get a third of the way in 120 s"
        time.sleep(0.5)
    cut(m)
    tally.cuts += 1
    sender.join(scaled(30))
    booted(m, updates.old, root_password)
    m.wait_http("/manager/ramdisk.log", 120)
    assert m.ok("cat /mnt/sda1/label") == updates.old
    assert m.ok("ls /mnt/sda2/update 2>/dev/null | wc -l") == "0"
    tally.recovered += 1


def _try(func, *args) -> None:
    try:
        func(*args)
    except OSError:
        pass   # the connection dies with the power


def cut_during_update(m: Machine, updates: Updates, cuts: list[UpdateCut], tally: Tally,
                      root_password: str = ROOT[1], follow: bool = False) -> list[UpdateCut]:
    """Upload the good update and cut the power at each point in turn; every next boot must
    go on by itself (the old rescue system redoes the update, or the new one its install).
    A phase may end before a point's delay: the cut then lands in a later phase, and points
    of a phase the device has left for good are not reached by this update. Those are
    returned, in order, for another update to take. follow: after the last cut, read the
    new image's install in its ramdisk.log over HTTPS as the admin does (applied's)."""
    status, text = upload(m, updates.good)
    assert status == 200, text
    running = m.expect("running install_step1.sh update", 240).group(0)
    left = list(cuts)
    while left:
        # Whichever point's line the device shows next; "finished" when it shows none of them.
        lines = sorted({p.line for p in left})
        pattern = re.compile(b"|".join(re.escape(x.encode()) for x in lines) + rb"|^finished", re.M)
        seen = m.expect(pattern, 300).group(0).decode()
        if seen == "finished":
            break
        point = next(p for p in left if p.line == seen)
        time.sleep(point.delay)
        cut(m)
        left.remove(point)
        tally.cuts += 1
        running = m.expect(re.compile(rb"running install_step1.sh (update|install)"), 240).group(0)
        tally.recovered += 1
    else:
        if follow:
            if running.endswith(b"update"):
                m.expect("running install_step1.sh install", 300)
            follow_install_log(m, updates.new)
        m.expect(re.compile(rb"^finished", re.M), 300)
    booted(m, updates.new, root_password)
    assert m.ok("cat /mnt/sda1/label") == updates.new
    return left


def cut_during_commits(m: Machine, label: str, after: list[int], tally: Tally,
                       root_password: str = ROOT[1]) -> None:
    """Insert rows one commit at a time; cut the power once the host has seen `n` commits
    return; after the reboot every row whose commit returned must be there."""
    psql = "psql -h /run/postgresql -U postgres"
    m.ok(f"{psql} -c 'create table if not exists c (n int primary key)'")
    for n in after:
        start = int(m.ok(f"{psql} -tAc 'select coalesce(max(n), 0) from c'"))
        m.send(f"i={start}; while i=$((i + 1)); do {psql} -qc \"insert into c values ($i)\" "
               f"&& echo \"committed $i\"; done\n")
        seen = start
        while seen < start + n:
            seen = int(m.expect(re.compile(rb"committed (\d+)"), 120).group(1))
        cut(m)
        tally.cuts += 1
        booted(m, label, root_password)
        present = int(m.ok(f"{psql} -tAc 'select count(*) from c where n <= {seen}'"))
        tally.rows_lost += seen - present
        tally.recovered += 1
