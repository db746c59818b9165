"""Listening sockets: parse ``--bind`` addresses and open them, before any worker process is forked.

Binding happens once, in the parent, so that every pre-forked worker inherits the same listening sockets and
the kernel spreads new connections over them; and so that a port already in use is reported as one clear error
before anything else starts. Three forms are accepted:

    HOST:PORT          127.0.0.1:8000, 0.0.0.0:80, localhost:8080
    [IPV6]:PORT        [::1]:8000, [::]:8000
    unix:PATH          unix:/run/site.sock (for a reverse proxy on the same machine)

A TCP address may carry a scheme: ``https://0.0.0.0:443`` or ``http://0.0.0.0:80``. Without one, an address is
HTTPS when a certificate is given (``--certfile``) and plain HTTP otherwise (``resolve_schemes``); a unix socket is
always plain, since what connects to it is a proxy on the same machine.

``open_listeners`` opens all of them or none, and tells an address given twice (or two that overlap, such as
``0.0.0.0:8000`` and ``127.0.0.1:8000``) apart from a port some other program holds.

Or the sockets are already open: under systemd socket activation (``systemd_listeners``), systemd binds the
addresses of a ``.socket`` unit itself (so port 80 needs no root in the server, and the socket exists, queuing
connections, before the server does and across its restarts) and starts the server with them as descriptors 3,
4, ... described by ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` (see sd_listen_fds(3)). They are used
exactly like bound listeners, so pre-forked workers inherit them the same way. A socket named
``FileDescriptorName=http`` or ``=https`` in its unit is plain or TLS whatever ``--certfile`` says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import MutableMapping
from dataclasses import dataclass

from server.oserrors import describe

log = logging.getLogger("server")

SD_LISTEN_FDS_START = 3  # systemd passes its sockets from this descriptor on (sd-daemon.h)
_ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class BindError(Exception):
    """A ``--bind`` value that is malformed or cannot be bound; the message says which and why."""


@dataclass(frozen=True)
class BindAddress:
    """A parsed ``--bind`` value."""

    family: int
    host: str  # for unix sockets: the path
    port: int
    scheme: str | None = None  # "http" or "https" when the address says so; None: as --certfile decides

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.host}"
        prefix = f"{self.scheme}://" if self.scheme else ""
        if self.family == socket.AF_INET6:
            return f"{prefix}[{self.host}]:{self.port}"
        return f"{prefix}{self.host}:{self.port}"


def parse_bind(value: str) -> BindAddress:
    """Parse one ``--bind`` value; raises BindError with a message fit for the command line."""
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme not in ("http", "https"):
            raise BindError(f"--bind {value!r}: the scheme must be http:// or https://")
        if rest.startswith("unix:"):
            raise BindError(f"--bind {value!r}: unix sockets are always plain HTTP; write unix:PATH")
        try:
            address = parse_bind(rest)
        except BindError as error:  # quote the value as it was written, scheme and all
            raise BindError(str(error).replace(f"--bind {rest!r}", f"--bind {value!r}", 1)) from None
        return BindAddress(address.family, address.host, address.port, scheme)
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
    # ASCII digits only: str.isdigit() also takes a superscript two (which int() refuses) and full-width digits
    # (which int() reads: U+FF18 U+FF10 U+FF18 U+FF10 was port 8080).
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise BindError(f"--bind {value!r}: the port must be a number from 0 to 65535")
    return BindAddress(family, host or "0.0.0.0", int(port))


@dataclass
class Listener:
    """An open listening socket and what the environ needs to know about it."""

    sock: socket.socket
    address: BindAddress
    scheme: str = "http"  # "https" once resolve_schemes has decided that this listener speaks TLS

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

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


def resolve_schemes(listeners: list[Listener], have_certificate: bool) -> None:
    """Decide which listeners speak TLS: those written ``https://``, and with a certificate every TCP address
    without a scheme. Raises BindError for ``https://`` without a certificate."""
    for listener in listeners:
        scheme = listener.address.scheme
        if scheme == "https" and not have_certificate:
            raise BindError(f"--bind {listener.address} needs a certificate: give --certfile (and --keyfile)")
        if scheme is None:
            scheme = "https" if have_certificate and listener.address.family != socket.AF_UNIX else "http"
        listener.scheme = scheme


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


