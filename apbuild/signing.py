"""The update signing key: ed25519, made by `./build.py keygen`, kept outside the work tree.

The image carries only the public key (/etc/apbuild/update-signing.pub); the device checks an
uploaded update's manifest with `openssl pkeyutl -verify -rawin`, so the host signs with
the same tool and format (a raw 64-byte ed25519 signature).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from . import log
from .errors import ApbuildError
from .files import locked, replacing
from .run import run

KEY_NAME = "update-signing"


@dataclasses.dataclass(frozen=True)
class SigningKey:
    private: Path
    public: Path

    @property
    def public_pem(self) -> bytes:
        return self.public.read_bytes()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public_pem).hexdigest()[:16]


def default_dir() -> Path:
    """$APBUILD_KEY_DIR, else ~/.config/apbuild/keys: never the work tree or the cache,
    so neither `git add` nor a cache copy can take the private key along."""
    if env := os.environ.get("APBUILD_KEY_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "apbuild" / "keys"


def key_in(directory: Path) -> SigningKey:
    return SigningKey(directory / f"{KEY_NAME}.key", directory / f"{KEY_NAME}.pub")


def keygen(directory: Path) -> SigningKey:
    """Make a new key pair; an existing private key is never overwritten (images in the
    field accept only updates signed by it)."""
    key = key_in(directory)
    if key.private.exists():
        raise ApbuildError(f"{key.private} exists: images built with it accept only updates it "
                           f"signs; move it away first to make a new key")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The public key is renamed into place first: a private key without it is never left.
    with replacing(key.private) as private, replacing(key.public) as public:
        private.touch(mode=0o600)  # before openssl writes the key into it
        run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private])
        run(["openssl", "pkey", "-in", private, "-pubout", "-out", public])
    return key


def ensure_key(directory: Path) -> SigningKey:
    """The key the images are built for: made on first use, like the kernel's module key."""
    key = key_in(directory)
    if key.public.exists():
        return key
    # Two builds starting at once (parallel test workers) must not make two keys.
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(directory / ".keygen.lock"):
        if key.public.exists():
            return key
        if key.private.exists():
            run(["openssl", "pkey", "-in", key.private, "-pubout", "-out", key.public])
            return key
        keygen(directory)
    log.info(f"made the update signing key {key.private} (keep it safe: the images built now "
             f"accept only updates signed with it)")
    return key


def sign(key: SigningKey, data: bytes, work: Path) -> bytes:
    if not key.private.exists():
        raise ApbuildError(f"no private key {key.private}: make one with './build.py keygen' "
                           f"or set APBUILD_KEY_DIR")
    msg, sig = work / ".sign-msg", work / ".sign-sig"
    msg.write_bytes(data)
    try:
        run(["openssl", "pkeyutl", "-sign", "-inkey", key.private, "-rawin", "-in", msg, "-out", sig])
        return sig.read_bytes()
    finally:
        msg.unlink(missing_ok=True)
        sig.unlink(missing_ok=True)


def verify(public: Path, data: bytes, signature: bytes, work: Path) -> bool:
    """True when signature is public's ed25519 signature of data (the device's own check)."""
    msg, sig = work / ".verify-msg", work / ".verify-sig"
    msg.write_bytes(data)
    sig.write_bytes(signature)
    try:
        return run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", public, "-rawin",
                    "-in", msg, "-sigfile", sig], check=False).returncode == 0
    finally:
        msg.unlink(missing_ok=True)
        sig.unlink(missing_ok=True)
