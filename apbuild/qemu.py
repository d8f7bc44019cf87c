"""QEMU command lines for a board: one place for `./build.py run` and the QEMU tests.

TCG unless KVM is proven: on our machines /dev/kvm opens but Linux guests hang under it
(DESIGN §7), so KVM is used only when a probe boot succeeds (choose_accel) or when
APBUILD_QEMU_ACCEL=kvm forces it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from . import log
from .board import Board
from .disk import read_table
from .errors import ApbuildError, CommandTimeout
from .files import locked, replacing
from .run import run


@dataclasses.dataclass(frozen=True)
class Launch:
    argv: list[str]
    qmp_socket: Path | None
    forwards: dict[int, int]
    binary: str          # QEMU itself (argv may start with a wrapper)


def probe_kvm(board: Board, kernel: Path, cache_dir: Path, timeout: float = 10) -> bool:
    """Does a Linux guest really run under KVM here? Boot the board's kernel without a root
    filesystem: reaching its "Unable to mount root fs" panic proves it (TCG, emulating every
    instruction, gets there in 4 s; KVM runs them natively). On our machines KVM opens but
    the guest hangs right after decompression, spinning a host CPU until the timeout, so
    opening /dev/kvm proves nothing. The answer is remembered per host kernel, QEMU and guest
    kernel; processes that ask at once (the test workers) wait for one probe, not one each.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    ident = f"{os.uname().release}|{version_of(board.qemu.binary)}|{kernel.stat().st_size}"
    stamp = cache_dir / "kvm-probe" / hashlib.sha256(ident.encode()).hexdigest()[:16]
    with locked(stamp.with_name(f"{stamp.name}.lock")):
        if stamp.exists():
            return stamp.read_text() == "kvm"
        works = kernel_boots(board, kernel, "kvm", timeout)
        with replacing(stamp) as tmp:
            tmp.write_text("kvm" if works else "tcg")
    log.detail(f"KVM probe: {'Linux boots under KVM' if works else 'no Linux boot under KVM, using TCG'}")
    return works


