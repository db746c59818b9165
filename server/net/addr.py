"""Addresses: parsing ``HOST:PORT`` the way people type it on a command line (IPv6 brackets included), and telling
whether an address that arrived in a datagram is one of this machine's own."""

from __future__ import annotations

import errno
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def host_ip(host: str) -> IPAddress | None:
    """A numeric host as an IP address, with IPv4-mapped IPv6 (``::ffff:127.0.0.1``) turned back into IPv4.

    A dual-stack socket bound to ``::`` reports IPv4 senders in the mapped form; unmapping them means one sender
    has one identity whichever socket heard it. None for anything that is not a numeric address (a name).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def source_key(host: str) -> str:
    """Who a limit per source counts as one: the IPv4 address, or the IPv6 /64 prefix (``2001:db8::/64``).

    Ports are not part of it (a client picks a new one for free), and an IPv6 host is usually given a whole /64,
    so counting single IPv6 addresses would let one host take every slot by rotating addresses. IPv4-mapped
    addresses count as their IPv4 address; a host that is not a numeric address counts as itself.
    """
    ip = host_ip(host.partition("%")[0])
    if ip is None:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return str(ip)


# A bind to an address the host does not have fails with one of these: the address is not ours.
_NOT_OURS = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


def is_local_address(host: str) -> bool:
    """Whether ``host`` (numeric) is an address of this machine, asked of the kernel by binding a socket to it.

    The standard library cannot list a host's interface addresses portably, and a list made at start-up would go
    stale when DHCP or an administrator changes them; a bind answers for the addresses of this very moment, on
    every system, in three system calls (port 0, so no port is taken and nothing is sent). Loopback (127.0.0.0/8,
    ``::1``) and the unspecified address (which the kernel delivers locally) are local without asking.

    It errs on the side of "local": callers use it to refuse to answer themselves, where dropping one datagram is
    the safe mistake. So a bind that fails for another reason than "no such address" (out of descriptors, say)
    counts as local, and so does every address on a host that allows binding to foreign ones
    (``net.ipv4.ip_nonlocal_bind``).
    """
    ip = host_ip(host)
    if ip is None:
        return False
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError as exc:
        return exc.errno not in _NOT_OURS
    return True
