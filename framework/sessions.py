"""Sessions stored in the client's cookie, signed so that the client can read but not forge them.

The cookie holds ``payload.timestamp.signature``, each part URL-safe base64: the session as JSON, when it was
written, and an HMAC-SHA256 of both under the app's secret key. On the way in:

- the signature is checked with ``hmac.compare_digest`` (a plain ``==`` would leak, through its timing, how
  many leading bytes of a forged signature are right), against the current key and then each old key, so the
  key can be rotated without logging everybody out (a session signed with an old key is written again under
  the current one);
- a cookie older than ``max_age`` seconds is ignored;
- anything wrong (tampered, expired, garbage) yields an empty session, never an error.

On the way out the cookie is written only when the session changed, which keeps cached responses cacheable and
avoids a ``Set-Cookie`` on every page (a response that used the session still says ``Vary: Cookie``); it is
``HttpOnly`` (JavaScript cannot read it, so an XSS cannot steal it), ``SameSite=Lax`` (not sent with
cross-site POSTs, a first line of defence against CSRF), and ``Secure`` when asked or when set over HTTPS. It
lasts ``max_age`` seconds, or until the browser closes for a session whose ``permanent`` is set to False.

Note that the payload is signed, not encrypted: never put secrets in a session.

The session is JSON, so it holds what JSON holds: text, numbers, booleans, ``None``, lists and dicts with text
keys. Anything else is refused when it is set, naming the key (a ``datetime`` would otherwise fail only when
the response is written, and a tuple would come back as a list).

Each app has its own cookie: ``session`` at the site's root, ``session_<prefix>`` with ``Path=/<prefix>`` for
an app mounted at ``/<prefix>``. Two mounted apps with one shared cookie would each overwrite the other's
session, logging the visitor out of one whenever they use the other. The cookie's name is also part of what its
signature signs, with the app's mount point (``session_salt``): apps that share a secret key (the demo site's
all do) still refuse each other's cookies, so a ``session_guestbook`` cookie replayed as ``session_blog`` is an
empty session, not a session of the blog. (Cookies signed before the name was part of the signature are refused
too: their visitors start a new session once.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

from .cookies import samesite_attribute
from .response import to_json
from .routing import quote_path

if TYPE_CHECKING:
    from .request import Request
    from .response import Response

log = logging.getLogger("framework")

# Browsers ignore cookies larger than about 4 KB; say so rather than losing the session silently.
COOKIE_SIZE_LIMIT = 4093


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def retired_keys(value: Any) -> tuple[str | bytes, ...]:
    """The retired keys of a ``SECRET_KEY_FALLBACKS`` setting, checked: one key alone is one key, and every key
    is non-empty text or bytes. Raises TypeError or ValueError.

    A key given alone, not in a list (``APP_SECRET_KEY_FALLBACKS=oldkey`` from the environment), would otherwise
    be iterated character by character: each character a signing key, so that anyone could forge a session by
    trying a hundred one-letter keys. An empty key is one everybody knows."""
    if isinstance(value, str | bytes):
        keys: tuple[Any, ...] = (value,)
    elif value is None or isinstance(value, list | tuple | set | frozenset):
        keys = tuple(value or ())
    else:  # from the environment, APP_SECRET_KEY_FALLBACKS=12345 is read as JSON: a number
        raise TypeError(
            f"SECRET_KEY_FALLBACKS must be a key or a list of keys, not {type(value).__name__} ({value!r}); from "
            "the environment, values are read as JSON: quote a key that looks like a number"
        )
    for key in keys:
        if not isinstance(key, str | bytes):
            raise TypeError(
                f"SECRET_KEY_FALLBACKS holds a {type(key).__name__} ({key!r}), not a key: each must be text or bytes"
            )
        if not key:
            raise ValueError("SECRET_KEY_FALLBACKS holds an empty key, which anyone could sign with")
    return keys


def session_salt(cookie_name: str, script_name: str = "") -> str:
    """The salt of the signatures of the session cookie called ``cookie_name``, for the app mounted at
    ``script_name``.

    Apps mounted in one site often share one secret key; with one salt for all, a cookie one app signed was a
    valid session of every other (renamed by the client, it was accepted). With the name in the salt, each
    cookie's signatures are its own; with the mount point too, since different mount points can give one name
    (``/a-b`` and ``/a_b`` are both ``session_a_b``: see ``default_cookie_name``)."""
    return f"framework.session:{cookie_name}:{script_name}"


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


class Signer:
    """Timestamped HMAC-SHA256 signatures with key rotation: signs with the first key, accepts any key.

    Each secret is first turned into a purpose-specific key (HMAC of ``salt`` under the secret), so a
    signature made for sessions can never be replayed as a signature for something else signed with the
    same secret.
    """

    def __init__(
        self,
        secret_key: str | bytes,
        old_keys: Iterable[str | bytes] = (),
        *,
        salt: str = "framework.session",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret_key:
            raise ValueError("a Signer needs a non-empty secret key")
        retired = retired_keys(old_keys)
        self._keys = [
            hmac.new(_as_bytes(key), salt.encode(), hashlib.sha256).digest() for key in [secret_key, *retired]
        ]
        self._clock = clock

    def _signature(self, key: bytes, data: str) -> str:
        return _b64encode(hmac.new(key, data.encode("ascii"), hashlib.sha256).digest())

    def sign(self, payload: bytes) -> str:
        """``payload`` with the current time and a signature under the current key, as cookie-safe text."""
        stamp = int(self._clock()).to_bytes(8, "big")
        data = f"{_b64encode(payload)}.{_b64encode(stamp)}"
        return f"{data}.{self._signature(self._keys[0], data)}"

    def unsign(self, token: str, max_age: float | None = None) -> bytes | None:
        """The payload if ``token`` was signed by one of the keys no more than ``max_age`` seconds ago,
        else ``None``."""
        found = self.unsign_with_key(token, max_age)
        return None if found is None else found[0]

    def unsign_with_key(self, token: str, max_age: float | None = None) -> tuple[bytes, int] | None:
        """``unsign``, and which key the signature is from: 0 for the current one, 1 and up for old ones."""
        if not token.isascii():
            return None
        data, _, signature = token.rpartition(".")
        payload, _, stamp = data.partition(".")
        if not payload or not stamp:
            return None
        index = next(
            (i for i, key in enumerate(self._keys) if hmac.compare_digest(self._signature(key, data), signature)),
            None,
        )
        if index is None:
            return None
        try:
            signed_at = int.from_bytes(_b64decode(stamp), "big")
            value = _b64decode(payload)
        except (binascii.Error, ValueError):
            return None
        if max_age is not None and self._clock() - signed_at > max_age:
            return None
        return value, index


# Deeper than this is a mistake (or a cycle), not a session.
_MAX_DEPTH = 32


def check_session_value(key: str, value: Any, depth: int = 0) -> None:
    """Raise ``TypeError`` naming ``key`` unless ``value`` survives the trip through JSON unchanged."""
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return
    if depth >= _MAX_DEPTH:
        raise TypeError(f"session[{key!r}] is nested more than {_MAX_DEPTH} levels deep (or contains itself)")
    if isinstance(value, list):
        for item in value:
            check_session_value(key, item, depth + 1)
        return
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"session[{key!r}] has the key {name!r}; a session keeps JSON, whose object keys are text"
                )
            check_session_value(key, item, depth + 1)
        return
    kind = type(value).__name__
    hint = {
        "tuple": ": JSON would bring it back as a list, so store a list",
        "set": ": store a sorted list",
        "frozenset": ": store a sorted list",
        "bytes": ": store text (decode it, or base64 it)",
        "datetime": ": store value.isoformat() and read it back with datetime.fromisoformat()",
        "date": ": store value.isoformat()",
        "Decimal": ": store str(value)",
        "UUID": ": store str(value)",
    }.get(kind, "")
    raise TypeError(
        f"session[{key!r}] cannot hold a {kind}{hint or ''}; a session keeps JSON: "
        "str, int, float, bool, None, and lists and dicts of those"
    )


def _check_items(items: Any) -> None:
    for key, value in items:
        if not isinstance(key, str):
            raise TypeError(f"session key {key!r} is not text; a session keeps JSON, whose object keys are text")
        check_session_value(key, value)


def _changed(method_name: str) -> Callable[..., Any]:
    """``dict``'s method ``method_name``, for :class:`Session`: the same, and it marks the session modified."""
    method = getattr(dict, method_name)

    def wrapper(self: Session, *args: Any, **kwargs: Any) -> Any:
        self.modified = True
        return method(self, *args, **kwargs)

    wrapper.__name__ = method_name
    return wrapper


