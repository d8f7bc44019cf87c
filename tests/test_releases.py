"""A product's releases (releases/PRODUCT.toml): the recorded ones load, are this tree's
history and are older than its image; a wrong record names the file, the key and what is
allowed, all of its mistakes at once."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from apbuild import releases
from apbuild.config import find_root, load_project
from apbuild.errors import ConfigError
from apbuild.testing.releases import TEST_ROOTFS_XZ, for_tests

ROOT = find_root()
A, B = "a" * 40, "b" * 40


def write(root: Path, text: str) -> Path:
    (root / "releases").mkdir()
    path = root / "releases" / "demo.toml"
    path.write_text(text)
    return path


def test_the_app_platforms_releases_are_this_trees_history_and_older_than_it():
    board = load_project(ROOT, "x86_64-vm").board
    found = releases.last(ROOT, board.image_name, board.image_version, 2)
    assert int(found[0].version) < int(found[1].version) < int(board.image_version)
    for release in found:
        # An ancestor of HEAD: a history rewritten, or a commit only on a branch, fails here.
        assert subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", release.commit,
                               "HEAD"]).returncode == 0, release


def test_releases_oldest_first_and_below_the_products_version(tmp_path):
    path = write(tmp_path, f'[[release]]\nversion = "140000"\ncommit = "{A}"\n'
                           f'[[release]]\nversion = "140001"\ncommit = "{B}"\nnote = "x"\n')
    assert [r.version for r in releases.last(tmp_path, "demo", "140002", 2)] == ["140000", "140001"]
    with pytest.raises(ConfigError, match=r"release\[1\].version: 140001 is not below the product's "
                                          r"image_version \(140001\)"):
        releases.load_releases(tmp_path, "demo", "140001")
    with pytest.raises(ConfigError, match=r"release: 2 release\(s\); 3 are needed"):
        releases.last(tmp_path, "demo", "140002", 3)
    assert str(path) in str(pytest.raises(ConfigError, releases.last, tmp_path, "demo", "140002", 3).value)


def test_a_wrong_record_names_every_mistake_with_file_and_key(tmp_path):
    path = write(tmp_path, f'[[release]]\nversion = "14x"\ncommit = "abc"\n'
                           f'[[release]]\nversion = "140001"\ncommit = "{B}"\ndate = "today"\n')
    with pytest.raises(ConfigError) as raised:
        releases.load_releases(tmp_path, "demo", "140002")
    lines = str(raised.value).split("\nerror: ")
    assert any(f"{path}: release[0].version: '14x' is not a whole number" in x for x in lines), lines
    assert any(f"{path}: release[0].commit: 'abc' is not a full commit id (40 hex digits)" in x for x in lines), lines
    assert any(f"{path}: release[1].date: unknown key; allowed keys here: commit, note, version" in x
               for x in lines), lines


def test_releases_out_of_order_are_refused(tmp_path):
    write(tmp_path, f'[[release]]\nversion = "140001"\ncommit = "{A}"\n'
                    f'[[release]]\nversion = "140001"\ncommit = "{B}"\n')
    with pytest.raises(ConfigError, match=r"release\[1\].version: 140001 is not above the release "
                                          r"before it \(140001\): oldest first"):
        releases.load_releases(tmp_path, "demo", "140002")


def test_no_releases_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"releases/demo.toml.*file not found"):
        releases.load_releases(tmp_path, "demo", "140002")


def _tree(root: Path, product: str, machine: str) -> Path:
    for folder in ("boards", "products", "machines"):
        (root / folder).mkdir(parents=True)
    (root / "boards" / "b.toml").write_text('# a board\nproduct = "p"\nmachine = "m"\n')
    (root / "products" / "p.toml").write_text(product)
    (root / "machines" / "m.toml").write_text(machine)
    return root


def test_a_release_for_the_tests_packs_its_rootfs_with_xz_1_and_makes_its_qcow2_alone(tmp_path):
    tree = _tree(tmp_path, 'title = "P"\n\n[layouts]\ngateway = "g"\n',
                 'name = "m"\n\n[image]\nraw_size = "disk"\nformats = ["qcow2", "ova", "vhdx"]\n')
    for_tests(tree, "b")
    product = tomllib.loads((tree / "products" / "p.toml").read_text())
    assert product == {"title": "P", "rootfs_xz": TEST_ROOTFS_XZ, "layouts": {"gateway": "g"}}
    machine = tomllib.loads((tree / "machines" / "m.toml").read_text())
    assert machine["image"] == {"raw_size": "disk", "formats": ["qcow2"]}


@pytest.mark.parametrize("product", ['rootfs_xz = 3\n', 'rootfs_compression = "zstd"\n'])
def test_a_release_that_says_how_its_rootfs_is_packed_is_built_so(tmp_path, product):
    machine = 'name = "m"\n[image]\nraw_size = "content"\n'
    tree = _tree(tmp_path, product, machine)
    for_tests(tree, "b")
    assert (tree / "products" / "p.toml").read_text() == product
    assert (tree / "machines" / "m.toml").read_text() == machine
