"""Listening sockets: parse ``--bind`` addresses and open them, before any worker process is forked.

Binding happens once, in the parent, so that every pre-forked worker inherits the same listening sockets and
the kernel spreads new connections over them; and so that a port already in use is reported as one clear error
before anything else starts. Three forms are accepted:

    HOST:PORT          127.0.0.1:8000, 0.0.0.0:80, localhost:8080
    [IPV6]:PORT        [::1]:8000, [::]:8000
    unix:PATH          unix:/run/site.sock (for a reverse proxy on the same machine)

``open_listeners`` opens all of them or none, and tells an address given twice (or two that overlap, such as
``0.0.0.0:8000`` and ``127.0.0.1:8000``) apart from a port some other program holds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass

from server.oserrors import describe


class BindError(Exception):
    """A ``--bind`` value that is malformed or cannot be bound; the message says which and why."""


@dataclass(frozen=True)
class BindAddress:
    """A parsed ``--bind`` value."""

    family: int
    host: str  # for unix sockets: the path
    port: int

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.host}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_bind(value: str) -> BindAddress:
    """Parse one ``--bind`` value; raises BindError with a message fit for the command line."""
    if value.startswith("unix:"):
        path = value[5:]
        if not path:
            raise BindError(f"--bind {value!r}: a unix socket needs a path, as in unix:/run/site.sock")
        return BindAddress(socket.AF_UNIX, path, 0)
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        family = socket.AF_INET6
        if not sep:
            raise BindError(f"--bind {value!r}: expected [IPV6]:PORT, as in [::1]:8000")
    else:
        host, sep, port = value.rpartition(":")
        family = socket.AF_INET
        if not sep:
            raise BindError(f"--bind {value!r}: expected HOST:PORT, as in 127.0.0.1:8000")
        if ":" in host:
            raise BindError(f"--bind {value!r}: write IPv6 addresses in brackets, as in [::1]:8000")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BindError(f"--bind {value!r}: the port must be a number from 0 to 65535")
    return BindAddress(family, host or "0.0.0.0", int(port))


@dataclass
class Listener:
    """An open listening socket and what the environ needs to know about it."""

    sock: socket.socket
    address: BindAddress
    scheme: str = "http"

    @property
    def local_facts(self) -> tuple[str, str, str]:
        """(scheme, SERVER_NAME, SERVER_PORT) for connections accepted here."""
        if self.address.family == socket.AF_UNIX:
            return self.scheme, "localhost", "80"
        host, port = self.sock.getsockname()[:2]
        return self.scheme, host, str(port)

    @property
    def url(self) -> str:
        """Where a person can reach this listener."""
        if self.address.family == socket.AF_UNIX:
            return f"unix:{self.address.host}"
        host, port = self.sock.getsockname()[:2]
        if self.address.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{port}"


def open_listener(address: BindAddress, backlog: int = 2048) -> Listener:
    """Bind and listen; raises BindError with the reason (port in use, permission, no such address)."""
    if address.family == socket.AF_UNIX:
        _remove_stale_unix_socket(address.host)
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if address.family == socket.AF_UNIX:
            sock.bind(address.host)
            # Like gunicorn: anyone who can reach the path may connect (a proxy often runs as another user);
            # restrict access with the permissions of the directory that holds the socket.
            os.chmod(address.host, 0o777)
        else:
            sock.bind((address.host, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise BindError(f"cannot listen on {address}: {describe(error)}") from None
    return Listener(sock, address)


def open_listeners(addresses: list[BindAddress]) -> list[Listener]:
    """Open every address, or none: on failure the ones already open are closed and BindError is raised.

    An address given twice would otherwise fail as "address already in use (is another server running on
    it?)", sending the operator to look for a server that does not exist; so repeats are refused up front,
    and a bind that collides with one of our own earlier listeners (another spelling of the same address, or
    a wildcard that covers it) names that earlier --bind instead.
    """
    seen: dict[tuple[int, str, int], BindAddress] = {}
    for address in addresses:
        key = _identity(address)
        if key in seen:
            if str(seen[key]) == str(address):
                raise BindError(f"--bind {address} is given twice; give each address once")
            raise BindError(f"--bind {seen[key]} and --bind {address} are the same address; give it once")
        if address.family == socket.AF_UNIX or address.port != 0:  # port 0 twice: two different free ports
            seen[key] = address
    listeners: list[Listener] = []
    try:
        for address in addresses:
            try:
                listeners.append(open_listener(address))
            except BindError:
                earlier = _clash_with_own(address, listeners)
                if earlier is None:
                    raise
                raise BindError(
                    f"cannot listen on {address}: --bind {earlier.address} on the same command line already "
                    "covers it (the same address given twice?)"
                ) from None
    except BindError:
        for listener in listeners:
            listener.sock.close()
            if listener.address.family == socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    os.unlink(listener.address.host)  # we made it; nothing will serve on it now
        raise
    return listeners


def _identity(address: BindAddress) -> tuple[int, str, int]:
    """What makes two --bind values the same socket: unix paths compare as absolute paths."""
    if address.family == socket.AF_UNIX:
        return address.family, os.path.abspath(address.host), 0
    return address.family, address.host, address.port


def _clash_with_own(address: BindAddress, listeners: list[Listener]) -> Listener | None:
    """The listener we opened ourselves that makes ``address`` unbindable, if any.

    Only asked after a bind failed: a unix path that one of ours is bound to (its spelling may differ), or a
    TCP port one of ours holds in the same family (``localhost:8000`` after ``127.0.0.1:8000``, or any host
    after the wildcard). A fixed port is compared, never 0, which always gets a fresh port.
    """
    for listener in listeners:
        if listener.address.family != address.family:
            continue
        if address.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                if os.path.samefile(listener.address.host, address.host):
                    return listener
        elif address.port and listener.sock.getsockname()[1] == address.port:
            return listener
    return None


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by a previous run, but never a regular file that happens to be there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise BindError(f"cannot listen on unix:{path}: {error.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot listen on unix:{path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # nobody answers: stale
    else:
        raise BindError(f"cannot listen on unix:{path}: address already in use (another server answers there)")
    finally:
        probe.close()
