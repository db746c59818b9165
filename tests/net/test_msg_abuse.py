"""``msg serve`` against peers who do not hold the key: slow, many, or malformed (issue: the server died unattended).

Each finding has its regression test (each fails on the code before the fix, 18f998f), and the classes of input
at stake have property tests: arbitrary bytes, cut anywhere, never crash the handshake and never authenticate
without the key. Live tests use real sockets on 127.0.0.1, port 0, with a timeout on every socket and process;
waiting is done by polling with a deadline.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.net import auth
from server.net.framing import HEADER, FrameDecoder, FramingError, encode_frame

KEY = b"correct horse battery staple"
ANSWER_FRAME = 4 + 32 + 32  # what an honest client sends: a 4-byte length, its nonce, its proof


def drip(sock: socket.socket, stream: bytes, every: float, until: float) -> None:
    """Send ``stream`` a byte at a time, one each ``every`` seconds, until it is out, the peer closes, or ``until``.

    Between bytes it waits for the peer to close (that is what the tests are after), so it never outstays it;
    whatever else the peer sends meanwhile is read and dropped.
    """
    next_byte = time.monotonic()
    for i in range(len(stream)):
        while (now := time.monotonic()) < next_byte:
            readable, _, _ = select.select([sock], [], [], next_byte - now)
            if readable:
                try:
                    if not sock.recv(4096):
                        return
                except OSError:
                    return
        if now >= until:
            return
        try:
            sock.send(stream[i : i + 1])
        except OSError:
            return
        next_byte += every


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, any repeats): every piece, empty ones included."""
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# -- one deadline for the whole handshake (finding 2: it was re-armed on every recv)


def test_server_handshake_has_one_deadline_however_the_answer_drips():
    """A well-formed answer, one byte every 0.1 s: the 0.5 s handshake must end at 0.5 s, not after 68 bytes."""
    s, c = socket.socketpair()
    with s, c:
        s.settimeout(10)
        c.settimeout(10)
        answer = encode_frame(b"n" * 32 + b"p" * 32)
        dripper = threading.Thread(target=drip, args=(c, answer, 0.1, time.monotonic() + 15))
        dripper.start()
        started = time.monotonic()
        with pytest.raises(auth.AuthenticationFailed, match="timed out"):
            auth.server_handshake(s, KEY, timeout=0.5)
        elapsed = time.monotonic() - started
        dripper.join(timeout=10)
    assert elapsed < 1.5, f"the handshake lasted {elapsed:.1f} s"


def test_client_handshake_has_one_deadline_however_the_challenge_drips():
    s, c = socket.socketpair()
    with s, c:
        s.settimeout(10)
        c.settimeout(10)
        challenge = encode_frame(auth.new_challenge())
        dripper = threading.Thread(target=drip, args=(s, challenge, 0.1, time.monotonic() + 15))
        dripper.start()
        started = time.monotonic()
        with pytest.raises(auth.AuthenticationFailed, match="timed out"):
            auth.client_handshake(c, KEY, timeout=0.5)
        elapsed = time.monotonic() - started
        c.close()  # the dripper sees the close and stops
        dripper.join(timeout=10)
    assert elapsed < 1.5, f"the handshake lasted {elapsed:.1f} s"


def test_blocking_handshakes_read_nothing_past_the_handshake():
    """The first message, sent right behind the answer, is still on the socket for the caller to read."""
    s, c = socket.socketpair()
    with s, c:
        s.settimeout(5)
        c.settimeout(5)
        server = threading.Thread(target=auth.server_handshake, args=(s, KEY, 5))
        server.start()
        machine = auth.ClientHandshake(KEY)
        answer = machine.receive(c.recv(36))
        c.sendall(answer + encode_frame(b"first"))
        assert machine.receive(c.recv(36)) == b"" and machine.authenticated
        server.join(timeout=5)
        assert s.recv(100) == encode_frame(b"first")


# -- the sans-IO machines: any bytes, cut anywhere


