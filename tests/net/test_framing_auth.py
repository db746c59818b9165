"""Length-prefixed framing over TCP and the HMAC challenge-response handshake."""

import socket
import struct
import threading

import pytest

from server.net import auth
from server.net.framing import (
    FrameDecoder,
    IncompleteMessage,
    MessageTooLarge,
    encode_frame,
    recv_message,
    send_message,
)
from server.net.msg import MessageServer, send_messages

KEY = b"correct horse battery staple"


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_messages_keep_their_boundaries(pair):
    a, b = pair
    messages = [b"", b"one", b"\x00" * 100_000, "héllo".encode()]

    def write():
        for message in messages:
            send_message(a, message)
        a.close()

    writer = threading.Thread(target=write)
    writer.start()
    assert [recv_message(b) for _ in messages] == messages
    assert recv_message(b) is None  # a clean end between messages
    writer.join(timeout=5)


def test_partial_receives_are_reassembled(pair):
    """Send a framed stream one byte at a time: the reader still gets whole messages."""
    a, b = pair
    stream = encode_frame(b"first") + encode_frame(b"second")

    def trickle():
        for i in range(len(stream)):
            a.send(stream[i : i + 1])

    writer = threading.Thread(target=trickle)
    writer.start()
    assert recv_message(b) == b"first" and recv_message(b) == b"second"
    writer.join(timeout=5)


def test_size_limit_is_enforced_before_allocation(pair):
    a, b = pair
    a.sendall(struct.pack("!I", 0xFFFFFFFF))  # announce 4 GiB, send nothing more
    with pytest.raises(MessageTooLarge, match="4294967295"):
        recv_message(b, max_size=1024)
    with pytest.raises(MessageTooLarge):
        send_message(a, b"x" * 2000, max_size=1024)


def test_stream_ending_inside_a_frame(pair):
    a, b = pair
    a.sendall(encode_frame(b"complete")[:-2])
    a.close()
    with pytest.raises(IncompleteMessage, match="after 6 of 8 bytes"):
        recv_message(b)


def test_sans_io_decoder_at_every_split():
    stream = encode_frame(b"alpha") + encode_frame(b"") + encode_frame(b"omega" * 10)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == [b"alpha", b"", b"omega" * 10]
        assert decoder.idle
    decoder = FrameDecoder(max_size=10)
    with pytest.raises(MessageTooLarge):
        decoder.feed(struct.pack("!I", 11))


def handshake(server_key, client_key, timeout=2.0):
    """Run both halves over a socket pair; return (server outcome, client outcome)."""
    s, c = socket.socketpair()
    outcomes = {}

    def run(name, function, sock, key):
        try:
            function(sock, key, timeout)
            outcomes[name] = "ok"
        except auth.AuthenticationFailed as exc:
            outcomes[name] = exc
        finally:
            if name == "client":
                sock.close()

    server = threading.Thread(target=run, args=("server", auth.server_handshake, s, server_key))
    server.start()
    run("client", auth.client_handshake, c, client_key)
    server.join(timeout=10)
    s.close()
    return outcomes["server"], outcomes["client"]


def test_handshake_with_the_right_key():
    assert handshake(KEY, KEY) == ("ok", "ok")


def test_handshake_with_a_wrong_key_fails_on_both_sides(caplog):
    server, client = handshake(KEY, b"wrong key")
    assert "wrong key" in str(server) and "refused our key" in str(client)
    assert "authentication failed: wrong key" in caplog.text


def test_client_detects_a_server_without_the_key():
    """Mutual authentication: a server that cannot prove the key is rejected by the client."""
    s, c = socket.socketpair()
    with s, c:
        c.settimeout(2)
        send_message(s, auth.new_challenge())

        def impostor():
            recv_message(s)
            send_message(s, b"\x00" * 32)

        thread = threading.Thread(target=impostor)
        thread.start()
        with pytest.raises(auth.AuthenticationFailed, match="does not hold the key"):
            auth.client_handshake(c, KEY, 2)
        thread.join(timeout=5)


def test_silent_client_hits_the_deadline():
    s, c = socket.socketpair()
    with s, c:
        with pytest.raises(auth.AuthenticationFailed, match="timed out"):
            auth.server_handshake(s, KEY, timeout=0.2)
        assert s.fileno() == -1  # failure closes the connection


def test_proofs_are_bound_to_roles_and_nonces():
    sn, cn = auth.new_challenge(), auth.new_challenge()
    assert len(sn) == 32 and sn != cn
    assert auth.client_proof(KEY, sn, cn) != auth.server_proof(KEY, sn, cn)
    assert auth.client_proof(KEY, sn, cn) != auth.client_proof(KEY, cn, sn)


def test_load_key(tmp_path):
    (tmp_path / "key").write_bytes(KEY + b"\n")
    assert auth.load_key(tmp_path / "key") == KEY
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        auth.load_key(tmp_path / "empty")


class Lines:
    """A thread-safe output stream that lets a test wait for a line."""

    def __init__(self):
        self.text = ""
        self.changed = threading.Condition()

    def write(self, text):
        with self.changed:
            self.text += text
            self.changed.notify_all()

    def flush(self):
        pass

    def wait_for(self, needle, timeout=5):
        with self.changed:
            assert self.changed.wait_for(lambda: needle in self.text, timeout), self.text


def test_message_server_prints_authenticated_messages_only():
    out = Lines()
    server = MessageServer(("127.0.0.1", 0), KEY, out, handshake_timeout=2)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        send_messages(server.address, KEY, [b"hello", b"\xff\xfe binary"])
        out.wait_for("closed after 2 message(s)")
        assert "#1 5 bytes: hello" in out.text and "#2 9 bytes: \\xff\\xfe binary" in out.text
        with pytest.raises(auth.AuthenticationFailed):
            send_messages(server.address, b"not the key", [b"intruder"])
        out.wait_for("refused: wrong key")
        assert "intruder" not in out.text
    finally:
        server.shutdown()
        thread.join(timeout=5)
