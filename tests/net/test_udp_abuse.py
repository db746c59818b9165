"""The UDP echo server cannot be turned against itself, another echo service, or anyone else.

The finding these tests pin down: one datagram whose source was the echo server's own address (or another echo
server's) started an exchange that never ended, burning a core and writing megabytes of log a second. So:

- live, in this process: a datagram from the server's own address (sent from its own socket, whatever it is bound
  to) or from a well-known port is not answered, while an ordinary client still is;
- live, in a child process that can be killed whatever happens: a flood from our own address leaves the server
  idle (CPU, log), two echo servers pointed at each other settle and stop, and one client is answered at most at
  the per-peer rate;
- without a network: properties of the sans-IO :class:`EchoGuard` (never answers itself, never exceeds a peer's
  rate, bounded memory) and :class:`DropLog` (each kind of drop said at most once per interval, nothing lost).

The live tests use only ``udp.echo(sock, out, count)`` with the default settings, so they fail on the code before
the fix for the reason they exist, not for a missing name.
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import itertools
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.net import addr, udp

from .conftest import ROOT

TIMEOUT = 10.0  # seconds: every socket, thread join and child process wait is bounded by this


# -- helpers


def _outward_address(family: socket.AddressFamily, probe: str) -> str | None:
    """This host's own non-loopback address (the one it would use towards a documentation address), or None.

    Connecting a UDP socket sends nothing; it only asks the kernel for a route and a source address.
    """
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            host = sock.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(host).is_loopback else host


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


OUTWARD_V4 = _outward_address(socket.AF_INET, "192.0.2.1")  # TEST-NET-1: never a real peer
OUTWARD_V6 = _outward_address(socket.AF_INET6, "2001:db8::1") if _has_ipv6() else None
NEEDS_IPV6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6")


def _client(target: tuple[str, int]) -> socket.socket:
    sock = udp.open_socket(peer=target)
    sock.settimeout(TIMEOUT)
    return sock


@contextlib.contextmanager
def echo_thread(sock: socket.socket, count: int, **kwargs: object) -> Iterator[tuple[io.StringIO, dict[str, int]]]:
    """Run ``udp.echo(sock, out, count)`` in a thread; on leaving, it must have stopped (its count reached)."""
    out = io.StringIO()
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(echoed=udp.echo(sock, out, count, **kwargs)), daemon=True)
    thread.start()
    yield out, result
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the echo server did not stop after its count"


def _lines(out: io.StringIO, word: str) -> list[str]:
    return [line for line in out.getvalue().splitlines() if word in line]


def _dropped(lines: list[str]) -> int:
    """How many datagrams the drop reports add up to ("dropped N datagram(s) ...")."""
    return sum(int(line.split(" dropped ")[1].split()[0]) for line in lines)


# -- live, in this process: who is not answered


SELF_CASES = [
    pytest.param("127.0.0.1", "127.0.0.1", id="bound-127.0.0.1"),
    pytest.param("0.0.0.0", "127.0.0.1", id="wildcard-via-loopback"),
    pytest.param(
        "0.0.0.0",
        OUTWARD_V4,
        id="wildcard-via-own-ipv4",
        marks=pytest.mark.skipif(OUTWARD_V4 is None, reason="no non-loopback IPv4 address"),
    ),
    pytest.param(
        OUTWARD_V4,
        OUTWARD_V4,
        id="bound-own-ipv4",
        marks=pytest.mark.skipif(OUTWARD_V4 is None, reason="no non-loopback IPv4 address"),
    ),
    pytest.param("::1", "::1", id="bound-::1", marks=NEEDS_IPV6),
    pytest.param("::", "::1", id="wildcard6-via-loopback", marks=NEEDS_IPV6),
    pytest.param("::", "::ffff:127.0.0.1", id="wildcard6-via-mapped-ipv4", marks=NEEDS_IPV6),
    pytest.param(
        "::",
        OUTWARD_V6,
        id="wildcard6-via-own-ipv6",
        marks=pytest.mark.skipif(OUTWARD_V6 is None, reason="no non-loopback IPv6 address"),
    ),
]


@pytest.mark.parametrize(("bind", "target"), SELF_CASES)
def test_echo_never_answers_its_own_address(bind: str, target: str) -> None:
    """Datagrams sent from the server's own socket to itself are dropped; the next client is answered."""
    with udp.open_socket((bind, 0)) as sock, _client((target, 0)) as client:
        port = sock.getsockname()[1]
        with echo_thread(sock, count=1) as (out, result):
            for _ in range(20):
                sock.sendto(b"is it me?", (target, port))  # the source is the server's own address
            client.sendto(b"hello", (target, port))
            # Before the fix the server answered itself, reached its count on its own echoes and never saw this.
            assert client.recvfrom(100)[0] == b"hello"
        assert result["echoed"] == 1
        echoed = _lines(out, " #")
        assert len(echoed) == 1 and f":{client.getsockname()[1]} 5 bytes: hello" in echoed[0]
        drops = _lines(out, "from our own address")
        assert _dropped(drops) == 20 and len(drops) <= 2, out.getvalue()  # said at once, the rest summed up


