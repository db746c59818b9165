"""The reactor: one thread waits for many sockets at once and never blocks on any of them.

This is the heart of the concurrency story. Instead of a thread per connection, one loop asks the kernel "which
of these descriptors can I read or write without waiting?" and handles only those. Three kernel interfaces answer
that question, and the server can use any of them (``--loop``), because each teaches something:

- ``select``: a bitmap of descriptors, rebuilt and scanned on every call; descriptors above FD_SETSIZE (1024)
  cannot be watched at all, so the server answers 503 at that limit instead of failing.
- ``poll``: an array instead of a bitmap; no descriptor limit, but still O(n) per call.
- ``epoll`` (Linux): the kernel keeps the interest set; each call costs O(ready), not O(watched), so ten thousand
  idle keep-alive connections cost nothing per wakeup. The default on Linux.

Registrations are *one-shot* by default: after a descriptor reports an event it is disarmed until its owner
arms it again. That rule is what lets a connection be handed to a worker thread and back safely: while a worker
owns a connection the loop cannot see it, and the worker gives it back with ``arm`` as its very last act. epoll
does this in the kernel (``EPOLLONESHOT``) and lets any thread re-arm; for poll and select the loop emulates it,
and re-arming from another thread goes through ``call_soon_threadsafe``. Re-arming is a system call
(``epoll_ctl``) per request, though, and where nothing leaves the loop thread (``--threads 0``) the safety it
buys is not needed: such connections are registered *steady* (level-triggered), and ``arm`` costs nothing unless
the events wanted change, from reading to writing and back.

Other threads wake the loop with an eventfd (a socketpair where there is none) and a queue of callbacks. Timers
are a small heap; the server uses one periodic timer to sweep connection deadlines.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("server.loop")

READ = select.POLLIN  # the same values as EPOLLIN / EPOLLOUT
WRITE = select.POLLOUT


class Handler(Protocol):
    """Anything registered with the reactor: it is told which events fired."""

    def handle_event(self, events: int) -> None: ...


# -- pollers: the three kernel interfaces behind one small interface ----------------------------------------------


# The most events one epoll_wait hands to a turn of the loop. A turn's responses leave together at its end
# (server/connection.py: HTTPConnection.uncork), so an unbounded turn makes latency bimodal: with 100 busy
# keep-alive connections, a turn answered most of them while their next requests piled up for the following
# one, and a request waited one turn or two (p50 1.2 ms, p99 2.8-3.0 ms, at 61-63k req/s). Capped, the ready
# connections are served in steady groups, in the order they became ready (the kernel puts a level-triggered
# descriptor it has just reported at the back of its ready list, and the rest wait at the front), and every
# request waits about the same: p99 2.1-2.5 ms at the same throughput, where granian's was 2.7-3.7 (wrk -c100,
# 2026-12-04; 24 and 40 did about as well, 16 varied more, 64 was no better than no cap). A few more
# epoll_wait calls are the whole cost. What a connection puts off for fairness waits for the end of a round,
# not of a turn (Reactor.next_round). The poll and select loops, kept for teaching, report everything ready at
# once: leaving events for later would take bookkeeping of their own (their one-shot emulation disarms what
# they report).
EVENTS_PER_TURN = 32


class EpollPoller:
    """epoll: the kernel keeps the interest set, and any thread may re-arm a descriptor."""

    name = "epoll"
    max_fd: int | None = None
    threadsafe_arm = True
    events_per_wait: int | None = EVENTS_PER_TURN  # None: a wait reports everything that is ready

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def add(self, fd: int, events: int, *, oneshot: bool) -> None:
        self._epoll.register(fd, events | (select.EPOLLONESHOT if oneshot else 0))

    def arm(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events | select.EPOLLONESHOT)

    def change(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)  # a steady registration stays steady

    def remove(self, fd: int) -> None:
        try:  # (not contextlib.suppress: this runs for every connection, and try costs nothing when all is well)
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        return self._epoll.poll(-1 if timeout is None else timeout, EVENTS_PER_TURN)

    def close(self) -> None:
        self._epoll.close()


class PollPoller:
    """poll(2): no descriptor limit, but the whole interest array is passed to the kernel on every call."""

    name = "poll"
    max_fd: int | None = None
    threadsafe_arm = False
    events_per_wait: int | None = None

    def __init__(self) -> None:
        self._poll = select.poll()
        self._oneshot: set[int] = set()
        self._disarmed: set[int] = set()  # one-shot descriptors that have reported: unregistered until armed

    def add(self, fd: int, events: int, *, oneshot: bool) -> None:
        self._poll.register(fd, events)
        if oneshot:
            self._oneshot.add(fd)

    def arm(self, fd: int, events: int) -> None:
        if fd in self._disarmed:
            self._disarmed.discard(fd)
            self._poll.register(fd, events)
        else:
            self._poll.modify(fd, events)  # OSError (ENOENT) for a descriptor that is not registered, as epoll's

    change = arm  # oneshot or not is this class's own bookkeeping

    def remove(self, fd: int) -> None:
        self._oneshot.discard(fd)
        self._disarmed.discard(fd)
        with contextlib.suppress(KeyError):
            self._poll.unregister(fd)

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        events = self._poll.poll(None if timeout is None else timeout * 1000)
        for fd, _ in events:
            if fd in self._oneshot:
                # Emulate EPOLLONESHOT by unregistering, not by watching nothing: poll() reports a hang-up or an
                # error whatever the mask asks, so a client that reset while a worker had its connection would
                # be reported on every call, and the loop would spin until the worker was done.
                self._poll.unregister(fd)
                self._disarmed.add(fd)
        return events

    def close(self) -> None:
        pass


class SelectPoller:
    """select(2): two bitmaps rebuilt every call, limited to descriptors below FD_SETSIZE."""

    name = "select"
    max_fd: int | None = 1024  # FD_SETSIZE on Linux
    threadsafe_arm = False
    events_per_wait: int | None = None

    def __init__(self) -> None:
        self._interest: dict[int, int] = {}
        self._oneshot: set[int] = set()

    def add(self, fd: int, events: int, *, oneshot: bool) -> None:
        if fd >= 1024:
            raise OSError(f"descriptor {fd} is beyond select()'s limit")
        self._interest[fd] = events
        if oneshot:
            self._oneshot.add(fd)

    def arm(self, fd: int, events: int) -> None:
        if fd not in self._interest:
            raise KeyError(fd)  # removed (closed, maybe reused): as epoll and poll, never watch it again by mistake
        self._interest[fd] = events

    change = arm

    def remove(self, fd: int) -> None:
        self._interest.pop(fd, None)
        self._oneshot.discard(fd)

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        readers = [fd for fd, ev in self._interest.items() if ev & READ]
        writers = [fd for fd, ev in self._interest.items() if ev & WRITE]
        if not readers and not writers:
            time.sleep(timeout if timeout is not None else 0.05)
            return []
        r, w, x = select.select(readers, writers, readers, timeout)
        ready: dict[int, int] = {}
        for fd in r:
            ready[fd] = ready.get(fd, 0) | READ
        for fd in w:
            ready[fd] = ready.get(fd, 0) | WRITE
        for fd in x:
            ready[fd] = ready.get(fd, 0) | READ
        for fd in ready:
            if fd in self._oneshot:
                self._interest[fd] = 0
        return list(ready.items())

    def close(self) -> None:
        pass


POLLERS: dict[str, type[EpollPoller | PollPoller | SelectPoller]] = {
    "epoll": EpollPoller,
    "poll": PollPoller,
    "select": SelectPoller,
}


def loop_name(kind: str = "auto") -> str:
    """The concrete poller ``kind`` stands for; ``auto`` is the best this platform has. Raises ValueError."""
    if kind == "auto":
        kind = "epoll" if hasattr(select, "epoll") else "poll" if hasattr(select, "poll") else "select"
    if kind not in POLLERS or not hasattr(select, kind):
        raise ValueError(f"event loop {kind!r} is not available here (choose from auto, epoll, poll, select)")
    return kind


def make_poller(kind: str = "auto") -> EpollPoller | PollPoller | SelectPoller:
    """A new poller of the kind ``loop_name(kind)`` names."""
    return POLLERS[loop_name(kind)]()


# -- the reactor ----------------------------------------------------------------------------------------------------


class _Wakeup:
    """A descriptor other threads write to so that a sleeping loop returns from its wait."""

    def __init__(self) -> None:
        self.closed = False
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._write_fd = self.fd
            self._pair = None
        else:  # pragma: no cover - non-Linux
            self._pair = socket.socketpair()
            for s in self._pair:
                s.setblocking(False)
            self.fd = self._pair[0].fileno()
            self._write_fd = self._pair[1].fileno()

    def signal(self) -> None:
        if self.closed:
            # The loop is gone (a signal handler that runs after the engine has stopped, say): there is no one to
            # wake, and the descriptor's number may belong to another file by now.
            return
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        self.closed = True
        if self._pair:
            for s in self._pair:
                s.close()
        else:
            os.close(self.fd)


class Reactor:
    """Runs handlers when their descriptors are ready, callbacks from other threads, and timers.

    A turn of the loop: wait for events (at most ``EVENTS_PER_TURN`` with epoll), call their handlers, run the
    queued callbacks, run what was put off to the end of the turn (``at_turn_end``), run what was put off until
    every connection ready had its turn (``next_round``), then the timers that are due."""

    def __init__(self, kind: str = "auto") -> None:
        self.poller = make_poller(kind)
        self.handlers: dict[int, Handler] = {}
        self._steady: dict[int, int] = {}  # fd -> the events a steady (not one-shot) registration watches now
        self._callbacks: deque[tuple[Callable, tuple]] = deque()
        self._turn_end: deque[tuple[Callable, tuple]] = deque()
        self._next_round: deque[tuple[Callable, tuple]] = deque()
        self._round_seen: set[int] | None = None  # the descriptors reported since the round began (see next_round)
        self._wakeup = _Wakeup()
        self._wakeup_pending = False
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._running = False
        self.thread: threading.Thread | None = None
        self.poller.add(self._wakeup.fd, READ, oneshot=False)

    @property
    def name(self) -> str:
        return self.poller.name

    # Registration happens on the loop thread; ``arm`` may be called from any thread.

    def add(self, fd: int, handler: Handler, events: int, *, oneshot: bool = True) -> None:
        """Watch ``fd`` for ``events`` and call ``handler.handle_event`` when they fire.

        ``oneshot=False``: a steady registration, which keeps reporting while the descriptor is ready; its
        handler must then only ``arm`` it from the loop thread, and must arm it for what it waits for next."""
        self.poller.add(fd, events, oneshot=oneshot)
        self.handlers[fd] = handler
        if not oneshot:
            self._steady[fd] = events

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (call before closing it)."""
        self.handlers.pop(fd, None)
        self._steady.pop(fd, None)
        self.poller.remove(fd)

    def arm(self, fd: int, events: int) -> None:
        """Re-arm a one-shot descriptor. Safe from any thread; ownership passes to the loop.

        For a steady registration (loop thread only): watch ``events`` from now on, which is free when it
        already does, as a connection going back to reading after a response does."""
        steady = self._steady.get(fd)
        if steady is not None:
            if steady != events:
                self.poller.change(fd, events)
                self._steady[fd] = events
            return
        if self.poller.threadsafe_arm or threading.current_thread() is self.thread:
            try:
                self.poller.arm(fd, events)
            except (OSError, KeyError, ValueError):
                # Closed meanwhile: its handler has been removed, so there is nothing to arm.
                log.debug("arm(%d) on a descriptor that is gone", fd)
        else:
            self.call_soon_threadsafe(self._arm_if_present, fd, events)

    def hold(self, fd: int) -> None:
        """Report nothing for ``fd`` until it is armed again (loop thread). A one-shot registration is silent
        already, having reported the event its owner is handling; a steady one is told to watch nothing."""
        if self._steady.get(fd):
            self.poller.change(fd, 0)
            self._steady[fd] = 0

    def _arm_if_present(self, fd: int, events: int) -> None:
        if fd in self.handlers:
            self.poller.arm(fd, events)

    def call_soon_threadsafe(self, callback: Callable, *args: object) -> None:
        """Run ``callback(*args)`` on the loop thread soon. Safe from any thread."""
        self._callbacks.append((callback, args))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            self._wakeup.signal()

    def call_soon(self, callback: Callable, *args: object) -> None:
        """Run ``callback(*args)`` on the loop thread after the current handler (loop thread only: no wakeup)."""
        self._callbacks.append((callback, args))

    def at_turn_end(self, callback: Callable, *args: object) -> None:
        """Run ``callback(*args)`` once this turn's events and callbacks have been handled, before the loop waits
        again (loop thread only). What one turn puts off is done together: see HTTPConnection.uncork."""
        self._turn_end.append((callback, args))

    def end_turn_early(self) -> None:
        """Run now what was put off to the end of this turn (loop thread): for code about to keep the loop waiting,
        so that what the turn held for others does not wait with it."""
        self._run_queued(self._turn_end)

    def next_round(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once every descriptor that is ready now has had its turn (loop thread only).

        For what a connection puts off to be fair to the others (the rest of a pipeline, more of a chunked body):
        a turn takes at most ``EVENTS_PER_TURN`` events, so the end of a turn is not the end of the line of
        connections waiting. A round is over when a wait leaves nothing waiting (it returned less than a full
        turn), or reports a descriptor the round has seen already: the kernel put that one at the back of its
        ready list when it reported it, so everything that was in front of it has been reported since."""
        self._next_round.append((callback, ()))

    def _end_turn_of_round(self, events: list[tuple[int, int]]) -> None:
        limit = self.poller.events_per_wait
        if limit is not None and len(events) >= limit:
            seen = self._round_seen
            if seen is None:
                self._round_seen = {fd for fd, _ in events}  # the round begins with the turn that put things off
                return
            reported = [fd for fd, _ in events]
            if seen.isdisjoint(reported):
                seen.update(reported)
                return
        self._round_seen = None
        self._run_queued(self._next_round)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the loop thread after ``delay`` seconds (loop thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), callback))

    def stop(self) -> None:
        """Make ``run`` return after the current iteration. Safe from any thread and from signal handlers."""
        self._running = False
        self._wakeup.signal()

    def run(self) -> None:
        """Wait for events and dispatch them until ``stop`` is called."""
        self.thread = threading.current_thread()
        self._running = True
        handlers = self.handlers
        wait = self.poller.wait
        wakeup_fd = self._wakeup.fd
        callbacks = self._callbacks
        turn_end = self._turn_end
        next_round = self._next_round
        timers = self._timers
        monotonic = time.monotonic
        # With few connections busy, a turn of this loop is paid per request: its bookkeeping stays inline, and the
        # callbacks and timers are called only when there is something to run.
        while self._running:
            if callbacks or turn_end or next_round:
                timeout: float | None = 0.0
            elif timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            else:
                timeout = None
            try:
                events = wait(timeout)
            except InterruptedError:
                continue
            for fd, mask in events:
                if fd == wakeup_fd:
                    self._wakeup.drain()
                    continue
                handler = handlers.get(fd)
                if handler is not None:
                    try:
                        handler.handle_event(mask)
                    except Exception:
                        log.exception("unhandled error in the handler for descriptor %d", fd)
            if callbacks or self._wakeup_pending:
                self._run_callbacks()
            if turn_end:
                self._run_queued(turn_end)
            if next_round:
                self._end_turn_of_round(events)
            if timers and timers[0][0] <= monotonic():
                self._run_timers()
        self._run_queued(turn_end)  # stopping: what this turn put off is still done

    def run_pending(self, timeout: float) -> None:
        """After ``run`` has returned: run the callbacks still queued, and those they queue, for at most
        ``timeout`` seconds (the engine's shutdown, so that nothing handed to the loop is silently dropped)."""
        deadline = time.monotonic() + timeout
        while (self._callbacks or self._turn_end or self._next_round) and time.monotonic() < deadline:
            self._run_callbacks()
            self._run_queued(self._turn_end)
            self._run_queued(self._next_round)

    def _run_callbacks(self) -> None:
        self._wakeup_pending = False
        self._run_queued(self._callbacks)

    @staticmethod
    def _run_queued(queue: deque[tuple[Callable, tuple]]) -> None:
        # Only what is queued now: what these queue in turn waits for the next turn, so a callback that always
        # queues another cannot keep the loop from its events.
        for _ in range(len(queue)):
            callback, args = queue.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("unhandled error in a loop callback")

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, callback = heapq.heappop(timers)
            try:
                callback()
            except Exception:
                log.exception("unhandled error in a timer")

    def close(self) -> None:
        self.poller.close()
        self._wakeup.close()
