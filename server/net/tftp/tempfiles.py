"""Files that appear whole or not at all: written under a temporary name beside their target, then renamed.

Both the client's downloads and the server's uploads use this, so a transfer that fails half-way leaves nothing
behind and never clobbers an existing file. ``mkstemp`` creates its files readable by their owner only (they are
private while being written); once in place they should look like any file the user creates, so they get the
usual ``0666`` less the umask.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

_SUFFIX = ".part"
_RANDOM_LENGTH = 8  # what tempfile.mkstemp puts between prefix and suffix (CPython's _RandomNameSequence)
_RANDOM_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
# A leftover older than this belongs to no transfer: a live one writes a block every few seconds at the least
# (its peer's timeout is at most 255 s, RFC 2349, with a few retries).
LEFTOVER_AGE = 30 * 60.0


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def temporary_sibling(target: Path) -> tuple[int, str]:
    """Create a hidden ``.NAME.XXXX.part`` file beside ``target``: (descriptor, path). Raises OSError."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_SUFFIX)
    try:
        os.fchmod(fd, _FILE_MODE)
    except OSError:
        os.close(fd)
        os.unlink(temp)
        raise
    return fd, temp


def is_temporary_name(name: str) -> bool:
    """True for a name ``temporary_sibling`` makes: ``.NAME.`` + 8 random characters + ``.part``.

    The server refuses such names in requests: read, a half-written upload could be fetched by anyone who
    guesses its name; written, a client's file would look like a leftover to ``remove_leftovers``."""
    if not (name.startswith(".") and name.endswith(_SUFFIX)):
        return False
    stem = name[: -len(_SUFFIX)]
    random_part = stem[-_RANDOM_LENGTH:]
    return (
        len(stem) >= _RANDOM_LENGTH + 3  # "." + at least one character of NAME + "." before the random part
        and stem[-_RANDOM_LENGTH - 1] == "."
        and len(random_part) == _RANDOM_LENGTH
        and set(random_part) <= _RANDOM_CHARACTERS
    )


def remove_leftovers(root: Path, older_than: float = LEFTOVER_AGE) -> int:
    """Remove the temporary files of uploads that a crash or a SIGKILL left under ``root``; how many.

    Only regular files whose name is one ``temporary_sibling`` makes and which nothing has written to for
    ``older_than`` seconds (another server on the same directory may be writing a fresh one); symlinks are not
    followed, and a file that cannot be removed is left (the next start tries again)."""
    removed = 0
    deadline = time.time() - older_than
    for folder, _, names in os.walk(root):
        for name in names:
            if not is_temporary_name(name):
                continue
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
                if os.path.isfile(path) and not os.path.islink(path) and info.st_mtime < deadline:
                    os.unlink(path)
                    removed += 1
            except OSError:
                continue
    return removed
