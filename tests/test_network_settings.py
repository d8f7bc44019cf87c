"""The network setting commands run on the build host with sh, on files made here, with the
image's settings library (/usr/lib/apbuild/settings.sh). setdns (the manager's "DNS server
1/2, in addition to DNS servers retrieved by DHCP"): the setting stored as data, resolv.conf
made of the lease's servers and then these, bad input refused with nothing changed. setip
and setntp: a value of two lines is refused before anything is stored; setip applies its
stored setting as data (with a logging `ip` in place of the host's), and network-up (at
boot) reads the mode as setip does. The VM's DHCP lease and
its renewal are booted in qemu-tests/test_ntp.py, setip in qemu-tests/test_manual.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apbuild.config import find_root

SETDNS = find_root() / "recipes" / "base" / "common" / "usr" / "sbin" / "setdns"
SETIP = find_root() / "recipes" / "base" / "common" / "usr" / "sbin" / "setip"
SETNTP = find_root() / "recipes" / "ntp" / "rootfs" / "usr" / "sbin" / "setntp"
LIB = find_root() / "recipes" / "base" / "common" / "usr" / "lib" / "apbuild"


class Files:
    def __init__(self, root: Path):
        self.conf = root / "sda2" / "etc" / "dns.conf"
        self.base = root / "resolv.base"
        self.resolv = root / "resolv.conf"
        self.base.write_text("nameserver 192.0.2.1\n")      # what the lease gave

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "APBUILD_LIB": str(LIB), "SETDNS_CONF": str(self.conf), "SETDNS_BASE": str(self.base),
               "SETDNS_RESOLV": str(self.resolv)}
        return subprocess.run(["sh", str(SETDNS), *args], env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def test_the_servers_come_after_the_leases_and_outlive_a_renewal(files):
    out = files.run("--dns1=192.0.2.53", "--dns2=2001:db8::53")
    assert out.returncode == 0 and out.stdout == "setdns: DNS servers 192.0.2.53 2001:db8::53, after those from DHCP (or setip)\n"
    assert files.conf.read_text().splitlines()[1:] == ["DNS1=192.0.2.53", "DNS2=2001:db8::53"]
    assert files.resolv.read_text() == "nameserver 192.0.2.1\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    # A renewed lease with other servers (default.script writes the base, then --apply).
    files.base.write_text("nameserver 192.0.2.2\nnameserver 192.0.2.53\n")
    assert files.run("--apply").returncode == 0
    assert files.resolv.read_text() == "nameserver 192.0.2.2\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    assert "DNS1=192.0.2.53\nDNS2=2001:db8::53\nnameserver 192.0.2.2" in files.run("--show").stdout
    assert files.run("--clear").returncode == 0
    assert files.resolv.read_text() == files.base.read_text()


def test_bad_input_is_refused_and_changes_nothing(files):
    files.run("--dns1=192.0.2.53")
    kept = (files.conf.read_text(), files.resolv.read_text())
    for bad in (["--dns1=ns.example.com"], ["--dns1=192.0.2.256"], ["--dns1=192.0.2.53", "--dns2=a b"],
                ["--dns2=192.0.2.54"], ["--dns1=1.2.3.4\nnameserver 6.6.6.6"], ["--clear", "--dns1=192.0.2.9"],
                ["--bogus"], []):
        out = files.run(*bad)
        assert out.returncode == 2 and out.stderr.startswith(("setdns: ", "usage: setdns")), (bad, out.stderr)
        assert (files.conf.read_text(), files.resolv.read_text()) == kept, bad


def test_a_hand_edited_bad_value_is_left_out_and_said(files):
    files.conf.parent.mkdir(parents=True)
    files.conf.write_text("DNS1='192.0.2.53'\nDNS2=evil; reboot\n")
    out = files.run("--apply")
    assert out.returncode == 0
    assert out.stderr == f"setdns: {files.conf}: DNS2: 'evil; reboot' is not an IP address; left out\n"
    assert files.resolv.read_text() == "nameserver 192.0.2.1\nnameserver 192.0.2.53\n"


def test_no_setting_and_no_lease_yet(files):
    files.base.unlink()
    assert files.run("--apply").returncode == 0
    assert files.resolv.read_text() == ""


@pytest.mark.parametrize("command, args", [
    (SETIP, ["--addr=10.0.2.15\nreboot", "--mask=255.255.255.0", "--gateway=10.0.2.2", "--dns1=10.0.2.3"]),
    (SETIP, ["--addr=10.0.2.15", "--mask=255.255.255.0", "--gateway=10.0.2.2", "--dns1=10.0.2.3\nreboot"]),
    (SETNTP, ["--ntp1=192.0.2.3\nserver evil.example"]),
])
def test_setip_and_setntp_refuse_a_value_of_two_lines(tmp_path, command, args):
    # A second line stored would be a setting of its own.
    conf = tmp_path / "sda2.conf"
    env = {"PATH": "/usr/bin:/bin", "APBUILD_LIB": str(LIB), "SETIP_CONF": str(conf), "SETNTP_CONF": str(conf)}
    out = subprocess.run(["sh", str(command), *args], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.startswith(f"{command.name}: ") and "not a" in out.stderr, out.stderr
    assert "expression" not in out.stderr and not conf.exists()


class Setip:
    """setip with a logging `ip` and setdns in PATH's place: what it would do to eth0."""

    def __init__(self, root: Path):
        self.conf, self.base, self.calls = root / "sda2" / "network.conf", root / "resolv.base", root / "calls"
        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in ("ip", "setdns", "udhcpc"):
            (self.bin / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {self.calls}\n')
            (self.bin / tool).chmod(0o755)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "APBUILD_LIB": str(LIB), "SETIP_CONF": str(self.conf),
               "SETIP_IFACE": "eth9", "SETDNS_BASE": str(self.base), "SETIP_SETDNS": str(self.bin / "setdns")}
        return subprocess.run(["sh", str(SETIP), *args], env=env, capture_output=True, text=True, timeout=30)

    def said(self) -> list[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        self.calls.unlink(missing_ok=True)
        return lines


STATIC = ["ip link set eth9 up", "ip -4 addr flush dev eth9", "ip addr add 10.0.2.15/24 dev eth9",
          "ip route del default", "ip route add default via 10.0.2.2 dev eth9", "setdns --apply"]


def test_setip_stores_its_setting_and_applies_it(tmp_path):
    setip = Setip(tmp_path)
    out = setip.run("--addr=10.0.2.15", "--mask=255.255.255.0", "--gateway=10.0.2.2", "--dns1=10.0.2.3")
    assert out.returncode == 0 and out.stdout == "setip: eth9 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3\n", out.stderr
    assert setip.conf.read_text() == ("MODE=static\nADDR=10.0.2.15\nMASK=255.255.255.0\nPREFIX=24\n"
                                      "GATEWAY=10.0.2.2\nDNS1=10.0.2.3\nDNS2=\n")
    assert setip.said() == STATIC and setip.base.read_text() == "nameserver 10.0.2.3\n"
    # At boot (network-up) the stored setting is applied again.
    assert setip.run("--apply").returncode == 0 and setip.said() == STATIC
    assert setip.run("--dhcp").returncode == 0 and setip.conf.read_text() == "MODE=dhcp\n"
    assert setip.said() == ["ip link set eth9 up",
                            "udhcpc -b -O ntpsrv -i eth9 -s /usr/share/udhcpc/default.script -p /run/udhcpc.eth9.pid"]


def test_setip_reads_a_hand_edited_setting_as_data(tmp_path):
    # The file on sda2 is applied at every boot, before anyone logs in: it must never run.
    setip = Setip(tmp_path)
    marker = tmp_path / "ran"
    setip.conf.parent.mkdir()
    setip.conf.write_text(f"MODE=static\nADDR=10.0.2.15\nPREFIX=24\ntouch {marker}\nGATEWAY=10.0.2.2; touch {marker}\n"
                          f"DNS1=\"$(touch {marker})\"\n")
    assert setip.run("--apply").returncode == 0
    assert not marker.exists()
    assert f"ip route add default via 10.0.2.2; touch {marker} dev eth9" in setip.said()
    assert setip.base.read_text() == f"nameserver $(touch {marker})\n"


NETWORK_UP = find_root() / "recipes" / "base" / "common" / "usr" / "sbin" / "network-up"


def network_up(setip: Setip, root: Path) -> list[str]:
    """network-up as S40network runs it at boot, with this setip and its logging tools: the
    commands it gave."""
    (root / "sys" / "eth9").mkdir(parents=True, exist_ok=True)      # the NIC is there
    (root / "run").mkdir(exist_ok=True)
    env = {"PATH": f"{setip.bin}:/usr/bin:/bin", "APBUILD_LIB": str(LIB), "SETIP_CONF": str(setip.conf),
           "SETIP_IFACE": "eth9", "SETDNS_BASE": str(setip.base), "SETIP_SETDNS": str(setip.bin / "setdns"),
           "NETWORK_UP_RUN": str(root / "run"), "NETWORK_UP_SYSFS": str(root / "sys"), "NETWORK_UP_SETIP": str(SETIP)}
    out = subprocess.run(["sh", str(NETWORK_UP)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return setip.said()


def test_network_up_reads_the_mode_as_setip_does(tmp_path):
    setip = Setip(tmp_path)
    dhcp = ["ip link set lo up", "ip link set eth9 up",
            f"udhcpc -b -t 5 -T 2 -O ntpsrv -i eth9 -s /usr/share/udhcpc/default.script -p {tmp_path}/run/udhcpc.eth9.pid"]
    assert network_up(setip, tmp_path) == dhcp                         # nothing stored: DHCP
    setip.run("--addr=10.0.2.15", "--mask=255.255.255.0", "--gateway=10.0.2.2", "--dns1=10.0.2.3")
    setip.said()
    assert network_up(setip, tmp_path) == ["ip link set lo up", *STATIC]
    # Edited by hand, with spaces and quotes: still the static address setip would apply,
    # not DHCP beside it.
    setip.conf.write_text("MODE = 'static'\nADDR=10.0.2.15\nPREFIX=24\nGATEWAY=10.0.2.2\nDNS1=10.0.2.3\n")
    assert network_up(setip, tmp_path) == ["ip link set lo up", *STATIC]
    setip.run("--dhcp")
    setip.said()
    assert network_up(setip, tmp_path) == dhcp
