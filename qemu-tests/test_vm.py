"""x86_64-vm: the qcow2 installs itself on first boot and runs the App Platform's services."""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import paramiko
import pytest
from apbuild.testing import scratch
from apbuild.testing.accounts import ADMIN, ROOT
from apbuild.testing.disks import fresh_disk
from apbuild.testing.machine import Machine, scaled
from apbuild.testing.smtp import MailServer
from apbuild.testing.terminal import admin_su_root

pytestmark = pytest.mark.vm

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # PostgreSQL answers 'S' or 'N'


@pytest.fixture(scope="module")
def vm(request, vm_build, logdir, accel):
    project, result = vm_build
    label = project.board.image_version
    with scratch(request, "vm") as tmp, \
            Machine(project.board, fresh_disk(result, tmp, "vm"), logdir, name="x86_64-vm", accel=accel,
                    wait_for_grub=True) as m:
        # First boot: GRUB's default entry 0 (rescue/setup) runs the installer, which reboots;
        # each menu counts down untouched, as on a VM nobody watches (elsewhere the test
        # machine presses Enter: apbuild.testing.machine).
        m.install(label)
        m.label = label
        m.first_boot_http = None
        yield m


def test_first_boot_installed_and_switched_to_normal(vm):
    assert "root=/dev/sda3" in vm.ok("cat /proc/cmdline")
    assert "set default=1" in vm.ok("grep '^set default' /boot/grub/grub.cfg")
    assert vm.run("test -e /mnt/sda1/pending")[1] == 1
    log = vm.ok("cat /mnt/sda2/log/ramdisk.log")
    assert log.splitlines()[-1] == "finished"


def test_label_matches_the_image_version(vm):
    assert vm.ok("cat /mnt/sda1/label") == vm.label


def test_four_partitions_with_types_and_sizes(vm):
    table = vm.ok("sfdisk -d /dev/sda")
    parts = {int(m.group(1)): (int(m.group(2)), int(m.group(3)), m.group(4))
             for m in re.finditer(r"/dev/sda(\d) : start=\s*(\d+), size=\s*(\d+), type=(\w+)", table)}
    assert sorted(parts) == [1, 2, 3, 4], table
    assert parts[1][2] == "83" and parts[2][2] == "83" and parts[3][2] == "83" and parts[4][2] == "82"
    assert parts[3][1] == 500 * 2048 and parts[4][1] == 512 * 2048
    assert parts[1][1] <= 350 * 2048
    assert parts[1][0] < parts[3][0] < parts[4][0] < parts[2][0]  # sda2 is physically last
    disk_sectors = int(vm.ok("cat /sys/block/sda/size"))
    assert parts[2][0] + parts[2][1] == disk_sectors  # and reaches the end of the disk
    assert "ext2" in vm.ok("grep ' /mnt/sda1 ' /proc/mounts")
    assert "ext4" in vm.ok("grep ' /mnt/sda2 ' /proc/mounts")
    assert "ext4" in vm.ok("grep ' / ' /proc/mounts | grep sda3")
    assert "/dev/sda4" in vm.ok("cat /proc/swaps")
    assert "has_journal" in vm.ok("dumpe2fs -h /dev/sda2 2>/dev/null | grep features")


def test_postgresql_answers_locally(vm):
    vm.ok("/etc/init.d/S50postgresql status")
    assert vm.ok("psql -h /run/postgresql -U postgres -tAc 'select 1'") == "1"
    assert vm.ok("cd / && su postgres -c \"psql -h /run/postgresql -tAc 'show data_directory'\"") == "/mnt/sda2/pgsql"


def test_postgresql_refuses_connections_from_outside(vm):
    # From the host (user-mode net, the guest's eth0) PostgreSQL answers, with TLS ...
    assert vm.tcp_probe(5432, SSL_REQUEST) == b"S"
    # ... and pg_hba.conf declines everything that is not local (test_manual.py connects).
    hba = vm.ok("grep -v '^#' /mnt/sda2/pgsql/pg_hba.conf")
    assert re.search(r"host\s+all\s+all\s+0\.0\.0\.0/0\s+reject", hba)


def test_manager_answers_from_the_host(vm):
    vm.wait_http("/manager/", 120, auth=ADMIN)   # the manager may still be starting
    status, page = vm.http_get("/manager/", auth=ADMIN)
    assert status == 200 and f">{vm.label}<" in page and "sda2" in page
    status, log = vm.http_get("/manager/ramdisk.log")
    assert status == 200 and log.rstrip().splitlines()[-1] == "finished"
    assert vm.ok("stat -c %s /mnt/sda2/empty_if_no_space") == str(500 * 2**20)


