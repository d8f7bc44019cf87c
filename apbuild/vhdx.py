"""The VM's disk for Hyper-V: a dynamic VHDX written by qemu-img, then made reproducible.

qemu-img has no option for the identifiers a VHDX carries, and picks them at random on every
conversion: each header's FileWriteGuid, DataWriteGuid and sequence number, the virtual
disk's Page83Data (its SCSI identity), and the entries it leaves in the metadata log (each
with its own log GUID). Only those bytes differ between two conversions of the same disk,
so they are rewritten here: the GUIDs derived from the disk's content (as a fresh VHDX is
given new ones whenever the data changes), fixed sequence numbers, and the log zeroed. The
log is empty when its header's LogGuid is zero (MS-VHDX 2.2.2.1: nothing to replay), which
this checks first; its old entries are then leftovers no reader looks at.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path

from .errors import ApbuildError
from .files import replacing
from .run import run

HEADERS = (64 << 10, 128 << 10)     # the two header copies; the higher sequence number is current
REGION_TABLE = 192 << 10            # the first of its two identical copies is read
HEADER_SIZE = 4096                  # what a header's checksum covers
METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
PAGE83_DATA = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers; zlib has only CRC-32."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def guid_from(seed: str, purpose: str) -> bytes:
    """A version-4-shaped GUID from the disk's fingerprint, in the file's little-endian order."""
    digest = hashlib.sha256(f"apbuild-vhdx:{purpose}:{seed}".encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4).bytes_le


def _table(f, at: int, signature: bytes, count: tuple[str, int], first: int, out: Path) -> dict[uuid.UUID, bytes]:
    """A VHDX table (region or metadata): a signature, an entry count (its struct format and
    offset), then 32-byte entries from `first`, each starting with its GUID. Returns each
    entry's GUID -> the entry's remaining 16 bytes."""
    f.seek(at)
    table = f.read(64 << 10)
    if not table.startswith(signature):
        raise ApbuildError(f"{out}: no VHDX {signature.decode()} table at {at}; cannot make it reproducible")
    (n,) = struct.unpack_from(count[0], table, count[1])
    entries = [table[first + 32 * i:first + 32 * (i + 1)] for i in range(n)]
    return {uuid.UUID(bytes_le=e[:16]): e[16:] for e in entries}


def _page83_offset(f, out: Path) -> int:
    """Where the Page83Data item lies: region table -> metadata region -> metadata table."""
    regions = _table(f, REGION_TABLE, b"regi", ("<I", 8), 16, out)
    if METADATA_REGION not in regions:
        raise ApbuildError(f"{out}: no metadata region in the VHDX qemu-img wrote; cannot make it reproducible")
    (offset,) = struct.unpack_from("<Q", regions[METADATA_REGION])
    items = _table(f, offset, b"metadata", ("<H", 10), 32, out)
    if PAGE83_DATA not in items:
        raise ApbuildError(f"{out}: no Page83Data in the VHDX metadata qemu-img wrote; cannot make it reproducible")
    (item_offset,) = struct.unpack_from("<I", items[PAGE83_DATA])
    return offset + item_offset


def make_reproducible(out: Path, seed: str) -> None:
    """Rewrite the random identifiers of a VHDX qemu-img has just closed (see the module)."""
    with open(out, "r+b") as f:
        if f.read(8) != b"vhdxfile":
            raise ApbuildError(f"{out}: not a VHDX (no 'vhdxfile' identifier)")
        file_guid, data_guid = guid_from(seed, "file-write"), guid_from(seed, "data-write")
        logs = set()
        for number, at in enumerate(HEADERS, start=1):
            f.seek(at)
            header = bytearray(f.read(HEADER_SIZE))
            if header[:4] != b"head":
                raise ApbuildError(f"{out}: no VHDX header at {at}; cannot make it reproducible")
            if any(header[48:64]):
                # A log to replay is part of the disk's state: zeroing it would lose data.
                raise ApbuildError(f"{out}: qemu-img left the VHDX log non-empty (LogGuid set in "
                                   f"the header at {at}); refusing to rewrite it")
            # Sequence 1 and 2: the second copy is current, as qemu-img leaves it.
            struct.pack_into("<IQ", header, 4, 0, number)
            header[16:32], header[32:48] = file_guid, data_guid
            struct.pack_into("<I", header, 4, crc32c(bytes(header)))
            f.seek(at)
            f.write(header)
            logs.add(struct.unpack_from("<IQ", header, 68))
        if len(logs) != 1:
            raise ApbuildError(f"{out}: the two VHDX headers name different logs {sorted(logs)}")
        ((log_length, log_offset),) = logs
        f.seek(log_offset)
        f.write(bytes(log_length))
        f.seek(_page83_offset(f, out))
        f.write(guid_from(seed, "page83"))


def to_vhdx(raw: Path, out: Path, seed: str) -> Path:
    """Dynamic VHDX (blocks only where the raw disk has data). seed identifies the raw
    disk's content. Written under a temporary name, renamed when reproducible. 1 MiB blocks
    (the smallest Hyper-V takes): qemu-img's default 8 MiB allocates 2 MB more of zeros."""
    with replacing(out) as tmp:
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o",
             "subformat=dynamic,block_size=1M", raw, tmp])
        make_reproducible(tmp, seed)
    return out
