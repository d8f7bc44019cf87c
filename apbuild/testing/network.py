"""A private Ethernet segment for several guests: each gets a second NIC on a QEMU socket
netdev that connects to a hub in the test process on 127.0.0.1 (QEMU's socket netdev is
point to point; the hub passes every frame to every other guest, as a switch that floods).
Nothing goes onto the host's network, no multicast. The NIC is "replink0" to QMP: set_link
on it unplugs and replugs the cable, as the guest sees it."""

from __future__ import annotations

import selectors
import socket
import struct
import threading

NIC = "replink0"
MODEL = "virtio-net-pci"


class Hub:
    """Use as a context manager; args() gives each guest's QEMU arguments."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.peers: dict[socket.socket, bytearray] = {}
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hub", daemon=True)

    def args(self, mac: str, model: str = MODEL) -> tuple[str, ...]:
        """A guest's second NIC on this segment; model: the board's (board.qemu.nic)."""
        return ("-netdev", f"socket,id=replink,connect=127.0.0.1:{self.port}",
                "-device", f"{model},netdev=replink,id={NIC},mac={mac}")

    def __enter__(self) -> Hub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in [self.server, *self.peers]:
            s.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.server, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                if key.fileobj is self.server:
                    conn, _ = self.server.accept()
                    self.peers[conn] = bytearray()
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:        # that guest's QEMU is gone (a power cut)
                    sel.unregister(conn)
                    self.peers.pop(conn, None)
                    conn.close()
                    continue
                buf = self.peers[conn]
                buf += data
                # QEMU's stream framing: a 4-byte big-endian length, then the frame.
                while len(buf) >= 4:
                    size = struct.unpack(">I", buf[:4])[0]
                    if len(buf) < 4 + size:
                        break
                    frame = bytes(buf[:4 + size])
                    del buf[:4 + size]
                    self.frames += 1
                    for other in list(self.peers):
                        if other is not conn:
                            try:
                                other.sendall(frame)
                            except OSError:
                                pass