def test_ssh_admin_may_log_in_root_may_not(vm):
    assert vm.ssh_user(*ADMIN) == "admin"
    with pytest.raises(paramiko.AuthenticationException):
        vm.ssh_user(*ROOT)
    # Host keys were made on this device, at first boot, on sda2.
    assert "dropbear_ed25519_host_key" in vm.ok("ls /mnt/sda2/etc/dropbear")


def test_setip_rejects_bad_input_and_changes_nothing(vm):
    before = vm.ok("ip -4 addr show eth0; ip route; cat /mnt/sda2/etc/network.conf 2>/dev/null; echo .")
    for args in ("--addr=10.0.2.300 --mask=255.255.255.0 --gateway=10.0.2.2 --dns1=10.0.2.3",
                 "--addr=10.0.2.15 --mask=255.0.255.0 --gateway=10.0.2.2 --dns1=10.0.2.3",
                 "--addr=10.0.2.15 --mask=255.255.255.0 --gateway=10.0.3.2 --dns1=10.0.2.3",
                 "--addr=10.0.2.15 --mask=255.255.255.0"):
        out, rc = vm.run(f"setip {args}")
        assert rc == 2, f"setip {args} -> {rc}: {out}"
        assert out.startswith("setip: ")
    assert vm.ok("ip -4 addr show eth0; ip route; cat /mnt/sda2/etc/network.conf 2>/dev/null; echo .") == before
    assert "usage: setip --addr" in vm.ok("setip --help")


def test_full_data_disk_fails_cleanly_raises_the_alarm_and_the_reserve_frees_it(vm, logdir):
    """The manual's 'disk full': sda2 full (for everyone but root, who keeps ext4's 5%),
    PostgreSQL refuses writes but keeps its data and keeps answering. "Alarms and events":
    "Email address: an email address which will get emails on full disk alarms/warnings",
    "Threshold: ... an hourly email sent on reaching this threshold", set in the manager's
    form; an SMTP server on the host gets the e-mail (the levels and the e-mails' pace:
    tests/test_disk_alarm.py). Then "App Platform/Apps app not online anymore due to full
    disk", typed as the manual writes it (SSH as admin, su root): the reserve emptied frees
    500 MB, the services come back, and once the space is freed the manager makes the
    reserve again."""
    psql = "psql -h /run/postgresql -U postgres -v ON_ERROR_STOP=1"
    vm.ok(f"{psql} -c 'create table full_t (v text); insert into full_t values (1)'")

    def avail_kb() -> int:
        return int(vm.ok("df -k /mnt/sda2 | tail -1").split()[3])

    def page() -> str:
        return vm.http_get("/manager/", auth=ADMIN)[1]

    def wait_page(text: str, present: bool = True) -> None:
        # The manager checks the disk every 5 s; the page shows its last check.
        deadline = time.monotonic() + scaled(60)
        while (text in page()) != present:
            assert time.monotonic() < deadline, f"the page {'never shows' if present else 'still shows'} {text!r}"
            time.sleep(1)

    vm.wait_http("/manager/", 120, auth=ADMIN)   # a first boot's manager makes its reserve first
    with MailServer() as smtp:
        form = {"email": "ops@example.com", "server": "10.0.2.2", "port": str(smtp.port), "threshold": "95"}
        status, said = vm.http_get("/cgi-bin/alarms", auth=ADMIN, timeout=60, post=urlencode({**form, "threshold": "0"}).encode())
        assert status == 422 and "threshold '0' is not 1 to 100" in said, (status, said)
        status, said = vm.http_get("/cgi-bin/alarms", auth=ADMIN, timeout=60, post=urlencode(form).encode())
        assert status == 200 and "alarmDiskThreshold=95" in said, (status, said)
        assert "id=disk-alarm" not in page()
        # What fills the disk (an app's data, a crashed service's core dump) is the test's.
        vm.ok("mkdir -p /mnt/sda2/log/core_dumps/example && head -c 1048576 /dev/urandom > /mnt/sda2/log/core_dumps/example/core.1")
        vm.ok(f"fallocate -l {max(avail_kb() - 256, 0)}K /mnt/sda2/fill && sync")
        assert avail_kb() < 1024
        mail = smtp.wait_for("disk full", scaled(60))
        assert mail.rcpt_tos == ("ops@example.com",)
        assert "disk full: 100% of /mnt/sda2 in use, threshold 95%" in mail.message.get_content()
        wait_page("<b>ALARM:</b> disk full: 100% of /mnt/sda2 in use, threshold 95%")
        out, rc = vm.run(f"{psql} -c \"insert into full_t select repeat('x', 1000) from generate_series(1, 2000)\" 2>&1")
        assert rc != 0 and ("could not extend file" in out or "No space left on device" in out), out
        assert vm.ok(f"{psql} -tAc 'select count(*) from full_t'") == "1"

        term = admin_su_root(vm.ports[22], logdir, "vm-full-disk")
        try:
            assert re.search(r"^/dev/sda2 .* 100% /mnt/sda2$", term.ok("df -h"), re.M)
            assert "stopped" in term.ok("/etc/init.d/S92manager stop")
            term.ok('echo "" > /mnt/sda2/empty_if_no_space')
            assert avail_kb() >= 500 * 1024 - 1024          # before the restarts write their logs
            # The vendor manager's app logs: the reference manager has none, and rm says so.
            out, rc = term.run("rm /var/log/apps/*/*")
            assert rc == 1 and "No such file or directory" in out, out
            term.ok("rm /var/log/core_dumps/*/*")
            out = term.ok("/etc/init.d/S50postgresql restart", 180)
            assert "stopped" in out and "started" in out, out
            term.ok("/etc/init.d/S92manager restart")
            vm.wait_http("/manager/", 60, auth=ADMIN)              # "wait until everything is online again"
            assert vm.ok("ls /mnt/sda2/log/core_dumps/example") == ""
            vm.ok(f"{psql} -c \"insert into full_t select repeat('x', 1000) from generate_series(1, 20000)\"", 120)
            # "free up at least 500 MB so that the manager can create the file again"
            vm.ok("rm -f /mnt/sda2/fill && sync")
            wait_page("id=disk-alarm", present=False)
            assert len(smtp.received("disk full")) == 1      # hourly, not every check
            # "delete /mnt/sda2/empty_if_no_space if you are done and restart the manager"
            assert term.ok("stat -c %s /mnt/sda2/empty_if_no_space") == "1"     # emptied, never refilled
            term.ok("rm /mnt/sda2/empty_if_no_space")
            term.ok("/etc/init.d/S92manager restart")
        finally:
            term.close()
        vm.wait_http("/manager/", 60, auth=ADMIN)
        # The settings go (empty fields delete them): the module's other tests send no mail.
        status, said = vm.http_get("/cgi-bin/alarms", auth=ADMIN, timeout=60,
                                   post=urlencode(dict.fromkeys(form, "")).encode())
        assert status == 200 and "alarmEmail" not in said, (status, said)
    assert "disk alarm cleared" in vm.ok("cat /mnt/sda2/log/manager.log")
    vm.ok("i=0; while [ ! -e /mnt/sda2/empty_if_no_space ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done")
    assert vm.ok("stat -c %s /mnt/sda2/empty_if_no_space") == str(500 * 2**20)
    assert vm.ok(f"{psql} -tAc 'select count(*) from full_t'") == "20001"


