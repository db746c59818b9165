"""``msg serve`` against peers who do not hold the key: slow, many, or malformed (issue: the server died unattended).

Each finding has its regression test (each fails on the code before the fix, 18f998f), and the classes of input
at stake have property tests: arbitrary bytes, cut anywhere, never crash the handshake and never authenticate
without the key. Live tests use real sockets on 127.0.0.1, port 0, with a timeout on every socket and process;
waiting is done by polling with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.net import auth
from server.net.framing import HEADER, FrameDecoder, FramingError, MessageTooLarge, encode_frame
from server.net.msg import MessageServer, send_messages

ROOT = Path(__file__).resolve().parents[2]
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


# -- the live server


class Lines:
    """A thread-safe output stream that lets a test wait for a line."""

    def __init__(self) -> None:
        self.text = ""
        self.changed = threading.Condition()

    def write(self, text: str) -> None:
        with self.changed:
            self.text += text
            self.changed.notify_all()

    def flush(self) -> None:
        pass

    def wait_for(self, needle: str, timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: needle in self.text, timeout), f"{needle!r} not in {self.text}"

    def lines_with(self, needle: str) -> list[str]:
        with self.changed:
            return [line for line in self.text.splitlines() if needle in line]


def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def connect(address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def read_challenge(sock: socket.socket) -> bytes:
    """The server's first frame: proof that it has accepted this connection."""
    data = b""
    while len(data) < 36:
        chunk = sock.recv(36 - len(data))
        assert chunk, "closed before the challenge"
        data += chunk
    return data


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True if the server closes ``sock`` within ``timeout`` seconds (whatever else it sends is dropped)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], remaining)[0]:
            return False
        try:
            if not sock.recv(4096):
                return True
        except OSError:
            return True
    return False


def honest(address: tuple[str, int], message: bytes = b"honest", timeout: float = 2.0) -> float:
    """Authenticate and send one message with a ``timeout`` on everything; return the seconds it took."""
    started = time.monotonic()
    send_messages(address, KEY, [message], timeout=timeout)
    return time.monotonic() - started


@pytest.fixture
def start_server():
    """In-process MessageServers on 127.0.0.1, port 0, each in a thread; all stopped afterwards."""
    running = []

    def start(**kwargs) -> tuple[MessageServer, Lines]:
        out = Lines()
        server = MessageServer(("127.0.0.1", 0), KEY, out, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        out.wait_for("receiving authenticated messages on")
        return server, out

    yield start
    for server, thread in running:
        server.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the message server did not stop"


def test_settings_are_checked_and_kept_within_the_descriptor_limit():
    for bad in ({"handshake_timeout": 0}, {"idle_timeout": float("nan")}, {"max_handshakes": 0}):
        with pytest.raises(ValueError, match=next(iter(bad)).replace("_", ".")):
            MessageServer(("127.0.0.1", 0), KEY, Lines(), **bad)
    server = MessageServer(("127.0.0.1", 0), KEY, Lines(), max_connections=10**9, max_handshakes=10**9)
    server.close()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert server.max_connections == min(10**9, soft - 32) and server.max_handshakes == server.max_connections


def test_the_server_closes_a_dripping_connection_when_its_handshake_is_due(start_server):
    """Finding 2, live: the handshake deadline is fixed at accept time; bytes arriving do not extend it."""
    server, out = start_server(handshake_timeout=0.5)
    with connect(server.address) as sock:
        port = sock.getsockname()[1]
        read_challenge(sock)
        started = time.monotonic()
        drip(sock, encode_frame(b"n" * 64), 0.1, started + 15)  # returns when the server closes
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"the dripping connection lasted {elapsed:.1f} s"
    out.wait_for(f":{port} refused: handshake timed out")


def test_unauthenticated_connections_cost_no_thread(start_server):
    """Finding 3: a connection that has not authenticated costs a descriptor, not a thread."""
    server, _ = start_server()
    threads = threading.active_count()
    socks = [connect(server.address) for _ in range(50)]
    try:
        for sock in socks:
            read_challenge(sock)  # each one accepted and greeted
        assert threading.active_count() == threads
        assert honest(server.address) < 2
    finally:
        for sock in socks:
            sock.close()


def test_handshakes_are_bounded_and_a_newcomer_replaces_the_oldest(start_server, caplog):
    """Finding 3: at ``max_handshakes``, the connection that has had the most time to prove itself makes room."""
    caplog.set_level(logging.INFO, logger="server.net.msg")
    server, out = start_server(max_handshakes=8, handshake_timeout=30)
    socks = [connect(server.address) for _ in range(20)]
    try:
        for sock in socks:
            read_challenge(sock)
        assert all(closed_by_server(sock, 5) for sock in socks[:12])
        assert server.handshakes == 8
        assert not any(closed_by_server(sock, 0) for sock in socks[12:])
        # An honest client is one more newcomer: it replaces the oldest stranger and gets in at once.
        assert honest(server.address) < 2
        out.wait_for("closed after 1 message(s)")
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: server.handshakes == 0, "the strangers' connections to close")
    wait_until(lambda: "room for newcomers again" in caplog.text, "the end of the pressure to be logged")
    assert caplog.text.count("no room for another connection (8 open, 8 of them in their handshake") == 1
    assert caplog.text.count("no room") == 1
    assert "room for newcomers again, after 13 unauthenticated connection(s) replaced" in caplog.text
    assert out.lines_with("refused") == out.lines_with("refused: connection closed during the handshake")
    assert len(out.lines_with("refused")) == 7  # the 8 left, less the one the honest client replaced


