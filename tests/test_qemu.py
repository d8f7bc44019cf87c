"""QEMU command lines (apbuild/qemu.py command()): the network choices."""

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
