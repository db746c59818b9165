"""The three pollers behind ``--loop`` keep the same promise: a one-shot registration that has reported is silent
until its owner arms it again, whatever happens to the socket meanwhile (that is what lets a worker thread own a
connection without the loop seeing it)."""

import select
import socket
import struct
import threading

import pytest

from server.loop import READ, Reactor, make_poller

TIMEOUT = 5


@pytest.fixture
def connected():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server_side, _ = listener.accept()
    yield client, server_side
    client.close()
    server_side.close()


def wait_for_report(poller, fd):
    """Poll until ``fd`` reports (the kernel delivers a loopback reset at once, but not within the same call)."""
    for _ in range(100):
        events = dict(poller.wait(0.05))
        if fd in events:
            return events[fd]
    raise AssertionError(f"descriptor {fd} never reported")


@pytest.mark.parametrize("kind", ["epoll", "poll", "select"])
def test_a_one_shot_registration_stays_silent_after_the_peer_resets(connected, kind):
    if not hasattr(select, kind):
        pytest.skip(f"no {kind} here")
    client, server_side = connected
    poller = make_poller(kind)
    fd = server_side.fileno()
    try:
        poller.add(fd, READ, oneshot=True)
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        wait_for_report(poller, fd)  # the request: the loop hands the connection to a worker now
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset while the worker has the connection
        assert dict(poller.wait(0.05)).get(fd) is None
        assert dict(poller.wait(0)).get(fd) is None  # (poll() reported the hang-up on every call here)
        poller.arm(fd, READ)  # the worker gives the connection back: now the loop hears of the reset
        assert wait_for_report(poller, fd)
        poller.remove(fd)
        with pytest.raises((OSError, KeyError)):
            poller.arm(fd, READ)  # removed: arming it again is an error, never a new registration
    finally:
        poller.close()


def test_a_call_for_a_loop_that_is_gone_does_nothing():
    """A signal handler can run after the engine has stopped and closed its loop: its call_soon_threadsafe wrote
    to the closed wake-up descriptor (EBADF, raised wherever the main thread was), or, its number reused, into
    another file."""
    reactor = Reactor()
    reactor.close()
    reactor.call_soon_threadsafe(print, "never")
    reactor.stop()


@pytest.mark.parametrize("oneshot", [False, True])
def test_epoll_hands_a_turn_a_bounded_group_and_the_rest_come_next(oneshot):
    """A turn takes at most EVENTS_PER_TURN ready descriptors (so that its held responses leave soon), and the ones
    it left come first in the next: none waits behind descriptors that were ready after it."""
    from server.loop import EVENTS_PER_TURN

    if not hasattr(select, "epoll"):
        pytest.skip("no epoll here")
    poller = make_poller("epoll")
    pairs = [socket.socketpair() for _ in range(EVENTS_PER_TURN + 8)]
    try:
        for ours, theirs in pairs:
            poller.add(ours.fileno(), READ, oneshot=oneshot)
            theirs.send(b"x")  # ready, and stays ready: nothing reads it
        everyone = {ours.fileno() for ours, _ in pairs}
        first = dict(poller.wait(0))
        assert len(first) == EVENTS_PER_TURN
        second = dict(poller.wait(0))
        assert everyone - set(first) <= set(second)  # the 8 left behind, before any reported again
        if oneshot:
            assert set(second) == everyone - set(first)  # reported ones are disarmed until armed again
    finally:
        poller.close()
        for pair in pairs:
            for end in pair:
                end.close()


def test_what_waits_for_the_round_runs_once_every_ready_descriptor_had_a_turn():
    """Reactor.next_round, with more descriptors ready than a turn takes and all of them ready again and again:
    the callback waits until each one that was ready has been handled (no cutting in line after one capped turn),
    and then runs (it does not starve while the ready list never empties)."""
    from server.loop import EVENTS_PER_TURN

    if not hasattr(select, "epoll"):
        pytest.skip("no epoll here")
    reactor = Reactor("epoll")
    pairs = [socket.socketpair() for _ in range(EVENTS_PER_TURN * 2 + 8)]
    handled: list[int] = []
    seen_when_run: list[set[int]] = []

    class AlwaysReady:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def handle_event(self, events: int) -> None:
            handled.append(self.fd)
            if len(handled) == 1:
                reactor.next_round(lambda: (seen_when_run.append(set(handled)), reactor.stop()))
            elif len(handled) > 20 * len(pairs):
                reactor.stop()  # (a failure: the callback starved)

    try:
        for ours, theirs in pairs:
            theirs.send(b"x")  # readable for good: nothing reads it
            reactor.add(ours.fileno(), AlwaysReady(ours.fileno()), READ, oneshot=False)
        everyone = {ours.fileno() for ours, _ in pairs}
        runner = threading.Thread(target=reactor.run, daemon=True)
        runner.start()
        runner.join(TIMEOUT)
        assert not runner.is_alive()
        assert seen_when_run and seen_when_run[0] == everyone
    finally:
        reactor.stop()
        reactor.close()
        for pair in pairs:
            for end in pair:
                end.close()
