"""x86_64-vm: the clock from NTP (issue 10). chronyd takes the NTP servers DHCP hands out
and the manager's NTP server 1/2 (setntp), and steps a clock that starts years off.

QEMU's user-mode network carries no DHCP option 42, so the test makes its own network: a
network namespace holding a tap (the guest's NIC), dnsmasq handing out a lease with an NTP
server, and Debian's chronyd as that server (`local stratum 8`: it serves the host's clock;
-x: it never touches it). The addresses are TEST-NET-1 (192.0.2.0/24) inside that namespace;
no packet leaves it. One boot: the DHCP path first, then the manager's setting alone; the
lease's DNS server and the manager's (setdns) beside it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from apbuild.testing import scratch
from apbuild.testing.disks import fresh_disk
from apbuild.testing.machine import Machine, scaled

pytestmark = pytest.mark.vm

ROUTER = "192.0.2.1"        # dnsmasq
DHCP_NTP = "192.0.2.2"      # the NTP server of the lease (option 42)
MANAGER_NTP = "192.0.2.3"   # the manager's NTP server 1
LEASE_DNS = "192.0.2.1"     # the DNS server of the lease (no server answers there: --port=0)
MANAGER_DNS = "192.0.2.53"  # the manager's DNS server 1
WRONG = "2015-01-01 00:00:00"   # where the guest's clock starts
NS_PREFIX = "apbuild-ntp-"


def ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"'ip {' '.join(args)}' exited {proc.returncode}: {proc.stderr.strip()}"
                             " (the test's own network needs root: namespaces and a tap)")


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL, so an
    interrupted run leaves no DHCP or NTP server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def remove_stale_namespaces() -> None:
    """Namespaces of earlier runs killed before their teardown: their servers died with them
    (die_with_parent), only the namespace and its tap are left."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^{NS_PREFIX}(\d+)", names, re.M):
        if not Path(f"/proc/{name}").exists():
            subprocess.run(["ip", "netns", "del", NS_PREFIX + name], capture_output=True)


class NtpNetwork:
    """The namespace, its tap and the two servers; close() undoes all of it."""

    def __init__(self, tmp: Path) -> None:
        self.name = f"{NS_PREFIX}{os.getpid()}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        remove_stale_namespaces()
        ip("netns", "add", self.name)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        ip("-n", self.name, "link", "set", "lo", "up")
        ip("-n", self.name, "tuntap", "add", "dev", "tap0", "mode", "tap")
        for addr in (ROUTER, DHCP_NTP, MANAGER_NTP):
            ip("-n", self.name, "addr", "add", f"{addr}/24", "dev", "tap0")
        ip("-n", self.name, "link", "set", "tap0", "up")
        conf = self.tmp / "chrony-server.conf"
        conf.write_text(
            "# The test's NTP server: the host's clock, served inside the namespace only.\n"
            "local stratum 8\n"
            "allow 192.0.2.0/24\n"
            "cmdport 0\n"
            f"bindcmdaddress {self.tmp}/chronyd.sock\n"
            f"pidfile {self.tmp}/chronyd.pid\n")
        # -x: serve the clock, never set it (the namespace shares the host's clock).
        self.chronyd = self._spawn("chronyd", ["chronyd", "-x", "-d", "-u", "root", "-f", str(conf)])
        self.dnsmasq = self._spawn("dnsmasq", [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--log-dhcp",
            "--interface=tap0", "--bind-interfaces", "--user=root", "--group=root",
            "--dhcp-range=192.0.2.10,192.0.2.20,255.255.255.0,1h",
            f"--dhcp-option=option:router,{ROUTER}",
            f"--dhcp-option=option:ntp-server,{DHCP_NTP}",
            f"--dhcp-option=option:dns-server,{LEASE_DNS}",
            f"--dhcp-leasefile={self.tmp}/dnsmasq.leases", f"--pid-file={self.tmp}/dnsmasq.pid"])
        time.sleep(1)
        for name, proc in (("chronyd", self.chronyd), ("dnsmasq", self.dnsmasq)):
            if proc.poll() is not None:
                raise AssertionError(f"host {name} exited {proc.returncode}:\n{self.log(name)}")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def qemu_args(self) -> dict:
        """Machine's launch arguments: QEMU in the namespace, its NIC on the tap."""
        return {"wrapper": ("ip", "netns", "exec", self.name),
                "netdev": "tap,ifname=tap0,script=no,downscript=no"}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = NtpNetwork(tmp_path_factory.mktemp("ntp-net"))
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(scope="module")
def vm(request, vm_build, logdir, accel, net):
    project, result = vm_build
    label = project.board.image_version
    # The guest's RTC starts in 2015 (and with it the clock at every boot of this run).
    with scratch(request, "ntp") as tmp, \
            Machine(project.board, fresh_disk(result, tmp, "ntp"), logdir, name="ntp", accel=accel, guest_ports=(),
                 extra=("-rtc", f"base={WRONG.replace(' ', 'T')}"), **net.qemu_args()) as m:
        m.install(label)
        yield m


