"""Files that appear whole or not at all: written under a temporary name beside their target, then renamed.

Both the client's downloads and the server's uploads use this, so a transfer that fails half-way leaves nothing
behind and never clobbers an existing file. ``mkstemp`` creates its files readable by their owner only (they are
private while being written); once in place they should look like any file the user creates, so they get the
usual ``0666`` less the umask.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def temporary_sibling(target: Path) -> tuple[int, str]:
    """Create a hidden ``.NAME.XXXX.part`` file beside ``target``: (descriptor, path). Raises OSError."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.fchmod(fd, _FILE_MODE)
    except OSError:
        os.close(fd)
        os.unlink(temp)
        raise
    return fd, temp
