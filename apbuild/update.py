"""The signed update file a device's manager accepts: <platform>-<version>.update.

A tar (readable by busybox tar on the device) of three members:
  update.manifest      platform, version, size and SHA-256 of boot.img (key=value lines)
  update.manifest.sig  the raw ed25519 signature of update.manifest
  boot.img             the new sda1 filesystem, exactly as in the installation image
Signing the small manifest, not the 40 MB image, lets the device check the signature in
memory and then stream the image through sha256sum.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from .files import replacing, tar_member
from .signing import SigningKey, sign

MANIFEST, SIGNATURE, BOOT = "update.manifest", "update.manifest.sig", "boot.img"


def file_name(platform: str, version: str) -> str:
    return f"{platform}-{version}.update"


def manifest(platform: str, version: str, boot_img: Path) -> bytes:
    h = hashlib.sha256()
    with open(boot_img, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return (f"format=1\nplatform={platform}\nversion={version}\n"
            f"boot_size={boot_img.stat().st_size}\nboot_sha256={h.hexdigest()}\n").encode()


def parse_manifest(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)


def make(platform: str, version: str, boot_img: Path, key: SigningKey, out: Path, epoch: int) -> Path:
    """Write the update file under a temporary name, then rename it into place."""
    text = manifest(platform, version, boot_img)
    signature = sign(key, text, out.parent)
    # Owner names "root": what the device's tar would write, and what it reads back.
    with replacing(out) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((MANIFEST, text), (SIGNATURE, signature)):
            tar.addfile(tar_member(name, epoch, size=len(data), owner="root"), io.BytesIO(data))
        with open(boot_img, "rb") as f:
            tar.addfile(tar_member(BOOT, epoch, size=boot_img.stat().st_size, owner="root"), f)
    return out
