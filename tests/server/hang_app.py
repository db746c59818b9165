"""An application that hangs forever on ``/hang`` and answers anything else at once with its process id.

For the watchdog's end-to-end test: the hung request must be reported with a stack naming ``hang_forever``,
and the worker replaced, while ``/`` keeps being answered.
"""

import os
import threading

_never = threading.Event()  # nobody sets it: a stand-in for a database call without a timeout


def hang_forever() -> None:
    _never.wait()


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        hang_forever()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
