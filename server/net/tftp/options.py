"""Option negotiation (RFC 2347): blksize (RFC 2348), timeout and tsize (RFC 2349), windowsize (RFC 7440).

The client proposes, the server disposes: the server answers the options it accepts in an OACK, possibly with
smaller values, and silently drops the rest; the client then checks the OACK against what it asked for. Both
halves live here, as pure functions, so that the server and the client agree by construction and tests can
cover every branch without a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .packets import ErrorCode

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349, in whole seconds
# The largest timeout the server grants by default. RFC 2349 allows up to 255 s, but a server's slot waits for
# that long per retransmission: 256 never-answered requests asking for 255 s held every slot of a server for
# (5 + 1) x 255 s, 25 minutes. No path on Earth needs 10 s to answer a datagram, and clients ask for a few
# seconds if they ask at all, so anything longer is ignored (RFC 2349 lets the server acknowledge a timeout
# only with the very value asked for, so ignoring is the only way to say no short of refusing the request).
DEFAULT_MAX_TIMEOUT = 10
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535  # RFC 7440
_UNBOUNDED = 2**63  # for values with no upper limit of their own (tsize), or one we clamp to


class NegotiationError(Exception):
    """The options cannot be honoured; carries the TFTP error code to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Settings:
    """What a transfer runs with once negotiation is over."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0  # seconds before a retransmission
    retries: int = 5  # retransmissions of the same packet before giving up
    tsize: int | None = None  # the announced transfer size, when known
    # Seconds without progress after which the transfer gives up, however many retries it has left; None
    # leaves it to the retries alone. It bounds what one silent peer can hold whatever timeout it negotiated.
    stall_limit: float | None = None


@dataclass(frozen=True)
class ServerLimits:
    """The server's bounds on what a client may ask for."""

    max_blksize: int = MAX_BLKSIZE
    max_windowsize: int = 64
    max_upload: int | None = None  # largest accepted upload in bytes; None means no limit
    max_timeout: int = DEFAULT_MAX_TIMEOUT  # a longer requested timeout is ignored (see DEFAULT_MAX_TIMEOUT)


def _int_in(value: str, low: int, high: int) -> int | None:
    """Parse a decimal option value; None when it is not a number in [low, high].

    The value comes off the wire, so its length is checked before ``int`` sees it: Python refuses to convert
    more than 4,300 digits (a ValueError, which used to escape as an internal error), and a number with more
    digits than ``high`` is out of range whatever it says. Leading zeros do not count ("0512" is 512).
    """
    if not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    number = int(digits)
    return number if low <= number <= high else None


def negotiate(
    requested: dict[str, str],
    *,
    is_read: bool,
    file_size: int | None,
    limits: ServerLimits,
    base: Settings,
) -> tuple[dict[str, str], Settings]:
    """Server side: decide which requested options to accept; return the OACK options and the settings.

    An empty OACK dict means "answer as plain RFC 1350". Invalid values are ignored rather than refused: a
    client that sent them gets the defaults, as from a server without options support. That covers values
    no client means, such as a blksize of 5,000 digits, and a timeout above ``limits.max_timeout``. The
    only refusal is an upload whose announced tsize exceeds ``limits.max_upload`` (ERROR 3). ``file_size`` is
    the size of the file to send (RRQ) or None when unknown (netascii).
    """
    accepted: dict[str, str] = {}
    settings = base
    # A larger blksize or windowsize than we allow (or than the RFC allows) is granted at our maximum: the
    # client asked for "as large as possible", and lowering a value is exactly what an OACK may do.
    if (blksize := _int_in(requested.get("blksize", ""), MIN_BLKSIZE, _UNBOUNDED)) is not None:
        blksize = min(blksize, limits.max_blksize, MAX_BLKSIZE)
        accepted["blksize"] = str(blksize)
        settings = replace(settings, blksize=blksize)
    # A timeout may not be lowered in the OACK (RFC 2349): one above our cap is left out, and the transfer
    # runs with the server's own timeout.
    max_timeout = min(limits.max_timeout, MAX_TIMEOUT)
    if (timeout := _int_in(requested.get("timeout", ""), MIN_TIMEOUT, max_timeout)) is not None:
        accepted["timeout"] = str(timeout)
        settings = replace(settings, timeout=float(timeout))
    if "tsize" in requested:
        tsize = _int_in(requested["tsize"], 0, _UNBOUNDED)
        if is_read and file_size:
            # curl (7.88) rejects an OACK announcing "tsize 0", so an empty file is announced by omission.
            accepted["tsize"] = str(file_size)
            settings = replace(settings, tsize=file_size)
        elif not is_read and tsize is not None:
            if limits.max_upload is not None and tsize > limits.max_upload:
                raise NegotiationError(
                    ErrorCode.DISK_FULL, f"upload of {tsize} bytes exceeds the limit of {limits.max_upload}"
                )
            accepted["tsize"] = str(tsize)
            settings = replace(settings, tsize=tsize)
    window = _int_in(requested.get("windowsize", ""), MIN_WINDOWSIZE, _UNBOUNDED)
    if window is not None:
        window = min(window, limits.max_windowsize, MAX_WINDOWSIZE)
        accepted["windowsize"] = str(window)
        settings = replace(settings, windowsize=window)
    return accepted, settings


def client_options(settings: Settings, *, tsize: int | None) -> dict[str, str]:
    """Client side: the options for a request; defaults are left out, so a plain server sees a plain request.

    ``tsize`` is 0 on a read (asking for the size), the file size on a write, or None to leave it out.
    """
    options: dict[str, str] = {}
    if settings.blksize != DEFAULT_BLKSIZE:
        options["blksize"] = str(settings.blksize)
    if settings.windowsize != 1:
        options["windowsize"] = str(settings.windowsize)
    if tsize is not None:
        options["tsize"] = str(tsize)
    return options


def accept_oack(requested: dict[str, str], oack: dict[str, str], base: Settings) -> Settings:
    """Client side: check the server's OACK against the request and return the settings it establishes.

    RFC 2347 lets the server lower blksize and windowsize but not raise them, and forbids options the client
    did not ask for; anything else fails the negotiation (the caller answers ERROR 8).
    """
    # An option missing from the OACK was declined: it keeps its RFC 1350 default, not the value we asked for.
    settings = replace(base, blksize=DEFAULT_BLKSIZE, windowsize=1, tsize=None)
    for name, value in oack.items():
        if name not in requested:
            message = f"server acknowledged unrequested option {name!r}"
            raise NegotiationError(ErrorCode.OPTION_NEGOTIATION, message)
        if name == "blksize":
            number = _int_in(value, MIN_BLKSIZE, int(requested[name]))
            settings = replace(settings, blksize=_checked(name, value, number))
        elif name == "windowsize":
            number = _int_in(value, MIN_WINDOWSIZE, int(requested[name]))
            settings = replace(settings, windowsize=_checked(name, value, number))
        elif name == "timeout":
            number = _int_in(value, MIN_TIMEOUT, MAX_TIMEOUT)
            settings = replace(settings, timeout=float(_checked(name, value, number)))
        elif name == "tsize":
            settings = replace(settings, tsize=_checked(name, value, _int_in(value, 0, _UNBOUNDED)))
    return settings


def _checked(name: str, value: str, number: int | None) -> int:
    if number is None:
        raise NegotiationError(ErrorCode.OPTION_NEGOTIATION, f"server answered invalid {name} {value!r}")
    return number
