"""The access log: one line per response in the combined log format, plus the response time.

    127.0.0.1 - - [25/Nov/2026:08:14:09 +0000] "GET /x HTTP/1.1" 200 14 "-" "curl/7.88.1" 196us

Both ways a response is made (a WSGI application on a worker thread, a static file on the loop) log through
``log_response``, so the format lives in one place. The logger is ``server.access``; ``--access-log`` decides
where it goes, and when it is off the cost is one ``isEnabledFor`` check.
"""

from __future__ import annotations

import logging
import time

from server.http import Request

access_log = logging.getLogger("server.access")


def log_response(
    remote_addr: str,
    request: Request,
    status: int,
    size: int,
    referer: str | None,
    user_agent: str | None,
    started: float,
) -> None:
    """Log one response; ``started`` is the ``time.monotonic()`` at which the request was dispatched."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        '%s - - [%s] "%s %s %s" %d %s "%s" "%s" %dus',
        remote_addr or "-",
        time.strftime("%d/%b/%Y:%H:%M:%S %z"),
        request.method,
        request.target,
        request.version,
        status,
        size or "-",
        referer or "-",
        user_agent or "-",
        int((time.monotonic() - started) * 1_000_000),
    )
