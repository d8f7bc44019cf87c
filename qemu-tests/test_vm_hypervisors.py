"""x86_64-vm on every hypervisor: the QEMU guest agent (virtio-serial and ISA serial),
open-vm-tools staying quiet off VMware, `loadkeys de`, and every disk controller and NIC
a hypervisor may give the VM, and the .vhdx Hyper-V gets.

Boots are few on purpose (each costs ~15-30 s under TCG): the run's installed disk
(apbuild.testing.installed) booted on virtio-scsi/virtio-net with the agent on
virtio-serial, then once per other controller, each with another NIC; the q35/AHCI boot also carries the ISA agent. The
VHDX gets one install + normal boot of its own (it is another file: it must install too).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from apbuild.testing import scratch
from apbuild.testing.accounts import ROOT
from apbuild.testing.disks import partitions
from apbuild.testing.machine import Machine, scaled

pytestmark = pytest.mark.vm

DELIMITER = b"\xff"  # qemu-ga resets its JSON parser on it and puts it before a delimited reply


class GuestAgent:
    """The host side of a QEMU guest agent channel (a chardev unix socket QEMU listens on).

    The agent may start long after the host connects, and whatever was sent before it
    opened the port is answered late or lost: so talk only after guest-sync-delimited with
    a fresh id has been answered, and skip the replies to older syncs.
    """

    def __init__(self, path: Path, timeout: float = 20) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.buf = b""

    def _line(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("guest agent socket closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def _send(self, name: str, **args) -> None:
        self.sock.sendall(json.dumps({"execute": name, **({"arguments": args} if args else {})}).encode() + b"\n")

    def sync(self, timeout: float = 240) -> float:
        """Wait until the agent answers; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + scaled(timeout)
        while time.monotonic() < deadline:
            token = uuid.uuid4().int & 0x7FFFFFFF
            self.sock.sendall(DELIMITER)
            self._send("guest-sync-delimited", id=token)
            try:
                while True:
                    line = self._line(5).split(DELIMITER)[-1].strip()
                    if line and json.loads(line).get("return") == token:
                        return time.monotonic() - start
            except (socket.timeout, json.JSONDecodeError):
                continue
        raise AssertionError(f"no answer from the guest agent within {scaled(timeout):.0f}s")

    def cmd(self, name: str, **args):
        self._send(name, **args)
        reply = json.loads(self._line(scaled(30)).split(DELIMITER)[-1])
        assert "error" not in reply, f"{name}: {reply['error']}"
        return reply["return"]

    def shutdown(self) -> None:
        """guest-shutdown has no reply on success: the guest just goes away."""
        self._send("guest-shutdown", mode="powerdown")

    def close(self) -> None:
        self.sock.close()


def agent_socket() -> Path:
    return Path(f"/tmp/apbuild-qga-{uuid.uuid4().hex[:12]}.sock")  # unix paths are short


