"""The update feed's index (apbuild.feed): what `./build.py publish` writes, checked the way a
device checks it (openssl, the public key), and what it refuses."""

from __future__ import annotations

import base64
import tarfile

import pytest
from apbuild import feed, signing, update
from apbuild.errors import ApbuildError


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return signing.keygen(tmp_path_factory.mktemp("key"))


def boot_img(tmp_path, content: bytes = b"sda1 " * 1000):
    path = tmp_path / "boot.img"
    path.write_bytes(content)
    return path


def test_publish_writes_the_update_and_a_signed_index(tmp_path, key):
    out = tmp_path / "feed"
    entry = feed.publish(out, "app-platform-x86_64", "140002", boot_img(tmp_path), key, 1700000000, "140000")
    assert entry.file == update.file_name("app-platform-x86_64", "140002")
    with tarfile.open(out / entry.file) as tar:
        assert tar.getnames() == [update.MANIFEST, update.SIGNATURE, update.BOOT]
    data = (out / "index").read_bytes()
    body, signature = feed.split(data, out / "index")
    # The device's check: openssl with the public key over every byte before the last line.
    assert signing.verify(key.public, body, signature, tmp_path)
    assert not signing.verify(key.public, body.replace(b"140002", b"140003"), signature, tmp_path)
    lines = body.decode().splitlines()
    assert lines[0] == "format=1"
    assert "app-platform-x86_64.version=140002" in lines
    assert "app-platform-x86_64.min_version=140000" in lines
    assert f"app-platform-x86_64.size={(out / entry.file).stat().st_size}" in lines
    assert data.decode().splitlines()[-1] == "signature=" + base64.b64encode(signature).decode()
    assert feed.read(out, key) == {"app-platform-x86_64": entry}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [entry.file, "index"]


def test_platforms_share_a_feed_and_a_newer_version_replaces_the_entry(tmp_path, key):
    out = tmp_path / "feed"
    feed.publish(out, "app-platform-x86_64", "140002", boot_img(tmp_path), key, 0)
    arm = feed.publish(out, "app-platform-arm64", "140001", boot_img(tmp_path), key, 0)
    x86 = feed.publish(out, "app-platform-x86_64", "140003", boot_img(tmp_path), key, 0)
    assert feed.read(out, key) == {"app-platform-arm64": arm, "app-platform-x86_64": x86}
    # The same again writes the same index: its body is sorted and the signature is ed25519's.
    before = (out / "index").read_bytes()
    feed.publish(out, "app-platform-x86_64", "140003", boot_img(tmp_path), key, 0)
    assert (out / "index").read_bytes() == before
    # The older update files stay: a device part way through a download may still want one.
    assert (out / update.file_name("app-platform-x86_64", "140002")).exists()


def test_an_older_version_or_another_key_is_refused_and_the_feed_stays(tmp_path, key):
    out = tmp_path / "feed"
    feed.publish(out, "app-platform-x86_64", "140002", boot_img(tmp_path), key, 0)
    before = (out / "index").read_bytes()
    with pytest.raises(ApbuildError, match=r"index: app-platform-x86_64 is at 140002 there, 140001 is older"):
        feed.publish(out, "app-platform-x86_64", "140001", boot_img(tmp_path), key, 0)
    other = signing.keygen(tmp_path / "other")
    with pytest.raises(ApbuildError, match="signed with another key"):
        feed.publish(out, "app-platform-x86_64", "140003", boot_img(tmp_path), other, 0)
    assert (out / "index").read_bytes() == before
    assert not (out / update.file_name("app-platform-x86_64", "140003")).exists()


@pytest.mark.parametrize("version, min_version, message", [
    ("14000a", "0", "version '14000a': a whole number"),
    ("140002", "x", "--min-version 'x': a whole number"),
    ("140002", "140003", "--min-version 140003 is above the version published"),
])
def test_bad_versions_are_named(tmp_path, key, version, min_version, message):
    with pytest.raises(ApbuildError, match=message):
        feed.publish(tmp_path / "feed", "app-platform-x86_64", version, boot_img(tmp_path), key, 0, min_version)
    assert not (tmp_path / "feed" / "index").exists()


def test_a_malformed_index_names_the_file(tmp_path, key):
    index = tmp_path / "index"
    with pytest.raises(ApbuildError, match=r"index: not a signed feed index"):
        feed.split(b"format=1\nx.version=1\n", index)
    with pytest.raises(ApbuildError, match=r"index: x.sha256: missing"):
        feed.parse(b"format=1\nx.version=1\nx.file=f\nx.size=1\nx.min_version=0\n", index)
    with pytest.raises(ApbuildError, match=r"index: format must be 1"):
        feed.parse(b"format=2\n", index)
