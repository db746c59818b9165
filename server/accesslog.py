"""The access log: one line per response in the combined log format, plus the response time.

    127.0.0.1 - - [25/Nov/2026:08:14:09 +0000] "GET /x HTTP/1.1" 200 14 "-" "curl/7.88.1" 196us

Both ways a response is made (a WSGI application on a worker thread, a static file on the loop) log through
``log_response``, so the format lives in one place. The logger is ``server.access``; ``--access-log`` decides
where it goes, and when it is off the cost is one ``isEnabledFor`` check.

Every field a client or an application can influence is escaped the way nginx escapes its log: ``"``, ``\\`` and
every character outside printable ASCII (0x20-0x7e) become ``\\xHH``. Without that, a User-Agent holding
``" 200 1 "-" "x`` would fake the fields after it, a newline would fake a whole line, and ``\\x1b[`` or the C1
byte ``\\x9b`` (which arrives as the latin-1 character U+009B) would drive the terminal of whoever reads the log.
The remote address (outside quotes) and the three words of the request line also escape a space, which would
shift the columns after it; the parser never lets one into a request line, but the log does not rely on that.

A character above U+00FF cannot come from the wire (header bytes are decoded as latin-1), but an application may
put one in its environ: it is written as ``\\xHH`` for each byte of its UTF-8 encoding, so the log keeps one
notation (``\\xHH``, never ``\\u``) and stays ASCII.

The timestamp's month is English whatever the locale (``strftime("%b")`` would write ``Mär`` under a German one,
and log tools read ``Mar``). A log file is reopened when it is renamed or deleted (``logrotate`` without
``copytruncate``), in every worker process; a write that fails (a full disk) is reported once, then at most once
a minute, never as a traceback per request.

Also here, :class:`Occasional`: a warning about a problem that would otherwise repeat with every request (a log
that cannot be written, a server out of descriptors), said once and then at most once a minute.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

from server.http import Request

access_log = logging.getLogger("server.access")
log = logging.getLogger("server")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Occasional:
    """A warning for a problem that every request may run into again: logged the first time, then at most once
    per ``interval`` seconds, saying how many repeats were held back in between.

    Per request, the same failure would bury everything else in the log (and, with a disk full, fill what is
    left of it). Called from the loop and from worker threads without a lock: a race can cost one extra line or
    one miscounted repeat, never a missed first report."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._next = 0.0  # time.monotonic() from which the next warning may be logged
        self._held = 0  # repeats since the last line

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        held, self._held = self._held, 0
        self._next = now + self.interval
        if held:
            message += f" (and {held} more time{'s' if held > 1 else ''} since the last report)"
        self.logger.warning(message, *args)


