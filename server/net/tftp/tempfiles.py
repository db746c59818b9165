"""Files that appear whole or not at all: written under a temporary name beside their target, then renamed.

Both the client's downloads and the server's uploads use this, so a transfer that fails half-way leaves nothing
behind and never clobbers an existing file. ``mkstemp`` creates its files readable by their owner only (they are
private while being written); once in place they should look like any file the user creates, so they get the
usual ``0666`` less the umask.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Each kind of temporary file carries a marker of its own, so that nothing else can be taken for one. The
# server refuses requests for its upload temporaries and deletes stale ones when it starts: a pattern a user's
# file could match (the first one, ".NAME.<8 characters>.part", matched ".boot.firmware.part" and
# ".image.20261203.part") would have them deleted. Nobody names a file ".tftp-upload.<name>.<random>.part".
UPLOAD_MARKER = ".tftp-upload."
DOWNLOAD_MARKER = ".tftp-download."  # the client's; no server deletes or refuses those
_SUFFIX = ".part"
_RANDOM_LENGTH = 8  # what tempfile.mkstemp puts between prefix and suffix (CPython's _RandomNameSequence)
_RANDOM_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
# How much of the target's name a temporary name repeats, in characters: enough to recognise it, and short
# enough that marker, name and random part stay within the usual 255-byte limit on a file name (50 characters
# are at most 200 bytes of UTF-8) whatever the length of the target's own name.
_NAME_KEPT = 50
# A leftover unwritten for this long belongs to no transfer: a live upload's file is written to at least every
# few minutes (the server flushes its buffer, ``server._FLUSH_EVERY``), and one stalled for its stall limit is
# given up.
LEFTOVER_AGE = 30 * 60.0
_TOKEN_BYTES = 4  # a server's token: 8 hex digits, one in 4 billion to clash with another server's


def new_upload_marker() -> str:
    """The marker of one server's upload temporaries: ``.tftp-upload.TOKEN.``, TOKEN random, per server.

    ``remove_leftovers`` judges another server's files by their age, but never this server's own: their age
    says nothing (a wall clock stepped back made fresh files look stale), and whatever of ours exists belongs
    to a live transfer, which removes it itself. The name stays an upload temporary's
    (``is_upload_temporary``): for everyone else TOKEN is the start of NAME."""
    return f"{UPLOAD_MARKER}{secrets.token_hex(_TOKEN_BYTES)}."


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def temporary_sibling(target: Path, marker: str) -> tuple[int, str]:
    """Create a hidden ``MARKER + NAME.XXXXXXXX.part`` file beside ``target``: (descriptor, path).

    ``marker`` says whose it is (``DOWNLOAD_MARKER``, a server's ``new_upload_marker()``); NAME is the start of
    the target's name, for whoever finds the file. Raises OSError."""
    prefix = f"{marker}{target.name[:_NAME_KEPT]}."
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=_SUFFIX)
    try:
        os.fchmod(fd, _FILE_MODE)
    except OSError:
        os.close(fd)
        os.unlink(temp)
        raise
    return fd, temp


def is_upload_temporary(name: str) -> bool:
    """True for a name ``temporary_sibling`` makes for the server's uploads:
    ``.tftp-upload.`` + NAME + ``.`` + 8 random characters + ``.part``.

    The server refuses such names in requests: read, a half-written upload could be fetched by anyone who
    guesses its name; written, a client's file would look like a leftover to ``remove_leftovers``."""
    if not (name.startswith(UPLOAD_MARKER) and name.endswith(_SUFFIX)):
        return False
    stem = name[len(UPLOAD_MARKER) : -len(_SUFFIX)]  # NAME.XXXXXXXX
    random_part = stem[-_RANDOM_LENGTH:]
    return (
        len(stem) >= _RANDOM_LENGTH + 2  # at least one character of NAME, and the dot before the random part
        and stem[-_RANDOM_LENGTH - 1] == "."
        and set(random_part) <= _RANDOM_CHARACTERS
    )


def remove_leftovers(
    root: Path, older_than: float = LEFTOVER_AGE, stop: Callable[[], bool] = bool, keep: str | None = None
) -> int:
    """Remove the temporary files of uploads that a crash or a SIGKILL left under ``root``; how many.

    Only regular files whose name ``is_upload_temporary`` and which nothing had written to for ``older_than``
    seconds when the walk began (another server on the same directory may be writing a slow one), and never
    those whose name starts with ``keep``: the calling server's own marker (``new_upload_marker``), so the walk
    may run beside its uploads whatever the clock does. Symlinks are not followed, a file that cannot be
    removed is left (the next start tries again), and the walk ends early between two folders once ``stop()``
    is true (the server is shutting down)."""
    removed = 0
    deadline = time.time() - older_than
    for folder, _, names in os.walk(root):
        if stop():
            break
        for name in names:
            if not is_upload_temporary(name) or (keep is not None and name.startswith(keep)):
                continue
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < deadline:
                    os.unlink(path)
                    removed += 1
            except OSError:
                continue
    return removed
