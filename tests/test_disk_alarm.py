"""The manager's full-disk alarm (/usr/lib/manager/disk-alarm) run on the build host with sh:
the levels against the threshold, the e-mails' pace (full: hourly, warning: daily, neither
more often when the level goes up and down), what the log and the page's file say. `df`
and `alarm-mail` are small fixtures made here; the real ones run on the booted VM
(qemu-tests/test_manual.py, with an SMTP server on the host)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from apbuild.config import find_root

SCRIPT = find_root() / "recipes" / "manager" / "rootfs" / "usr" / "lib" / "manager" / "disk-alarm"


class Device:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.lib = root / "lib"
        self.state = root / "state"
        self.settings = root / "mail.settings"
        self.mails = root / "mails"
        self.log = root / "manager.log"
        for d in (self.bin, self.lib, self.mails):
            d.mkdir()
        # df -Pk MOUNT: the figures from a file the test writes (used, available, in KiB).
        (self.bin / "df").write_text('#!/bin/sh\n[ -s "$DF_FIGURES" ] || exit 1\nread used avail < "$DF_FIGURES"\n'
                                     'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                                     'echo "/dev/sda2 $((used + avail)) $used $avail 0% /mnt/sda2"\n')
        # alarm-mail -c FILE configured|send SUBJECT: configured when the settings name an
        # address; send keeps each mail (a file "fail" makes sending fail).
        (self.lib / "alarm-mail").write_text(
            '#!/bin/sh\nshift 2\ncase "$1" in\n'
            'configured) grep -q "^alarmEmail=." "$MAIL_SETTINGS" ;;\n'
            f'send) [ -e "{root}/fail" ] && exit 1; n=$(ls "{self.mails}" | wc -l)\n'
            f'  {{ echo "$2"; cat; }} > "{self.mails}/$n" ;;\nesac\n')
        for f in (self.bin / "df", self.lib / "alarm-mail"):
            f.chmod(0o755)
        self.settings.write_text("alarmEmail=ops@example.com\nsmtpServer=10.0.2.2\n")
        self.fill(50)

    def fill(self, percent: int) -> None:
        (self.root / "df").write_text(f"{percent * 1000} {(100 - percent) * 1000}\n")

    def run(self, command: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "DISK_ALARM_PATH": f"{self.bin}:/usr/bin:/bin", "DF_FIGURES": str(self.root / "df"),
               "DISK_ALARM_STATE": str(self.state), "MAIL_SETTINGS": str(self.settings),
               "MANAGER_LIB": str(self.lib), "MANAGER_LOG": str(self.log)}
        return subprocess.run(["sh", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=30)

    def check(self) -> str:
        proc = self.run("check")
        assert proc.returncode == 0, proc.stderr
        alarm = self.state / "alarm"
        return alarm.read_text().strip() if alarm.exists() else ""

    def sent(self) -> list[str]:
        return [(self.mails / str(n)).read_text().splitlines()[0] for n in range(len(list(self.mails.iterdir())))]

    def ago(self, kind: str, seconds: int) -> None:
        """As if the last e-mail of this kind had gone out `seconds` before now (the clock's
        now, not the last mail's time: a loaded host may pass seconds between two checks)."""
        (self.state / f"mailed.{kind}").write_text(f"{int(time.time()) - seconds}\n")


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


def test_levels_against_the_default_threshold(device):
    for percent, alarm in ((50, ""), (79, ""), (80, "disk warning: 80% of /mnt/sda2 in use, threshold 90%"),
                           (89, "disk warning: 89% of /mnt/sda2 in use, threshold 90%"),
                           (90, "disk full: 90% of /mnt/sda2 in use, threshold 90%"),
                           (100, "disk full: 100% of /mnt/sda2 in use, threshold 90%"), (10, "")):
        device.fill(percent)
        assert device.check() == alarm, percent
    assert device.run("status").stdout == "disk none 10% of /mnt/sda2, threshold 90%\n"
    log = device.log.read_text()
    assert "manager: disk alarm: disk warning: 80% of /mnt/sda2 in use, threshold 90%" in log
    assert "manager: disk alarm: disk full: 90% of /mnt/sda2 in use, threshold 90%" in log
    assert "manager: disk alarm cleared: 10% of /mnt/sda2 in use, threshold 90%" in log
    assert len(log.splitlines()) == 3, log      # a line per change of level, not per check


def test_the_threshold_setting_and_what_is_not_one(device):
    device.fill(45)
    device.settings.write_text("alarmDiskThreshold=50\n")
    assert device.check() == "disk warning: 45% of /mnt/sda2 in use, threshold 50%"
    for wrong in ("0", "101", "ninety", ""):
        device.settings.write_text(f"alarmDiskThreshold={wrong}\n")
        assert device.run("status").stdout == "disk none 45% of /mnt/sda2, threshold 90%\n", wrong


def test_a_full_disk_mails_hourly_and_a_warning_daily(device):
    device.fill(95)
    device.check()
    device.check()
    assert device.sent() == ["App Platform %s: disk full (95%% of /mnt/sda2 in use)" % host()]
    body = (device.mails / "0").read_text()
    assert "disk full: 95% of /mnt/sda2 in use, threshold 90%" in body and "every hour" in body
    paced(device, "full", 3600)
    # Down to a warning: its own e-mail at once, then once a day.
    device.fill(85)
    device.check()
    assert device.sent()[2].endswith("disk warning (85% of /mnt/sda2 in use)")
    paced(device, "warning", 86400)


def paced(device: Device, kind: str, every: int) -> None:
    """The next e-mail of this kind goes `every` seconds after the last one, not sooner (5 s
    short of it: the check reads the clock a moment after the test set the time)."""
    sent = len(device.sent())
    device.ago(kind, every - 5)
    device.check()
    assert len(device.sent()) == sent
    device.ago(kind, every)
    device.check()
    assert len(device.sent()) == sent + 1


def test_a_disk_on_the_edge_does_not_flood_the_address(device):
    for _ in range(5):
        for percent in (80, 79, 90, 89):
            device.fill(percent)
            device.check()
    assert [s.split(": disk ")[1].split()[0] for s in device.sent()] == ["warning", "full"]


def test_no_address_no_mail_and_a_failed_one_is_tried_again(device):
    device.settings.write_text("")
    device.fill(95)
    assert device.check().startswith("disk full")
    assert device.sent() == []
    device.settings.write_text("alarmEmail=ops@example.com\n")
    (device.root / "fail").touch()
    device.check()
    assert device.sent() == [] and "the disk alarm's e-mail could not be sent" in device.log.read_text()
    (device.root / "fail").unlink()
    device.check()
    assert len(device.sent()) == 1


def test_an_unreadable_disk_is_an_error_that_changes_nothing(device):
    device.fill(95)
    device.check()
    (device.root / "df").write_text("")
    proc = device.run("check")
    assert proc.returncode == 1 and proc.stderr == "disk-alarm: cannot read the space of /mnt/sda2\n"
    assert (device.state / "alarm").read_text().startswith("disk full")


def host() -> str:
    return subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()


def test_mailed_times_are_the_clocks_and_one_ahead_of_it_does_not_hold_mails_back(device):
    device.fill(95)
    before = int(time.time())
    device.check()
    assert before <= int((device.state / "mailed.full").read_text()) <= int(time.time())
    # The clock set back a year (NTP after an RTC that ran ahead): the hourly e-mail goes on.
    device.ago("full", -365 * 86400)
    device.check()
    assert len(device.sent()) == 2
