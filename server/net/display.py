"""How the command-line tools print what the network hands them: any bytes, one safe line, a timestamp."""

from __future__ import annotations

import time


def show(data: bytes | str, limit: int | None = None) -> str:
    """Any bytes as one printable line: UTF-8 text as it is, the rest escaped (``\\xff``, ``\\n``).

    Text is taken as the bytes it was decoded from: the network layer decodes names with ``surrogateescape``,
    so a byte 0xFF shows as ``\\xff`` again, not as the six characters of ``\\udcff``. Whatever a peer sent
    reaches a log or a terminal through here, so that a newline cannot forge a line and an escape sequence
    cannot drive the terminal. ``limit`` caps the result at that many characters (an escape is never cut in
    two) plus ``...``: a peer's 64 KiB name is not worth 64 KiB of log, nor of an error reply.
    """
    if isinstance(data, str):
        data = _original_bytes(data)
    if limit is not None:
        data = data[: 4 * limit + 4]  # a character takes at most 4 bytes: enough to fill the limit, and see more
    shown: list[str] = []
    length = 0
    for ch in data.decode("utf-8", "backslashreplace"):
        piece = ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        length += len(piece)
        if limit is not None and length > limit:
            return "".join(shown) + "..."
        shown.append(piece)
    return "".join(shown)


def _original_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: shown as the bytes it encodes to
        return text.encode("utf-8", "surrogatepass")


def stamp() -> str:
    """The wall-clock time with milliseconds, for log lines."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


def peer_text(addr: tuple | str) -> str:
    """``host:port``, with IPv6 hosts in brackets (or the path of a Unix socket, if it has one)."""
    if not isinstance(addr, tuple):
        return str(addr) or "unix socket"
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"