def test_only_authenticated_connections_can_fill_the_server(start_server, caplog):
    """At ``max_connections``, strangers replace each other; only authenticated peers make the server wait."""
    caplog.set_level(logging.INFO, logger="server.net.msg")
    server, _ = start_server(max_connections=3)
    members = []
    try:
        for _ in range(2):
            members.append(connect(server.address))
            auth.client_handshake(members[-1], KEY, 5)
        with connect(server.address) as stranger:
            read_challenge(stranger)
            assert honest(server.address) < 2  # the stranger held the last place; the newcomer took it
            assert closed_by_server(stranger, 5)
        members.append(connect(server.address))
        auth.client_handshake(members[-1], KEY, 5)
        wait_until(lambda: server.connections == 3, "three authenticated connections")
        with connect(server.address) as waiting:
            assert not select.select([waiting], [], [], 0.3)[0], "accepted beyond the limit"
            members.pop().close()
            read_challenge(waiting)  # accepted as soon as a place is free
    finally:
        for sock in members:
            sock.close()
    wait_until(lambda: "accepting again" in caplog.text, "the end of the limit to be logged")
    # Reached twice (the honest client was the third), each time said once, and its end once.
    said = [r.getMessage() for r in caplog.records if "the limit: not accepting" in r.getMessage()]
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith("accepting again")]
    assert said == ["3 authenticated connections, the limit: not accepting until some close"] * 2
    assert ended == ["accepting again: 2 connections"] * 2