def offset(vm: Machine) -> float:
    """The guest's clock minus the host's, in seconds (the serial round trip is < 1 s)."""
    before = time.time()
    guest = int(vm.ok("date +%s"))
    return guest - (before + time.time()) / 2


def wait_for_host_time(vm: Machine, timeout: float = 120) -> float:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        off = offset(vm)
        if abs(off) < 3:
            return off
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest's clock is {off:.0f} s off the host's after "
                                 f"{scaled(timeout):.0f} s;\n{vm.run('setntp --show; cat /run/ntp/*')[0]}\n"
                                 f"chrony.log:\n{vm.run('cat /mnt/sda2/log/chrony.log')[0]}")
        time.sleep(2)


def selected_source(vm: Machine) -> str:
    """The address chronyd synchronises to ('^*' in `chronyc sources`), '' if none."""
    m = re.search(r"^\^\*\s+(\S+)", vm.ok("chronyc -n sources"), re.M)
    return m.group(1) if m else ""


def test_dhcp_ntp_server_sets_a_clock_that_started_in_2015(vm, net):
    # The lease carried the server, the udhcpc hook handed it to chronyd ...
    assert vm.ok("cat /run/ntp/dhcp.sources") == f"server {DHCP_NTP} iburst"
    assert vm.run("test -s /run/ntp/manager.sources")[1] == 1   # no manager setting yet
    # ... and chronyd set the clock to the host's from it, stepping it by about 12 years.
    wait_for_host_time(vm)
    deadline = time.monotonic() + scaled(60)
    while selected_source(vm) != DHCP_NTP and time.monotonic() < deadline:
        time.sleep(2)
    assert selected_source(vm) == DHCP_NTP, vm.ok("chronyc -n sources")
    log = vm.ok("cat /mnt/sda2/log/chrony.log")
    step = re.search(r"System clock wrong by (-?\d+)\.\d+ seconds", log)
    assert step and abs(int(step.group(1))) > 10 * 365 * 86400, log
    assert "DHCPACK(tap0)" in net.log("dnsmasq")


def test_chronyd_listens_on_no_network_port(vm):
    """The hardening rule (no UDP socket bound beyond loopback), checked here where chronyd
    has servers: its client sockets are connected to a server, so they take datagrams from
    that server only; no unconnected socket is bound beyond loopback."""
    wait_for_host_time(vm)
    for proto in ("udp", "udp6"):
        for line in vm.ok(f"cat /proc/net/{proto}").splitlines()[1:]:
            local, remote = line.split()[1:3]
            addr, port = local.split(":")
            if int(remote.split(":")[0], 16) != 0:       # connected: a client socket
                continue
            loopback = addr in ("0100007F", "00000000000000000000000001000000")
            assert loopback or int(port, 16) == 0, (proto, line)
    tcp = vm.ok("cat /proc/net/tcp /proc/net/tcp6")
    assert not re.search(r":007B\s", tcp), tcp   # and no NTP (123) over TCP either
    assert vm.ok("ls -l /run/chrony/chronyd.sock").startswith("s")
    assert "chrony" in vm.ok("ps -o user,comm | grep chronyd")   # root dropped