def virtio_agent(path: Path) -> tuple[str, ...]:
    return ("-device", "virtio-serial", "-chardev", f"socket,path={path},server=on,wait=off,id=qga0",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0")


def isa_agent(path: Path) -> tuple[str, ...]:
    # After -serial (the console, ttyS0), so it is the second UART: ttyS1.
    return ("-chardev", f"socket,path={path},server=on,wait=off,id=qga1", "-device", "isa-serial,chardev=qga1")


def on_hardware(board, *, machine: str, disk: str, nic: str):
    return dataclasses.replace(board, qemu=dataclasses.replace(board.qemu, machine=machine, disk=disk, nic=nic))


def shut_down_by_agent(m: Machine, agent: GuestAgent) -> None:
    """guest-ping, guest-info, then guest-shutdown: QEMU exits after a clean power-off."""
    assert agent.cmd("guest-ping") == {}
    info = agent.cmd("guest-info")
    assert info["version"].startswith("7.2"), info["version"]
    enabled = {c["name"] for c in info["supported_commands"] if c["enabled"]}
    assert {"guest-shutdown", "guest-ping", "guest-info"} <= enabled
    agent.shutdown()
    m.wait_exit(120)
    log = m.log_path.read_bytes().decode(errors="replace")
    # busybox init ran its shutdown actions (rcK, umount -a -r, swapoff) and powered off.
    assert "Requesting system poweroff" in log, m.tail()
    assert "reboot: Power down" in log, m.tail()


def assert_clean_filesystems(disk: Path, tmp: Path) -> None:
    """After the power-off, sda2 and sda3 are marked clean (unmounted or read-only)."""
    raw = tmp / "after-shutdown.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    try:
        for number in (2, 3):
            head = subprocess.run(["dumpe2fs", "-h", f"{raw}?offset={partitions(raw)[number].start}"],
                                  check=True, capture_output=True, text=True).stdout
            assert re.search(r"^Filesystem state:\s+clean$", head, re.M), f"sda{number}:\n{head}"
            assert "needs_recovery" not in head, f"sda{number} needs journal recovery"
    finally:
        raw.unlink(missing_ok=True)


def check_controller_and_nic(m: Machine, scsi_host: str, nic_driver: str) -> None:
    """Root on sda3 through the given controller, the manager answering through the NIC."""
    assert re.search(r"^/dev/sda3 / ext4 ", m.ok("cat /proc/mounts"), re.M)
    if scsi_host:
        assert scsi_host in m.ok("cat /sys/class/scsi_host/host*/proc_name").split()
    else:   # virtio-blk: no SCSI host; the sda names lead to vda
        assert m.ok("readlink /dev/sda3") == "vda3"
        assert re.search(r"^/dev/sda2 /mnt/sda2 ext4 ", m.ok("cat /proc/mounts"), re.M)
    assert m.ok("basename $(readlink /sys/class/net/eth0/device/driver)") == nic_driver
    m.wait_http("/manager/ramdisk.log", 120)  # answers without the admin password


@pytest.fixture(scope="module")
def virtio_vm(request, vm_build, installed, logdir, accel):
    """The installed VM on virtio-scsi + virtio-net with the agent on virtio-serial."""
    project, _ = vm_build
    with scratch(request, "hypervisors") as tmp:
        disk = installed(project.board.name, tmp, "vm")
        qga = agent_socket()
        m = Machine(project.board, disk, logdir, name="hv-virtio", accel=accel, extra=virtio_agent(qga))
        try:
            m.start()
            m.login(*ROOT, 300)
            m.boot_log = m.log_path.read_bytes().decode(errors="replace")
            m.agent_path = qga
            m.tmp = tmp
            yield m
        finally:
            m.kill()
            qga.unlink(missing_ok=True)


def test_open_vm_tools_is_quiet_off_vmware(virtio_vm):
    m = virtio_vm
    # Nothing of it on the console during the boot: no error, no message at all.
    noise = [line for line in m.boot_log.splitlines() if re.search(r"(?i)vmware|vmtools|open-vm|vmci", line)]
    assert noise == [], noise
    out, rc = m.run("/etc/init.d/S60vmtools status")
    assert rc == 3 and "not VMware" in out, out
    # The tools themselves run here (every library resolves) and refuse cleanly: exit 1,
    # not a crash, and no daemon is left behind to loop.
    out, rc = m.run("vmware-checkvm 2>&1")
    assert rc == 1 and "VMware hypervisor" in out, out
    assert m.run("vmtoolsd >/dev/null 2>&1")[1] == 1
    assert m.run("pidof vmtoolsd")[1] == 1


def test_loadkeys_de_switches_the_console_to_german(virtio_vm):
    m = virtio_vm

    def key(code: int) -> str:
        """The plain symbol on a key in the console's loaded map (dumpkeys reads /dev/tty0)."""
        line = m.ok(f"dumpkeys 2>/dev/null | grep -E '^keycode +{code} =' | head -1")
        return line.split("=")[1].split()[0].lstrip("+")

    assert (key(21), key(44)) == ("y", "z")  # the kernel's US map
    m.ok("loadkeys de")
    assert (key(21), key(44)) == ("z", "y")  # German QWERTZ: z and y swap
    assert m.run("loadkeys no-such-layout 2>&1")[1] != 0
    m.ok("loadkeys us")
    assert (key(21), key(44)) == ("y", "z")


def test_guest_agent_on_virtio_serial_and_clean_shutdown(virtio_vm):
    m = virtio_vm
    check_controller_and_nic(m, "virtio_scsi", "virtio_net")
    assert "virtio" in m.ok("/etc/init.d/S20qemu-ga status")
    agent = GuestAgent(m.agent_path)
    try:
        agent.sync(60)
        shut_down_by_agent(m, agent)
    finally:
        agent.close()
    assert_clean_filesystems(m.disk, m.tmp)


HARDWARE = [
    # (id, machine, disk, NIC, SCSI host name, NIC driver): VirtualBox/q35 SATA, QEMU's
    # LSI, VMware's PVSCSI + VMXNET3, and plain IDE. VMware's "LSI Logic" (mptspi) is in
    # the ramdisk too, but QEMU cannot emulate it.
    ("q35-ahci-e1000e-isa-agent", "q35", "ahci", "e1000e", "ahci", "e1000e"),
    ("lsi-e1000", "pc", "lsi53c895a", "e1000", "sym53c8xx", "e1000"),
    ("pvscsi-vmxnet3", "pc", "pvscsi", "vmxnet3", "vmw_pvscsi", "vmxnet3"),
    ("ide-e1000", "pc", "ide", "e1000", "ata_piix", "e1000"),
    # VirtIO Block (QEMU's -drive if=virtio): the disk is vda, the sda names point at it.
    ("virtio-blk-virtio-net", "pc", "virtio-blk", "virtio-net-pci", "", "virtio_net"),
]


@pytest.mark.parametrize("name,machine,disk,nic,scsi_host,nic_driver", HARDWARE, ids=[h[0] for h in HARDWARE])
def test_boots_on_controller_and_nic(virtio_vm, logdir, accel, name, machine, disk, nic, scsi_host, nic_driver):
    base = virtio_vm
    if base.child is not None and base.child.isalive():  # run alone (-k): the disk is busy
        base.send("poweroff\n")
        base.wait_exit(120)
    board = on_hardware(base.board, machine=machine, disk=disk, nic=nic)
    qga = agent_socket() if "isa-agent" in name else None
    extra = isa_agent(qga) if qga else ()
    # The ISA-agent boot shuts down by the agent and is checked clean: it writes the disk.
    with Machine(board, base.disk, logdir, name=f"hv-{name}", accel=accel, snapshot=qga is None,
                 extra=extra) as m:
        start = time.monotonic()
        m.expect_boot(f"App Platform {base.board.image_version}")
        m.login(*ROOT, 300)
        print(f"{name}: login after {time.monotonic() - start:.1f}s")
        check_controller_and_nic(m, scsi_host, nic_driver)
        if qga is None:
            return
        assert "isa" in m.ok("/etc/init.d/S20qemu-ga status")
        agent = GuestAgent(qga)
        try:
            agent.sync(60)
            shut_down_by_agent(m, agent)
        finally:
            agent.close()
            qga.unlink(missing_ok=True)
    assert_clean_filesystems(base.disk, base.tmp)


def test_vhdx_installs_and_boots_as_a_generation_1_disk(vm_build, tmp_path, logdir, accel):
    """The .vhdx as the VM's only disk, on IDE (a Hyper-V generation 1 VM boots from its IDE
    controller): the first boot installs onto it, the normal boot logs in, the manager
    answers, and qemu-img finds the written VHDX consistent. QEMU has no VMBus, so this
    proves the file and the image on it, not hv_storvsc, hv_netvsc or hv_utils."""
    project, result = vm_build
    disk = tmp_path / "hyperv.vhdx"
    shutil.copyfile(result.outputs["vhdx"], disk)  # opened for writing, QEMU rewrites its headers
    board = on_hardware(project.board, machine="pc", disk="ide", nic="e1000")
    with Machine(board, disk, logdir, name="hv-vhdx", accel=accel) as m:
        m.install(project.board.image_version)
        check_controller_and_nic(m, "ata_piix", "e1000")
        # Off Hyper-V the VMBus refuses to load, and nothing that needs it is loaded either.
        assert m.run("[ -d /sys/bus/vmbus ]")[1] != 0
        assert not re.search(r"^hv_", m.ok("cat /proc/modules"), re.M)
        m.send("poweroff\n")
        m.wait_exit(120)
    subprocess.run(["qemu-img", "check", "-q", "-f", "vhdx", str(disk)], check=True)