class _ReportFailures:
    """What the access log's handlers do with a write that fails: one warning on the error log, then at most one
    a minute (:class:`Occasional`), instead of ``logging``'s traceback to stderr for every line."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        where = getattr(self, "baseFilename", "standard output")
        _write_failures.warning("cannot write the access log to %s: %s", where, error)


class _FileHandler(_ReportFailures, logging.handlers.WatchedFileHandler):
    """A log file that follows its path: ``WatchedFileHandler`` checks the path before each line (one ``stat``)
    and reopens it when the file there is another or none, as after ``logrotate`` renames it. Forked workers
    each keep their handler, so each reopens on its own; no signal to pass on, none to miss."""

    def emit(self, record: logging.LogRecord) -> None:
        # logging reopens the file outside its own try: a folder removed meanwhile would raise into the request.
        try:
            super().emit(record)
        except Exception:
            self.handleError(record)


class _PipeHandler(_ReportFailures, logging.FileHandler):
    """A path that is no regular file (a FIFO a log shipper reads, a device): opened once and kept. Reopened
    like a file, a FIFO recreated at its path would be opened again in blocking mode on the next line, and wait
    for a reader: the event loop logs static files, so it would freeze with it."""


class _StreamHandler(_ReportFailures, logging.StreamHandler):
    """Standard output, reporting failed writes (a closed pipe, a full disk) as the file does."""


_write_failures = Occasional(log)


def access_handler(target: str) -> logging.Handler:
    """The handler for ``--access-log``: "-" for standard output, else a file path (opened now: raises OSError)."""
    handler: logging.Handler
    if target == "-":
        handler = _StreamHandler(sys.stdout)
    elif os.path.exists(target) and not os.path.isfile(target):
        handler = _PipeHandler(target)
    else:
        handler = _FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def timestamp(now: float | None = None) -> str:
    """``25/Nov/2026:08:14:09 +0000``: local time as the combined format writes it, the month always English.

    Made once a second (every line of a busy second shares it): ``localtime`` and the formatting cost 1.5 µs,
    on every logged request."""
    global _last_stamp
    second = int(time.time() if now is None else now)
    cached = _last_stamp
    if cached[0] == second:
        return cached[1]
    t = time.localtime(second)
    offset = t.tm_gmtoff
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{clock} {sign}{hours:02d}{minutes:02d}"
    _last_stamp = (second, text)  # one tuple, replaced whole: threads see the old pair or the new one
    return text


_last_stamp: tuple[int, str] = (-1, "")


# Code point → escape, for the 256 characters a latin-1-decoded header can hold; translate() leaves the rest.
_QUOTED = {c: f"\\x{c:02X}" for c in range(256) if not 0x20 <= c <= 0x7E or c in (0x22, 0x5C)}
# Outside quotes, or between the words of the request line, a space would end the field early.
_BARE = {**_QUOTED, 0x20: "\\x20"}


def escape(value: str, table: dict[int, str] = _QUOTED) -> str:
    """``value`` safe to print inside a quoted log field: one line, printable ASCII, no ``"`` that ends the field.

    Linear in ``len(value)``: a clean value (the usual case) costs four C-level scans and is returned as is;
    otherwise one ``str.translate``, plus a per-character pass only for the rare value holding a character above
    U+00FF."""
    clean = value.isascii() and value.isprintable() and '"' not in value and "\\" not in value
    if clean and (table is _QUOTED or " " not in value):
        return value
    if not value.isascii() and max(value) > "\xff":
        return "".join(_escape_wide(char, table) for char in value)
    return value.translate(table)


def named(request: Request) -> str:
    """The request as the error log names it ("GET /path?query"), escaped as in the access log: a target may hold
    bytes 0x80-0xFF, among them 0x9B, the C1 control a terminal takes for ESC [ (clear the screen, move the cursor,
    forge what looks like other lines)."""
    return f"{escape(request.method, _BARE)} {escape(request.target, _BARE)}"


def _escape_wide(char: str, table: dict[int, str]) -> str:
    if char <= "\xff":
        return table.get(ord(char), char)
    # surrogatepass: a lone surrogate (from a surrogateescape decode) still gets bytes to show, instead of raising.
    return "".join(f"\\x{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def log_response(
    remote_addr: str,
    request: Request,
    status: int,
    size: int,
    referer: str | None,
    user_agent: str | None,
    started: float,
) -> None:
    """Log one response; ``started`` is the ``time.monotonic()`` at which the request's head was complete, so the
    duration logged counts what followed it: the body's upload, the wait for a free thread, the answer. (nginx's
    ``$request_time`` starts earlier, at the head's first byte; a slowly sent head shows there, not here.)"""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        '%s - - [%s] "%s %s %s" %d %s "%s" "%s" %dus',
        escape(remote_addr, _BARE) if remote_addr else "-",
        timestamp(),
        escape(request.method, _BARE),
        escape(request.target, _BARE),
        escape(request.version, _BARE),
        status,
        size or "-",
        escape(referer) if referer else "-",
        escape(user_agent) if user_agent else "-",
        int((time.monotonic() - started) * 1_000_000),
    )