def _low_port_socket() -> socket.socket:
    """A socket on a port below 1024 (root, or CAP_NET_BIND_SERVICE), or the test is skipped."""
    for port in (19, 7, 1023, 1022, 1021, 1020):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", port))
        except PermissionError:
            sock.close()
            pytest.skip("binding a port below 1024 needs privileges")
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        sock.settimeout(TIMEOUT)
        return sock
    pytest.skip("no free port below 1024")


def test_echo_drops_datagrams_from_well_known_ports() -> None:
    """A datagram "from" chargen or another echo is not answered (they would answer back, forever)."""
    with udp.open_socket(("127.0.0.1", 0)) as sock, _low_port_socket() as service, _client(("127.0.0.1", 0)) as client:
        server = sock.getsockname()
        with echo_thread(sock, count=1) as (out, _):
            service.sendto(b"chargen says hi", server)
            client.sendto(b"hello", server)
            assert client.recvfrom(100)[0] == b"hello"  # so the service's datagram has been dealt with before
        service.setblocking(False)
        with pytest.raises(BlockingIOError):
            service.recvfrom(100)
        assert _dropped(_lines(out, "from a well-known port below 1024")) == 1


def test_echo_answers_well_known_ports_when_allowed() -> None:
    with udp.open_socket(("127.0.0.1", 0)) as sock, _low_port_socket() as service:
        limits = udp.EchoLimits(allow_well_known_ports=True)
        with echo_thread(sock, count=1, limits=limits):
            service.sendto(b"hello from 19", sock.getsockname())
            assert service.recvfrom(100)[0] == b"hello from 19"


# -- live, in a child process: what it costs over a window

# The child runs echo servers in threads (they serve until the process ends), injects datagrams from their own
# sockets, and when told on stdin, reports what happened: CPU used, log written, echoes per server.
CHILD = r"""
import json, sys, threading, time
from server.net import udp

spec = json.loads(sys.argv[1])


class Counter:
    '''A stream that counts what an echo server writes rather than keeping it (the old code wrote megabytes).'''

    def __init__(self):
        self.lock = threading.Lock()
        self.bytes = self.echoes = 0
        self.drops = []
        self.last_echo = None

    def write(self, text):
        with self.lock:
            self.bytes += len(text)
            for line in text.splitlines():
                if " dropped " in line:
                    self.drops.append(line) if len(self.drops) < 100 else None
                elif " #" in line:
                    self.echoes += 1
                    self.last_echo = time.monotonic()
        return len(text)

    def flush(self):
        pass


socks = [udp.open_socket((spec["bind"], 0)) for _ in range(spec["servers"])]
outs = [Counter() for _ in socks]
for sock, out in zip(socks, outs):
    threading.Thread(target=udp.echo, args=(sock, out), daemon=True).start()
started, cpu = time.monotonic(), time.process_time()
for sender, receiver, n in spec["inject"]:
    for _ in range(n):
        socks[sender].sendto(b"spoofed?", (spec["bind"], socks[receiver].getsockname()[1]))
print(json.dumps({"ports": [s.getsockname()[1] for s in socks]}), flush=True)
sys.stdin.readline()
now, cpu = time.monotonic(), time.process_time() - cpu
report = {"elapsed": now - started, "cpu": cpu, "echoes": [], "bytes": [], "drops": [], "quiet": []}
for o in outs:
    with o.lock:
        report["echoes"].append(o.echoes)
        report["bytes"].append(o.bytes)
        report["drops"].append(list(o.drops))
        report["quiet"].append(None if o.last_echo is None else now - o.last_echo)
print(json.dumps(report), flush=True)
"""


