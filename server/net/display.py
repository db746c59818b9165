"""How the command-line tools print what the network hands them: any bytes, one safe line, a timestamp."""

from __future__ import annotations

import time


def show(data: bytes) -> str:
    """Any bytes as one printable line: UTF-8 text as it is, the rest escaped (``\\xff``, ``\\n``)."""
    text = data.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


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
