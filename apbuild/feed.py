"""The update feed: a static directory that any web server, object store or CDN can serve.

  index                         the signed index: for each platform the latest version, its
                                update file, size and SHA-256, and the lowest installed
                                version it may update
  <platform>-<version>.update   the signed update files (update.py)

The index is key=value lines (`app-platform-x86_64.version=140002`), read on the device
with sed. Its last line is `signature=` and the base64 ed25519 signature of every byte before
that line, made with the update key: the signature is inside the file, as in Debian's
InRelease, so one rename publishes index and signature together and a device never reads
an index beside another index's signature. Devices check it with the image's public key;
that signature, not the TLS certificate, is what they trust.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path

from . import update
from .cache import sha256_file
from .errors import ApbuildError
from .files import atomic_write, locked
from .signing import SigningKey, sign, verify

INDEX = "index"
FORMAT = "1"
SIGNATURE = b"signature="
# The fields of a platform's entry, in the order the index lists them.
FIELDS = ("version", "file", "size", "sha256", "min_version")
_PLATFORM = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclasses.dataclass(frozen=True)
class Entry:
    platform: str
    version: str        # the image label, a whole number (the manual's 140002)
    file: str           # the update's name in the feed directory
    size: int
    sha256: str
    min_version: str    # devices with an older image must take an earlier update first

    def lines(self) -> list[str]:
        return [f"{self.platform}.{f}={getattr(self, f)}" for f in FIELDS]


def render(entries: dict[str, Entry]) -> bytes:
    """The index's body, the part the signature covers: sorted, so publishing the same
    entries again writes the same bytes."""
    lines = [f"format={FORMAT}"] + [line for p in sorted(entries) for line in entries[p].lines()]
    return ("\n".join(lines) + "\n").encode()


def signed(body: bytes, key: SigningKey, work: Path) -> bytes:
    return body + SIGNATURE + base64.b64encode(sign(key, body, work)) + b"\n"


def split(data: bytes, where: Path) -> tuple[bytes, bytes]:
    """(body, signature) of an index; raises naming the file when it has no signature line."""
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    if not last.startswith(SIGNATURE):
        raise ApbuildError(f"{where}: not a signed feed index (its last line is not 'signature=...')")
    try:
        return body + b"\n", base64.b64decode(last[len(SIGNATURE):], validate=True)
    except ValueError:
        raise ApbuildError(f"{where}: the signature line is not base64") from None


def parse(body: bytes, where: Path) -> dict[str, Entry]:
    values: dict[str, str] = {}
    for n, line in enumerate(body.decode().splitlines(), 1):
        name, sep, value = line.partition("=")
        if not sep:
            raise ApbuildError(f"{where}:{n}: '{line}' is not KEY=value")
        values[name] = value
    if values.pop("format", None) != FORMAT:
        raise ApbuildError(f"{where}: format must be {FORMAT}")
    platforms = {k.rpartition(".")[0] for k in values}
    entries = {}
    for p in sorted(platforms):
        try:
            fields = {f: values.pop(f"{p}.{f}") for f in FIELDS}
        except KeyError as e:
            raise ApbuildError(f"{where}: {e.args[0]}: missing (each platform has {', '.join(FIELDS)})") from None
        entries[p] = Entry(p, fields["version"], fields["file"], int(fields["size"]), fields["sha256"],
                           fields["min_version"])
    if values:
        raise ApbuildError(f"{where}: unknown keys {', '.join(sorted(values))}")
    return entries


def read(feed: Path, key: SigningKey) -> dict[str, Entry]:
    """The feed's entries, checked against key's public half; none for a new feed."""
    index = feed / INDEX
    if not index.exists():
        return {}
    body, signature = split(index.read_bytes(), index)
    if not verify(key.public, body, signature, feed):
        raise ApbuildError(f"{index}: signed with another key than {key.public} (fingerprint "
                           f"{key.fingerprint}): devices built with either would refuse the other's entries")
    return parse(body, index)


def _check(platform: str, version: str, min_version: str) -> None:
    if not _PLATFORM.match(platform):
        raise ApbuildError(f"platform '{platform}': lower-case letters, digits, '-' and '_' only")
    for what, value in (("version", version), ("--min-version", min_version)):
        if not value.isdigit():
            raise ApbuildError(f"{what} '{value}': a whole number like the manual's labels (e.g. 140002)")
    if int(min_version) > int(version):
        raise ApbuildError(f"--min-version {min_version} is above the version published ({version})")


def publish(feed: Path, platform: str, version: str, boot_img: Path, key: SigningKey, epoch: int,
            min_version: str = "0") -> Entry:
    """Add the update of boot_img to the feed and make it the platform's latest. An older
    version than the feed's is refused: devices would refuse it anyway (anti-rollback)."""
    _check(platform, version, min_version)
    feed.mkdir(parents=True, exist_ok=True)
    # Two publishes into one feed at once would each rewrite the index from what they read.
    with locked(feed / ".publish.lock"):
        entries = read(feed, key)
        if (current := entries.get(platform)) and int(version) < int(current.version):
            raise ApbuildError(f"{feed / INDEX}: {platform} is at {current.version} there, {version} is "
                               f"older: devices refuse older images; publish it to another feed")
        name = update.file_name(platform, version)
        assert _FILE.match(name), name
        out = update.make(platform, version, boot_img, key, feed / name, epoch)
        entry = Entry(platform, version, name, out.stat().st_size, sha256_file(out), min_version)
        entries[platform] = entry
        atomic_write(feed / INDEX, signed(render(entries), key, feed))
    return entry