class EchoChild:
    """The child process above, read with a deadline on every wait; killed on leaving, whatever happened."""

    def __init__(self, servers: int, inject: list[tuple[int, int, int]], bind: str = "127.0.0.1") -> None:
        spec = {"bind": bind, "servers": servers, "inject": inject}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""
        self.ports: list[int] = self._read_json(time.monotonic() + 30)["ports"]  # a cold start is slow here

    def _read_json(self, deadline: float) -> dict:
        assert self.proc.stdout is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise AssertionError("the child said nothing in time")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"the child ended early: {stderr}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def report_after(self, window: float) -> dict:
        """Let ``window`` seconds pass (measured, not slept blind: an early exit shows at once), then report."""
        assert self.proc.stdin is not None
        deadline = time.monotonic() + window
        while (remaining := deadline - time.monotonic()) > 0:
            if self._selector.select(remaining):
                break  # the child wrote or died before being asked: _read_json says which
        self.proc.stdin.write(b"report\n")
        self.proc.stdin.flush()
        return self._read_json(time.monotonic() + TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)
        self._selector.close()

    def __enter__(self) -> EchoChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_flood_from_our_own_address_leaves_the_server_idle() -> None:
    """The finding's numbers: one spoofed datagram made 1.7 s of CPU per 3 s and 2.2 MB/s of log. 200 now cost
    nothing but two log lines, and an ordinary client is still answered."""
    with EchoChild(servers=1, inject=[(0, 0, 200)]) as child, _client(("127.0.0.1", 0)) as client:
        client.sendto(b"still there?", ("127.0.0.1", child.ports[0]))
        assert client.recvfrom(100)[0] == b"still there?"
        report = child.report_after(1.5)
    assert report["echoes"] == [1], report  # the client's, and none of our own
    assert report["cpu"] < 0.25 * report["elapsed"], report
    assert report["bytes"][0] < 2000, report
    assert len(report["drops"][0]) == 1 and "from our own address" in report["drops"][0][0], report


@pytest.mark.parametrize("injected", [1, 50])
def test_two_echo_servers_pointed_at_each_other_settle(injected: int) -> None:
    """Datagrams sent to A from B's socket: A answers B, B answers A... until a token bucket runs dry. Each side
    answers at most a burst plus the rate for the time gone by, and then the exchange stops."""
    limits = udp.EchoLimits() if hasattr(udp, "EchoLimits") else None  # the defaults the child runs with
    burst, rate = (limits.burst, limits.rate) if limits else (100.0, 100.0)
    with EchoChild(servers=2, inject=[(1, 0, injected)]) as child:
        report = child.report_after(1.5)
    for echoes in report["echoes"]:
        assert 0 < echoes <= burst + rate * report["elapsed"], report
    # The exchange ended: each bucket ran dry long before the window closed.
    assert all(quiet is not None and quiet > 0.5 for quiet in report["quiet"]), report
    assert report["cpu"] < 0.5 * report["elapsed"], report
    for drops in report["drops"]:
        assert len(drops) <= 1 and all("rate limit" in line for line in drops), report


def test_one_client_is_answered_at_most_at_the_per_peer_rate() -> None:
    """A client that sends 1000 datagrams at once gets a burst and then the rate, not 1000 answers."""
    with EchoChild(servers=1, inject=[]) as child, _client(("127.0.0.1", 0)) as client:
        target = ("127.0.0.1", child.ports[0])
        started = time.monotonic()
        for _ in range(1000):
            client.sendto(b"flood", target)
        replies = 0
        deadline = started + 1.0
        while (remaining := deadline - time.monotonic()) > 0:
            client.settimeout(remaining)
            try:
                client.recvfrom(100)
            except TimeoutError:
                break
            replies += 1
        elapsed = time.monotonic() - started
    assert 0 < replies <= 100 + 100 * elapsed, (replies, elapsed)


# -- without a network: the sans-IO guard

HOSTS = [
    "127.0.0.1",
    "127.3.4.5",
    "::1",
    "0.0.0.0",
    "::",
    "192.0.2.2",
    "192.0.2.9",
    "10.1.2.3",
    "fd00::2",
    "fd00::9",
    "::ffff:192.0.2.2",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "fe80::1%eth0",
]
BOUND_HOSTS = ["0.0.0.0", "::", "", "127.0.0.1", "::1", "192.0.2.2", "fd00::2", "::ffff:192.0.2.2"]


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _limits(**kwargs: object) -> udp.EchoLimits:
    return udp.EchoLimits(**kwargs)  # looked up when drawn: on the code before the fix, only these tests fail