def test_second_boot_goes_straight_to_normal(vm):
    vm.ok("psql -h /run/postgresql -U postgres -c 'create table kept (v int); insert into kept values (42)'")
    vm.send("reboot\n")
    vm.expect_boot(f"App Platform {vm.label}")
    vm.login(*ROOT, 300)
    since_reboot = vm.log_path.read_bytes().rsplit(b"Restarting system", 1)[-1]
    assert b"install_step1" not in since_reboot
    assert vm.ok("psql -h /run/postgresql -U postgres -tAc 'select v from kept'") == "42"


def test_owners_modes_and_password_hashes_in_the_image(vm):
    stats = dict(line.rsplit(" ", 1)[::-1] for line in vm.ok(
        "stat -c '%a %u:%g %n' /etc/shadow /etc/passwd /tmp /home/admin /home/root "
        "/usr/bin/busybox /mnt/sda2/pgsql /usr/sbin/setip").splitlines())
    assert stats["/etc/shadow"] == "600 0:0"
    assert stats["/etc/passwd"] == "644 0:0"
    assert stats["/tmp"] == "1777 0:0"
    assert stats["/home/admin"] == "755 1000:1000"
    assert stats["/home/root"] == "700 0:0"
    assert stats["/usr/bin/busybox"] == "4755 0:0"     # su (the manual's "su root") needs it
    assert stats["/mnt/sda2/pgsql"] == "700 102:102"
    assert stats["/usr/sbin/setip"] == "755 0:0"
    shadow = vm.ok("cut -d: -f1,2 /etc/shadow")
    assert re.search(r"^root:\$6\$", shadow, re.M) and re.search(r"^admin:\$6\$", shadow, re.M)
