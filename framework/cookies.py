"""Reading the ``Cookie`` request header and writing ``Set-Cookie`` response headers (RFC 6265).

The standard library's ``http.cookies`` throws away every cookie in the header when one of them is malformed,
and browsers send whatever other sites on the same domain left behind; a web app must read what it can and
ignore the rest. So parsing here is tolerant and never raises. Writing is strict instead: names must be
tokens, and values outside RFC 6265's cookie-octets are percent-encoded (and decoded again when read), as
JavaScript's ``encodeURIComponent``-based libraries do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote, unquote

# RFC 6265 cookie-octet, minus "%" so that percent-encoding stays reversible.
_COOKIE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}


def parse_cookie_header(header: str) -> dict[str, str]:
    """``"a=1; b=2"`` -> ``{"a": "1", "b": "2"}``; malformed pieces are skipped, the first of a name wins."""
    cookies: dict[str, str] = {}
    for piece in header.split(";"):
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or not name or not _TOKEN.fullmatch(name) or name in cookies:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = unquote(value, errors="replace") if "%" in value else value
    return cookies


def format_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | timedelta | None = None,
    expires: datetime | int | float | str | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: str | None = None,
) -> str:
    """The value of one ``Set-Cookie`` header.

    ``expires`` may be a datetime, a Unix timestamp or a preformatted HTTP date; ``samesite`` is ``"Lax"``,
    ``"Strict"`` or ``"None"`` (``"None"`` requires ``secure=True``, as browsers do).
    """
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid cookie name {name!r}")
    parts = [f"{name}={quote(value, safe=_COOKIE_SAFE)}"]
    if max_age is not None:
        seconds = int(max_age.total_seconds()) if isinstance(max_age, timedelta) else int(max_age)
        parts.append(f"Max-Age={seconds}")
    if expires is not None:
        parts.append(f"Expires={_http_date(expires)}")
    for attribute, setting in (("Domain", domain), ("Path", path)):
        if setting is not None:
            if any(char in setting for char in ";\r\n"):
                raise ValueError(f"invalid cookie {attribute.lower()} {setting!r}")
            parts.append(f"{attribute}={setting}")
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    canonical = samesite_attribute(samesite, secure)
    if canonical is not None:
        parts.append(f"SameSite={canonical}")
    return "; ".join(parts)


def samesite_attribute(samesite: str | None, secure: bool) -> str | None:
    """The ``SameSite`` attribute's spelling for ``samesite`` (any case), or None for none; ValueError for
    another value, and for ``"None"`` without ``secure``: browsers refuse such a cookie, so it is a mistake to
    report where the setting is made (the session store checks its settings with this when it is built)."""
    if samesite is None:
        return None
    # Not text (True from a config file's "true"): the same ValueError as any other value, not an AttributeError.
    canonical = _SAMESITE.get(samesite.lower()) if isinstance(samesite, str) else None
    if canonical is None:
        raise ValueError(f"samesite must be Lax, Strict or None, not {samesite!r}")
    if canonical == "None" and not secure:
        raise ValueError("samesite=None requires secure=True: browsers refuse a SameSite=None cookie without Secure")
    return canonical


def _http_date(when: datetime | int | float | str) -> str:
    if isinstance(when, str):
        return when
    if isinstance(when, int | float):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return format_datetime(when.astimezone(UTC), usegmt=True)