# Where a session that is not permanent says so, among its values (Flask's key: the session is a plain dict).
PERMANENT_KEY = "_permanent"


class Session(dict[str, Any]):
    """The session: a plain dict that notices when it is changed, so the cookie is written only then.

    Changes inside a nested value (``session["cart"].append(x)``) cannot be noticed: set ``modified = True``
    after those.
    """

    def __init__(self, data: dict[str, Any] | None = None, *, new: bool = True) -> None:
        super().__init__(data or {})
        self.new = new  # True when the request carried no valid session cookie.
        self.modified = False

    __delitem__ = _changed("__delitem__")
    clear = _changed("clear")
    popitem = _changed("popitem")

    def __setitem__(self, key: str, value: Any) -> None:
        _check_items(((key, value),))
        self.modified = True
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        new = dict(*args, **kwargs)
        _check_items(new.items())
        self.modified = True
        dict.update(self, new)

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.update(other)
        return self

    # pop and setdefault change the session only sometimes: a cookie is rewritten only when they do.

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.modified = True
        return dict.pop(self, key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            _check_items(((key, default),))
            self.modified = True
        return dict.setdefault(self, key, default)

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser: ``True`` (the default) sends it with ``Max-Age`` set to
        ``SESSION_MAX_AGE``; ``False`` sends none, so the browser drops it when it closes ("remember me"
        unticked, a shared computer).

        Unlike Flask, where a session is not permanent until told so, the default is permanent: sessions here
        have always lasted ``SESSION_MAX_AGE``, and a login that ended with the browser would surprise the apps
        written for that. Either way the signature's timestamp bounds the session on the server to
        ``SESSION_MAX_AGE`` (a browser that is never closed gains nothing). The choice is kept in the session,
        as ``"_permanent": false`` (Flask's key), so that it holds for every later write of the cookie;
        ``clear()`` forgets it with the rest.
        """
        return self.get(PERMANENT_KEY) is not False

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if value:
            self.pop(PERMANENT_KEY, None)  # The default: nothing to store (and nothing changes if it was so).
        elif self.get(PERMANENT_KEY) is not False:
            self[PERMANENT_KEY] = False


class CookieOptions(TypedDict):
    """The session cookie's attributes, as keyword arguments of ``Response.set_cookie``."""

    path: str | None
    domain: str | None
    secure: bool
    httponly: bool
    samesite: str | None


# The signers one CookieSessions keeps, one per cookie name and mount point (see CookieSessions.signer_for).
_MAX_SIGNERS = 64


class CookieSessions:
    """Loads ``request.session`` from the signed cookie and writes it back on the response when changed.

    ``cookie_name`` and ``path`` default to the app's own (see the module docstring): ``session`` and ``/`` at
    the root, ``session_<prefix>`` and ``/<prefix>`` when mounted. ``samesite="None"`` without ``secure=True``
    is a ValueError here, since browsers refuse such a cookie.
    """

    def __init__(
        self,
        secret_key: str | bytes,
        old_keys: Iterable[str | bytes] = (),
        *,
        cookie_name: str | None = None,
        max_age: int = 14 * 24 * 3600,
        path: str | None = None,
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: str | None = "Lax",
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            # Now, not when the first cookie is written: that failed only over plain HTTP (over HTTPS the cookie
            # is made Secure anyway), so a site tried over HTTPS met the 500 in production.
            samesite_attribute(samesite, secure)
        except ValueError as error:
            raise ValueError(
                f"session cookie: {error} (settings SESSION_COOKIE_SAMESITE, SESSION_COOKIE_SECURE)"
            ) from None
        self.cookie_name = cookie_name
        self._keys = (secret_key, retired_keys(old_keys))
        self._clock = clock
        self._signers: dict[tuple[str, str], Signer] = {}
        self.signer_for(cookie_name or "session", "")  # A bad key is an error now, not at the first request.
        self.max_age = max_age
        self.cookie_options: CookieOptions = {
            "path": path,
            "domain": domain,
            "secure": secure,
            "httponly": httponly,
            "samesite": samesite,
        }

    def name_for(self, request: Request) -> str:
        """The cookie's name for requests that reach the app where ``request`` did."""
        return self.cookie_name or default_cookie_name(request.script_name)

    def signer_for(self, cookie_name: str, script_name: str) -> Signer:
        """The signer of the cookie called ``cookie_name`` of the app mounted at ``script_name``: the app's keys,
        salted with both (``session_salt``).

        One app has one name per place it is mounted, so the signers are kept; past ``_MAX_SIGNERS`` of them
        (which no real mounting reaches) a signer is made afresh each time rather than remembered."""
        signer = self._signers.get((cookie_name, script_name))
        if signer is None:
            secret_key, old_keys = self._keys
            salt = session_salt(cookie_name, script_name)
            signer = Signer(secret_key, old_keys, salt=salt, clock=self._clock)
            if len(self._signers) < _MAX_SIGNERS:
                self._signers[cookie_name, script_name] = signer
        return signer

    def load(self, request: Request) -> Session:
        """The session from the request's cookie; an empty one when it is missing, forged or expired."""
        name = self.name_for(request)
        token = request.cookies.get(name)
        if not token:
            return Session()
        found = self.signer_for(name, request.script_name).unsign_with_key(token, self.max_age)
        if found is None:
            return Session()
        payload, key_index = found
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return Session()
        if not isinstance(data, dict):
            return Session()
        session = Session(data, new=False)
        # Signed with an old key: write it again under the current one, so that the old key can be dropped
        # once every active visitor has been back, rather than only when the last cookie signed with it expires.
        session.modified = key_index > 0
        return session

    def save(self, request: Request, response: Response) -> None:
        """Write the cookie if the view changed the session; delete it if the session was emptied.

        A response that used the session at all (even only to read it, or for a CSRF token) depends on the
        cookie, so it says ``Vary: Cookie``: a shared cache must not hand one visitor's page to another.
        """
        session = request.__dict__.get("session")  # Only a session that was loaded can have changed.
        if session is None:
            return
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers.add("Vary", "Cookie")
        elif "cookie" not in vary.lower() and vary.strip() != "*":
            response.headers["Vary"] = f"{vary}, Cookie"
        if not session.modified:
            return
        name = self.name_for(request)
        options = self.cookie_options
        if options["path"] is None:
            options = {**options, "path": quote_path(request.script_name) or "/"}
        if request.scheme == "https" and not options["secure"]:
            # Set over HTTPS, the cookie is marked Secure even if nobody asked: it must never travel over plain
            # HTTP, where anyone on the network could read it. (Behind a TLS proxy, set session_secure=True.)
            options = {**options, "secure": True}
        if not session:
            if name in request.cookies:
                # Deleted with the attributes it was set with: browsers refuse to let an insecure response
                # overwrite a Secure cookie (and a __Host- or __Secure- name demands Secure), so an emptied
                # session would otherwise live on.
                response.delete_cookie(
                    name, options["path"] or "/", options["domain"], options["secure"], options["samesite"]
                )
            return
        token = self.signer_for(name, request.script_name).sign(_session_json(session))
        if len(token) > COOKIE_SIZE_LIMIT:
            log.warning("session cookie is %d bytes; browsers drop cookies over 4 KB", len(token))
        max_age = self.max_age if session.permanent else None  # None: a cookie that ends with the browser
        response.set_cookie(name, token, max_age=max_age, **options)


def default_cookie_name(script_name: str) -> str:
    """``session`` for an app at the root, ``session_blog`` for one mounted at ``/blog`` (``session_a_b`` at
    ``/a/b``): a name of its own for each mount point, in the characters a cookie name may hold."""
    if not script_name:
        return "session"
    return "session_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in script_name.strip("/"))


def _session_json(session: Session) -> bytes:
    """The session as JSON; a value that cannot be JSON (put inside a list or dict after it was set, where
    ``Session`` could not see it) is named in the error instead of failing somewhere inside ``json``."""
    try:
        return to_json(dict(session))
    except (TypeError, ValueError):
        _check_items(session.items())  # Raises, naming the key.
        raise


class NoSessions:
    """``app.sessions`` without a secret key: using a session is then a clear error, not a silent no-op."""

    def load(self, request: Request) -> Session:
        raise RuntimeError('sessions need a secret key: App(__name__, secret_key=...) or app.config["SECRET_KEY"]')

    def save(self, request: Request, response: Response) -> None:
        """Nothing can have been stored, so there is nothing to save."""
