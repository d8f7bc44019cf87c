"""x86_64-vm hardened defaults (issue 6): open ports, the manager's password, HTTPS with the
device's own certificate, no world-writable files, provisioned passwords, per-device keys."""

from __future__ import annotations

import ipaddress
import re
import ssl
import subprocess
from pathlib import Path

import paramiko
import pytest
from apbuild.testing import scratch
from apbuild.testing.accounts import ADMIN, ROOT
from apbuild.testing.disks import partitions, raw_disk
from apbuild.testing.machine import Machine, scaled

pytestmark = pytest.mark.vm

PROTECTED = ("/", "/manager/", "/manager/index.html", "/index.html", "/cgi-bin/anything",
             "/cgi-bin/update", "/manager/ramdisk.log/../index.html", "/manager/ramdisk.log?x")
LOOPBACK = {"127.0.0.1", "::1"}


def put_on_sda1(disk: Path, local: Path, name: str) -> None:
    """Write a file into the ext2 sda1 of a raw disk image, as a user would before first boot."""
    start = partitions(disk)[1].start
    subprocess.run(["debugfs", "-w", "-R", f"write {local} {name}", f"{disk}?offset={start}"],
                   check=True, capture_output=True)
    listing = subprocess.run(["debugfs", "-R", "ls /", f"{disk}?offset={start}"], check=True,
                             capture_output=True).stdout.decode()
    assert name in listing, listing


def host_key(m: Machine) -> str:
    """The SSH host key the device offers, as the host sees it."""
    transport = paramiko.Transport(("127.0.0.1", m.ports[22]))
    try:
        transport.start_client(timeout=scaled(60))
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        transport.close()


def device_tls(m: Machine) -> tuple[ssl.SSLContext, str]:
    """A TLS context that trusts exactly the certificate the device made for itself."""
    pem = m.ok("cat /mnt/sda2/etc/manager/tls.crt")
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False   # the certificate names the device, not 127.0.0.1
    return context, pem


def sockets(m: Machine, family: str, state: str | None) -> set[tuple[str, int]]:
    """(address, port) of the sockets in /proc/net/<family>{,6}, in the given state (None: all)."""
    found = set()
    for proto in (family, family + "6"):
        for line in m.ok(f"cat /proc/net/{proto}").splitlines()[1:]:
            fields = line.split()
            if state is not None and fields[3] != state:
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            if proto == family:
                address = ".".join(str(b) for b in words)
            else:
                address = str(ipaddress.IPv6Address(words))
            found.add((address, int(port_hex, 16)))
    return found


def listening(m: Machine) -> set[tuple[str, int]]:
    return sockets(m, "tcp", "0A")   # TCP_LISTEN


@pytest.fixture(scope="module")
def vm(request, vm_build, installed, logdir, accel):
    project, _ = vm_build
    with scratch(request, "hardening") as tmp, \
            Machine(project.board, installed(project.board.name, tmp, "hardening"), logdir, name="hardening",
                    accel=accel) as m:
        m.login(timeout=300)
        m.wait_http("/manager/ramdisk.log", 120)
        yield m


def test_manager_asks_for_the_admin_password_except_for_ramdisk_log(vm):
    for path in PROTECTED:
        assert vm.http_get(path)[0] == 401, path
        assert vm.http_get(path, auth=("admin", "wrong"))[0] == 401, path
        assert vm.http_get(path, auth=ROOT)[0] == 401, path   # admin only
    for path in ("/", "/manager/", "/manager/index.html"):
        status, page = vm.http_get(path, auth=ADMIN)
        assert status == 200 and "App Platform" in page, path
    assert vm.http_get("/cgi-bin/anything", auth=ADMIN)[0] == 404   # past the password check
    status, log = vm.http_get("/manager/ramdisk.log")
    assert status == 200 and log.rstrip().splitlines()[-1] == "finished"


def test_https_on_443_with_a_certificate_made_on_the_device(vm):
    context, pem = device_tls(vm)
    status, log = vm.http_get("/manager/ramdisk.log", tls=context)
    assert status == 200 and log.rstrip().splitlines()[-1] == "finished"
    assert vm.http_get("/manager/", tls=context)[0] == 401
    status, page = vm.http_get("/manager/", tls=context, auth=ADMIN)
    assert status == 200 and "App Platform" in page
    # A client that trusts only the usual CAs refuses it: it is self-signed, not shipped.
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        vm.http_get("/manager/ramdisk.log", tls=ssl.create_default_context())
    # Made by this device at its first start, on sda2 (a second device's differs: see the
    # provisioning test).
    assert vm.ok("stat -c '%a %u' /mnt/sda2/etc/manager/tls.key") == "600 0"
    assert "made the TLS certificate" in vm.ok("cat /mnt/sda2/log/manager.log")


def test_listening_ports_are_22_80_443_and_postgresql_behind_pg_hba(vm):
    """The manual: port 5432 "must be reachable" (replication, outside access), and "The
    default configuration decline database request from extern": PostgreSQL listens on the
    network, and its pg_hba.conf rejects every connection that is not local."""
    tcp = listening(vm)
    assert {port for _, port in tcp} == {22, 80, 443, 5432}, tcp
    for port in (22, 80, 443, 5432):   # reachable from the network
        assert {addr for addr, p in tcp if p == port} - LOOPBACK, (port, tcp)
    hba = [line.split() for line in vm.ok("grep -v '^#' /mnt/sda2/pgsql/pg_hba.conf").splitlines() if line.strip()]
    outside = [fields for fields in hba if fields[0].startswith("host")
               and fields[3] not in ("127.0.0.1/32", "::1/128")]
    assert [f[-1] for f in outside] == ["reject", "reject"], hba


