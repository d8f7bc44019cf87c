"""Board, layout and recipe files: loaded strictly, every error names file, key, allowed."""

import shutil
from pathlib import Path

import pytest

from apbuild.config import find_root, list_boards, load_board, load_layout, load_project, load_recipe
from apbuild.errors import ConfigError
from apbuild.layout import place
from apbuild.machines import load_machine
from apbuild.testing.seeding import definitions_copy

ROOT = find_root()
MACHINE = ROOT / "machines" / "x86_64-vm.toml"


def write_machine(tmp_path: Path, old: str, new: str) -> Path:
    text = MACHINE.read_text()
    assert old in text
    path = tmp_path / "x86_64-vm.toml"
    path.write_text(text.replace(old, new))
    return path


def test_every_shipped_board_loads_with_its_layout_and_recipes():
    boards = list_boards(ROOT)
    assert "x86_64-vm" in boards
    for name in boards:
        project = load_project(ROOT, name)
        assert project.board.name == name
        assert project.recipes


@pytest.mark.parametrize("board, outputs", [
    ("ipx10", ("app-platform-armel.img", "", "", "")), ("ipx11", ("app-platform-armel.img", "", "", "")),
    ("ipx13", ("app-platform-arm64.img", "", "", "")),
    ("x86_64-vm", ("app-platform-x86_64.img", "app-platform-x86_64.qcow2", "app-platform-x86_64.ova",
                   "app-platform-x86_64.vhdx")),
])
def test_the_outputs_have_the_manuals_names(board, outputs):
    # The manual (D1): "app-platform-armel.img" / "app-platform-arm64.img" for the gateways.
    o = load_project(ROOT, board).board.outputs
    assert (o.raw, o.qcow2, o.ova, o.vhdx) == outputs


