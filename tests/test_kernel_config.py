"""A zstd initramfs is built only for a kernel whose package says it unpacks one."""

import pytest

from apbuild.errors import ApbuildError
from apbuild.kernel import KernelInfo, check_initramfs_zstd
from apbuild.tree import FILE, Entry, Tree

KERNEL = KernelInfo("6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-9-amd64", {})
WHAT = "machines/box.toml: kernel.ramdisk_compression"


def package(config: str | None) -> Tree:
    tree = Tree()
    tree.add("/boot/vmlinuz-6.1.0-9-amd64", Entry(FILE, data=b"kernel"))
    if config is not None:
        tree.add("/boot/config-6.1.0-9-amd64", Entry(FILE, data=config.encode()))
    return tree


def test_a_kernel_built_with_rd_zstd_passes():
    check_initramfs_zstd(package("CONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\n"), KERNEL, WHAT)


@pytest.mark.parametrize("config, words", [
    ("CONFIG_RD_XZ=y\n# CONFIG_RD_ZSTD is not set\n", "built without CONFIG_RD_ZSTD"),
    (None, "has no /boot/config-6.1.0-9-amd64"),
])
def test_a_kernel_without_it_or_without_its_config_is_refused_naming_the_key(config, words):
    with pytest.raises(ApbuildError) as err:
        check_initramfs_zstd(package(config), KERNEL, WHAT)
    assert WHAT in str(err.value) and words in str(err.value) and "use 'xz'" in str(err.value)
