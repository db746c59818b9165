"""Small applications the CLI tests start by name (``tests.server.factory_app:...``)."""

import logging
import os
import time


def create_app(greeting: str):
    """A factory, as ``module:create_app('text')`` on the command line calls it."""
    body = greeting.encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def pid_app(environ, start_response):
    """Answers with the worker's process id, so tests can see which worker served them."""
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def slow_app(environ, start_response):
    """Takes a moment, and says in the log when it starts, so a test can signal the server mid-request."""
    logging.getLogger("server").warning("slow request started")
    time.sleep(0.5)  # the in-flight request that a graceful stop must let finish
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"done"]


def long_app(environ, start_response):
    """Outlasts any graceful timeout a test sets, and says in the log when it starts."""
    logging.getLogger("server").warning("long request started")
    time.sleep(30)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"done"]
