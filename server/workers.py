"""Threads for applications, processes for cores.

``ThreadPool``: WSGI applications block (databases, files, sleeps), so they run on a small pool of threads fed
by a queue, never on the event loop. With the GIL, threads do not add CPU; they let one slow request wait
without stopping the others.

``OnTheLoop``: ``--threads 0``. An application that never waits gains nothing from threads and pays for them: every
request crosses from the loop to a thread and back, and the two take turns at the GIL. With ``--threads 0`` the
connection calls the application right on the loop thread, and the rest of the work that would go to the pool
(a parked response's next piece) runs as a loop callback. The price is that of gunicorn's sync worker: while the
application runs, nothing else in the process does, so an application that waits stalls every client of the
process.

``Supervisor``: to use every core, the parent binds the listening sockets and forks ``--workers`` processes,
each running its own engine on the inherited sockets. The parent only watches them:

- a worker that dies is replaced (with a pause if workers keep dying at once, so a broken app cannot fork-bomb);
- SIGTERM: the workers (retiring ones included) stop accepting, finish in-flight requests within
  ``--graceful-timeout``, and exit; the supervisor exits after the last of them;
- SIGINT: everyone exits promptly, also when it comes during a graceful stop (a worker whose loop is too busy
  to act on it is killed after ``SIGINT_GRACE`` seconds);
- SIGHUP: fresh workers are started first, then the old ones are stopped gracefully, so the listening sockets
  never close and no connection is refused during the swap;
- a worker whose app threads are all stuck (``server.watchdog``) asks, through ``request_replacement()``, to be
  replaced the same way: a new worker in its slot first, then SIGTERM for the old one;
- a worker that has served its ``--max-requests`` (``request_recycling()``) is replaced the same way, but told
  to retire with a signal of its own, ``RETIRE_SIGNAL`` (SIGUSR2), on which it drains rather than stops
  (``Engine.retire``). It goes on accepting until that comes, so even a lone worker's listening socket is served
  throughout: the new worker is forked before the old one stops accepting, and connections that arrive in
  between wait in the kernel's backlog for whichever of the two takes them. A signal of its own, because two
  SIGTERMs sent before the worker handles the first arrive as one: the supervisor's stop, sent right behind a
  retirement, would be taken for the retirement, and the worker would wait for its idle connections instead of
  closing them;
- with a ``timeout``, a worker whose event loop stops sending heartbeats is replaced too, and the old one is
  killed outright (a frozen loop cannot stop gracefully).

Workers talk back to the supervisor through one pipe that it creates before the first fork and every child
inherits. A message is a fixed 8 bytes (pid, kind); writes to a pipe up to PIPE_BUF bytes are atomic, so messages
from many workers never interleave, and the supervisor reads them without blocking on each tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.loop import Reactor

log = logging.getLogger("server")


class ThreadPool:
    """A fixed set of daemon threads running submitted callables in order of submission."""

    def __init__(self, size: int, name: str = "worker") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(max(1, size))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable, *args: object) -> None:
        """Run ``function(*args)`` on one of the threads."""
        self._queue.put((function, args))

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            function, args = item
            try:
                function(*args)
            except BaseException:
                # Even SystemExit from application code must not end a pool thread: nothing would replace it.
                log.exception("unhandled error in a worker thread")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued work finish, then stop the threads (waiting at most ``timeout`` seconds in all)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class OnTheLoop:
    """``--threads 0``: what would go to a pool thread runs on the event loop instead, as a callback."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor

    def submit(self, function: Callable, *args: object) -> None:
        """Run ``function(*args)`` on the loop thread, after the current handler (loop thread only)."""
        self._reactor.call_soon(function, *args)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Run what is still queued, as a pool finishes its queue: a parked response whose connection was just
        closed must still close its iterable (the loop has stopped, so nobody else would)."""
        self._reactor.run_pending(timeout)


def pin_to_cpu(slot: int | None) -> int | None:
    """Pin the calling thread, and so every thread it starts afterwards (the engine's loop and app threads), to
    one allowed CPU; return which, or None where the system does not let a process choose (no
    ``sched_setaffinity``, as on macOS, or a refusal): the scheduler then places the threads as before.

    One process runs its event loop and its application threads under one GIL, and hands it between them
    thousands of times a second. Left to the scheduler, those threads land on different cores, and every
    hand-off becomes a wake-up across cores: hello world with 8 app threads, wrk with 100 connections on a
    2-core machine, 21k req/s unpinned against 59k pinned, and still 50k with a busy process on the pinned core.

    It is not the default (``--cpu-affinity auto`` asks for it) because the pin holds more than our threads:
    application threads that do their work outside the GIL (hashing, compression, numpy) share the one core
    (a reviewer measured half the requests of a 16 MiB sha256 app on 2 cores), every subprocess the
    application starts inherits it (``nproc`` says 1), and in containers limited by quota rather than by
    cpuset, every instance's worker 0 lands on the same host CPU. Worker ``slot`` N of a supervisor takes the
    Nth allowed CPU, so the processes still use every core; a lone process (``slot`` None) stays on the CPU
    the scheduler started it on, so that several separate instances spread out the way the scheduler placed
    them. Threads the application started at import, before this, keep their CPUs.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = sorted(os.sched_getaffinity(0))
        cpu = allowed[slot % len(allowed)] if slot is not None else _current_cpu(allowed)
        os.sched_setaffinity(0, {cpu})
    except OSError as error:
        log.warning("could not pin process %d to one CPU (%s): the scheduler places its threads", os.getpid(), error)
        return None
    return cpu


def _current_cpu(allowed: list[int]) -> int:
    try:
        with open("/proc/self/stat") as stat:
            cpu = int(stat.read().rpartition(")")[2].split()[36])  # field 39, "processor"
    except (OSError, ValueError, IndexError):
        return allowed[0]
    return cpu if cpu in allowed else allowed[0]


# SIGINT means now, but a worker acts on it from its loop, which may be busy: an application running on it
# (--threads 0) or a frozen loop. Past this many seconds it is killed.
SIGINT_GRACE = 2.0

_SUPERVISED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
RETIRE_SIGNAL = signal.SIGUSR2  # supervisor -> worker: "your successor is up: drain and exit" (see the docstring)

# -- the channel from a worker to its supervisor -------------------------------------------------------------------

_MESSAGE = struct.Struct("=ii")  # (pid, kind): 8 bytes, far below PIPE_BUF, so each write is atomic
_REPLACE = 1  # "all my app threads are stuck: start a new worker in my slot and stop me"
_HEARTBEAT = 2  # "my event loop is turning"
_RECYCLE = 3  # "I have served my --max-requests: start a new worker in my slot, then retire me (RETIRE_SIGNAL)"

# Set in a worker process right after the fork; None everywhere else (a lone process, the supervisor, tests).
_channel: int | None = None
_supervisor_pid: int | None = None
_asked = False
_recycling_asked = False
_last_beat = float("-inf")


def _send(kind: int) -> bool:
    if _channel is None:
        return False
    try:
        return os.write(_channel, _MESSAGE.pack(os.getpid(), kind)) == _MESSAGE.size
    except OSError:  # full (the supervisor is not reading) or gone: there is nothing better to do than carry on
        return False


def request_replacement() -> bool:
    """Ask the supervisor to replace this worker (a new one first, then SIGTERM for this one).

    Asks once per worker process; returns True if the request was sent, False when there is no supervisor, when
    it was already asked, or when the message could not be written (then a later call tries again).
    """
    global _asked
    if _asked or _channel is None:
        return False
    _asked = _send(_REPLACE)
    return _asked


def request_recycling() -> bool:
    """Ask the supervisor to recycle this worker (``--max-requests``): a new worker first, then RETIRE_SIGNAL for
    this one.

    Like ``request_replacement``: once per worker process; False when there is no supervisor, when it was already
    asked, or when the message could not be written (then a later call tries again). Any thread.
    """
    global _recycling_asked
    if _recycling_asked or _channel is None:
        return False
    _recycling_asked = _send(_RECYCLE)
    return _recycling_asked


def heartbeat(now: float, every: float) -> None:
    """Tell the supervisor this worker's loop is turning, at most once per ``every`` seconds. Loop thread."""
    global _last_beat
    if _channel is not None and now - _last_beat >= every:
        _last_beat = now
        _send(_HEARTBEAT)


def supervisor_pid() -> int | None:
    """The pid of this worker's supervisor, as it was before the fork; None when not a supervised worker.

    Taken before forking, not from ``os.getppid()`` in the child: a supervisor that dies right after the fork
    leaves its child adopted by init before the child could ask, and that child would then never notice."""
    return _supervisor_pid


def _become_worker(channel: int, supervisor: int) -> None:
    global _channel, _supervisor_pid, _asked, _recycling_asked, _last_beat
    _channel, _supervisor_pid, _last_beat = channel, supervisor, float("-inf")
    _asked = _recycling_asked = False


class Supervisor:
    """The parent of ``--workers`` processes; ``run_worker()`` is what each child runs.

    ``timeout`` (0: off) is ``--timeout``: a worker that has sent heartbeats and then falls silent for longer than
    that (plus a second of slack for the worker's sweep period) has a frozen event loop and is replaced.
    """

    def __init__(
        self,
        workers: int,
        run_worker: Callable[[int], None],
        graceful_timeout: float,
        *,
        timeout: float = 0.0,
        on_reload: Callable[[], object] | None = None,
        on_tick: Callable[[], object] | None = None,
        on_start: Callable[[], object] | None = None,
        on_stop: Callable[[], object] | None = None,
    ) -> None:
        self.size = workers
        # Run once the supervisor answers its signals, before the first fork: the command line says "serving"
        # here, since a deploy script that sends SIGHUP as soon as it reads that must not kill the supervisor
        # with the signal's default action.
        self.on_start = on_start
        # Run once, when told to stop (SIGTERM, SIGINT): the command line closes the listening sockets, so that
        # new clients are refused at once while the workers finish (SIGHUP keeps them, for the fresh workers).
        self.on_stop = on_stop
        # Run in the supervisor on SIGHUP, before the fresh workers are forked: they inherit what it loaded (the
        # renewed certificates), and a renewal that fails is reported once, here, instead of by every worker.
        self.on_reload = on_reload
        self.on_tick = on_tick  # run every turn of the supervisor's loop (0.05 s) while it is not stopping
        self.run_worker = run_worker  # called in the child with the worker's slot number, 0 .. workers-1
        self.graceful_timeout = graceful_timeout
        self.timeout = timeout
        self.children: dict[int, float] = {}  # pid -> start time
        self.slots: dict[int, int] = {}  # pid -> slot
        self.retiring: dict[int, float] = {}  # pid -> when it was told to stop
        self._signals: list[int] = []
        self._stopping: int | None = None
        self._stopped_at = 0.0
        self._kill_at = 0.0  # stopping: when workers still there are killed
        self._failures = 0
        self.beats: dict[int, float] = {}  # pid -> when its last heartbeat arrived (only workers that send them)
        self._channel_r = self._channel_w = -1
        self._partial = b""
        self._last_tick = 0.0

    def run(self) -> int:
        """Start the workers and supervise until told to stop. Returns the exit status."""
        for sig in _SUPERVISED_SIGNALS:
            signal.signal(sig, self._on_signal)
        if self.on_start is not None:
            self.on_start()
        # The channel exists before the first fork, so every worker inherits its write end. Both ends are
        # non-blocking: a worker must never stall on a full pipe, nor the supervisor on an empty one. (The
        # descriptors are non-inheritable, i.e. closed on exec, so programs an app runs do not get them.)
        self._channel_r, self._channel_w = os.pipe()
        os.set_blocking(self._channel_r, False)
        os.set_blocking(self._channel_w, False)
        try:
            return self._supervise()
        finally:
            os.close(self._channel_r)
            os.close(self._channel_w)

    def _supervise(self) -> int:
        self._refill()
        self._last_tick = time.monotonic()
        while True:
            # Signals first: a Ctrl-C reaches the whole process group, so the workers may already have exited
            # because of it, and that is a stop, not a crash to recover from.
            for sig in self._take_signals():
                if sig == signal.SIGINT and self._stopping == signal.SIGTERM:
                    # Ctrl-C during a graceful stop: the operator will not wait out --graceful-timeout.
                    self._stopping = sig
                    self._kill_at = min(self._kill_at, time.monotonic() + SIGINT_GRACE)
                    log.info("supervisor: SIGINT, stopping at once (during the graceful stop)")
                    self._signal_all(self.children, sig)
                    self._signal_all(self.retiring, sig)
                elif sig in (signal.SIGTERM, signal.SIGINT) and self._stopping is None:
                    self._stopping = sig
                    grace = self.graceful_timeout + 1.0 if sig == signal.SIGTERM else SIGINT_GRACE
                    self._kill_at = self._stopped_at + grace
                    log.info("supervisor: %s, stopping %d worker(s)", signal.Signals(sig).name, len(self.children))
                    if self.on_stop is not None:
                        try:
                            self.on_stop()
                        except Exception:  # the workers must hear of the stop whatever this did
                            log.exception("supervisor: a task at the stop failed")
                    self._signal_all(self.children, sig)
                    # Retiring workers too: one draining after --max-requests waits for its idle keep-alive
                    # connections, which a stop closes at once; and the supervisor waits for them as for the others
                    # (under systemd's KillMode=mixed, whatever outlives it is killed, requests in flight and all).
                    self._signal_all(self.retiring, sig)
                elif sig == signal.SIGHUP and self._stopping is None:
                    self._replace_all()
            self._reap()
            messages = self._read_messages()
            if self._stopping is not None:
                if not self.children and not self.retiring:
                    return 0
                self._kill_overdue(self.children, self._kill_at)
                self._kill_overdue(self.retiring, self._kill_at)
                self._kill_overdue(self.retiring)  # a retirement's own deadline may come first
            else:
                self._answer(messages)
                self._check_heartbeats()
                self._kill_overdue(self.retiring)
                self._refill()
                if self.on_tick is not None:
                    try:
                        self.on_tick()
                    except Exception:
                        log.exception("supervisor: a periodic task failed")
            time.sleep(0.05)  # the supervisor only babysits: a coarse tick costs nothing measurable

    # -- signals ------------------------------------------------------------------------------------------------------

    def _on_signal(self, sig: int, frame: object) -> None:
        if sig != signal.SIGCHLD:
            if sig in (signal.SIGTERM, signal.SIGINT) and self._stopping is None:
                self._stopped_at = time.monotonic()
            self._signals.append(sig)

    def _take_signals(self) -> list[int]:
        taken, self._signals = self._signals, []
        return taken

    def _signal_all(self, pids: dict[int, float], sig: int) -> None:
        for pid in list(pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pids.pop(pid, None)

    # -- children -----------------------------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        # Block our signals across the fork: a child that got a Ctrl-C before it had swapped the supervisor's
        # handlers for its own would record it in its copy of the supervisor and never stop. Blocked, the
        # signal waits until the child has default handlers again (and then stops it, as it should).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISED_SIGNALS)
        supervisor = os.getpid()
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        else:
            for sig in _SUPERVISED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            os.close(self._channel_r)
            _become_worker(self._channel_w, supervisor)
            status = 0
            try:
                self.run_worker(slot)
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
                status = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)
        self.children[pid] = time.monotonic()
        self.slots[pid] = slot
        log.info("supervisor: started worker %d", pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            started = self.children.pop(pid, None)
            retired = self.retiring.pop(pid, None)
            self.slots.pop(pid, None)
            self.beats.pop(pid, None)
            if retired is not None:
                code = os.waitstatus_to_exitcode(status)
                log.info("supervisor: retired worker %d exited with status %d", pid, code)
            if started is not None and self._stopping is None:
                code = os.waitstatus_to_exitcode(status)
                log.warning("supervisor: worker %d exited with status %d; starting a new one", pid, code)
                # A worker that dies within a second of starting is probably broken: back off before retrying.
                self._failures = self._failures + 1 if time.monotonic() - started < 1.0 else 0

    def _refill(self) -> None:
        if len(self.children) < self.size:
            if self._failures:
                # Backing off from a crash loop, in slices: a stop asked for meanwhile is answered first, with no
                # fresh worker forked for nothing.
                until = time.monotonic() + min(5.0, 0.1 * 2 ** min(self._failures, 6))
                while time.monotonic() < until:
                    if signal.SIGTERM in self._signals or signal.SIGINT in self._signals:
                        return
                    time.sleep(0.05)
            taken = {self.slots[pid] for pid in self.children}
            for slot in range(self.size):
                if slot not in taken:
                    self._spawn(slot)

    def _replace_all(self) -> None:
        old = dict(self.children)
        log.info("supervisor: SIGHUP, replacing %d worker(s)", len(old))
        if self.on_reload is not None:
            try:
                self.on_reload()
            except Exception:
                log.exception("supervisor: reloading before replacing the workers failed")
        self.children = {}
        self._refill()
        now = time.monotonic()
        for pid in old:
            self.retiring[pid] = now
        self._signal_all(self.retiring, signal.SIGTERM)

    # -- replacing one worker -----------------------------------------------------------------------------------------

    def _read_messages(self) -> list[tuple[int, int]]:
        """Every (pid, kind) the workers have written since the last tick, without waiting for more."""
        data = self._partial
        while True:
            try:
                chunk = os.read(self._channel_r, 512 * _MESSAGE.size)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        # Reads of whole messages always come back whole (each write was atomic), but keep any tail for the next
        # tick rather than trust that.
        whole = len(data) - len(data) % _MESSAGE.size
        self._partial = data[whole:]
        return [_MESSAGE.unpack_from(data, offset) for offset in range(0, whole, _MESSAGE.size)]

    def _answer(self, messages: list[tuple[int, int]]) -> None:
        now = time.monotonic()
        for pid, kind in messages:
            if pid not in self.children:
                continue  # already retiring, or gone: a late message changes nothing
            if kind == _HEARTBEAT:
                self.beats[pid] = now
            elif kind == _REPLACE:
                log.warning("supervisor: worker %d has all its app threads stuck; replacing it", pid)
                self._replace(pid, signal.SIGTERM)
            elif kind == _RECYCLE:
                log.info("supervisor: worker %d has served its --max-requests; replacing it", pid)
                self._replace(pid, RETIRE_SIGNAL)

    def _check_heartbeats(self) -> None:
        if self.timeout <= 0:
            return
        now = time.monotonic()
        if now - self._last_tick > self.timeout / 2:
            # The supervisor itself was not running (stopped, or starved of CPU): silence from the workers over
            # that time says nothing about them. Start counting afresh.
            for pid in self.beats:
                self.beats[pid] = now
        self._last_tick = now
        for pid, last in list(self.beats.items()):
            if now - last > self.timeout + 1.0 and pid in self.children:
                log.warning("supervisor: worker %d's loop has not turned for %.1fs; replacing it", pid, now - last)
                self._replace(pid, signal.SIGKILL)

    def _replace(self, pid: int, sig: int) -> None:
        """A new worker in ``pid``'s slot first, then ``sig`` for the old one, which retires."""
        del self.children[pid]
        self.beats.pop(pid, None)
        self._spawn(self.slots[pid])
        self.retiring[pid] = time.monotonic()
        with contextlib.suppress(ProcessLookupError):  # already gone: it is reaped as usual
            os.kill(pid, sig)

    def _kill_overdue(self, pids: dict[int, float], deadline: float | None = None) -> None:
        """Kill the workers of ``pids`` still there after ``deadline``; without one, after the graceful timeout
        (and a second) counted from each one's own time in ``pids`` (when it was told to retire)."""
        now = time.monotonic()
        for pid, started in list(pids.items()):
            if now > (deadline if deadline is not None else started + self.graceful_timeout + 1.0):
                log.warning("supervisor: worker %d did not stop in time; killing it", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pids.pop(pid, None)
