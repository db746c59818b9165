"""Notice application code that runs too long, say where it is stuck, and tell the caller when a worker is lost.

A WSGI application runs on one of the engine's app threads (``server.workers.ThreadPool``). If it hangs (a
database call with no timeout, a deadlock, an endless loop), that thread is gone for good: Python cannot stop a
thread from the outside, and nothing else would notice. With ``--threads N`` the process limps on with N-1 threads;
once all N are stuck, it accepts connections it can never answer.

The watchdog makes that visible and recoverable:

- an app thread calls ``begin(description)`` when it starts running application code for a request and ``end()``
  when that piece of work is over (a streamed response may be several pieces: each resumption is timed on its own,
  since a long stream that keeps moving is not stuck);
- the engine's periodic sweep, on the loop thread, calls ``check(now)``. Each piece running longer than
  ``--timeout`` is logged once, at WARNING, with the stack of its thread (``sys._current_frames``), so the operator
  sees the line it is stuck on. ``check`` returns True when every app thread is stuck: the process can serve no
  more requests.
- the engine then calls ``server.workers.request_replacement()``. Under ``--workers`` the supervisor starts a new
  worker in the same slot and stops this one gracefully; a lone process has nobody to ask and only reports.

``check`` also sends the supervisor a heartbeat (``server.workers.heartbeat``): it runs on the loop thread, so a
heartbeat that stops coming means the event loop itself is frozen, which the supervisor answers by replacing the
worker and killing the old one.

The hot path (``begin``/``end``) is one dict store or pop keyed by the thread's id. Those are atomic under the GIL,
and ``check`` works on a copy of the dict, so no lock is needed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from threading import get_ident
from time import monotonic
from types import FrameType

from server.workers import heartbeat

log = logging.getLogger("server")

# One piece of work: when it began and what it is. A fresh tuple per begin(), so ``is`` tells two pieces on the
# same thread apart even if they began in the same clock tick.
_Piece = tuple[float, object]  # (when it began, what it is: str() names it)


class Watchdog:
    """Times the application code running on ``threads`` app threads against ``timeout`` seconds (0: never)."""

    def __init__(self, timeout: float, threads: int) -> None:
        self.timeout = timeout
        self.threads = max(1, threads)
        self._running: dict[int, _Piece] = {}  # thread id -> the piece it is running now
        self._reported: dict[int, _Piece] = {}  # thread id -> the piece already reported (only check() touches it)
        # Beat well within the timeout, so the supervisor never mistakes a slow sweep for a frozen loop.
        self._beat_every = min(1.0, timeout / 4) if timeout > 0 else 0.0

    def begin(self, description: object) -> None:
        """Mark the calling (app) thread as running application code for ``description`` from now on.

        ``description`` is anything whose ``str()`` names the request; it is formatted only if reported."""
        self._running[threading.get_ident()] = (time.monotonic(), description)

    def end(self) -> None:
        """The calling thread's piece of application code is over."""
        self._running.pop(threading.get_ident(), None)

    def watch(self, description: object, step: Callable[[], None]) -> None:
        """Run ``step()`` on the calling (app) thread, timed: ``begin`` and ``end`` in one call for the hot path."""
        running = self._running
        ident = get_ident()
        running[ident] = (monotonic(), description)
        try:
            step()
        finally:
            running.pop(ident, None)

    def beat(self, now: float) -> None:
        """Send the supervisor a heartbeat (at most one per beat interval) from a loop busy elsewhere than in its
        sweep; ``check`` sends them otherwise. Nothing without a timeout."""
        if self.timeout > 0:
            heartbeat(now, self._beat_every)

    def check(self, now: float) -> bool:
        """Report each newly overdue piece once; True when all ``threads`` app threads are overdue. Loop thread."""
        if self.timeout <= 0:
            return False
        heartbeat(now, self._beat_every)
        running = self._running.copy()  # one C-level copy: atomic under the GIL while app threads write
        # Forget reports whose piece is over, so the thread's next overdue piece is reported again.
        for ident in [ident for ident, piece in self._reported.items() if running.get(ident) is not piece]:
            del self._reported[ident]
        overdue = 0
        frames: dict[int, FrameType] = {}
        for ident, piece in running.items():
            started, description = piece
            if now - started < self.timeout:
                continue
            overdue += 1
            if self._reported.get(ident) is piece:
                continue
            if not frames:
                frames = sys._current_frames()  # rare: only when something is newly overdue
            frame = frames.get(ident)
            if frame is None:
                # The thread is gone without calling end() (it should not happen: end() sits in a finally).
                overdue -= 1
                self._running.pop(ident, None)
                continue
            self._reported[ident] = piece
            log.warning(
                "%s has been running for %.1fs (timeout %gs) on thread %s, which is at:\n%s",
                description,
                now - started,
                self.timeout,
                _thread_name(ident),
                "".join(traceback.format_stack(frame)).rstrip(),
            )
        return overdue >= self.threads


def _thread_name(ident: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return str(ident)
