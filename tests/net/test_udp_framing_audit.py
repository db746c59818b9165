"""``udp chat`` fed from a file, its input buffer, and what ``recv_message`` allocates (audit of ``server/net``).

- ``udp chat < file`` (or ``< /dev/null``) failed: epoll refuses regular files with EPERM. Such input is always
  readable, so it is read directly and the file's lines are sent.
- Input without a newline grew the chat's pending buffer without bound; now an unfinished line is held up to
  one datagram's worth, then refused like any overlong line and skipped to its newline.
- ``recv_message`` reserved the announced size (up to 16 MiB) as soon as the 4-byte header was in.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from server.net import udp
from server.net.framing import DEFAULT_MAX_SIZE, IncompleteMessage, recv_message
from server.net.udp import MAX_PAYLOAD, _LineSplitter


def _pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on 127.0.0.1 with timeouts: the chat's and its peer's."""
    made = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        made.append(sock)
    return made[0], made[1]


def test_chat_sends_the_lines_of_a_regular_file_given_as_input(tmp_path):
    source = tmp_path / "lines.txt"
    source.write_bytes(b"one\ntwo\nlast without newline")
    mine, peer = _pair()
    out = io.StringIO()
    with mine, peer, open(source, "rb") as stdin:
        udp.chat(mine, peer.getsockname(), stdin.fileno(), out)
        assert [peer.recv(100) for _ in range(3)] == [b"one", b"two", b"last without newline"]
    assert "chatting on" in out.getvalue()


def test_chat_with_dev_null_as_input_ends_at_once(tmp_path):
    mine, peer = _pair()
    with mine, peer, open(os.devnull, "rb") as stdin:
        udp.chat(mine, peer.getsockname(), stdin.fileno(), io.StringIO())
        peer.setblocking(False)
        try:
            peer.recv(100)
            raise AssertionError("something was sent for empty input")
        except BlockingIOError:
            pass


def test_an_endless_line_is_refused_once_and_holds_at_most_one_datagram():
    lines = _LineSplitter()
    given_out = []
    for _ in range(64):  # 256 KiB without a newline, in 4 KiB reads
        given_out += lines.feed(b"x" * 4096)
        assert len(lines._pending) <= MAX_PAYLOAD
    assert len(given_out) == 1 and len(given_out[0]) > MAX_PAYLOAD  # for check_size to refuse: "not sent"
    assert lines.feed(b"xx\nnext\nhalf") == [b"next"]  # the rest of the long line is skipped
    assert lines.end() == [b"half"]


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(0, 1000), max_size=10),
)
def test_lines_come_out_whole_however_the_input_is_cut(lines, cuts):
    data = b"\n".join(lines)
    splitter = _LineSplitter()
    out = []
    start = 0
    for cut in sorted(cuts):
        out += splitter.feed(data[start:cut])
        start = max(start, cut)
    out += splitter.feed(data[start:])
    out += splitter.end()
    expected = data.split(b"\n")
    if not expected[-1]:  # input that ends with a newline (or is empty) has no unfinished last line
        expected.pop()
    assert out == expected


# -- framing


def test_a_frame_announced_at_the_maximum_costs_what_arrived_not_what_was_announced():
    ours, theirs = socket.socketpair()
    ours.settimeout(5)

    def announce_and_hang_up() -> None:
        theirs.sendall(struct.pack("!I", DEFAULT_MAX_SIZE) + b"ten bytes!")
        theirs.close()

    tracemalloc.start()
    try:
        writer = threading.Thread(target=announce_and_hang_up)
        writer.start()
        try:
            recv_message(ours)
            raise AssertionError("an incomplete frame was accepted")
        except IncompleteMessage as exc:
            assert "after 10 of 16777216 bytes" in str(exc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.join(timeout=5)
        ours.close()
    assert peak < 1024 * 1024, f"{peak} bytes allocated for 10 bytes received"
