"""QEMU command lines (apbuild/qemu.py command()): the network choices; the KVM probe."""

import concurrent.futures
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from apbuild.config import find_root, load_board
from apbuild.qemu import command

BOARD = load_board(find_root() / "boards" / "x86_64-vm.toml")
DISK = Path("/nonexistent/vm.qcow2")


def test_user_mode_network_with_forwards_by_default():
    launch = command(BOARD, DISK, forwards={22: 2222})
    nic = launch.argv[launch.argv.index("-nic") + 1]
    assert nic == "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22"
    assert launch.argv[0] == launch.binary == "qemu-system-x86_64"


def test_a_netdev_replaces_user_mode_networking_and_a_wrapper_comes_first():
    launch = command(BOARD, DISK, netdev="tap,ifname=tap0,script=no,downscript=no",
                     wrapper=("ip", "netns", "exec", "ns1"))
    assert launch.argv[:5] == ["ip", "netns", "exec", "ns1", "qemu-system-x86_64"]
    assert launch.binary == "qemu-system-x86_64"
    assert "-nic" not in launch.argv
    i = launch.argv.index("-netdev")
    assert launch.argv[i:i + 4] == ["-netdev", "tap,ifname=tap0,script=no,downscript=no,id=net0",
                                    "-device", "virtio-net-pci,netdev=net0"]


def test_forwards_need_user_mode_networking():
    with pytest.raises(ValueError, match="need user-mode networking"):
        command(BOARD, DISK, forwards={22: 2222}, netdev="tap,ifname=tap0")


def test_tcg_runs_ipx13s_two_cpus_on_one_thread_and_kvm_is_left_as_it_is():
    ipx13 = load_board(find_root() / "boards" / "ipx13.toml")
    assert (ipx13.cpus, ipx13.qemu.tcg_thread) == (2, "single")

    def accel(board, how: str) -> str:
        argv = command(board, DISK, accel=how).argv
        return argv[argv.index("-accel") + 1]

    assert accel(ipx13, "tcg") == "tcg,thread=single"
    assert accel(ipx13, "kvm") == "kvm"          # the option is TCG's; KVM runs a thread per CPU
    assert accel(BOARD, "tcg") == "tcg"          # QEMU's default: a thread per CPU


def test_no_reboot_is_asked_for_or_the_gateways_own():
    """QEMU exits at a guest reset when the caller starts the next boot itself (the test
    harness, for every board), and always for a gateway (its emulated loader); ./build.py run
    keeps the VM's reboot in its QEMU."""
    ipx13 = load_board(find_root() / "boards" / "ipx13.toml")
    assert "-no-reboot" not in command(BOARD, DISK).argv
    assert command(BOARD, DISK, no_reboot=True).argv.count("-no-reboot") == 1
    assert command(ipx13, DISK).argv.count("-no-reboot") == 1
    assert command(ipx13, DISK, no_reboot=True).argv.count("-no-reboot") == 1


def test_free_ports_are_different_ones():
    from apbuild.qemu import free_ports
    for _ in range(20):
        ports = free_ports(4)
        assert len(set(ports)) == 4, ports


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed")
def test_a_taken_port_is_chosen_again_and_qemus_own_error_is_kept(tmp_path):
    """Another process binds one of a guest's ports before QEMU does: QEMU stops at once with
    its own line; the harness logs it and starts again with other ports (a blank disk: the
    firmware runs, nothing boots)."""
    from apbuild.testing.machine import Machine
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        m = Machine(BOARD, disk, tmp_path, name="ports", accel="tcg")
        m.ports[80] = port
        with m:
            assert m.child.isalive() and m.boots == 1
            assert m.ports[80] != port
    log = (tmp_path / "ports.serial.log").read_text()
    assert f"Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-:80'" in log, log


def test_workers_that_ask_at_once_wait_for_one_kvm_probe(tmp_path, monkeypatch):
    """A hanging KVM guest spins a host CPU until the probe's timeout: three test workers
    asking at once must not spin three. The first probes; the others read its answer."""
    from apbuild import qemu

    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    probes = []

    def slow_probe(board, kernel, accel, timeout):
        probes.append(accel)
        time.sleep(0.5)
        return False

    monkeypatch.setattr(qemu.os, "access", lambda path, mode: True)
    monkeypatch.setattr(qemu, "version_of", lambda binary: "QEMU emulator version 7.2.0")
    monkeypatch.setattr(qemu, "kernel_boots", slow_probe)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: qemu.probe_kvm(BOARD, kernel, tmp_path), range(3)))
    assert answers == [False, False, False] and probes == ["kvm"]
    stamp = [p for p in (tmp_path / "kvm-probe").iterdir() if p.suffix != ".lock"]
    assert [p.read_text() for p in stamp] == ["tcg"]
