"""An HTTP/1.1 server for WSGI applications, built from the socket up.

The layers, each in its own module:

- ``server.http``: the sans-IO protocol. Bytes in, request events out; responses out as bytes. No sockets.
- ``server.loop``: the reactor. One thread per process waits on epoll (or poll, or select) and never blocks.
- ``server.connection``: one client's state machine: read, parse, dispatch, write, keep-alive or close.
- ``server.wsgi``: PEP 3333. Builds the environ, runs the application in a worker thread, streams its body.
- ``server.static``: files served straight from the loop with ``os.sendfile``.
- ``server.workers``: the thread pool for applications and the pre-fork process supervisor.
- ``server.net``: the layer underneath HTTP: UDP tools, TFTP, TCP message framing, an HMAC handshake.

Run it with ``python -m server module:app``; see ``python -m server --help``.
"""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"ladder/{__version__}"