def test_setntp_refuses_bad_input_and_changes_nothing(vm):
    for bad in ("--ntp1='a b'", "--ntp1='x;reboot'", "--ntp2=192.0.2.3", "--ntp1=-x", "--bogus"):
        out, rc = vm.run(f"setntp {bad}")
        assert rc == 2 and out.startswith("setntp: "), (bad, out)
    assert vm.run("test -e /mnt/sda2/etc/ntp.conf")[1] == 1


def test_the_manager_ntp_server_alone_sets_the_clock(vm, net):
    # Stored on sda2, handed to chronyd at once (setntp) and at every start (S41ntp).
    assert "setntp: NTP servers" in vm.ok(f"setntp --ntp1={MANAGER_NTP}")
    assert vm.ok("cat /mnt/sda2/etc/ntp.conf").splitlines()[1:] == [f"NTP1={MANAGER_NTP}", "NTP2="]
    assert vm.ok("cat /run/ntp/manager.sources") == f"server {MANAGER_NTP} iburst"
    # DHCP's server goes silent; the clock is put back to 2015 and chronyd restarted, as at
    # a boot: only the manager's server can set it now.
    ip("-n", net.name, "addr", "del", f"{DHCP_NTP}/24", "dev", "tap0")
    vm.ok("/etc/init.d/S41ntp stop")
    vm.ok(f"date -s '{WRONG}' >/dev/null")
    assert offset(vm) < -10 * 365 * 86400
    vm.ok("/etc/init.d/S41ntp start")
    wait_for_host_time(vm)
    deadline = time.monotonic() + scaled(60)
    while selected_source(vm) != MANAGER_NTP and time.monotonic() < deadline:
        time.sleep(2)
    sources = vm.ok("chronyc -n sources")
    assert selected_source(vm) == MANAGER_NTP, sources
    assert DHCP_NTP in sources   # still configured, just unreachable
    # --clear leaves DHCP's servers only.
    vm.ok("setntp --clear")
    assert vm.ok("cat /run/ntp/manager.sources") == ""
    assert MANAGER_NTP not in vm.ok("chronyc -n sources")


def test_setdns_servers_come_after_the_leases_and_outlive_a_renewal(vm, net):
    """The manual's "DNS server 1/2: DNS servers for this AP (in addition to DNS servers
    retrieved by DHCP)" (the how-to and refusals on the host: tests/test_network_settings.py)."""
    assert vm.ok("cat /etc/resolv.conf") == f"nameserver {LEASE_DNS}"
    for bad in ("--dns1=ns.example.com", "--dns1=192.0.2.256", "--bogus"):
        out, rc = vm.run(f"setdns {bad}")
        assert rc == 2 and out.startswith("setdns: "), (bad, out)
    assert vm.run("test -e /mnt/sda2/etc/dns.conf")[1] == 1
    assert "setdns: DNS servers" in vm.ok(f"setdns --dns1={MANAGER_DNS}")
    assert vm.ok("cat /etc/resolv.conf") == f"nameserver {LEASE_DNS}\nnameserver {MANAGER_DNS}"
    # udhcpc stays to renew the lease; a renewal (udhcpc renews at once on SIGUSR1) rewrites
    # the lease's part and keeps ours.
    assert vm.ok("cat /proc/$(cat /run/udhcpc.eth0.pid)/comm") == "udhcpc"
    # default.script writes the lease's part at every lease, then setdns the whole file.
    times = "stat -c %y /run/resolv.base /run/resolv.conf"
    written = vm.ok(times).splitlines()
    vm.ok("kill -USR1 $(cat /run/udhcpc.eth0.pid)")
    deadline = time.monotonic() + scaled(60)
    while any(a == b for a, b in zip(vm.ok(times).splitlines(), written)):
        assert time.monotonic() < deadline, "no renewal:\n" + net.log("dnsmasq")[-2000:]
        time.sleep(1)
    assert vm.ok("cat /etc/resolv.conf") == f"nameserver {LEASE_DNS}\nnameserver {MANAGER_DNS}"
    vm.ok("setdns --clear")
    assert vm.ok("cat /etc/resolv.conf") == f"nameserver {LEASE_DNS}"
