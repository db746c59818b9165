"""Parsing ``HOST:PORT`` the way people type it on a command line, IPv6 brackets included."""

from __future__ import annotations


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"127.0.0.1:9999"``, ``"[::1]:9999"``, ``":9999"`` or ``"9999"`` to ``(host, port)``.

    Raises ValueError, with the reason, for anything else.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets: [{host}]:{port}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in {text!r}: expected a number from 0 to 65535")
    return host or default_host, int(port)