# -- systemd socket activation -----------------------------------------------------------------------------------------


def systemd_listeners(
    environ: MutableMapping[str, str] | None = None, start: int = SD_LISTEN_FDS_START
) -> list[Listener] | None:
    """The listening sockets systemd passed to this process, or None when it passed none (then bind ``--bind``).

    As sd_listen_fds(3) with ``unset_environment``: the variables are for this process only when ``LISTEN_PID``
    is its pid (a parent that did not clear them leaves them to its children, whose pid differs); and they are
    removed in every case, so that no process we start (a --reload child, a program the app runs) takes the
    descriptors again. Each descriptor must be a listening stream socket (TCP or unix); anything else raises
    BindError, since serving on something other than what the unit file says would be worse than not starting.
    The descriptors are made close-on-exec, as sd_listen_fds does. ``start`` is for tests only.
    """
    env = os.environ if environ is None else environ
    pid, count, names = (env.pop(name, None) for name in _ACTIVATION_VARIABLES)
    if pid is None or count is None:
        return None
    if pid.strip() != str(os.getpid()):
        log.info(
            "LISTEN_PID=%s is not this process (%d): the LISTEN_FDS sockets are not ours; binding --bind",
            pid,
            os.getpid(),
        )
        return None
    if not count.strip().isdigit():
        raise BindError(f"LISTEN_FDS={count!r}: expected the number of sockets systemd passed")
    # LISTEN_FDNAMES: FileDescriptorName= of the socket units (default: the unit's name), colon-separated.
    labels = names.split(":") if names else []
    listeners = []
    for index, fd in enumerate(range(start, start + int(count))):
        label = labels[index] if index < len(labels) else ""
        what = f"descriptor {fd}" + (f" ({label})" if label else "")
        # FileDescriptorName=http or =https says what a TCP socket speaks, as a scheme in --bind would.
        scheme = label if label in ("http", "https") else None
        listeners.append(_activated_listener(fd, f"LISTEN_FDS={count}: {what}", scheme))
        # The address, not the URL: whether it speaks HTTPS is decided later, with --certfile (resolve_schemes).
        log.info("socket activation: %s is %s", what, listeners[-1].address)
    if listeners:
        log.info("socket activation: listening on the %d socket(s) systemd passed, not on --bind", len(listeners))
    return listeners or None


def _activated_listener(fd: int, what: str, scheme: str | None = None) -> Listener:
    """The inherited descriptor ``fd`` as a Listener, once it is known to be a listening stream socket."""
    try:
        os.fstat(fd)
    except OSError:
        raise BindError(f"{what} is not open (did systemd start this process, with a .socket unit?)") from None
    try:
        sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
    except OSError:
        raise BindError(f"{what} is not a socket") from None
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM:
            raise BindError(f"{what} is not a stream socket (HTTP needs ListenStream=, not ListenDatagram=)")
        if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise BindError(f"{what} is not a TCP or unix socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            # With Accept=yes systemd passes one accepted connection per process, not a socket to accept on.
            raise BindError(f"{what} is not listening (the .socket unit needs Accept=no, its default)")
        local = sock.getsockname()
    except BindError:
        sock.detach()  # not ours to close: the caller reports the error and exits
        raise
    sock.setblocking(False)
    sock.set_inheritable(False)
    if sock.family == socket.AF_UNIX:
        if isinstance(local, bytes):  # the abstract namespace: a leading NUL, shown as @ as systemd does
            local = "@" + local[1:].decode("utf-8", "backslashreplace")
        return Listener(sock, BindAddress(socket.AF_UNIX, local or "(unnamed)", 0))
    return Listener(sock, BindAddress(sock.family, local[0], local[1], scheme))
