"""SHA-512 crypt hashes for /etc/shadow, without Python's crypt module (gone in 3.13)."""

from apbuild.users import _libcrypt, sha512_crypt


def test_sha512_crypt_matches_the_published_test_vector():
    # From Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" specification.
    got = _libcrypt().crypt(b"Hello world!", b"$6$saltstring")
    assert got == (b"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4"
                   b"OTLiBFdcbYEdFCoEOfaS35inz1")


def test_a_password_hash_is_reproducible_and_verifies():
    hashed = sha512_crypt("iplinux", "salt-source")
    assert hashed == sha512_crypt("iplinux", "salt-source") != sha512_crypt("iplinux", "other")
    assert hashed.startswith("$6$") and len(hashed.split("$")[2]) == 16
    # Checking a password is hashing it again with the stored hash as the salt.
    assert _libcrypt().crypt(b"iplinux", hashed.encode()).decode() == hashed
    assert _libcrypt().crypt(b"wrong", hashed.encode()).decode() != hashed


def _recipes(*tables: str):
    """Recipes read from TOML text, as recipes/ would hold them."""
    import dataclasses
    import tomllib
    from pathlib import Path

    from apbuild.config import Recipe
    from apbuild.schema import load
    return [dataclasses.replace(load(Recipe, tomllib.loads(text), Path(f"recipes/r{i}.toml")),
                                path=Path(f"recipes/r{i}.toml")) for i, text in enumerate(tables)]


BASE = '''description = "base"
[[groups]]
name = "root"
gid = 0
[[users]]
name = "root"
uid = 0
gid = 0
home = "/home/root"
'''


def _shadow(recipes) -> str:
    from apbuild.users import user_files
    return user_files(recipes, "salt").get("/etc/shadow").data.decode()


def test_a_products_recipe_gives_base_users_their_passwords():
    # Without one, root is locked; a later recipe's [passwords] sets it.
    assert _shadow(_recipes(BASE)).startswith("root:!:")
    shadow = _shadow(_recipes(BASE, 'description = "product"\n[passwords]\nroot = "secret"\n'))
    hashed = shadow.split(":")[1]
    assert _libcrypt().crypt(b"secret", hashed.encode()).decode() == hashed


def test_a_password_for_a_user_nobody_defined_names_the_recipe_and_key():
    import pytest

    from apbuild.errors import ConfigError
    with pytest.raises(ConfigError, match=r"recipes/r1.toml: passwords.admin: no user 'admin' in the recipes "
                                          r"before this one; users: root"):
        _shadow(_recipes(BASE, 'description = "product"\n[passwords]\nadmin = "x"\n'))
