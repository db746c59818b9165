"""TFTP (RFC 1350) with options (RFC 2347-2349) and windows (RFC 7440): packets, transfers, server, client.

Read it bottom-up: ``packets`` is the wire format, ``options`` the negotiation, ``netascii`` the text mode,
``transfer`` the two state machines (sender and receiver) that hold every protocol rule, and ``server`` and
``client`` the thin I/O layers that feed them datagrams and clock ticks, with ``buffers`` (socket buffers sized
for a window) and ``progress`` (the client's progress bar) beside them.
"""