def test_each_connection_event_is_said_once(start_server, caplog):
    """Finding 4: a refusal went to the output and to the log; each event now has one line, in one place."""
    caplog.set_level(logging.DEBUG)
    server, out = start_server(handshake_timeout=0.5)
    ports = {}
    with connect(server.address) as sock:
        ports["wrong key"] = sock.getsockname()[1]
        with pytest.raises(auth.AuthenticationFailed):
            auth.client_handshake(sock, b"not the key", 5)
    with connect(server.address) as sock:
        ports["good"] = sock.getsockname()[1]
        auth.client_handshake(sock, KEY, 5)
        sock.sendall(encode_frame(b"one") + encode_frame(b"two"))
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_server(sock, 5)
    with connect(server.address) as sock:
        ports["cut short"] = sock.getsockname()[1]
        auth.client_handshake(sock, KEY, 5)
        sock.sendall(encode_frame(b"three")[:-1])
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_server(sock, 5)
    with connect(server.address) as sock:
        ports["silent"] = sock.getsockname()[1]
        assert closed_by_server(sock, 5)
    with connect(server.address) as sock:
        ports["reset"] = sock.getsockname()[1]
        read_challenge(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends a reset
    out.wait_for(f":{ports['reset']} refused")
    out.wait_for(f":{ports['silent']} refused")
    said = {name: out.lines_with(f":{port} ") for name, port in ports.items()}
    assert [line.split(" ", 2)[2] for line in said["wrong key"]] == ["refused: wrong key"]
    assert [line.split(" ", 2)[2] for line in said["good"]] == [
        "#1 3 bytes: one",
        "#2 3 bytes: two",
        "closed after 2 message(s)",
    ]
    assert [line.split(" ", 2)[2] for line in said["cut short"]] == [
        "dropped after 0 message(s): the connection closed in the middle of a message"
    ]
    assert [line.split(" ", 2)[2] for line in said["silent"]] == ["refused: handshake timed out"]
    assert [line.split(" ", 2)[2] for line in said["reset"]] == ["refused: handshake broken: connection reset by peer"]
    for port in ports.values():
        assert f":{port}" not in caplog.text


@pytest.fixture(scope="module")
def shared_server():
    out = Lines()
    server = MessageServer(("127.0.0.1", 0), KEY, out, handshake_timeout=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out.wait_for("receiving authenticated messages on")
    yield server, out
    server.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()


@settings(max_examples=40, deadline=None)
@given(stream=st.binary(max_size=150), cuts=st.lists(st.integers(0, 150), max_size=5))
def test_arbitrary_bytes_over_the_wire_are_refused_and_the_server_carries_on(shared_server, stream, cuts):
    server, out = shared_server
    with connect(server.address) as sock:
        port = sock.getsockname()[1]
        for piece in chunks(stream, cuts):
            try:
                sock.sendall(piece)
            except OSError:  # refused already, and closed with our bytes unread: a reset
                break
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        assert closed_by_server(sock, 5)
    out.wait_for(f":{port} refused: ")
    assert not out.lines_with(f":{port} #")
    assert honest(server.address) < 2


# -- whole processes: the descriptor limit lowered, a flood from another process


class Running:
    """A subprocess whose output is read as it comes, by threads (a full pipe would stall it), line by line."""

    def __init__(self, argv: list[str], **popen_kwargs) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            **popen_kwargs,
        )  # fmt: skip
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._changed:
                self.lines[name].append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, stream: str = "stdout", timeout: float = 10.0) -> str:
        def found() -> str | None:
            return next((line for line in self.lines[stream] if text in line), None)

        with self._changed:
            assert self._changed.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout), (
                f"{text!r} not seen on {stream} within {timeout} s: {self.text(stream)[-3000:]}"
            )
            line = found()
        assert line is not None, f"exited ({self.proc.returncode}) before {text!r}: {self.text('stderr')[-3000:]}"
        return line

    def text(self, stream: str) -> str:
        with self._changed:
            return "\n".join(self.lines[stream])

    def count(self, text: str, stream: str = "stderr") -> int:
        with self._changed:
            return sum(text in line for line in self.lines[stream])

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return code


