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
