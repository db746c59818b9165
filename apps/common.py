"""What the demo site's examples share: where their data lives, the secret key, the look of their pages.

Every example is its own ``framework.App`` (so each one can also be served alone), and ``apps/demo.py`` mounts
them under one site. For the site to feel like one, they agree on three things, all defined here:

- **A data directory.** ``SERVER_DATA_DIR`` names it (``python -m server --data-dir DIR`` sets that variable);
  otherwise it is ``./var/``, next to wherever the server was started. The guestbook's and the todo list's
  SQLite files and the uploaded files live there, so they survive a restart.
- **One secret key.** Sessions and CSRF tokens are signed with it. It is generated once and kept in the data
  directory: a key made fresh at every start would turn every open form into a 403 after a restart, and with
  ``--workers 2`` each process would refuse the other's cookies.
- **Numbers from the URL.** SQLite's integers stop at ``2**63 - 1``, and ``sqlite3`` raises ``OverflowError``
  for a larger one instead of finding nothing: ``row_id`` and ``page_number`` turn such numbers into a 404
  before they reach a query, and ``fetch_page`` is the one way the examples page through a table.
- **Templates and error pages.** All pages extend ``templates/base.html``; ``use_site_error_pages`` gives 404s
  and 405s the same layout instead of the framework's plain page. ``templates/`` and ``static/`` are found at the
  repository root, or inside this package once installed from a wheel (``TEMPLATES``, ``STATIC``).

Every response also carries ``SECURITY_HEADERS`` (see ``security_headers``): no page of the site may be framed by
another site, and no browser guesses a type the response did not declare.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework import App, HTTPError, Request, Response, abort
from framework.forms import JOINERS, UNSAFE_IN_NAMES

ROOT = Path(__file__).resolve().parent.parent


def _site_directory(name: str) -> Path:
    """Where the site's ``static/`` or ``templates/`` folder is: inside this package when installed from a
    wheel (pyproject.toml maps them to ``apps/static`` and ``apps/templates``), else at the repository root.

    The installed copy is looked for first because it exists only in an installation, while the parent of an
    installed ``apps`` is site-packages, where some other distribution may have put a folder of the same name.
    """
    shipped = Path(__file__).resolve().parent / name
    return shipped if shipped.is_dir() else ROOT / name


TEMPLATES = _site_directory("templates")
STATIC = _site_directory("static")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Refuse to be framed (clickjacking: a hidden frame of our page under another site's buttons), in the old header
# and in CSP's, and make browsers trust the declared Content-Type instead of sniffing one (an upload as a script).
SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
)


def default_data_dir() -> Path:
    """``$SERVER_DATA_DIR``, or ``./var`` relative to the current directory."""
    return Path(os.environ.get("SERVER_DATA_DIR") or "var")


def secret_key(data_dir: Path) -> str:
    """The site's secret key, kept in ``data_dir/secret_key`` and created there on first use.

    Several worker processes may start at the same moment, so the key is written to a private temporary file
    and *linked* into place: ``os.link`` fails if the name already exists, so exactly one process's key wins
    and every process then reads that one. The file is readable by its owner only.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    if not path.exists():
        temporary = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            os.link(temporary, path)
        except FileExistsError:
            pass  # Another process got there first: use its key.
        finally:
            temporary.unlink()
    return path.read_text().strip()


# What a one-line field (a name, a title) refuses: the categories ``safe_filename`` takes out of file names.
LINE_REFUSED = UNSAFE_IN_NAMES
# The exceptions a one-line field makes. As file names do, the zero-width joiner and non-joiner, which belong to
# words (Persian) and emoji (a family is three people joined by U+200D). And the format characters that ordinary
# text carries, which reorder and hide nothing: the direction marks of Hebrew, Arabic and Persian (LRM, RLM, and
# ALM; marks, unlike the overrides and isolates, which stay refused), the soft hyphen of text pasted from a web
# page, the word joiner, and the Arabic number signs. (Tag characters stay refused: invisible, they can carry a
# whole hidden text; the flags of Scotland, England and Wales, made with them, are the loss.) A text of several
# lines (a message) also keeps its line breaks and tabs.
TEXT_FORMAT = frozenset("\u200e\u200f\u061c\u00ad\u2060\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u08e2")
LINE_ALLOWED = JOINERS | TEXT_FORMAT
TEXT_ALLOWED = LINE_ALLOWED | frozenset("\r\n\t")