def kernel_boots(board: Board, kernel: Path, accel: str, timeout: float) -> bool:
    """Boot the kernel alone; True if it runs to its "Unable to mount root fs" panic."""
    argv = [board.qemu.binary, "-M", board.qemu.machine, "-accel", accel, "-m", "256",
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    try:
        proc = run(argv, check=False, timeout=timeout)
    except CommandTimeout:
        return False
    return b"Unable to mount root fs" in proc.stdout


def choose_accel(board: Board, kernel: Path | None, cache_dir: Path) -> str:
    """APBUILD_QEMU_ACCEL=tcg|kvm forces; 'auto' (the default) uses KVM only if a probe boots."""
    wanted = os.environ.get("APBUILD_QEMU_ACCEL", "auto")
    if wanted in ("tcg", "kvm"):
        return wanted
    if kernel is None or board.qemu.binary != f"qemu-system-{os.uname().machine}":
        return "tcg"
    return "kvm" if probe_kvm(board, kernel, cache_dir) else "tcg"


@dataclasses.dataclass(frozen=True)
class LoaderBoot:
    mode: str          # "normal" or "rescue"
    kernel: Path
    initrd: Path
    append: str

    def qemu_args(self) -> dict[str, Any]:
        """The keyword arguments of command() that boot it."""
        return {"kernel": self.kernel, "initrd": self.initrd, "append": self.append}


# What a Linux guest prints when it resets (not when it powers off): with -no-reboot, the
# sign that the emulated gateway loader must start the next boot.
RESET_MARKER = b"reboot: Restarting system"


def _read_fat(disk: Path, offset: int, names: dict[str, str]) -> dict[str, bytes | None]:
    """The files `names` (key -> file name) of the FAT at `offset` in the raw disk, None for
    a missing one. Names compare without case, as the firmware's FAT driver does. Read with
    pyfatfs (no subprocess per file); mtools where pyfatfs is not installed (Debian lacks it)."""
    try:
        from pyfatfs.PyFatFS import PyFatFS
    except ImportError:
        return _read_fat_mtools(disk, offset, names)
    with warnings.catch_warnings():
        # The guest resets with sda1 mounted, so its dirty bit is mostly set; the firmware
        # reads such a FAT too, and so does the loader (read-only, nothing to repair).
        warnings.filterwarnings("ignore", "Filesystem was not cleanly unmounted")
        fat = PyFatFS(str(disk), offset=offset, read_only=True)
    try:
        present = {name.lower(): name for name in fat.listdir("/")}
        return {key: fat.readbytes(present[name.lower()]) if name.lower() in present else None
                for key, name in names.items()}
    finally:
        fat.close()


def _read_fat_mtools(disk: Path, offset: int, names: dict[str, str]) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for key, name in names.items():
        read = run(["mtype", "-i", f"{disk}@@{offset}", f"::{name}"], check=False,
                   env={"MTOOLS_SKIP_CHECK": "1"})
        found[key] = read.stdout if read.returncode == 0 else None
    return found


def gateway_loader(board: Board, disk: Path, workdir: Path) -> LoaderBoot:
    """Play the gateway's firmware: read the mode file on the disk's FAT32 sda1, take kernel
    and initrd from there and boot normal (root=/dev/sda3) or rescue (root=/dev/ram0).
    The disk must be raw: that is what the firmware reads."""
    sda1 = next(p for p in read_table(disk)[1] if p.number == 1)
    names = board.boot_files
    files = _read_fat(disk, sda1.start,
                      {key: names[key] for key in ("mode", "kernel", "ramdisk")})
    for key in ("kernel", "ramdisk"):
        if files[key] is None:
            raise ApbuildError(f"{disk}: sda1 has no {names[key]} ({key}): the gateway cannot boot")
    chosen = (files["mode"] or b"").decode(errors="replace").strip()
    chosen = chosen if chosen in ("normal", "rescue") else "rescue"  # a lost mode file: rescue
    workdir.mkdir(parents=True, exist_ok=True)
    kernel, initrd = workdir / "loader-kernel", workdir / "loader-initrd"
    kernel.write_bytes(files["kernel"] or b"")
    initrd.write_bytes(files["ramdisk"] or b"")
    root = "root=/dev/sda3 rootwait" if chosen == "normal" else "root=/dev/ram0 ramdisk_size=100000"
    return LoaderBoot(chosen, kernel, initrd, f"{root} {board.kernel.cmdline}".strip())


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n different free ports on the loopback: the sockets stay bound until all are chosen (the
    kernel hands a port just closed out again, so one at a time gave two forwards one port)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _disk_args(board: Board, disk: Path, cache: str, snapshot: bool) -> list[str]:
    fmt = {".qcow2": "qcow2", ".vhdx": "vhdx"}.get(disk.suffix, "raw")
    drive = f"file={disk},if=none,id=disk0,format={fmt},cache={cache}"
    if snapshot:
        drive += ",snapshot=on"
    kind = board.qemu.disk
    if kind == "virtio-scsi":
        return ["-device", "virtio-scsi-pci,id=scsi0", "-drive", drive,
                "-device", "scsi-hd,drive=disk0,bus=scsi0.0"]
    if kind == "ahci":
        return ["-device", "ahci,id=ahci0", "-drive", drive, "-device", "ide-hd,drive=disk0,bus=ahci0.0"]
    if kind == "ide":
        return ["-drive", drive, "-device", "ide-hd,drive=disk0,bus=ide.0"]
    if kind in ("lsi53c895a", "pvscsi"):  # SCSI HBAs: QEMU's LSI (sym53c8xx), VMware's PVSCSI
        return ["-device", f"{kind},id=scsi0", "-drive", drive, "-device", "scsi-hd,drive=disk0,bus=scsi0.0"]
    return ["-drive", drive, "-device", "virtio-blk-pci,drive=disk0"]


def command(board: Board, disk: Path, *, serial: str = "stdio", qmp_socket: Path | None = None,
            forwards: dict[int, int] | None = None, accel: str | None = None, snapshot: bool = False,
            cache: str = "writeback", kernel: Path | None = None, initrd: Path | None = None,
            append: str | None = None, extra: tuple[str, ...] = (), netdev: str | None = None,
            wrapper: tuple[str, ...] = (), no_reboot: bool = False) -> Launch:
    """forwards: guest TCP port -> host port on 127.0.0.1 (user-mode networking).
    netdev: a QEMU -netdev backend for the board's NIC instead of user-mode networking, e.g.
    "tap,ifname=tap0,script=no,downscript=no" (a network the caller made; no forwards then).
    wrapper: a command QEMU runs under, e.g. ("ip", "netns", "exec", NAME) to put it in a
    network namespace, where that tap lives.
    no_reboot: QEMU exits at a guest reset (a gateway's QEMU always does), for a caller that
    starts the next boot itself (the test harness)."""
    forwards = dict(forwards or {})
    if netdev is not None and forwards:
        raise ValueError(f"port forwards {forwards} need user-mode networking, not netdev {netdev!r}")
    accel = accel or os.environ.get("APBUILD_QEMU_ACCEL", "tcg")
    if accel == "auto":
        accel = "tcg"
    q = board.qemu
    if accel == "tcg" and q.tcg_thread == "single":
        accel = "tcg,thread=single"
    argv = [*wrapper, q.binary, "-M", q.machine, "-accel", accel, "-m", str(board.ram_mb),
            "-smp", str(board.cpus), "-display", "none", "-monitor", "none", "-serial", serial]
    if q.cpu:
        argv += ["-cpu", q.cpu]
    argv += _disk_args(board, disk, cache, snapshot)
    if netdev is not None:
        argv += ["-netdev", f"{netdev},id=net0", "-device", f"{q.nic},netdev=net0"]
    else:
        nic = f"user,model={q.nic}" + "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in forwards.items())
        argv += ["-nic", nic]
    if no_reboot or board.bootloader == "gateway":
        argv.append("-no-reboot")  # the caller (the harness, the gateway loader) starts the next boot
    if qmp_socket is not None:
        argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if kernel is not None:
        argv += ["-kernel", str(kernel)]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    if append is not None:
        argv += ["-append", append]
    argv += [*q.extra, *extra]
    return Launch(argv, qmp_socket, forwards, q.binary)


def describe_host(binary: str) -> str:
    """What Buildroot's emulator logs before a boot: CPUs, load, QEMU version."""
    load = os.getloadavg()
    return (f"host: {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"{version_of(binary) or binary}")


def version_of(binary: str) -> str:
    """The first line of `qemu --version` ('' if it says nothing)."""
    lines = run([binary, "--version"], check=False).stdout.decode(errors="replace").splitlines()
    return lines[0] if lines else ""


def log_launch(launch: Launch) -> None:
    # The command itself is logged by the door it goes through (run.interactive, spawn).
    log.detail(describe_host(launch.binary))
