"""The update feed on the VM: feeds published with `./build.py publish`, served over HTTPS
from the host side of QEMU's network; the device takes them with its command (typed as the
manual's reader types, over SSH after `su root`) and the manager's Update button. A newer
image is found and applied after a download cut half way is resumed; an older one is
refused, then accepted (staged for the rescue system) after the manual's
`echo 110000 > /mnt/sda1/label`; an index signed
by another key and a file whose hash differs from the index change nothing."""

from __future__ import annotations

import base64
import shutil

import pytest
from apbuild import feed, signing
from apbuild.config import load_project
from apbuild.testing.accounts import ADMIN
from apbuild.testing.builds import start_build
from apbuild.testing.feedserver import FeedServer
from apbuild.testing.lifecycle import applied, boot_state
from apbuild.testing.machine import Machine, scaled
from apbuild.testing.terminal import ReaderTerminal, admin_su_root

pytestmark = pytest.mark.update


def publish(name: str, out, *extra: str) -> None:
    """`./build.py publish` as the vendor types it."""
    proc, said = start_build("publish", name, "--output", str(out), *extra)
    assert proc.wait(scaled(900)) == 0, "".join(said)


def reader(m: Machine, logdir) -> ReaderTerminal:
    return admin_su_root(m.ports[22], logdir, m.name)


def test_update_feed_newer_applied_older_refused_bad_feeds_change_nothing(vm_build, installed, tmp_path,
                                                                        logdir, accel):
    project, _ = vm_build
    name, platform = project.board.name, project.board.platform
    old = project.board.image_version
    new = str(int(old) + 1)
    feeds = tmp_path / "feeds"
    publish(name, feeds / "good", "--image-version", new)
    publish(name, feeds / "old")                      # the installed version: older than new
    entry = feed.read(feeds / "good", signing.key_in(signing.default_dir()))[platform]
    assert (entry.version, entry.size) == (new, (feeds / "good" / entry.file).stat().st_size)
    # An index signed by another key.
    shutil.copytree(feeds / "good", feeds / "stranger")
    body, _ = feed.split((feeds / "good" / "index").read_bytes(), feeds / "good")
    (feeds / "stranger" / "index").write_bytes(
        feed.signed(body, signing.keygen(tmp_path / "other-key"), tmp_path))
    # An update file whose bytes differ from what the signed index says (same size).
    shutil.copytree(feeds / "good", feeds / "mismatch")
    data = bytearray((feeds / "mismatch" / entry.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (feeds / "mismatch" / entry.file).write_bytes(data)

    with FeedServer(feeds, tmp_path) as server, \
            Machine(project.board, installed(name, tmp_path, "feed"), logdir, name="feed", accel=accel) as m:
        m.login(timeout=300)
        m.wait_http("/manager/ramdisk.log", 120)
        before = boot_state(m)
        term = reader(m, logdir)

        term.ok(f"update-feed url {server.url('stranger')}")
        out, rc = term.run("update-feed apply", 120)
        assert rc == 1 and "bad signature" in out, out
        term.ok(f"update-feed url {server.url('mismatch')}")
        out, rc = term.run("update-feed apply", 300)
        assert rc == 1 and "does not match the SHA-256" in out, out
        assert boot_state(m) == before, "a refused feed changed the device"

        # The good feed; the connection is lost half way through the download.
        term.ok(f"update-feed url {server.url('good')}")
        assert f"installed {old}; the feed offers {new}" in term.ok("update-feed check", 60)
        server.cut_after = entry.size // 2
        out, rc = term.run("update-feed apply", 300)
        assert rc == 1 and f"stopped at {entry.size // 2} of {entry.size} bytes" in out, out
        assert boot_state(m).splitlines()[:-1] == before.splitlines()[:-1], "a cut download changed the device"
        assert term.ok(f"stat -c %s /mnt/sda2/update/feed-{entry.sha256}.part") == str(entry.size // 2)
        term.close()

        # The manager's Update button (its form posts to /cgi-bin/feed) resumes it, stages it
        # and reboots.
        status, page = m.http_get("/manager/index.html", auth=ADMIN)
        assert status == 200 and "<form method=post action=/cgi-bin/feed><button id=update>Update</button>" in page
        status, text = m.http_get("/cgi-bin/feed", timeout=scaled(60), auth=ADMIN)
        assert status == 200 and f"offers {new}" in text and text.rstrip().endswith("newer"), (status, text)
        status, text = m.http_get("/cgi-bin/feed", timeout=scaled(300), auth=ADMIN, post=b"")
        assert status == 200 and f"version {new} staged" in text and "rebooting" in text, (status, text)
        resumed = [r for r in server.requests if r.path.endswith(entry.file) and r.range]
        assert resumed and resumed[-1].range == f"bytes={entry.size // 2}-" and resumed[-1].status == 206, \
            server.requests
        applied(m, new)
        assert m.ok("cat /mnt/sda1/label") == new
        assert m.ok("ls /mnt/sda2/update 2>/dev/null | wc -l") == "0"

        # Anti-rollback: the feed of the older image is refused, until the label is lowered.
        m.wait_http("/manager/ramdisk.log", 120)
        term = reader(m, logdir)
        term.ok(f"update-feed url {server.url('old')}")
        before = boot_state(m)
        out, rc = term.run("update-feed apply", 120)
        assert rc == 1 and f"offers {old}, older than the installed {new}" in out, out
        assert boot_state(m) == before, "a refused older image changed the device"
        # A label that is no number (a typo of the manual's echo): refused before anything is
        # downloaded, as update-image would refuse it after.
        term.ok("echo 11000O > /mnt/sda1/label")
        fetched = len(server.requests)
        out, rc = term.run("update-feed apply", 120)
        assert rc == 1 and "no image label in /mnt/sda1/label to compare with" in out, out
        assert all(r.path.endswith("index") for r in server.requests[fetched:]), server.requests[fetched:]
        term.ok("echo 110000 > /mnt/sda1/label")
        assert f"version {old} staged" in term.ok("update-feed apply", 300)
        term.close()
        # Accepted: staged, and the next boot is the rescue system's, which applies it as it
        # applied the newer one above (that path does not depend on the version).
        assert m.ok("ls /mnt/sda2/update") == "staged.update"
        assert m.ok("grep '^set default' /boot/grub/grub.cfg") == "set default=0"   # rescue
