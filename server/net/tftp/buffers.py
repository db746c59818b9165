"""Socket buffers sized for a window, and windows sized for the buffers the system grants.

A window is sent as one burst. If it does not fit in the receiver's socket buffer, its tail is dropped every
time, silently: nothing arrives out of order to reveal the gap, so every window waits out a full timeout and a
transfer that should take a tenth of a second takes minutes. So each end asks for buffers that hold its window
and, since the kernel caps the request (net.core.rmem_max and wmem_max), shrinks the window to what it got:
the client before it asks for a window, the server before it grants one.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import replace

from .options import Settings

_SMALL_BURST = 64 * 1024  # what default socket buffers (about 200 KiB) hold with room to spare
_MAX_SOCKET_BUFFER = 8 * 1024 * 1024
# The kernel charges each datagram its payload plus bookkeeping, and reports buffer sizes doubled; counting a
# block as twice its size plus a kilobyte errs on the safe side of both.
_OVERHEAD = 1024


def fit_window(sock: socket.socket, settings: Settings) -> Settings:
    """Size ``sock``'s buffers for ``settings``' window; return the settings with a window that fits."""
    burst = (settings.blksize + 4) * settings.windowsize
    if burst <= _SMALL_BURST:
        return settings
    wanted = min(2 * burst, _MAX_SOCKET_BUFFER)
    granted = []
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, wanted)
        granted.append(sock.getsockopt(socket.SOL_SOCKET, option))
    fits = max(1, min(granted) // (2 * (settings.blksize + _OVERHEAD)))
    return replace(settings, windowsize=min(settings.windowsize, fits))
