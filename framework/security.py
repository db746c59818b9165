"""Password hashing: slow, salted, self-describing hashes in Werkzeug's string format.

A site never needs to know its users' passwords, only to recognise them, so it stores a one-way hash and, at
login, hashes what was typed and compares. The hash has to be built with three threats in mind:

- **A stolen table is attacked offline.** Whoever copies the user table can try guesses as fast as their hardware
  allows, with no rate limit and no log line. A general-purpose hash such as SHA-256 is built to be fast, so a GPU
  tries billions of guesses a second and common passwords fall at once. A *key derivation function* is built to be
  slow on purpose, with a tunable cost: PBKDF2 repeats HMAC a set number of times (CPU only), scrypt also needs a
  large block of memory for each guess, which is what makes guessing on GPUs and custom chips expensive. The cost
  is chosen so one login takes a fraction of a second, which a user does not notice and an attacker pays for every
  guess against every user.
- **Identical passwords must not look identical.** Each hash gets its own random *salt*, mixed into the
  derivation and stored beside it. Two users with the same password get different hashes, precomputed tables of
  hashes are useless, and an attacker must attack each user separately.
- **The comparison must not leak.** ``==`` on two strings stops at the first difference, so its running time says
  how long the matching prefix was. Here the values compared come out of a salted one-way function that an
  attacker cannot steer byte by byte, so the leak would be hard to use, but :func:`hmac.compare_digest` takes
  the same time whatever the inputs and removes the question.

The stored string is Werkzeug's (``werkzeug.security``, which Flask apps use), so user tables move over unchanged
and hashes written here verify in Werkzeug too::

    scrypt:32768:8:1$<salt>$<hex of 64 bytes>        hashlib.scrypt, n=2**15, r=8, p=1
    pbkdf2:sha256:1000000$<salt>$<hex of 32 bytes>   hashlib.pbkdf2_hmac, one million iterations

The method and its parameters come first, then the salt (letters and digits from :mod:`secrets`), then the
derived key in lowercase hex; the password and the salt are both encoded as UTF-8 before hashing. Because each
hash carries its own parameters, the defaults can be raised over the years while older hashes keep verifying with
the parameters they were made with.

Reading the parameters from the stored string has a danger of its own: the cost of checking a password is
whatever the string says. A corrupt or tampered row such as ``scrypt:1073741824:8:1$...`` would make every login
attempt for that account allocate a terabyte or run for hours, and anyone can attempt a login. So
:func:`check_password_hash` refuses (returns False, without hashing) anything beyond these bounds, and
:func:`generate_password_hash` refuses the same, so it never writes a hash that could not be checked:

- scrypt: ``n`` a power of two of at least 2, ``r`` and ``p`` at least 1, scrypt's own rule ``n < 2**(16*r)``,
  memory ``128*r*(n+p+2)`` bytes (OpenSSL's count) at most :data:`SCRYPT_MAX_MEMORY` (132 MiB: room for OWASP's
  recommended ``n=2**17, r=8, p=1``, four times the default's memory), and work ``n*r*p`` at most
  :data:`SCRYPT_MAX_WORK` (2**22, sixteen times the default: a few seconds, not minutes). Together these keep
  ``n`` at or below 2**19.
- pbkdf2: a hash from :data:`PBKDF2_HASHES` and from 1 to :data:`PBKDF2_MAX_ITERATIONS` (four million, four times
  the default: again a few seconds at most, with SHA-512).

One quirk comes with the format and is kept for compatibility: both derivations use the password as an HMAC
key, and HMAC pads a short key with zero bytes, so a password and the same password followed by NUL characters
verify alike. Nobody types a NUL, and no guess becomes cheaper.

The checker refuses two things that Werkzeug's accepts but never writes: a stored method that leaves parameters
to the defaults (a bare ``scrypt$...`` would silently change meaning when the defaults do), and PBKDF2 with a hash
outside :data:`PBKDF2_HASHES` (``md5``, say). A digest of the wrong length, or not in lowercase hex, fails in both,
here before any hashing. Derivation takes a fraction of a second of CPU, which is fine in
a view: WSGI apps run on the server's worker threads, never on its event loop. A login view checks the password
and, on success, keeps the user's id in the session (:mod:`framework.sessions`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import NamedTuple

__all__ = [
    "DEFAULT_PBKDF2_ITERATIONS",
    "PBKDF2_HASHES",
    "PBKDF2_MAX_ITERATIONS",
    "SALT_CHARS",
    "SCRYPT_MAX_MEMORY",
    "SCRYPT_MAX_WORK",
    "check_password_hash",
    "generate_password_hash",
]

# Werkzeug's salt alphabet: ASCII letters and digits, so the salt never contains the "$" separator.
SALT_CHARS = string.ascii_letters + string.digits

# The defaults, as in Werkzeug 3.1: scrypt with n=2**15, r=8, p=1 (32 MiB, a derived key of 64 bytes), and
# PBKDF2-HMAC-SHA256 with a million iterations (its derived key is one digest long, 32 bytes).
DEFAULT_SCRYPT_N = 2**15
DEFAULT_SCRYPT_R = 8
DEFAULT_SCRYPT_P = 1
SCRYPT_KEY_LENGTH = 64
DEFAULT_PBKDF2_HASH = "sha256"
DEFAULT_PBKDF2_ITERATIONS = 1_000_000

# The bounds on stored and requested parameters (see the module docstring for why).
SCRYPT_MAX_MEMORY = 132 * 1024 * 1024
SCRYPT_MAX_WORK = 2**22
PBKDF2_MAX_ITERATIONS = 4_000_000
PBKDF2_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")

# Parameters are plain decimal numbers; ten digits is already far beyond every bound above, and refusing longer
# strings before int() keeps a huge number in a tampered row from costing anything to parse.
_MAX_DIGITS = 10
_HEX_DIGITS = frozenset("0123456789abcdef")

_ACCEPTED = (
    "expected 'scrypt', 'scrypt:N:r:p', 'pbkdf2', 'pbkdf2:HASH' or 'pbkdf2:HASH:ITERATIONS' "
    f"with HASH one of {', '.join(PBKDF2_HASHES)}"
)


class _Scrypt(NamedTuple):
    n: int
    r: int
    p: int

    @property
    def method(self) -> str:
        return f"scrypt:{self.n}:{self.r}:{self.p}"

    @property
    def key_length(self) -> int:
        return SCRYPT_KEY_LENGTH

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return hashlib.scrypt(
            password, salt=salt, n=self.n, r=self.r, p=self.p, maxmem=SCRYPT_MAX_MEMORY, dklen=SCRYPT_KEY_LENGTH
        )


class _Pbkdf2(NamedTuple):
    hash_name: str
    iterations: int

    @property
    def method(self) -> str:
        return f"pbkdf2:{self.hash_name}:{self.iterations}"

    @property
    def key_length(self) -> int:
        return hashlib.new(self.hash_name).digest_size

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return hashlib.pbkdf2_hmac(self.hash_name, password, salt, self.iterations)


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short if it is long (a method string may be anything)."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _number(method: str, text: str, what: str) -> int:
    if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()):
        raise ValueError(
            f"bad parameters in password hash method {_shown(method)}: {what} must be a decimal number of at most "
            f"{_MAX_DIGITS} digits, not {_shown(text)}"
        )
    return int(text)


def _scrypt(method: str, n: int, r: int, p: int) -> _Scrypt:
    problem: str | None = None
    if n < 2 or n & (n - 1):
        problem = f"n must be a power of two of at least 2, not {n}"
    elif r < 1 or p < 1:
        problem = f"r and p must be at least 1, not r={r}, p={p}"
    elif 128 * r * (n + p + 2) > SCRYPT_MAX_MEMORY:
        problem = f"it would need {128 * r * (n + p + 2)} bytes of memory, more than the {SCRYPT_MAX_MEMORY} allowed"
    elif n * r * p > SCRYPT_MAX_WORK:
        problem = f"n*r*p is {n * r * p}, more than the {SCRYPT_MAX_WORK} allowed"
    elif n.bit_length() - 1 >= 16 * r:
        problem = f"scrypt needs n < 2**(16*r), and {n} is not below 2**{16 * r}"
    if problem:
        raise ValueError(f"bad parameters in password hash method {_shown(method)}: {problem}")
    return _Scrypt(n, r, p)


def _pbkdf2(method: str, hash_name: str, iterations: int) -> _Pbkdf2:
    if hash_name not in PBKDF2_HASHES:
        raise ValueError(
            f"bad parameters in password hash method {_shown(method)}: the hash must be one of "
            f"{', '.join(PBKDF2_HASHES)}, not {hash_name!r}"
        )
    if not 1 <= iterations <= PBKDF2_MAX_ITERATIONS:
        raise ValueError(
            f"bad parameters in password hash method {_shown(method)}: iterations must be from 1 to "
            f"{PBKDF2_MAX_ITERATIONS}, not {iterations}"
        )
    return _Pbkdf2(hash_name, iterations)


def _parse_method(method: str, *, stored: bool) -> _Scrypt | _Pbkdf2:
    """The key derivation named by ``method``, its parameters checked against the bounds.

    A method passed to :func:`generate_password_hash` may leave parameters to their defaults; one read from a
    stored hash (``stored=True``) must name them all, as Werkzeug and this module always write them.
    """
    name, *args = method.split(":")
    if name == "scrypt" and not args and not stored:
        return _scrypt(method, DEFAULT_SCRYPT_N, DEFAULT_SCRYPT_R, DEFAULT_SCRYPT_P)
    if name == "scrypt" and len(args) == 3:
        n, r, p = (_number(method, arg, what) for arg, what in zip(args, ("n", "r", "p"), strict=True))
        return _scrypt(method, n, r, p)
    if name == "pbkdf2" and not args and not stored:
        return _pbkdf2(method, DEFAULT_PBKDF2_HASH, DEFAULT_PBKDF2_ITERATIONS)
    if name == "pbkdf2" and len(args) == 1 and not stored:
        return _pbkdf2(method, args[0], DEFAULT_PBKDF2_ITERATIONS)
    if name == "pbkdf2" and len(args) == 2:
        return _pbkdf2(method, args[0], _number(method, args[1], "iterations"))
    raise ValueError(f"unknown password hash method {_shown(method)}: {_ACCEPTED}")


def generate_password_hash(password: str, method: str = "scrypt", salt_length: int = 16) -> str:
    """Hash ``password`` with a fresh random salt, for storing; :func:`check_password_hash` verifies it later.

    ``method`` is ``"scrypt"`` (the default, ``scrypt:32768:8:1``), ``"scrypt:N:r:p"``, ``"pbkdf2"`` (the same as
    ``pbkdf2:sha256:1000000``), ``"pbkdf2:HASH"`` or ``"pbkdf2:HASH:ITERATIONS"``. The result is
    ``method$salt$hexdigest`` with every parameter written out, e.g. ``scrypt:32768:8:1$Xq3...$9f0c...``.
    Low costs such as ``"pbkdf2:sha256:1000"`` are for tests only. Raises :class:`ValueError` for an unknown
    method, parameters beyond the bounds described in the module docstring, a ``salt_length`` below 1, or a
    password that cannot be encoded as UTF-8 (it contains lone surrogates).
    """
    kdf = _parse_method(method, stored=False)
    if salt_length < 1:
        raise ValueError(f"salt_length must be at least 1, not {salt_length}")
    salt = "".join(secrets.choice(SALT_CHARS) for _ in range(salt_length))
    return f"{kdf.method}${salt}${kdf.derive(password.encode(), salt.encode()).hex()}"


def check_password_hash(pwhash: str, password: str) -> bool:
    """Whether ``password`` matches ``pwhash``, a hash made by :func:`generate_password_hash` or by Werkzeug.

    The derived key is compared in constant time. Never raises: a malformed hash, an unknown method, parameters
    beyond the bounds described in the module docstring, or a password that cannot be encoded all answer False,
    the bounded cases without doing any hashing.
    """
    if not isinstance(pwhash, str) or not isinstance(password, str):
        return False
    method, _, rest = pwhash.partition("$")
    salt, separator, hexdigest = rest.partition("$")
    if not separator:
        return False
    try:
        kdf = _parse_method(method, stored=True)
        salt_bytes = salt.encode()
        password_bytes = password.encode()
    except ValueError:  # includes UnicodeEncodeError, for lone surrogates
        return False
    if len(hexdigest) != 2 * kdf.key_length or not _HEX_DIGITS.issuperset(hexdigest):
        return False
    try:
        derived = kdf.derive(password_bytes, salt_bytes)
    except ValueError:  # OpenSSL refused the parameters after all: a backstop, the bounds should prevent it
        return False
    return hmac.compare_digest(derived, bytes.fromhex(hexdigest))
