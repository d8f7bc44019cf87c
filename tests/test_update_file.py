"""The update signing key and the signed .update file, checked the way the device checks them
(openssl pkeyutl -verify -rawin against the public key the image carries)."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from apbuild import signing, update
from apbuild.errors import ApbuildError


def device_verifies(public: Path, manifest: bytes, signature: bytes, tmp: Path) -> bool:
    (tmp / "m").write_bytes(manifest)
    (tmp / "s").write_bytes(signature)
    rc = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", public, "-rawin",
                         "-in", tmp / "m", "-sigfile", tmp / "s"], capture_output=True).returncode
    return rc == 0


@pytest.fixture
def boot_img(tmp_path: Path) -> Path:
    img = tmp_path / "boot.img"
    img.write_bytes(bytes(range(256)) * 4096)
    return img


def test_keygen_makes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    key = signing.keygen(tmp_path / "keys")
    assert key.private.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PUBLIC KEY" in key.public_pem and b"PRIVATE" not in key.public_pem
    with pytest.raises(ApbuildError, match=r"update-signing.key exists"):
        signing.keygen(tmp_path / "keys")


def test_update_file_members_manifest_and_signature(tmp_path, boot_img):
    key = signing.keygen(tmp_path / "keys")
    out = update.make("app-platform-x", "140002", boot_img, key, tmp_path / "x.update", 1700000000)
    assert not list(tmp_path.glob(".*.part"))
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["update.manifest", "update.manifest.sig", "boot.img"]
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
        manifest = tar.extractfile("update.manifest").read()
        signature = tar.extractfile("update.manifest.sig").read()
        assert tar.extractfile("boot.img").read() == boot_img.read_bytes()
    fields = update.parse_manifest(manifest)
    assert fields == {"format": "1", "platform": "app-platform-x", "version": "140002",
                      "boot_size": str(boot_img.stat().st_size),
                      "boot_sha256": hashlib.sha256(boot_img.read_bytes()).hexdigest()}
    assert len(signature) == 64
    assert device_verifies(key.public, manifest, signature, tmp_path)
    # One changed byte of the manifest, or another key: the device refuses.
    assert not device_verifies(key.public, manifest.replace(b"140002", b"140003"), signature, tmp_path)
    other = signing.keygen(tmp_path / "other")
    assert not device_verifies(other.public, manifest, signature, tmp_path)


def test_same_inputs_same_update_file(tmp_path, boot_img):
    key = signing.keygen(tmp_path / "keys")
    a = update.make("p", "1", boot_img, key, tmp_path / "a.update", 0).read_bytes()
    b = update.make("p", "1", boot_img, key, tmp_path / "b.update", 0).read_bytes()
    assert a == b  # ed25519 signatures are deterministic


def test_signing_without_the_private_key_says_how_to_make_one(tmp_path, boot_img):
    key = signing.key_in(tmp_path / "none")
    with pytest.raises(ApbuildError, match=r"update-signing.key.*\./build.py keygen"):
        update.make("p", "1", boot_img, key, tmp_path / "a.update", 0)
    assert not (tmp_path / "a.update").exists()


def test_the_build_key_is_made_once_and_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("APBUILD_KEY_DIR", str(tmp_path / "k"))
    first = signing.ensure_key(signing.default_dir())
    again = signing.ensure_key(signing.default_dir())
    assert first.public_pem == again.public_pem and first.private.exists()


@pytest.mark.parametrize("layout,slot_mib", [("vm", 175), ("gateway", 100)])
def test_an_update_slot_is_half_the_boot_reserve_in_whole_mib(layout, slot_mib):
    from apbuild.config import find_root, load_layout
    from apbuild.layout import place

    boot = place(load_layout(find_root() / "partitions" / f"{layout}.toml"))[0]
    assert boot.update_slot_sectors == slot_mib * 2048
    assert boot.update_slot_sectors * 2 <= boot.reserved_sectors
