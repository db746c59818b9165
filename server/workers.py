"""Threads for applications, processes for cores.

``ThreadPool``: WSGI applications block (databases, files, sleeps), so they run on a small pool of threads fed
by a queue, never on the event loop. With the GIL, threads do not add CPU; they let one slow request wait
without stopping the others.

``Supervisor``: to use every core, the parent binds the listening sockets and forks ``--workers`` processes,
each running its own engine on the inherited sockets. The parent only watches them:

- a worker that dies is replaced (with a pause if workers keep dying at once, so a broken app cannot fork-bomb);
- SIGTERM: the workers stop accepting, finish in-flight requests within ``--graceful-timeout``, and exit;
- SIGINT: everyone exits promptly;
- SIGHUP: fresh workers are started first, then the old ones are stopped gracefully, so the listening sockets
  never close and no connection is refused during the swap.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable

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
            except Exception:
                log.exception("unhandled error in a worker thread")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued work finish, then stop the threads (waiting at most ``timeout`` seconds in all)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def pin_to_cpu(slot: int | None) -> int:
    """Pin this process (and every thread it starts afterwards) to one allowed CPU; return which.

    One process runs its event loop and its application threads under one GIL. Left to the scheduler, those
    threads land on different cores and hand the GIL to each other across them, which costs about half the
    process's throughput (measured: 34k requests per CPU-second pinned, 14k unpinned, for hello world). Pinning
    keeps the hand-offs on one core. Worker ``slot`` N of a supervisor takes the Nth allowed CPU, so the
    processes still use every core; a lone process (``slot`` None) stays on the CPU the scheduler started it
    on, so that several separate instances spread out the way the scheduler placed them.
    """
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[slot % len(allowed)] if slot is not None else _current_cpu(allowed)
    os.sched_setaffinity(0, {cpu})
    return cpu


def _current_cpu(allowed: list[int]) -> int:
    try:
        with open("/proc/self/stat") as stat:
            cpu = int(stat.read().rpartition(")")[2].split()[36])  # field 39, "processor"
    except (OSError, ValueError, IndexError):
        return allowed[0]
    return cpu if cpu in allowed else allowed[0]


_SUPERVISED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Supervisor:
    """The parent of ``--workers`` processes; ``run_worker()`` is what each child runs."""

    def __init__(self, workers: int, run_worker: Callable[[int], None], graceful_timeout: float) -> None:
        self.size = workers
        self.run_worker = run_worker  # called in the child with the worker's slot number, 0 .. workers-1
        self.graceful_timeout = graceful_timeout
        self.children: dict[int, float] = {}  # pid -> start time
        self.slots: dict[int, int] = {}  # pid -> slot
        self.retiring: dict[int, float] = {}  # pid -> when it was told to stop
        self._signals: list[int] = []
        self._stopping: int | None = None
        self._stopped_at = 0.0
        self._failures = 0

    def run(self) -> int:
        """Start the workers and supervise until told to stop. Returns the exit status."""
        for sig in _SUPERVISED_SIGNALS:
            signal.signal(sig, self._on_signal)
        self._refill()
        while True:
            # Signals first: a Ctrl-C reaches the whole process group, so the workers may already have exited
            # because of it, and that is a stop, not a crash to recover from.
            for sig in self._take_signals():
                if sig in (signal.SIGTERM, signal.SIGINT) and self._stopping is None:
                    self._stopping = sig
                    log.info("supervisor: %s, stopping %d worker(s)", signal.Signals(sig).name, len(self.children))
                    self._signal_all(self.children, sig)
                elif sig == signal.SIGHUP and self._stopping is None:
                    self._replace_all()
            self._reap()
            if self._stopping is not None:
                if not self.children:
                    return 0
                if self._stopping == signal.SIGTERM:
                    self._kill_overdue(self.children, self._stopped_at)
            else:
                self._kill_overdue(self.retiring, None)
                self._refill()
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
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        else:
            for sig in _SUPERVISED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
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
            self.retiring.pop(pid, None)
            self.slots.pop(pid, None)
            if started is not None and self._stopping is None:
                code = os.waitstatus_to_exitcode(status)
                log.warning("supervisor: worker %d exited with status %d; starting a new one", pid, code)
                # A worker that dies within a second of starting is probably broken: back off before retrying.
                self._failures = self._failures + 1 if time.monotonic() - started < 1.0 else 0

    def _refill(self) -> None:
        if len(self.children) < self.size:
            if self._failures:
                time.sleep(min(5.0, 0.1 * 2 ** min(self._failures, 6)))
            taken = {self.slots[pid] for pid in self.children}
            for slot in range(self.size):
                if slot not in taken:
                    self._spawn(slot)

    def _replace_all(self) -> None:
        old = dict(self.children)
        log.info("supervisor: SIGHUP, replacing %d worker(s)", len(old))
        self.children = {}
        self._refill()
        now = time.monotonic()
        for pid in old:
            self.retiring[pid] = now
        self._signal_all(self.retiring, signal.SIGTERM)

    def _kill_overdue(self, pids: dict[int, float], since: float | None) -> None:
        now = time.monotonic()
        for pid, started in list(pids.items()):
            if now - (since if since is not None else started) > self.graceful_timeout + 1.0:
                log.warning("supervisor: worker %d did not stop in time; killing it", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pids.pop(pid, None)
