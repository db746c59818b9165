"""The hello-world WSGI application every server in ``bench_server`` runs, so they are compared on equal
terms.

It does as little as a WSGI app can (a fixed body with a known length), which makes the benchmark measure the
servers rather than the app. Run as a script it also serves itself under servers that have no command line of
their own: ``python -m bench.hello bjoern|wsgiref HOST PORT``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

BODY = b"Hello, World!\n"
HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Answer every request with the same short text body."""
    start_response("200 OK", list(HEADERS))
    return [BODY]


def serve_bjoern(host: str, port: int) -> None:
    import bjoern

    bjoern.run(app, host, port)


def serve_wsgiref(host: str, port: int) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        # The other servers keep no access log by default; printing one line per request would handicap the
        # floor.
        def log_message(self, format: str, *args: object) -> None:
            pass

    with make_server(host, port, app, handler_class=QuietHandler) as server:
        server.serve_forever()


def main(argv: list[str]) -> int:
    servers = {"bjoern": serve_bjoern, "wsgiref": serve_wsgiref}
    if len(argv) != 3 or argv[0] not in servers:
        print(f"usage: python -m bench.hello {'|'.join(servers)} HOST PORT", file=sys.stderr)
        return 2
    try:
        servers[argv[0]](argv[1], int(argv[2]))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