limits_strategy = st.builds(
    _limits,
    rate=st.floats(0.5, 1000),
    byte_rate=st.floats(100, 1e7),
    max_peers=st.integers(1, 6),
    allow_well_known_ports=st.booleans(),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple:
    port = draw(st.sampled_from([7, 19, 1024, 9999, 65535]) | st.integers(1, 65535))
    bound = (draw(st.sampled_from(BOUND_HOSTS)), port)
    local = draw(st.frozensets(st.sampled_from(HOSTS)))
    hosts = st.sampled_from(HOSTS) | st.ip_addresses().map(str)
    ports = st.just(port) | st.sampled_from([0, 7, 19, 1023, 1024]) | st.integers(0, 65535)
    events = draw(
        st.lists(
            st.tuples(st.tuples(hosts, ports), st.integers(0, 65535), st.floats(0, 2) | st.just(0.0)),
            max_size=60,
        )
    )
    return bound, local, draw(limits_strategy), events


@settings(deadline=None, max_examples=300)
@given(scenarios())
def test_guard_never_answers_itself_nor_beyond_the_rate(scenario: tuple) -> None:
    bound, local, limits, events = scenario
    local_ips = {_ip(h) for h in local}
    guard = udp.EchoGuard(bound, limits, lambda host: _ip(host) in local_ips)
    bound_ip = _ip(bound[0])
    wildcard = bound_ip is None or bound_ip.is_unspecified
    answered: dict[str, list[tuple[float, int]]] = {}
    now = 0.0
    for source, size, gap in events:
        now += gap
        verdict = guard.decide(source, size, now)
        assert guard.peers <= limits.max_peers
        if verdict is not udp.Verdict.ECHO:
            continue
        ip = _ip(source[0])
        assert ip is not None
        ours = ip == bound_ip or ip.is_loopback or ip.is_unspecified or (wildcard and ip in local_ips)
        assert not (source[1] == bound[1] and ours), "answered its own address"
        assert source[1] != 0 and not ip.is_multicast and not ip.is_unspecified
        assert source[1] >= 1024 or limits.allow_well_known_ports
        answered.setdefault(str(ip), []).append((now, size))
    # Over any stretch of time, one peer got at most a bucket's worth plus the rate for that time.
    for times in answered.values():
        for i in range(len(times)):
            total = 0
            for j in range(i, len(times)):
                total += times[j][1]
                span = times[j][0] - times[i][0]
                assert j - i + 1 <= limits.burst + limits.rate * span + 1e-6
                assert total <= limits.byte_burst + limits.byte_rate * span + 1e-3


@settings(deadline=None)
@given(limits_strategy, st.lists(st.floats(1.01, 5), max_size=50), st.integers(1024, 65535))
def test_guard_answers_a_polite_peer_every_time(limits: udp.EchoLimits, spacings: list[float], port: int) -> None:
    """Rate limiting costs nothing to a peer within its rate: each datagram below it is answered."""
    guard = udp.EchoGuard(("127.0.0.1", 9999), limits)
    size = int(min(65507, limits.byte_rate / limits.rate))
    now = 0.0
    for spacing in [0.0, *spacings]:
        now += spacing / limits.rate
        assert guard.decide(("192.0.2.7", port), size, now) is udp.Verdict.ECHO


@settings(deadline=None)
@given(limits_strategy, st.floats(0, 0.25), st.integers(1024, 65535), st.integers(1024, 65535))
def test_two_guards_bouncing_a_datagram_stop(limits: udp.EchoLimits, hop: float, port_a: int, port_b: int) -> None:
    """Two echo servers on one host, one datagram between them, each hop taking ``hop / rate`` seconds (so quicker
    than the buckets refill): the exchange stops within about two bursts, not never."""
    a = udp.EchoGuard(("127.0.0.1", port_a), limits)
    b = udp.EchoGuard(("127.0.0.1", port_b), limits)
    now, hops = 0.0, 0
    guards, sources = [a, b], [("127.0.0.1", port_b), ("127.0.0.1", port_a)]
    while guards[hops % 2].decide(sources[hops % 2], 8, now) is udp.Verdict.ECHO:
        hops += 1
        now += hop / limits.rate
        assert hops <= 4 * limits.burst + 4, "the echo servers answer each other forever"


def test_guard_forgets_idle_peers_and_refuses_new_ones_while_all_are_active() -> None:
    limits = udp.EchoLimits(rate=10, max_peers=2)
    guard = udp.EchoGuard(("127.0.0.1", 9999), limits)
    assert guard.decide(("192.0.2.1", 5000), 10, 0.0) is udp.Verdict.ECHO
    assert guard.decide(("192.0.2.2", 5000), 10, 0.0) is udp.Verdict.ECHO
    # Both are active: a third peer would need a table slot, and forgetting an active peer would refill its bucket.
    assert guard.decide(("192.0.2.3", 5000), 10, 0.5) is udp.Verdict.TOO_MANY_PEERS
    assert guard.peers == 2
    # After refill_seconds of silence a bucket is full again: forgetting it loses nothing, so the slot is reused.
    later = limits.refill_seconds
    assert guard.decide(("192.0.2.3", 5000), 10, later) is udp.Verdict.ECHO
    assert guard.peers <= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0}, "rate"), ({"byte_rate": -1}, "byte_rate"), ({"max_peers": 0}, "max_peers"),
     ({"log_interval": float("nan")}, "log_interval")],
)  # fmt: skip
def test_limits_refuse_nonsense(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        udp.EchoLimits(**kwargs)


# -- without a network: the drop log

KINDS = [v for v in udp.Verdict if v is not udp.Verdict.ECHO] if hasattr(udp, "Verdict") else []


@settings(deadline=None)
@given(
    st.floats(0.1, 60),
    st.lists(st.tuples(st.sampled_from(KINDS or [None]), st.floats(0, 5), st.booleans()), max_size=80),
)
def test_drop_log_says_each_kind_once_per_interval_and_loses_nothing(interval: float, notes: list[tuple]) -> None:
    log = udp.DropLog(interval)
    said: dict[udp.Verdict, list[float]] = {}
    counted: dict[udp.Verdict, int] = {}
    noted: dict[udp.Verdict, int] = {}
    now = 0.0
    for kind, gap, tick_only in notes:
        now += gap
        if not tick_only:  # a datagram dropped; otherwise only the timer woke the loop
            log.note(kind, ("192.0.2.1", 5000), 3, now)
            noted[kind] = noted.get(kind, 0) + 1
            first = kind not in said
        due = log.next_due()
        reports = log.due(now)
        if due is not None and due <= now:
            assert reports, "a report fell due and was not given"
        for report in reports:
            said.setdefault(report.verdict, []).append(now)
            counted[report.verdict] = counted.get(report.verdict, 0) + report.count
        if not tick_only and first:
            assert kind in said, "the first drop of a kind is said at once"
    for report in log.flush():
        counted[report.verdict] = counted.get(report.verdict, 0) + report.count
    assert counted == noted
    for times in said.values():
        assert all(later - earlier >= interval for earlier, later in itertools.pairwise(times))


# -- the address helper


def test_is_local_address() -> None:
    for host in ("127.0.0.1", "127.9.9.9", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"):
        assert addr.is_local_address(host), host
    for host in ("203.0.113.77", "2001:db8::77", "example.com", ""):
        assert not addr.is_local_address(host), host
    for host in (OUTWARD_V4, OUTWARD_V6):
        if host is not None:
            assert addr.is_local_address(host), host


def test_an_ipv6_slash_64_is_one_peer_so_rotating_addresses_gains_nothing() -> None:
    """Found in review: each IPv6 address had its own bucket, so one host could rotate through its /64 to get
    past the per-peer rate (and fill the peer table); it counts as one peer now, as it does for TFTP's limits."""
    guard = udp.EchoGuard(("::1", 9999), udp.EchoLimits(rate=5, byte_rate=10_000, max_peers=4))
    verdicts = [guard.decide((f"2001:db8:0:1::{n:x}", 4000), 10, 0.0) for n in range(1, 50)]
    assert verdicts.count(udp.Verdict.ECHO) == 5 and guard.peers == 1
    assert guard.decide(("2001:db8:0:2::1", 4000), 10, 0.0) is udp.Verdict.ECHO  # another /64, another peer


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:0:1:aaaa:bbbb:cccc:dddd", "2001:db8:0:1::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_what_one_source_is(host: str, key: str) -> None:
    from server.net.addr import source_key

    assert source_key(host) == key
