"""What a file is and how it may be encoded: Content-Type from its name, and precompressed siblings.

Content types come from :mod:`mimetypes` (which also reads the system's ``mime.types``), with a small table of
web formats pinned first so that a site is served the same way on every machine. Text types get
``charset=utf-8``: without it, browsers guess, and guesses differ.

Precompressed siblings (``site.css.br``, ``site.css.gz``) are built ahead of time, so serving them costs a
stat, not a compressor. They are looked for only beside files of a type that compresses well (text, JSON,
SVG, wasm, ...): nobody gzips a PNG, and the two stats are saved on every image. The client's
Accept-Encoding decides; brotli is preferred to gzip when both are equally welcome because it is smaller.
"""

from __future__ import annotations

import mimetypes
import os
from functools import lru_cache

from server.http import OWS
from server.memo import KEY_LIMIT

# Web formats whose type some mime.types files get wrong or lack (JavaScript is text/javascript per RFC 9239).
_PINNED_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".webmanifest": "application/manifest+json",
}
# Non-text types whose content is text, and so is served with a charset.
_TEXT_LIKE = {"application/javascript", "application/json", "application/xml", "image/svg+xml"}
# The type of a compressed file asked for by its own name (mimetypes reports the compression as an encoding).
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "br": "application/x-brotli",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
}
DEFAULT_TYPE = "application/octet-stream"

# Content-Coding name -> file suffix, in order of preference.
PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))
_PREFERENCE = {coding: index for index, (coding, _) in enumerate(PRECOMPRESSED)}
_SIBLING_SUFFIXES = tuple(suffix for _, suffix in PRECOMPRESSED)
# Binary types that compress well, besides the text-like ones.
_COMPRESSIBLE_BINARY = {
    "application/wasm",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
    "font/ttf",
    "font/otf",
    "application/vnd.ms-fontobject",
}


@lru_cache(maxsize=1024)
def content_type(name: str) -> str:
    """The Content-Type for a file name, with ``; charset=utf-8`` for text."""
    _, extension = os.path.splitext(name)
    media_type = _PINNED_TYPES.get(extension.lower())
    if media_type is None:
        guessed, encoding = mimetypes.guess_type(name, strict=False)
        # "x.css.gz" asked for by that name is a gzip file: never re-labelled as CSS with a Content-Encoding.
        media_type = _COMPRESSED_TYPES.get(encoding, DEFAULT_TYPE) if encoding else guessed or DEFAULT_TYPE
    if is_text(media_type):
        return f"{media_type}; charset=utf-8"
    return media_type


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in _TEXT_LIKE or media_type.endswith(("+json", "+xml"))


def may_have_siblings(name: str, media_type: str) -> bool:
    """Is it worth looking for precompressed siblings of this file (two stats per request)?

    Only for types that compress well: text and the like, fonts that are not compressed already, wasm and
    icons. Images, video, archives and opaque binaries are compressed already or gain nothing, so nobody
    builds siblings for them, and their responses cannot vary. Never for a name that is itself a sibling.
    """
    if name.endswith(_SIBLING_SUFFIXES):
        return False
    base = media_type.partition(";")[0]
    return is_text(base) or base in _COMPRESSIBLE_BINARY


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Map each content-coding (lower-case, ``x-gzip`` read as ``gzip``) to its q-value.

    Members with a malformed q-value are dropped: a client that cannot say how much it wants a coding has not
    asked for it.
    """
    codings: dict[str, float] = {}
    for member in value.split(","):
        name, *params = (part.strip(OWS) for part in member.split(";"))
        if not name:
            continue
        quality = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip(OWS).lower() == "q":
                try:
                    quality = float(raw.strip(OWS))
                except ValueError:
                    quality = -1.0
        if not 0.0 <= quality <= 1.0:
            continue
        name = name.lower()
        codings["gzip" if name == "x-gzip" else name] = quality
    return codings


def preferred_codings(accept_encoding: str, available: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`choose_coding`, remembered: clients send few distinct Accept-Encoding values, and parsing one
    costs microseconds on every request for a compressible file. As for every memo of what clients send
    (server/memo.py), a value too long to be one of those few is worked out each time and never kept."""
    if len(accept_encoding) > KEY_LIMIT:
        return _remembered_codings.__wrapped__(accept_encoding, available)  # the same work, not kept
    return _remembered_codings(accept_encoding, available)


@lru_cache(maxsize=256)
def _remembered_codings(accept_encoding: str, available: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(choose_coding(accept_encoding, list(available)))


def choose_coding(accept_encoding: str | None, available: list[str]) -> list[str]:
    """The ``available`` codings the client accepts, best first (by q-value, then by our preference).

    No Accept-Encoding at all means identity only: RFC 9110 would allow any coding, but every client that can
    decode one says so, and a client that sends nothing is often a tool that wants the bytes as they are.
    """
    if not accept_encoding or not available:
        return []
    accepted = parse_accept_encoding(accept_encoding)
    wildcard = accepted.get("*", 0.0)
    ranked = [(accepted.get(coding, wildcard), coding) for coding in available]
    ranked.sort(key=lambda pair: (-pair[0], _PREFERENCE[pair[1]]))
    return [coding for quality, coding in ranked if quality > 0]
