"""The bare interface: a WSGI application with no framework at all, the way this project began.

PEP 3333 asks an application for exactly this: a callable taking the request as a dict (``environ``) and a
function to start the response (``start_response``), returning an iterable of bytes. Everything else on this
site (routing, templates, sessions) is built on top of this one call.

    python -m server apps.raw_time:application

In the demo site it answers at ``/time``, mounted by ``apps/demo.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer any request with the server's current time, as plain text."""
    now = datetime.now(UTC)
    body = f"The time on this server is {now:%H:%M:%S} UTC, {now:%A %d %B %Y}.\n".encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),  # The time is stale a second later: no cache may keep it.
        ],
    )
    return [body]