@pytest.mark.parametrize("old,new,key,words", [
    ('arch = "amd64"', 'arch = "sparc"', "arch", "amd64, arm64, armel, armhf"),
    ("ram_mb = 512", 'ram_mb = "lots"', "ram_mb", "is not an integer"),
    ("ram_mb = 512", "ram_mb = 0", "ram_mb", "greater than 0"),
    ('disk_size = "16G"', 'disk_size = "big"', "disk_size", "is not a size"),
    ('bootloader = "grub-bios"', 'bootloader = "uboot"', "bootloader", "grub-bios, gateway"),
    ("cpus = 1", "cpus = 1\ncolour = 3", "colour", "allowed keys here"),
    ('machine = "pc"', 'machine = "pc"\nspeed = 9', "qemu.speed", "allowed keys here"),
    ('disk = "virtio-scsi"', 'disk = "floppy"', "qemu.disk", "virtio-scsi"),
    ('machine = "pc"', 'machine = "pc"\ntcg_thread = "many"', "qemu.tcg_thread",
     "'many' is not allowed; use one of: multi, single"),
    ('ramdisk_compression = "zstd"', 'ramdisk_compression = "lz4"', "kernel.ramdisk_compression",
     "'lz4' is not allowed; use one of: xz, zstd"),
    ('ramdisk_format = "initramfs"', 'ramdisk_format = "ext2"', "kernel.ramdisk_compression",
     "a gateway's ramdisk (and an ext2 RAM disk) is ramdisk.ext2.xz, packed with 'xz'"),
])
def test_bad_machine_names_file_key_and_allowed(tmp_path, old, new, key, words):
    path = write_machine(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_machine(path)
    assert err.value.file == path
    assert err.value.key == key
    assert words in str(err.value)
    assert str(path) in str(err.value)


def test_missing_key_says_it_is_required(tmp_path):
    path = write_machine(tmp_path, 'image_arch = "x86_64"\n', "")
    with pytest.raises(ConfigError, match=r"image_arch: missing; required"):
        load_machine(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_board(path)
    assert err.value.file == path


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    root = definitions_copy(tmp_path / "proj")
    product = root / "products" / "app-platform.toml"
    product.write_text(product.read_text().replace('"manager"', '"manger"', 1))
    with pytest.raises(ConfigError, match=r"recipes\[4\]: no recipe 'manger'; recipes: app-platform, base, .*guest-tools, .*manager, "):
        load_project(root, "x86_64-vm")


def test_layout_rules(tmp_path):
    text = (ROOT / "partitions" / "vm.toml").read_text()
    bad = tmp_path / "rest.toml"
    bad.write_text(text.replace('size = "500M"', 'size = "rest"'))
    with pytest.raises(ConfigError, match="only the physically last partition may be size = 'rest'"):
        load_layout(bad)
    dup = tmp_path / "dup.toml"
    dup.write_text(text.replace("number = 4", "number = 3"))
    with pytest.raises(ConfigError, match="partition numbers repeat"):
        load_layout(dup)


def test_vm_layout_places_partitions_like_the_manual():
    placements = place(load_layout(ROOT / "partitions" / "vm.toml"))
    assert [p.number for p in placements] == [1, 3, 4, 2]
    sizes = {p.name: p.size_sectors for p in placements}
    assert sizes == {"boot": 350 * 2048, "rootfs": 500 * 2048, "swap": 512 * 2048, "data": None}
    assert placements[0].start_sector == 2048
    for a, b in zip(placements, placements[1:]):
        assert b.start_sector == a.start_sector + a.size_sectors
        assert b.start_sector % 2048 == 0


def test_recipe_modes_are_checked(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('description = "x"\n[rootfs.modes]\n"/etc/x" = "rw-r--r--"\n')
    with pytest.raises(ConfigError, match=r"rootfs.modes./etc/x: 'rw-r--r--' is not 'MODE UID:GID'"):
        load_recipe(path)


def test_gateway_boards_share_one_armel_image(tmp_path, update_key):
    """ipx10 and ipx11 differ only in the machine: same lockfile and the same inputs for
    every stage of the image, so `--all` builds the armel image once."""
    from apbuild.cache import Cache
    from apbuild.testing.stages import image_stage_keys

    ipx10, ipx11 = load_project(ROOT, "ipx10"), load_project(ROOT, "ipx11")
    assert ipx10.board.ram_mb != ipx11.board.ram_mb
    assert ipx10.board.lockfile.read_bytes() == ipx11.board.lockfile.read_bytes(), \
        "boards of one platform must be locked together: cp boards/ipx10.lock boards/ipx11.lock"
    cache = Cache(tmp_path / "cache")
    keys10 = image_stage_keys(ipx10, cache)
    assert keys10 == image_stage_keys(ipx11, cache)
    keys13 = image_stage_keys(load_project(ROOT, "ipx13"), cache)
    for stage in ("kernel", "ramdisk-system", "rootfs-system", "rootfs-config", "boot", "disk", "sbom"):
        assert keys10[stage] != keys13[stage], stage


def vendor_board(tmp_path: Path, sha256: str) -> Path:
    """The App Platform on vendorbox: ipx10 with a vendor kernel given as a local file (a
    fixture made here, next to the machine file)."""
    root = definitions_copy(tmp_path)
    (root / "machines" / "vendor").mkdir()
    (root / "machines" / "vendor" / "zImage").write_bytes(b"vendor kernel fixture\n" * 100)
    text = (root / "machines" / "ipx10.toml").read_text().replace('name = "ipx10"', 'name = "vendorbox"')
    # The machine's own [kernel] table adds to the shared base's, key by key.
    text += f'[kernel]\nfile = "vendor/zImage"\nsha256 = "{sha256}"\n'
    (root / "machines" / "vendorbox.toml").write_text(text)
    path = root / "boards" / "vendorbox.toml"
    path.write_text('product = "app-platform"\nmachine = "vendorbox"\n')
    (root / "boards" / "vendorbox.lock").write_bytes((ROOT / "boards" / "ipx10.lock").read_bytes())
    return path


def test_vendor_kernel_file_with_wrong_sha256_is_refused(tmp_path):
    path = vendor_board(tmp_path, "0" * 64)
    with pytest.raises(ConfigError) as e:
        load_board(path)
    assert "machines/vendorbox.toml" in str(e.value) and "kernel.sha256" in str(e.value)
    assert "refused" in str(e.value)


def test_vendor_kernel_file_goes_to_sda1_as_it_is(tmp_path, update_key):
    import hashlib

    from apbuild import images
    from apbuild.cache import Cache
    from apbuild.inputs import BuildInputs
    from apbuild.stage import Runner

    content = b"vendor kernel fixture\n" * 100
    path = vendor_board(tmp_path, hashlib.sha256(content).hexdigest())
    project = load_project(path.parent.parent, str(path))
    cache = Cache(tmp_path / "cache")
    kernel = images.kernel_image(Runner(cache), BuildInputs.read(project, cache))
    assert kernel.path.read_bytes() == content


def test_a_template_cannot_read_what_boards_sharing_an_image_differ_in(tmp_path):
    """ipx10 and ipx11 share the armel image's stages, so a template that wrote ram_mb into a
    file gave ipx11 ipx10's value; templates see the board without its machine keys."""
    from apbuild.errors import ConfigError
    from apbuild.rootfs import ImageBoard, render_overlay

    board = load_project(ROOT, "ipx10").board
    overlay = tmp_path / "rootfs" / "etc"
    overlay.mkdir(parents=True)
    (overlay / "ok.j2").write_text("{{ board.bootloader }} {{ board.arch }}\n")
    tree = render_overlay(tmp_path / "rootfs", {"board": ImageBoard(board)}, "demo")
    assert tree.get("/etc/ok").read() == b"gateway armel\n"
    (overlay / "bad.j2").write_text("max = {{ board.ram_mb // 4 }}\n")
    with pytest.raises(ConfigError, match=r"bad.j2.*board.ram_mb is the machine's"):
        render_overlay(tmp_path / "rootfs", {"board": ImageBoard(board)}, "demo")


def test_a_definition_with_several_mistakes_reports_each_of_them():
    bad = ROOT / "tests" / "data" / "bad-machine" / "three-mistakes.toml"
    with pytest.raises(ConfigError) as err:
        load_machine(bad)
    lines = str(err.value).split("\nerror: ")
    assert [line.split(": ")[1] for line in lines] == ["colour", "arch", "kernel.image"], lines
    assert all(line.startswith(f"{bad}: ") for line in lines)


def test_machines_sharing_a_base_write_only_their_own_keys(tmp_path):
    ipx10, ipx11 = (load_board(ROOT / "boards" / f"{b}.toml") for b in ("ipx10", "ipx11"))
    assert ipx10.image_settings() == ipx11.image_settings()
    assert (ipx10.ram_mb, ipx11.ram_mb) == (256, 1536) and ipx10.kernel.package == "linux-image-armmp-lpae"
    # A mistake in the shared base names the base's file; one in the machine names the machine.
    root = definitions_copy(tmp_path)
    base = root / "machines" / "common" / "armel-gateway.toml"
    base.write_text(base.read_text().replace('arch = "armel"', 'arch = "mips"'))
    machine = root / "machines" / "ipx10.toml"
    machine.write_text(machine.read_text().replace("ram_mb = 256", "ram_mb = 0"))
    with pytest.raises(ConfigError) as err:
        load_board(root / "boards" / "ipx10.toml")
    assert str(err.value).split("\nerror: ") == [
        f"{base}: arch: 'mips' is not allowed; use one of: amd64, arm64, armel, armhf",
        f"{machine}: ram_mb: 0 must be greater than 0"]
    machine.write_text(machine.read_text().replace('"armel-gateway"', '"armel-gatway"'))
    with pytest.raises(ConfigError, match=r"ipx10.toml: include: no shared base 'armel-gatway' .*bases: armel-gateway"):
        load_board(root / "boards" / "ipx10.toml")


def two_products(tmp_path: Path) -> Path:
    """The project's definitions and a second product, for x86 virtual machines only."""
    root = definitions_copy(tmp_path)
    (root / "products" / "kiosk.toml").write_text(
        'description = "Kiosk"\ntitle = "Kiosk"\nrecipes = ["base", "ssh"]\nimage_name = "kiosk"\n'
        'image_version = "100"\narches = ["amd64"]\n[layouts]\ngrub-bios = "vm"\n')
    return root


def test_a_product_on_a_machine_is_one_name_and_list_shows_every_pairing(tmp_path, capsys):
    from apbuild import cli

    root = two_products(tmp_path)
    board = load_project(root, "kiosk@x86_64-vm").board
    assert (board.name, board.platform, board.layout) == ("kiosk@x86_64-vm", "kiosk-x86_64", "vm")
    assert board.recipes == ("base", "ssh", "guest-tools")     # the machine's come after
    assert board.outputs.qcow2 == "kiosk-x86_64.qcow2" and board.lockfile == root / "boards" / "kiosk@x86_64-vm.lock"
    assert board.kernel == load_board(ROOT / "boards" / "x86_64-vm.toml").kernel
    # A pairing that a board names is that board, with its lockfile.
    assert load_project(root, "app-platform@ipx13").board.name == "ipx13"
    assert cli.cmd_list(root) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ipx10", "ipx11", "ipx13", "x86_64-vm",
                                                      "bip@ipx13", "bip@x86_64-vm", "erp@ipx13", "erp@x86_64-vm", "kiosk@x86_64-vm",
                                                      "tryton@x86_64-vm"]
    assert "Kiosk, on x86_64 virtual machine" in lines[-2]


@pytest.mark.parametrize("target,key,words", [
    ("kiosk@ipx13", "arches", "kiosk runs on amd64, not on machine ipx13 (arm64"),
    ("erp@ipx10", "arches", "erp runs on amd64, arm64, not on machine ipx10 (armel"),
    ("app-platform@pc", "machine", "no machine named 'pc'; machines: ipx10, ipx11, ipx13, x86_64-vm"),
    ("shop@x86_64-vm", "product", "no product named 'shop'; products: app-platform, bip, erp, kiosk, tryton"),
])
def test_an_incompatible_or_unknown_pairing_is_one_line_naming_file_and_key(tmp_path, target, key, words):
    root = two_products(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_project(root, target)
    assert err.value.key == key and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_product_without_a_layout_for_the_machines_bootloader_is_refused(tmp_path):
    root = two_products(tmp_path)
    kiosk = root / "products" / "kiosk.toml"
    kiosk.write_text(kiosk.read_text().replace('arches = ["amd64"]\n', ""))
    with pytest.raises(ConfigError, match=r"kiosk.toml: layouts: no layout for bootloader 'gateway' of machine ipx13"):
        load_project(root, "kiosk@ipx13")


@pytest.mark.parametrize("value,words", [("12", "12 is not an xz preset; use a whole number from 0 to 9"),
                                         ('"fast"', "'fast' is not an integer")])
def test_a_products_xz_preset_is_a_whole_number_from_0_to_9(tmp_path, value, words):
    root = two_products(tmp_path)
    kiosk = root / "products" / "kiosk.toml"
    kiosk.write_text(kiosk.read_text().replace("[layouts]", f"rootfs_xz = {value}\n[layouts]"))
    with pytest.raises(ConfigError, match=rf"kiosk.toml: rootfs_xz: {words}"):
        load_project(root, "kiosk@x86_64-vm")
    kiosk.write_text(kiosk.read_text().replace(f"rootfs_xz = {value}", "rootfs_xz = 3"))
    assert load_project(root, "kiosk@x86_64-vm").board.rootfs_xz == 3


@pytest.mark.parametrize("lines,key,words", [
    ('rootfs_compression = "gzip"', "rootfs_compression", "'gzip' is not allowed; use one of: xz, zstd"),
    ('rootfs_compression = 19', "rootfs_compression", "19 is not a string"),
    ('rootfs_compression = "zstd"', "rootfs_compression",
     "'zstd' needs the recipe 'zstd' in recipes: the rescue ramdisk unpacks rootfs.tar.zst with it"),
    ('recipes = ["base", "zstd", "ssh"]\nrootfs_compression = "zstd"\nrootfs_xz = 3', "rootfs_xz",
     "an xz preset, but rootfs_compression is 'zstd': drop rootfs_xz or pack with xz"),
])
def test_a_products_rootfs_compression_is_xz_or_zstd_with_its_unpacker(tmp_path, lines, key, words):
    root = two_products(tmp_path)
    kiosk = root / "products" / "kiosk.toml"
    text = kiosk.read_text()
    kiosk.write_text(text.replace('recipes = ["base", "ssh"]\n', "").replace("[layouts]", f"{lines}\n[layouts]")
                     if "recipes" in lines else text.replace("[layouts]", f"{lines}\n[layouts]"))
    with pytest.raises(ConfigError) as err:
        load_project(root, "kiosk@x86_64-vm")
    assert err.value.key == key and f"kiosk.toml: {key}: {words}" in str(err.value), str(err.value)


def test_a_zstd_product_puts_rootfs_tar_zst_on_sda1_and_an_xz_one_rootfs_tar_xz(tmp_path):
    root = two_products(tmp_path)
    kiosk = root / "products" / "kiosk.toml"
    assert load_project(root, "kiosk@x86_64-vm").board.boot_files["rootfs"] == "rootfs.tar.xz"
    kiosk.write_text(kiosk.read_text().replace('recipes = ["base", "ssh"]', 'recipes = ["base", "zstd", "ssh"]')
                     .replace("[layouts]", 'rootfs_compression = "zstd"\n[layouts]'))
    board = load_project(root, "kiosk@x86_64-vm").board
    assert (board.rootfs_compression, board.boot_files["rootfs"]) == ("zstd", "rootfs.tar.zst")
    # erp and tryton unpack theirs with zstd; the App Platform boards keep xz.
    for name, file in (("tryton@x86_64-vm", "rootfs.tar.zst"), ("erp@ipx13", "rootfs.tar.zst"),
                       ("x86_64-vm", "rootfs.tar.xz"), ("ipx13", "rootfs.tar.xz")):
        assert load_project(ROOT, name).board.boot_files["rootfs"] == file, name


def test_the_ramdisk_is_ramdisk_cpio_zst_where_grub_loads_it_and_the_manuals_name_on_a_gateway(tmp_path):
    # The VM's GRUB names its file; a gateway's admin types ramdisk.ext2.xz (the manual, D6).
    assert load_project(ROOT, "x86_64-vm").board.boot_files["ramdisk"] == "ramdisk.cpio.zst"
    for name in ("ipx10", "ipx11", "ipx13", "erp@ipx13"):
        assert load_project(ROOT, name).board.boot_files["ramdisk"] == "ramdisk.ext2.xz", name
    path = tmp_path / "ipx13.toml"
    text = (ROOT / "machines" / "ipx13.toml").read_text()
    path.write_text(text.replace('ramdisk_format = "initramfs"', 'ramdisk_format = "initramfs"\nramdisk_compression = "zstd"'))
    with pytest.raises(ConfigError) as err:
        load_machine(path)
    assert err.value.key == "kernel.ramdisk_compression" and "ramdisk.ext2.xz" in str(err.value)