@pytest.fixture
def run():
    """Start subprocesses (``run(argv, **popen_kwargs)``); whatever still runs at the end is stopped."""
    started: list[Running] = []

    def start(argv: list[str], **kwargs) -> Running:
        process = Running(argv, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def port_of(line: str) -> int:
    return int(line.rsplit(":", 1)[1])


# A server whose descriptors run out for a reason of its own: every one of them is taken but a handful.
EXHAUSTED_SERVER = r"""
import logging, os, sys
from server.net.msg import MessageServer

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
server = MessageServer(("127.0.0.1", 0), sys.argv[1].encode(), sys.stdout, handshake_timeout=0.5)
hogs = []
try:
    while True:
        hogs.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for fd in hogs[:8]:
    os.close(fd)
server.serve_forever()
"""


def test_accept_survives_running_out_of_descriptors(run):
    """Finding 1: accept() failing with EMFILE ended ``serve_forever``. Now it pauses, logs once, and goes on."""
    server = run([sys.executable, "-c", EXHAUSTED_SERVER, KEY.decode()])
    address = ("127.0.0.1", port_of(server.wait_for("receiving authenticated messages on")))
    flood = [connect(address) for _ in range(40)]
    try:
        server.wait_for("not accepting", stream="stderr")
        # Strangers are let in a few at a time as the earlier ones time out: one pause after another.
        served: set[socket.socket] = set()
        deadline = time.monotonic() + 20
        while len(served) < 24:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and server.proc.poll() is None, server.text("stderr")[-3000:]
            readable, _, _ = select.select([s for s in flood if s not in served], [], [], remaining)
            served.update(readable)
    finally:
        for sock in flood:
            sock.close()
    assert honest(address, timeout=10) < 10  # behind the flood's leftovers in the listen queue
    server.wait_for("accepting again, after", stream="stderr")
    assert server.proc.poll() is None
    assert server.count("not accepting") == 1
    assert "Traceback" not in server.text("stderr")


# The flood: ``count`` connections held open, each dripping a well-formed answer's length and then its bytes,
# one byte per connection every 0.1 s; any the server closes are opened again at the next round. It says
# "flooding" once all are open, or after 1.5 s however many are (a server that accepts slowly is flooded too).
FLOODER = r"""
import resource, selectors, socket, sys, time

port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 64)), hard))
stream = (64).to_bytes(4, "big") + b"x" * 64
selector = selectors.DefaultSelector()
sent = {}
opened = failed = 0
announced = False
started = next_round = time.monotonic()
end = started + seconds


def drop(sock):
    selector.unregister(sock)
    del sent[sock]
    sock.close()


while time.monotonic() < end:
    while len(sent) < count and time.monotonic() < end:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            failed += 1
            break
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sent[sock] = 0
        opened += 1
    if not announced and (len(sent) >= count or time.monotonic() > started + 1.5):
        print("flooding with", len(sent), "connections", flush=True)
        announced = True
    for sock in list(sent):
        try:
            sock.send(stream[sent[sock] % len(stream) :][:1])
            sent[sock] += 1
        except OSError:
            drop(sock)
    next_round += 0.1
    while (now := time.monotonic()) < next_round:
        for key, _ in selector.select(next_round - now):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data:
                drop(key.fileobj)
print(f"flood over: {opened} connections opened, {failed} failed", flush=True)
"""

FLOOD_SECONDS = 4.0


@pytest.mark.parametrize(
    ("descriptors", "flood"),
    [(1024, 700), (256, 400)],
    ids=["700 strangers at 1024 descriptors, as in the issue", "400 strangers at 256 descriptors, beyond them"],
)
def test_an_honest_client_gets_in_during_a_drip_flood_and_after_it(run, tmp_path, descriptors, flood):
    """The issue's scenario: ``msg serve`` with its descriptors limited, flooded with slow strangers.

    Before, the strangers' descriptors ran out and the server died: the second case is the regression test.
    The first is the issue's numbers; on this machine the old server survived them (its thread a connection
    accepted too slowly for the flood to reach its limit) and fails only for taking 1.5 s over a first client.
    Now strangers replace each other, an honest client authenticates within 2 s while the flood goes on, and
    the server is still there when it is over.
    """

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    key = tmp_path / "key"
    key.write_bytes(KEY + b"\n")
    server = run(
        [sys.executable, "-m", "server.net", "msg", "serve", "--bind", "127.0.0.1:0", "--secret-file", str(key)],
        preexec_fn=limit_descriptors,
    )
    address = ("127.0.0.1", port_of(server.wait_for("receiving authenticated messages on")))
    flooder = run([sys.executable, "-c", FLOODER, str(address[1]), str(flood), str(FLOOD_SECONDS)])
    flooder.wait_for("flooding with", timeout=FLOOD_SECONDS)
    during = []
    while flooder.proc.poll() is None:  # an honest client every 0.3 s for as long as the flood lasts
        during.append(honest(address, timeout=2.0))
        with contextlib.suppress(subprocess.TimeoutExpired):
            flooder.proc.wait(timeout=0.3)
    print("honest during the flood:", [round(t, 3) for t in during], flooder.text("stdout"))
    assert len(during) >= 5 and max(during) < 2.0, during
    flooder.wait_for("flood over", timeout=10)
    assert flooder.proc.wait(timeout=10) == 0
    assert server.proc.poll() is None, server.text("stderr")[-3000:]
    assert honest(address, b"after the flood") < 2.0
    server.wait_for("1 message(s)")
    assert server.count("no room for another connection") == 1
    assert "Traceback" not in server.text("stderr")


def test_msg_serve_says_each_event_once(run, tmp_path):
    """Finding 4, through the CLI: a refusal was printed on stdout and logged on stderr too."""
    key = tmp_path / "key"
    key.write_bytes(KEY + b"\n")
    server = run(
        [sys.executable, "-m", "server.net", "msg", "serve", "--bind", "127.0.0.1:0", "--secret-file", str(key)]
    )
    address = ("127.0.0.1", port_of(server.wait_for("receiving authenticated messages on")))
    with connect(address) as sock:
        port = sock.getsockname()[1]
        with pytest.raises(auth.AuthenticationFailed):
            auth.client_handshake(sock, b"wrong", 5)
    server.wait_for(f":{port} refused: wrong key")
    honest(address)
    server.wait_for("closed after 1 message(s)")
    server.stop()
    assert f":{port}" not in server.text("stderr") and "authentic" not in server.text("stderr")


# -- the messages before a bad frame are never lost (attacker audit, finding 6)


def test_the_messages_before_a_frame_too_large_are_handed_over_then_the_error():
    decoder = FrameDecoder(max_size=100)
    assert decoder.feed(encode_frame(b"one") + encode_frame(b"two") + HEADER.pack(101) + b"rest") == [b"one", b"two"]
    assert isinstance(decoder.error, MessageTooLarge) and not decoder.idle
    with pytest.raises(MessageTooLarge):
        decoder.feed(encode_frame(b"three"))  # nothing is read past a bad frame


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=100), max_size=5),
    size=st.integers(101, 2**32 - 1),
    cuts=st.lists(st.integers(0, 700), max_size=8),
)
def test_every_message_before_a_bad_frame_is_delivered_however_the_stream_is_cut(messages, size, cuts):
    decoder = FrameDecoder(max_size=100)
    got: list[bytes] = []
    with pytest.raises(MessageTooLarge):
        for piece in [*chunks(b"".join(map(encode_frame, messages)) + HEADER.pack(size), cuts), b""]:
            got += decoder.feed(piece)
    assert got == messages


def test_the_server_says_the_messages_sent_with_a_frame_too_large_then_drops(start_server):
    server, out = start_server(max_size=100)
    with connect(server.address) as sock:
        auth.client_handshake(sock, KEY, 5)
        port = sock.getsockname()[1]
        sock.sendall(encode_frame(b"one") + encode_frame(b"two") + HEADER.pack(10_000))  # one read, most likely
        assert closed_by_server(sock, 5)
    out.wait_for(f":{port} dropped")
    said = [line.split(" ", 2)[2] for line in out.lines_with(f":{port} ")]
    assert said[:2] == ["#1 3 bytes: one", "#2 3 bytes: two"], said
    assert said[2].startswith("dropped after 2 message(s): peer announced 10000 bytes"), said
