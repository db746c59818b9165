"""Reference servers to compare ours against: ``wsgiref`` (in a thread) and gunicorn (a real process).

Both are started the same way as ours in ``tests.support``: on 127.0.0.1, port 0, with every wait bounded.
"""

from __future__ import annotations

import re
import sys
import threading
import wsgiref.simple_server
from collections.abc import Callable

from tests.support import TIMEOUT, ServerProcess


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    """wsgiref's handler without a log line per request on stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class WsgirefThread:
    """``wsgiref.simple_server`` serving ``app`` on a free port in a background thread: the reference floor."""

    def __init__(self, app: Callable) -> None:
        self.httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.httpd.timeout = TIMEOUT
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> WsgirefThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self._thread.join(TIMEOUT)
        self.httpd.server_close()


class GunicornProcess(ServerProcess):
    """``python -m gunicorn APP`` on a free port (one sync worker), ready once it logs where it listens."""

    _LISTENING = re.compile(r"Listening at: (http://\S+)")

    def __init__(self, app: str) -> None:
        super().__init__(bind=False)
        self.argv = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1", app]
