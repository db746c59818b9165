"""Password hashing: round trips, Werkzeug compatibility both ways, refusals, bounds on stored parameters.

Most tests use cheap explicit methods ("scrypt:1024:8:1", "pbkdf2:sha256:1000"); only the tests about the
defaults pay for the default costs.
"""

from __future__ import annotations

import hashlib
import re
import string
import time

import pytest
import werkzeug.security
from hypothesis import given
from hypothesis import strategies as st

from framework.security import (
    PBKDF2_MAX_ITERATIONS,
    SCRYPT_MAX_MEMORY,
    _parse_method,
    check_password_hash,
    generate_password_hash,
)

CHEAP_METHODS = ["scrypt:1024:8:1", "scrypt:16:1:2", "pbkdf2:sha256:1000", "pbkdf2:sha512:1000", "pbkdf2:sha1:1000"]
PASSWORDS = ["hunter2", "", "pässwörd", "密码 🔑 ✓", "tab\tnewline\nnul\x00", "x" * 1000]


def other_password(password: str) -> str:
    return password + "x" if password else "x"


# Round trips and the format.


@pytest.mark.parametrize("method", CHEAP_METHODS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_round_trip(method: str, password: str) -> None:
    pwhash = generate_password_hash(password, method)
    assert check_password_hash(pwhash, password) is True
    assert check_password_hash(pwhash, other_password(password)) is False


def test_near_misses_are_refused() -> None:
    pwhash = generate_password_hash("Correct Horse", "pbkdf2:sha256:1000")
    for wrong in ["correct horse", "Correct Horse ", " Correct Horse", "Correct Hors", "Correct Horse\x01", ""]:
        assert check_password_hash(pwhash, wrong) is False


@pytest.mark.parametrize("method", ["scrypt:1024:8:1", "pbkdf2:sha256:1000"])
def test_trailing_nul_characters_are_equivalent_as_in_werkzeug(method: str) -> None:
    """A quirk of the format, not of this code: both KDFs key HMAC with the password, and HMAC pads a short key
    with zero bytes, so "pw" and "pw\\x00" derive the same key. Werkzeug agrees; changing it would break hashes."""
    pwhash = generate_password_hash("pw", method)
    assert check_password_hash(pwhash, "pw\x00") is True
    assert werkzeug.security.check_password_hash(pwhash, "pw\x00") is True
    assert check_password_hash(pwhash, "pw\x00x") is False
    assert check_password_hash(pwhash, "\x00pw") is False


@pytest.mark.parametrize(
    ("method", "pattern"),
    [
        ("scrypt:1024:8:1", r"scrypt:1024:8:1\$[A-Za-z0-9]{16}\$[0-9a-f]{128}"),
        ("pbkdf2:sha256:1000", r"pbkdf2:sha256:1000\$[A-Za-z0-9]{16}\$[0-9a-f]{64}"),
        ("pbkdf2:sha512:1000", r"pbkdf2:sha512:1000\$[A-Za-z0-9]{16}\$[0-9a-f]{128}"),
        ("pbkdf2:sha1:1000", r"pbkdf2:sha1:1000\$[A-Za-z0-9]{16}\$[0-9a-f]{40}"),
    ],
)
def test_format(method: str, pattern: str) -> None:
    assert re.fullmatch(pattern, generate_password_hash("secret", method))


def test_the_derivation_is_the_documented_one() -> None:
    """Salt and password as UTF-8, scrypt with a 64-byte key, PBKDF2 with one digest's length."""
    pwhash = generate_password_hash("pässwörd", "scrypt:1024:8:1")
    _, salt, hexdigest = pwhash.split("$")
    expected = hashlib.scrypt("pässwörd".encode(), salt=salt.encode(), n=1024, r=8, p=1, dklen=64)
    assert hexdigest == expected.hex()

    pwhash = generate_password_hash("pässwörd", "pbkdf2:sha256:1000")
    _, salt, hexdigest = pwhash.split("$")
    assert hexdigest == hashlib.pbkdf2_hmac("sha256", "pässwörd".encode(), salt.encode(), 1000).hex()


def test_salts_differ_between_calls() -> None:
    hashes = [generate_password_hash("same password", "pbkdf2:sha256:1000") for _ in range(50)]
    salts = [pwhash.split("$")[1] for pwhash in hashes]
    assert len(set(salts)) == len(salts)
    assert len(set(hashes)) == len(hashes)
    assert set("".join(salts)) <= set(string.ascii_letters + string.digits)


@pytest.mark.parametrize("salt_length", [1, 8, 32, 100])
def test_salt_length(salt_length: int) -> None:
    pwhash = generate_password_hash("pw", "pbkdf2:sha256:1000", salt_length=salt_length)
    assert len(pwhash.split("$")[1]) == salt_length
    assert check_password_hash(pwhash, "pw")


@pytest.mark.parametrize("salt_length", [0, -1])
def test_salt_length_below_one_is_refused(salt_length: int) -> None:
    with pytest.raises(ValueError, match="salt_length"):
        generate_password_hash("pw", "pbkdf2:sha256:1000", salt_length=salt_length)


# The defaults (the only tests that pay for them).


# Werkzeug's defaults written out are the same strings, which the cheap interop tests below cover both ways.


def test_default_method_is_scrypt_and_werkzeug_verifies_it() -> None:
    pwhash = generate_password_hash("pässwörd")
    assert re.fullmatch(r"scrypt:32768:8:1\$[A-Za-z0-9]{16}\$[0-9a-f]{128}", pwhash)
    assert werkzeug.security.check_password_hash(pwhash, "pässwörd")


def test_default_pbkdf2_and_werkzeug_verifies_it() -> None:
    pwhash = generate_password_hash("pässwörd", "pbkdf2")
    assert re.fullmatch(r"pbkdf2:sha256:1000000\$[A-Za-z0-9]{16}\$[0-9a-f]{64}", pwhash)
    assert werkzeug.security.check_password_hash(pwhash, "pässwörd")


def test_partial_methods_fill_in_the_defaults() -> None:
    assert _parse_method("pbkdf2:sha512", stored=False).method == "pbkdf2:sha512:1000000"
    assert _parse_method("pbkdf2", stored=False).method == "pbkdf2:sha256:1000000"
    assert _parse_method("scrypt", stored=False).method == "scrypt:32768:8:1"


# Werkzeug compatibility, both ways.


@pytest.mark.parametrize("method", CHEAP_METHODS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_werkzeug_hashes_verify_here(method: str, password: str) -> None:
    pwhash = werkzeug.security.generate_password_hash(password, method)
    assert check_password_hash(pwhash, password) is True
    assert check_password_hash(pwhash, other_password(password)) is False


@pytest.mark.parametrize("method", CHEAP_METHODS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_our_hashes_verify_in_werkzeug(method: str, password: str) -> None:
    pwhash = generate_password_hash(password, method)
    assert werkzeug.security.check_password_hash(pwhash, password) is True
    assert werkzeug.security.check_password_hash(pwhash, other_password(password)) is False


@pytest.mark.parametrize("salt_length", [1, 8, 40])
def test_werkzeug_salt_lengths_verify_here(salt_length: int) -> None:
    pwhash = werkzeug.security.generate_password_hash("pw", "scrypt:1024:8:1", salt_length=salt_length)
    assert check_password_hash(pwhash, "pw")


def test_a_hash_with_an_empty_salt_still_verifies() -> None:
    """Werkzeug never writes one, but its checker accepts it, so a hand-migrated row keeps working."""
    hexdigest = hashlib.pbkdf2_hmac("sha256", b"pw", b"", 1000).hex()
    assert check_password_hash(f"pbkdf2:sha256:1000$${hexdigest}", "pw")
    assert werkzeug.security.check_password_hash(f"pbkdf2:sha256:1000$${hexdigest}", "pw")


# Errors from generate_password_hash.


@pytest.mark.parametrize("method", ["md5", "sha256", "bcrypt", "plain", "", "SCRYPT", "scrypt:1024:8", "pbkdf2:a:b:c"])
def test_unknown_method_is_a_clear_error(method: str) -> None:
    with pytest.raises(ValueError, match="unknown password hash method") as info:
        generate_password_hash("pw", method)
    assert repr(method) in str(info.value)
    assert "'scrypt:N:r:p'" in str(info.value)
    assert "pbkdf2:HASH:ITERATIONS" in str(info.value)


@pytest.mark.parametrize(
    ("method", "complaint"),
    [
        ("scrypt:1000:8:1", "power of two"),
        ("scrypt:1:8:1", "power of two"),
        ("scrypt:0:8:1", "power of two"),
        ("scrypt:1024:0:1", "at least 1"),
        ("scrypt:1024:8:0", "at least 1"),
        ("scrypt:65536:1:1", "2\\*\\*\\(16\\*r\\)"),
        ("scrypt:262144:8:1", "memory"),
        ("scrypt:1073741824:8:1", "memory"),
        ("scrypt:16384:8:64", "n\\*r\\*p"),
        ("scrypt:-1024:8:1", "decimal number"),
        ("scrypt:1e3:8:1", "decimal number"),
        ("scrypt: 1024:8:1", "decimal number"),
        ("scrypt:1_024:8:1", "decimal number"),
        ("scrypt:١٠٢٤:8:1", "decimal number"),
        ("scrypt:" + "9" * 5000 + ":8:1", "decimal number"),
        ("pbkdf2:md5", "must be one of"),
        ("pbkdf2:sha3_256:1000", "must be one of"),
        ("pbkdf2:sha256:0", "from 1 to"),
        ("pbkdf2:sha256:4000001", "from 1 to"),
        ("pbkdf2:sha256:", "decimal number"),
        ("pbkdf2:sha256:99999999999", "decimal number"),
    ],
)
def test_bad_parameters_are_a_clear_error(method: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as info:
        generate_password_hash("pw", method)
    assert "bad parameters in password hash method" in str(info.value)
    assert len(str(info.value)) < 300  # a huge method string is cut short in the message


def test_a_password_that_cannot_be_encoded_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        generate_password_hash("lone \ud800 surrogate", "pbkdf2:sha256:1000")


# The bounds: what is accepted at the edges, and that OpenSSL counts memory as the bound does.


@pytest.mark.parametrize(
    "method",
    ["scrypt:131072:8:1", "scrypt:524288:2:1", "scrypt:32768:8:16", "scrypt:2:1:1", "pbkdf2:sha512:4000000"],
)
def test_parameters_at_the_bounds_are_accepted(method: str) -> None:
    assert _parse_method(method, stored=True).method == method


def test_the_memory_bound_counts_as_openssl_does() -> None:
    """128*r*(n+p+2) bytes is exactly what OpenSSL needs, so the bound is also the maxmem passed to it."""
    for n, r, p in [(1024, 8, 1), (2, 1, 1), (16, 3, 5)]:
        needed = 128 * r * (n + p + 2)
        hashlib.scrypt(b"pw", salt=b"salt", n=n, r=r, p=p, maxmem=needed)
        with pytest.raises(ValueError):
            hashlib.scrypt(b"pw", salt=b"salt", n=n, r=r, p=p, maxmem=needed - 1)
    assert 128 * 8 * (2**17 + 1 + 2) <= SCRYPT_MAX_MEMORY < 128 * 8 * (2**18 + 1 + 2)


# check_password_hash: malformed and tampered hashes answer False, never raise, and cost nothing.


@pytest.fixture(scope="module")
def scrypt_hash() -> str:
    return generate_password_hash("pw", "scrypt:1024:8:1")


@pytest.fixture(scope="module")
def pbkdf2_hash() -> str:
    return generate_password_hash("pw", "pbkdf2:sha256:1000")


def test_tampering_with_any_part_is_refused(scrypt_hash: str, pbkdf2_hash: str) -> None:
    for pwhash, other_method in [(scrypt_hash, "scrypt:2048:8:1"), (pbkdf2_hash, "pbkdf2:sha256:1001")]:
        method, salt, hexdigest = pwhash.split("$")
        assert check_password_hash(pwhash, "pw")
        flipped = "0" if hexdigest[-1] != "0" else "1"
        tampered = [
            f"{other_method}${salt}${hexdigest}",
            f"{method}${salt[:-1]}${hexdigest}",
            f"{method}${salt}x${hexdigest}",
            f"{method}${salt}${hexdigest[:-1]}{flipped}",
            f"{method}${salt}${hexdigest[:-2]}",
            f"{method}${salt}${hexdigest}00",
            f"{method}${salt}${hexdigest.upper()}",
            f"{method}${salt}${hexdigest}$",
            f"{method}${salt}${hexdigest} ",
            f"{method}$${salt}${hexdigest}",
            f"{method}{salt}${hexdigest}",
            f"{method.split(':')[0]}${salt}${hexdigest}",
        ]
        for bad in tampered:
            assert check_password_hash(bad, "pw") is False, bad


@pytest.mark.parametrize(
    "pwhash",
    [
        "",
        "$",
        "$$",
        "$$$",
        "pw",
        "scrypt",
        "scrypt$salt",
        "pbkdf2:sha256:1000$salt",
        "plain$$pw",
        "md5$salt$" + "0" * 32,
        "sha256$salt$" + "0" * 64,
        "pbkdf2:sha256$salt$" + "0" * 64,
        "pbkdf2:md5:1000$salt$" + "0" * 32,
        "pbkdf2:sha256:1000:1$salt$" + "0" * 64,
        "scrypt:1024:8$salt$" + "0" * 128,
        "scrypt:1024:8:1:1$salt$" + "0" * 128,
        "scrypt:+1024:8:1$salt$" + "0" * 128,
        "scrypt:1024:8:1$salt$" + "g" * 128,
        "scrypt:1024:8:1$salt$" + "é" * 128,
        "scrypt:1024:8:1$s\ud800lt$" + "0" * 128,
        "scrypt:1024:8:1$salt$" + "\ud800" * 128,
        "\ud800$salt$" + "0" * 128,
    ],
)
def test_malformed_hashes_are_refused(pwhash: str) -> None:
    assert check_password_hash(pwhash, "pw") is False


def test_wrong_types_and_unencodable_passwords_are_refused(pbkdf2_hash: str) -> None:
    assert check_password_hash(pbkdf2_hash, "lone \ud800 surrogate") is False
    assert check_password_hash(None, "pw") is False  # type: ignore[arg-type]
    assert check_password_hash(pbkdf2_hash, b"pw") is False  # type: ignore[arg-type]
    assert check_password_hash(pbkdf2_hash.encode(), "pw") is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "method",
    [
        "scrypt:1073741824:8:1",  # a terabyte
        "scrypt:1048576:8:1",  # a gigabyte
        "scrypt:262144:8:1",  # 256 MiB, twice the memory bound
        "scrypt:32768:8:17",  # just over the work bound
        "scrypt:2:1:2147483647",  # p near 2**31: hours of work with tiny memory
        "scrypt:1024:1073741824:1",
        "scrypt:18446744073709551616:8:1",
        "scrypt:" + "9" * 5000 + ":8:1",  # beyond int()'s default digit limit
        f"pbkdf2:sha256:{PBKDF2_MAX_ITERATIONS + 1}",
        "pbkdf2:sha512:2147483647",
        "pbkdf2:sha256:" + "9" * 100_000,
    ],
)
def test_huge_stored_parameters_are_refused_quickly(method: str) -> None:
    for hexdigest in ["0" * 128, "0" * 64]:
        started = time.perf_counter()
        assert check_password_hash(f"{method}$saltsaltsaltsalt${hexdigest}", "pw") is False
        assert time.perf_counter() - started < 0.5


@given(st.text())
def test_check_never_raises_on_arbitrary_text(pwhash: str) -> None:
    assert check_password_hash(pwhash, "pw") is False


@given(st.text(), st.text())
def test_check_never_raises_on_arbitrary_hash_and_password(pwhash: str, password: str) -> None:
    assert check_password_hash(pwhash, password) is False


NUMBERS = st.sampled_from(["0", "1", "2", "3", "8", "16", "1024", "1048576", "2147483648", "-1", "", "x", "1e3"])
METHODS = st.one_of(
    st.sampled_from(["scrypt", "pbkdf2", "pbkdf2:sha256", "pbkdf2:sha1", "scrypt:1024:8:1", "pbkdf2:sha256:1000"]),
    st.builds(lambda n, r, p: f"scrypt:{n}:{r}:{p}", NUMBERS, NUMBERS, NUMBERS),
    st.builds(lambda h, i: f"pbkdf2:{h}:{i}", st.sampled_from(["sha256", "sha512", "md5", "", "SHA256"]), NUMBERS),
    st.text(max_size=30),
)
DIGESTS = st.one_of(
    st.text(),
    st.sampled_from([40, 64, 128]).flatmap(
        lambda size: st.text(alphabet="0123456789abcdef", min_size=size, max_size=size)
    ),
)


@given(METHODS, st.text(max_size=30), DIGESTS, st.text(max_size=30))
def test_check_never_raises_on_hash_shaped_text(method: str, salt: str, hexdigest: str, password: str) -> None:
    assert check_password_hash(f"{method}${salt}${hexdigest}", password) is False
