"""WSGI plumbing: mounting another WSGI application under a path prefix.

A mounted application must believe it is at the root of its own site, and still be able to build correct
URLs. PEP 3333 says how: move the prefix from ``PATH_INFO`` to ``SCRIPT_NAME``. A request for ``/legacy/a/b``
reaches the app mounted at ``/legacy`` with ``SCRIPT_NAME=/legacy`` (plus any outer prefix) and
``PATH_INFO=/a/b``; the app's own ``url_for`` then prefixes ``SCRIPT_NAME``. This works for any WSGI app:
Flask, Django, or one of ours.

Middleware added with ``App.add_middleware(cls, **options)`` is any callable ``cls(wsgi_app, **options)`` that
returns a WSGI application; the framework wraps its callable in each in turn, so the last one added is
outermost.
"""

from __future__ import annotations

from typing import Any


def to_wsgi_string(text: str) -> str:
    """A path as WSGI stores it: UTF-8 bytes packed into a latin-1 ``str`` (PEP 3333)."""
    return text.encode("utf-8").decode("latin-1")


def shift_path(environ: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """A copy of ``environ`` with ``prefix`` (in WSGI form, no trailing slash) moved from ``PATH_INFO`` to
    ``SCRIPT_NAME``, or ``None`` when the path is not under ``prefix``.

    ``/legacy`` itself becomes ``PATH_INFO=""``, which PEP 3333 defines as "the application's root, without a
    trailing slash"; our apps answer it with a redirect to ``/legacy/``.
    """
    path = environ.get("PATH_INFO", "")
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    if rest and not rest.startswith("/"):
        return None  # /legacyfoo is not under /legacy.
    shifted = dict(environ)
    shifted["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + prefix
    shifted["PATH_INFO"] = rest
    return shifted