def right_answer(server_nonce: bytes, key: bytes = KEY) -> bytes:
    client_nonce = b"c" * 32
    return encode_frame(client_nonce + auth.client_proof(key, server_nonce, client_nonce))


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_server_handshake_never_authenticates_arbitrary_bytes(stream, cuts):
    machine = auth.ServerHandshake(KEY)
    for piece in chunks(stream, cuts):
        try:
            assert machine.receive(piece) == b""
        except auth.AuthenticationFailed:
            assert machine.failed and machine.needed == 0
            break
        assert 0 < machine.needed <= ANSWER_FRAME
    assert not machine.authenticated


@settings(max_examples=200, deadline=None)
@given(
    header=st.integers(0, 2**32 - 1).filter(lambda n: n != 64),
    rest=st.binary(max_size=100),
    cuts=st.lists(st.integers(0, 104), max_size=6),
)
def test_a_wrongly_sized_answer_is_refused_as_soon_as_its_length_is_in(header, rest, cuts):
    machine = auth.ServerHandshake(KEY)
    with pytest.raises(auth.AuthenticationFailed, match=f"answer of {header} bytes, expected 64"):
        for piece in chunks(HEADER.pack(header) + rest, cuts):
            machine.receive(piece)
    assert not machine.authenticated


@settings(max_examples=200, deadline=None)
@given(
    trailing=st.binary(max_size=50),
    cuts=st.lists(st.integers(0, 120), max_size=8),
    key=st.binary(min_size=1, max_size=40),
)
def test_only_the_right_key_authenticates_however_the_answer_is_cut(trailing, cuts, key):
    machine = auth.ServerHandshake(KEY)
    nonce = machine.greeting[4:]
    assert machine.greeting == encode_frame(nonce)
    reply = b""
    try:
        for piece in chunks(right_answer(nonce, key) + trailing, cuts):
            reply += machine.receive(piece)
            if machine.authenticated:
                break
    except auth.AuthenticationFailed as exc:
        assert key != KEY and "wrong key" in str(exc)
        return
    assert key == KEY and machine.authenticated
    assert reply == encode_frame(auth.server_proof(KEY, nonce, b"c" * 32))


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=120), cuts=st.lists(st.integers(0, 120), max_size=8))
def test_client_handshake_never_accepts_an_arbitrary_server(stream, cuts):
    machine = auth.ClientHandshake(KEY)
    try:
        for piece in chunks(stream, cuts):
            machine.receive(piece)
    except auth.AuthenticationFailed:
        assert machine.failed
    assert not machine.authenticated


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 80), max_size=8), trailing=st.binary(max_size=20))
def test_the_two_machines_agree_however_the_bytes_are_cut(cuts, trailing):
    server, client = auth.ServerHandshake(KEY), auth.ClientHandshake(KEY)
    answer = b"".join(client.receive(piece) for piece in chunks(server.greeting, cuts))
    proof, rest = b"", b""
    for piece in chunks(answer + trailing, cuts):
        if server.authenticated:
            rest += piece  # past the handshake: the caller's, not the machine's
        else:
            proof += server.receive(piece)
    assert server.authenticated and server.leftover + rest == trailing
    for piece in chunks(proof, cuts):
        if not client.authenticated:
            client.receive(piece)
    assert client.authenticated


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=300), max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_frame_decoder_gives_back_the_messages_however_the_stream_is_cut(messages, cuts):
    decoder = FrameDecoder(max_size=300)
    got = []
    for piece in chunks(b"".join(map(encode_frame, messages)), cuts):
        got += decoder.feed(piece)
    assert got == messages and decoder.idle


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_frame_decoder_fails_only_with_framing_errors(stream, cuts):
    decoder = FrameDecoder(max_size=100)
    try:
        for piece in chunks(stream, cuts):
            for message in decoder.feed(piece):
                assert len(message) <= 100
    except FramingError:
        pass


def test_drip_helper_stops_when_the_peer_closes():
    """The test helper itself: it must not outlive the connection it drips into."""
    a, b = socket.socketpair()
    with a:
        a.settimeout(5)
        b.close()
        started = time.monotonic()
        drip(a, struct.pack("!I", 64) + b"x" * 64, 1.0, time.monotonic() + 10)
    assert time.monotonic() - started < 2