def test_no_udp_port_open_to_the_network(vm):
    # A bound UDP socket answers whoever sends to it: none may be bound beyond loopback.
    bound = sockets(vm, "udp", None)
    assert {(a, p) for a, p in bound if a not in LOOPBACK and p != 0} == set(), bound


def test_root_cannot_log_in_over_ssh(vm):
    assert vm.ssh_user(*ADMIN) == "admin"
    with pytest.raises(paramiko.AuthenticationException):
        vm.ssh_user(*ROOT)


def test_no_world_writable_files_outside_tmp(vm):
    """Every file and directory of the booted system (rootfs, sda1, sda2) except the
    kernel's virtual filesystems (/proc, /sys, /dev, /run: sockets and runtime state) and
    /tmp (= /var/tmp). Symlinks are always 0777 and are skipped; sticky directories get no
    exception: the only one is /tmp."""
    # Two probes show the walk can fail: one in /tmp (left out), one on sda2 (reported).
    vm.ok("touch /tmp/probe /mnt/sda2/probe && chmod 666 /tmp/probe /mnt/sda2/probe")
    try:
        found = vm.ok("find / \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \\)"
                      " -prune -o ! -type l -perm -0002 -print", timeout=300)
    finally:
        vm.ok("rm -f /tmp/probe /mnt/sda2/probe")
    assert found.splitlines() == ["/mnt/sda2/probe"], found
    assert vm.ok("readlink /var/tmp") == "/tmp"
    assert vm.ok("stat -c %a /tmp") == "1777"


def test_passwd_sets_a_password_that_ssh_and_the_manager_take(vm):
    # Last of the tests on this VM: admin's password changes here.
    assert vm.run("printf 'a\\nb\\n' | passwd admin")[1] != 0      # retyped differently
    vm.ok("printf 'Second-Password\\nSecond-Password\\n' | passwd admin")
    assert vm.ssh_user("admin", "Second-Password") == "admin"
    with pytest.raises(paramiko.AuthenticationException):
        vm.ssh_user(*ADMIN)
    assert vm.http_get("/manager/", auth=("admin", "Second-Password"))[0] == 200
    assert vm.http_get("/manager/", auth=ADMIN)[0] == 401
    # busybox passwd hashes with SHA-256 crypt unless told -a sha512: either, never DES or MD5.
    assert vm.password_hash("admin")[:3] in ("$5$", "$6$")


def test_provisioned_passwords_replace_the_defaults(vm, vm_build, tmp_path, logdir, accel):
    """provision.conf on sda1 before the first boot: the installer sets the passwords, deletes
    the file, and the defaults no longer work. A second device from the same image also shows
    that host keys and TLS certificates are made per device. The rules of each key (a root
    hash alone, every mistake) are tested on the host: tests/test_provision.py."""
    project, result = vm_build
    disk = raw_disk(result, tmp_path, "provisioned")
    conf = tmp_path / "provision.conf"
    conf.write_text("# the installation's passwords\nADMIN_PASSWORD=Adm1n secret\n"
                    "ROOT_PASSWORD='R00t:secret'\n")
    put_on_sda1(disk, conf, "provision.conf")
    with Machine(project.board, disk, logdir, name="provisioned", accel=accel) as m:
        m.expect("running install_step1.sh install", 180)
        m.expect(re.compile(rb"^finished", re.M), 300)
        m.expect_boot(f"App Platform {project.board.image_version}")
        m.expect("login: ", 300)
        m.send("root\n")                              # the default password fails ...
        m.expect("Password: ", 30)
        m.send(ROOT[1] + "\n")
        m.expect("Login incorrect", 60)
        m.login("root", "R00t:secret", 120)           # ... the provisioned one works
        assert m.run("test -e /mnt/sda1/provision.conf")[1] == 1
        log = m.ok("cat /mnt/sda2/log/ramdisk.log")
        assert "provisioned the passwords of: root admin" in log
        assert "Adm1n" not in log and "R00t" not in log
        assert m.ok("stat -c '%a %u' /mnt/sda2/etc/provisioned-shadow") == "600 0"
        assert m.ssh_user("admin", "Adm1n secret") == "admin"
        with pytest.raises(paramiko.AuthenticationException):
            m.ssh_user(*ADMIN)
        with pytest.raises(paramiko.AuthenticationException):
            m.ssh_user("root", "R00t:secret")         # root stays off SSH
        m.wait_http("/manager/ramdisk.log", 120)
        assert m.http_get("/manager/", auth=("admin", "Adm1n secret"))[0] == 200
        assert m.http_get("/manager/", auth=ADMIN)[0] == 401
        # Not a trace of the file on sda1's blocks either (it was overwritten, then deleted).
        assert m.run("grep -c 'Adm1n secret' /dev/sda1")[0] == "0"
        # Per-device secrets: same image, another disk, other keys.
        assert host_key(m) != host_key(vm)
        assert device_tls(m)[1] != device_tls(vm)[1]