def unprintable(text: str, refused: frozenset[str] = LINE_REFUSED, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether ``text`` has a character of a Unicode category in ``refused`` that is not one of ``allowed``.

    By default: control characters (Cc: NUL, escape, line breaks, none of which belongs in a one-line title),
    format characters (Cf: a right-to-left override, U+202E, shows ``evil\u202etxt.exe`` as ``evilexe.txt``;
    zero-width spaces hide in a name), lone surrogates (Cs: JSON's ``"\\ud800"`` decodes to one, and it cannot be
    encoded as UTF-8, so SQLite and every page would fail on it) and the line and paragraph separators (Zl, Zp).
    Nothing is allowed unless the caller says so (``LINE_ALLOWED``, ``TEXT_ALLOWED``), so a check that forgets to
    say is the stricter one.
    """
    return any(character not in allowed and unicodedata.category(character) in refused for character in text)


SQLITE_INTEGER_MAX = 2**63 - 1


def row_id(number: int) -> int:
    """``number``, an id taken from the URL, once it is one SQLite can look up: 404 beyond its integers.

    No row can have such an id, but ``sqlite3`` raises ``OverflowError`` for it rather than finding nothing, which
    would be a 500. Every view that looks a row up by an id from its URL passes the id through here.
    """
    if not 0 <= number <= SQLITE_INTEGER_MAX:
        abort(404, "There is nothing with that number.")
    return number


def page_number(request: Request) -> int:
    """The page a list is asked for (``?page=N``, 1 when absent): 400 unless it is a whole number from 1, and 404
    beyond SQLite's integers.

    The digits are counted before ``int()`` reads them: Python refuses to convert 4,300 digits or more (a
    ``ValueError``), and no list has that many pages anyway.
    """
    text = request.query.get("page", "1")
    if not (text.isascii() and text.isdigit() and text.strip("0")):
        abort(400, "The page number must be a whole number, 1 or more.")
    digits = text.lstrip("0")
    if len(digits) > len(str(SQLITE_INTEGER_MAX)):
        abort(404, "There is no such page.")
    return row_id(int(digits))


@dataclass(frozen=True)
class Page:
    """One page of a list and where it sits among the others."""

    items: list[Any]
    number: int
    count: int  # how many pages there are (at least 1, even for an empty list)
    total: int  # how many items there are

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.count else None


def fetch_page(
    db: sqlite3.Connection, query: str, number: int, per_page: int, parameters: tuple[Any, ...] = ()
) -> Page:
    """Page ``number`` of the rows ``query`` selects (the app's own SQL, with ``?`` for ``parameters``).

    A page past the last is 404, answered before the ``OFFSET`` is computed: ``(number - 1) * per_page`` of a
    far page would overflow SQLite's integers. Listing a page at a time is also what keeps a page small however
    many rows the table has grown to.
    """
    total = db.execute(f"SELECT count(*) FROM ({query})", parameters).fetchone()[0]
    count = max(1, -(-total // per_page))  # ceiling division
    if number > count:
        abort(404, f"There {'is 1 page' if count == 1 else f'are {count} pages'}.")
    rows = db.execute(f"{query} LIMIT ? OFFSET ?", (*parameters, per_page, (number - 1) * per_page)).fetchall()
    return Page(rows, number, count, total)


def keep_newest(db: sqlite3.Connection, table: str, count: int) -> None:
    """Delete all but the newest ``count`` rows of ``table`` (the app's own table, with an ``id INTEGER PRIMARY
    KEY``: the newest have the highest ids).

    Whatever anyone writes into a table a stranger can add to must have a bound, or it takes the disk (and every
    page that counts the rows grows slower with it). Called after each insert, in its transaction, it keeps the
    table at ``count`` rows: the oldest make room. Finding the cut is a walk down the primary key's index."""
    db.execute(f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)", (count,))


class AttemptLimiter:
    """At most ``limit`` attempts per key (a client's address, a username) in any ``window`` seconds.

    For what is costly to try and worth guessing, such as a password: each attempt at the blog's login costs an
    scrypt hash (tens of milliseconds and 32 MiB). ``retry_after`` counts an attempt if every key allows it,
    ``peek`` only asks, and ``record`` counts one found out afterwards (a wrong password).

    Attempts are remembered in memory, for at most ``max_keys`` keys, so a flood of new keys costs bounded memory.
    Two rules keep such a flood from wiping out the counts that matter. A refused attempt is never remembered: it
    only reads its keys, so ten thousand refused requests, each with a new username, add nothing. And room for a
    new key is made by forgetting first the keys whose attempts have all left the window, then the least recently
    tried key still below the limit, and a key at its limit only when every key is at it.

    What a key is decides what is limited, and the address is only as good as the server's idea of it. Behind a
    proxy, the server must be told to believe it (``--forwarded-allow-ips``, see docs/nginx.md): otherwise every
    request comes from the proxy's address, and all clients share one key, so ten strangers' attempts lock
    everyone out. An IPv6 client usually holds a whole /64 and can move between its addresses at will, so the
    site keys IPv6 addresses by their /64 (``address_key``).

    Each worker process keeps its own count, so ``--workers N`` allows up to N times ``limit``: a shared store
    (SQLite, Redis) would be the next step for a real site.
    """

    def __init__(
        self, limit: int, window: float, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        # Each key's latest attempts (``limit`` at most: older ones cannot matter), least recently tried key first.
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> int:
        """0 if another attempt for every one of ``keys`` is allowed now (and count it), else the whole seconds
        to wait until one is (the attempt is refused, and nothing is remembered of it)."""
        with self._lock:
            now = self.clock()
            wait = self._wait(keys, now)
            if not wait:
                for key in keys:
                    self._record(key, now)
            return wait

    def peek(self, *keys: str) -> int:
        """What ``retry_after`` would answer, without counting anything."""
        with self._lock:
            return self._wait(keys, self.clock())

    def record(self, *keys: str) -> None:
        """Count an attempt for every one of ``keys`` (one already made: a wrong password, say)."""
        with self._lock:
            now = self.clock()
            for key in keys:
                self._record(key, now)

    def _limited_for(self, times: deque[float], now: float) -> float:
        """How long until a key with these attempts may try again (0 or less: now)."""
        return times[0] + self.window - now if len(times) >= self.limit else 0

    def _wait(self, keys: tuple[str, ...], now: float) -> int:
        waits = [self._limited_for(self._attempts.get(key, deque()), now) for key in keys]
        longest = max(waits, default=0)
        return max(1, int(longest + 0.999)) if longest > 0 else 0

    def _record(self, key: str, now: float) -> None:
        times = self._attempts.pop(key, None)
        if times is None:
            self._make_room(now)
            times = deque(maxlen=self.limit)
        times.append(now)
        self._attempts[key] = times  # The most recently tried key is last.

    def _make_room(self, now: float) -> None:
        """Forget the keys whose attempts have all left the window; then, if the store is still full, the least
        recently tried key below the limit, or, when there is none, the least recently tried key.

        Keys are in the order of their latest attempt, so the expired ones are all at the front. Finding one
        below the limit may read every key, but only when the store is full of keys tried within the window."""
        while self._attempts:
            oldest, times = next(iter(self._attempts.items()))
            if times[-1] > now - self.window:
                break
            del self._attempts[oldest]
        if len(self._attempts) >= self.max_keys:
            below = (key for key, times in self._attempts.items() if self._limited_for(times, now) <= 0)
            del self._attempts[next(below, next(iter(self._attempts)))]


def address_key(request: Request) -> str:
    """The limiter's key for the client's address: an IPv4 address as it is, an IPv6 one by its /64 network.

    One IPv6 client (a home, a phone, a cloud machine) usually holds a whole /64 and can pick a new address in
    it for every request; keyed by address alone, each guess would count against a fresh key."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return f"address:{request.remote_addr}"
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client of a dual-stack socket (another server's): itself, not a /64
    if address.version == 6:
        return f"address:{ipaddress.ip_network((address, 64), strict=False)}"
    return f"address:{address}"


class Database:
    """One SQLite file, opened afresh for each unit of work.

    ``sqlite3`` connections must not be shared between threads by default, and the server runs views on
    several worker threads (and processes, with ``--workers``). Opening a connection costs tens of microseconds,
    so each request simply opens its own; the schema (``CREATE TABLE IF NOT EXISTS``) is applied on the first
    connection. The database runs in WAL mode, so readers never wait for a writer.
    """

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.schema = schema
        self._ready = False
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a transaction: committed if the block succeeds, rolled back if it raises."""
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    setup = sqlite3.connect(self.path, timeout=10)
                    try:
                        setup.execute("PRAGMA journal_mode=WAL")
                        setup.executescript(self.schema)
                    finally:
                        setup.close()
                    self._ready = True
        connection = sqlite3.connect(self.path, timeout=10)
        connection.row_factory = sqlite3.Row
        try:
            with connection:
                yield connection
        finally:
            connection.close()


def security_headers(app: WSGIApp) -> WSGIApp:
    """``app`` with ``SECURITY_HEADERS`` added to every response that does not set them itself.

    WSGI middleware (``App.add_middleware(security_headers)``) rather than an ``after_request`` hook, because a
    hook misses the answers the framework gives before its hooks run (a body over the size limit) and every app
    mounted without our framework (``/time``, ``/flask/``). A header the response already has is left alone:
    an upload's ``Content-Security-Policy: sandbox`` stays as it is.
    """

    def with_headers(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            extra = [(name, value) for name, value in SECURITY_HEADERS if name.lower() not in present]
            return start_response(status, headers + extra, exc_info)

        return app(environ, start)

    return with_headers


def make_app(import_name: str, data_dir: Path, **options: Any) -> App:
    """An ``App`` wired into the site: its templates, the site's secret key, error pages and security headers."""
    app = App(import_name, templates=TEMPLATES, secret_key=secret_key(data_dir), **options)
    use_site_error_pages(app)
    app.add_middleware(security_headers)
    return app


def use_site_error_pages(app: App) -> None:
    """Answer HTTP errors (404, 405, 403, ...) from ``app`` with ``error_page``."""
    app.errorhandler(HTTPError)(error_page)


def error_page(request: Request, error: HTTPError) -> Response:
    """An HTTP error rendered with ``templates/error.html``, in the site's layout.

    API clients that ask for JSON (``Accept: application/json``) still get the framework's JSON shape, so one
    handler serves browsers and scripts alike.
    """
    if request.accepts_json:
        payload = {"error": {"code": error.code, "name": error.name, "description": error.description}}
        return Response.json(payload, error.code)
    return request.app.render(request, "error.html", error=error)
