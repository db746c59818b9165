"""Socket buffers big enough for a window: the one piece of tuning that windowed transfers cannot do without.

A window is sent as one burst. If it does not fit in the receiver's socket buffer, its tail is dropped every
time, silently: nothing arrives out of order to reveal the gap, so every window waits out a full timeout and
a transfer that should take a tenth of a second takes minutes. Both ends therefore size their buffers from the
window: the client from what it asks for (the server may only lower it), the server from what it granted.
"""

from __future__ import annotations

import contextlib
import socket

from .options import Settings

_SMALL_BURST = 64 * 1024  # what default socket buffers (about 200 KiB) hold with room to spare
_MAX_SOCKET_BUFFER = 8 * 1024 * 1024


def window_buffer_size(settings: Settings) -> int | None:
    """The socket buffer size a window needs, or None when the system default is plenty.

    Twice the burst leaves room for the kernel's own accounting of each datagram.
    """
    burst = (settings.blksize + 4) * settings.windowsize
    return None if burst <= _SMALL_BURST else min(2 * burst, _MAX_SOCKET_BUFFER)


def size_buffers(sock: socket.socket, settings: Settings) -> None:
    """Ask for send and receive buffers that hold a window.

    The kernel caps the request at its maximum (net.core.rmem_max and wmem_max), so for very large windows
    this helps only as far as the system allows.
    """
    size = window_buffer_size(settings)
    if size is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)
