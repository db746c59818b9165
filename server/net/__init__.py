"""The networking layer under HTTP: datagrams, a file-transfer protocol on top of them, and two classic
problems of stream sockets.

- ``udp``: small UDP tools (echo, send, listen, chat, broadcast): datagrams arrive whole or not at all.
- ``tftp``: TFTP (RFC 1350, options per RFC 2347-2349, windows per RFC 7440): sans-IO packets and transfer
  state machines, a server driven by one selectors loop, and a client.
- ``framing``: length-prefixed messages over TCP, because a stream has no message boundaries.
- ``auth``: an HMAC-SHA256 challenge-response handshake, to know who is on the other end.
- ``msg``: framing and the handshake together: authenticated messages.

``python -m server.net --help`` lists the command-line tools built on them.
"""
