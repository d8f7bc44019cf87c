"""Rootfs selection rules and busybox applet discovery, on fixtures made here."""

from apbuild.rootfs import busybox_applets, glob_regex, select
from apbuild.tree import FILE, SYMLINK, Entry, Tree


def test_globs_star_stays_in_a_directory_doublestar_crosses():
    rx = glob_regex(["/usr/lib/postgresql/15/lib/*.so", "/usr/share/zoneinfo/**"])
    assert rx.match("/usr/lib/postgresql/15/lib/plpgsql.so")
    assert not rx.match("/usr/lib/postgresql/15/lib/bitcode/x.so")
    assert rx.match("/usr/share/zoneinfo/Europe/Berlin")
    assert not rx.match("/usr/share/zoneinfoX")


def test_symlinks_bring_their_targets():
    pool = Tree()
    pool.add("/usr/bin/psql", Entry(SYMLINK, target="../lib/postgresql/15/bin/psql"))
    pool.add("/usr/lib/postgresql/15/bin/psql", Entry(FILE, 0o755, data=b"#!/bin/sh\n"))
    pool.add("/usr/lib/postgresql/15/bin/initdb", Entry(FILE, 0o755, data=b"#!/bin/sh\n"))
    chosen = select(pool, ["/usr/bin/psql"], "amd64")
    assert "/usr/lib/postgresql/15/bin/psql" in chosen
    assert "/usr/lib/postgresql/15/bin/initdb" not in chosen
    assert chosen.get("/usr/lib/postgresql/15").kind == "dir"


def test_busybox_applet_table_is_read_from_the_binary():
    fake = b"\x7fELF junk\0" + b"[\0[[\0acpid\0ash\0init\0zcat\0" + b"\x01\x02binary"
    assert busybox_applets(fake) == ["[", "[[", "acpid", "ash", "init", "zcat"]


def test_mode_overrides_win_over_implicit_parent_directories(tmp_path):
    from pathlib import Path

    from apbuild.config import Recipe, Selection
    from apbuild.rootfs import config_layer
    from apbuild.tree import DIR

    overlay = tmp_path / "r" / "common" / "home" / "root"
    overlay.mkdir(parents=True)
    (overlay / "script.sh").write_text("#!/bin/sh\n")
    recipe = Recipe(description="t", rootfs=Selection(modes={"/home/root": "0700 0:0"}),
                    name="r", path=tmp_path / "r.toml")

    system = Tree()
    system.add("/home/root", Entry(DIR, 0o755))
    overlays = [("r", tmp_path / "r" / "common")]
    layer = config_layer((recipe,), "rootfs", system, {}, overlays, "salt", Path("b.toml"))
    assert layer.get("/home/root").mode == 0o700
    assert layer.get("/home/root/script.sh") is not None


def test_a_mode_override_of_a_package_file_is_applied_in_the_system_layer_only(tmp_path):
    """Busybox made setuid: a copy in the config layer would carry its bytes twice."""
    from pathlib import Path

    from apbuild.config import Recipe, Selection
    from apbuild.rootfs import config_layer, system_layer
    from apbuild.tree import FILE

    recipe = Recipe(description="t", rootfs=Selection(keep=("/usr/bin/tool",),
                                                      modes={"/usr/bin/tool": "4755 0:0"}),
                    name="r", path=tmp_path / "r.toml")

    pool = Tree()
    pool.add("/usr/bin/tool", Entry(FILE, 0o755, data=b"#!/bin/sh\n"))
    system = system_layer((recipe,), "rootfs", "amd64", pool, Tree())
    assert system.get("/usr/bin/tool").mode == 0o4755
    assert config_layer((recipe,), "rootfs", system, {}, (), "salt", Path("b.toml")).get("/usr/bin/tool") is None
