"""``--timeout``: app code that runs too long is reported with its stack; a worker whose threads are all stuck,
or whose loop has frozen, is replaced by its supervisor, a new worker first.

The supervisor tests fork, so they run the Supervisor in a separate Python process (this test process has
threads, and forking a threaded process is asking for trouble); its workers are tiny scripts steered by signals.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from server.watchdog import Watchdog
from server.workers import heartbeat, request_replacement
from tests.support import ROOT, TIMEOUT, ServerProcess, child_pids, wait_for

# -- the watchdog on its own --------------------------------------------------------------------------------------


class AppThread:
    """A real thread that begins a piece of app work and blocks in ``stuck_in_the_app`` until released."""

    def __init__(self, watchdog: Watchdog, description: str) -> None:
        self.watchdog = watchdog
        self.description = description
        self.began = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"app-{description}", daemon=True)
        self.thread.start()
        assert self.began.wait(TIMEOUT)

    def _run(self) -> None:
        self.watchdog.begin(self.description)
        try:
            self.began.set()
            self.stuck_in_the_app()
        finally:
            self.watchdog.end()

    def stuck_in_the_app(self) -> None:
        self.release.wait(TIMEOUT)

    def finish(self) -> None:
        self.release.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


def reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "has been running" in r.getMessage()]


def test_an_overdue_request_is_reported_once_with_its_stack(caplog):
    caplog.set_level(logging.WARNING, logger="server")
    watchdog = Watchdog(timeout=5.0, threads=2)
    first = AppThread(watchdog, "GET /slow from 127.0.0.1:1234")
    try:
        # ``check`` is given the time, so the test moves the clock instead of sleeping.
        assert watchdog.check(time.monotonic()) is False
        assert reports(caplog) == []
        later = time.monotonic() + 6.0
        assert watchdog.check(later) is False  # one of two threads stuck: the worker still serves
        [record] = reports(caplog)
        message = record.getMessage()
        assert "GET /slow from 127.0.0.1:1234 has been running for 6." in message
        assert "app-GET /slow" in message  # the thread's name
        assert "in stuck_in_the_app" in message and "self.release.wait(TIMEOUT)" in message  # where it is stuck
        assert watchdog.check(later + 1.0) is False
        assert len(reports(caplog)) == 1  # reported once, not on every sweep

        second = AppThread(watchdog, "POST /upload from 127.0.0.1:5678")
        try:
            assert watchdog.check(time.monotonic() + 1.0) is False  # the second is not overdue yet
            assert watchdog.check(time.monotonic() + 6.0) is True  # now every thread is stuck
            assert len(reports(caplog)) == 2 and "POST /upload" in reports(caplog)[1].getMessage()
        finally:
            second.finish()
        assert watchdog.check(time.monotonic() + 6.0) is False  # end() took it off the books
    finally:
        first.finish()
    assert watchdog.check(time.monotonic() + 60.0) is False
    assert len(reports(caplog)) == 2


def test_each_piece_of_work_is_timed_and_reported_on_its_own(caplog):
    caplog.set_level(logging.WARNING, logger="server")
    watchdog = Watchdog(timeout=1.0, threads=1)
    for number in (1, 2):
        # The same thread (this one) running two pieces: a streamed response resumed, say.
        watchdog.begin(f"piece {number}")
        assert watchdog.check(time.monotonic() + 2.0) is True
        assert watchdog.check(time.monotonic() + 3.0) is True
        watchdog.end()
        assert watchdog.check(time.monotonic() + 3.0) is False
    assert [r.getMessage().split(" has been")[0] for r in reports(caplog)] == ["piece 1", "piece 2"]
    assert "test_each_piece_of_work_is_timed" in reports(caplog)[0].getMessage()


def test_timeout_zero_never_reports(caplog):
    caplog.set_level(logging.WARNING, logger="server")
    watchdog = Watchdog(timeout=0, threads=1)
    watchdog.begin("GET / from 127.0.0.1")
    assert watchdog.check(time.monotonic() + 1e6) is False
    watchdog.end()
    assert reports(caplog) == []


def test_without_a_supervisor_nobody_is_asked():
    assert request_replacement() is False
    heartbeat(time.monotonic(), 0.0)  # a no-op, not an error


# -- the supervisor, in a process of its own ------------------------------------------------------------------------

# Each worker says when it is up, then waits for signals from the test: SIGUSR1 asks for a replacement (twice, to
# show only the first ask is sent), SIGUSR2 freezes its heartbeats (a stand-in for a frozen event loop), SIGTERM
# stops it. It uses sigtimedwait with the signals blocked, so no signal is lost between two checks.
SUPERVISOR_SCRIPT = """
import logging, os, signal, sys, time
from server.workers import Supervisor, heartbeat, request_replacement

logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
WAITED = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM}

def say(text):
    os.write(1, (text + "\\n").encode())  # one write per line: several processes share the pipe

def run_worker(slot):
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    pid = os.getpid()
    say(f"worker {pid} up in slot {slot}")
    beating = True
    while True:
        if beating:
            heartbeat(time.monotonic(), 0.05)
        info = signal.sigtimedwait(WAITED, 0.05)
        if info is None:
            continue
        if info.si_signo == signal.SIGUSR1:
            say(f"worker {pid} asked: {request_replacement()} then {request_replacement()}")
        elif info.si_signo == signal.SIGUSR2:
            beating = False
            say(f"worker {pid} frozen")
        else:
            say(f"worker {pid} got SIGTERM")
            return

sys.exit(Supervisor(2, run_worker, graceful_timeout=5.0, timeout=float(sys.argv[1])).run())
"""


class SupervisorProcess:
    """The script above as a subprocess, its output collected line by line."""

    def __init__(self, timeout: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR_SCRIPT, str(timeout)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def index(self, text: str) -> int:
        """Where the first line containing ``text`` is, waiting for it to appear."""
        return wait_for(lambda: next((i + 1 for i, line in enumerate(self.lines) if text in line), None)) - 1

    def workers_up(self) -> dict[int, int]:
        """slot -> pid of the latest worker started in each slot."""
        slots: dict[int, int] = {}
        for line in self.lines:
            if match := re.fullmatch(r"worker (\d+) up in slot (\d+)", line):
                slots[int(match[2])] = int(match[1])
        return slots

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
            self._reader.join(TIMEOUT)


@pytest.fixture
def supervisor(request) -> Iterator[SupervisorProcess]:
    process = SupervisorProcess(timeout=request.param)
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(TIMEOUT)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("supervisor", [0.0], indirect=True)
def test_a_stuck_worker_is_replaced_new_one_first_then_stopped_gracefully(supervisor):
    slots = wait_for(lambda: len(up := supervisor.workers_up()) == 2 and up)
    old, other = slots[0], slots[1]
    os.kill(old, signal.SIGUSR1)
    assert supervisor.index(f"worker {old} asked:") >= 0
    assert f"worker {old} asked: True then False" in supervisor.lines  # one ask per worker
    replacing = supervisor.index(f"supervisor: worker {old} has all its app threads stuck; replacing it")
    new = wait_for(lambda: (pid := supervisor.workers_up()[0]) != old and pid)
    started = supervisor.index(f"supervisor: started worker {new}")
    stopped = supervisor.index(f"worker {old} got SIGTERM")
    assert replacing < started < stopped  # the new worker exists before the old one is told to stop
    supervisor.index(f"supervisor: retired worker {old} exited with status 0")
    assert gone(old)
    assert supervisor.workers_up() == {0: new, 1: other}  # the other slot was left alone
    assert f"worker {other} got SIGTERM" not in supervisor.lines

    assert supervisor.stop() == 0
    assert f"worker {new} got SIGTERM" in supervisor.lines and f"worker {other} got SIGTERM" in supervisor.lines
    assert not any("starting a new one" in line for line in supervisor.lines)  # a replacement, not a crash


@pytest.mark.parametrize("supervisor", [0.5], indirect=True)
def test_a_worker_whose_loop_froze_is_replaced_and_killed(supervisor):
    slots = wait_for(lambda: len(up := supervisor.workers_up()) == 2 and up)
    frozen, other = slots[0], slots[1]
    os.kill(frozen, signal.SIGUSR2)
    supervisor.index(f"worker {frozen} frozen")
    replacing = supervisor.index(f"supervisor: worker {frozen}'s loop has not turned for")
    new = wait_for(lambda: (pid := supervisor.workers_up()[0]) != frozen and pid)
    assert replacing < supervisor.index(f"supervisor: started worker {new}")
    supervisor.index(f"supervisor: retired worker {frozen} exited with status -9")  # SIGKILL: it cannot stop itself
    assert gone(frozen)
    assert f"worker {frozen} got SIGTERM" not in supervisor.lines
    assert supervisor.workers_up() == {0: new, 1: other}  # the one still beating was left alone
    assert supervisor.stop() == 0


# -- end to end -----------------------------------------------------------------------------------------------------


def test_a_hung_request_is_reported_and_its_worker_replaced():
    args = ("tests.server.hang_app:app", "--workers", "2", "--threads", "1", "--timeout", "1")
    with ServerProcess(*args, "--graceful-timeout", "2") as server:
        supervisor = server.proc.pid
        first = wait_for(lambda: len(pids := child_pids(supervisor)) == 2 and pids)
        assert requests.get(server.url + "/", timeout=TIMEOUT).status_code == 200
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(server.url + "/hang", timeout=0.5)

        # The report names the request and shows where the app is stuck.
        report = wait_for(
            lambda: re.search(r"GET /hang .*has been running for [\d.]+s.*?hang_forever", server.output(), re.S)
        )
        assert "_never.wait()" in server.output()[report.start() :]
        # That worker had its only thread stuck, so it asks to be replaced; a new worker takes its place.
        stuck = int(wait_for(lambda: re.search(r"worker (\d+) has all its app threads stuck", server.output()))[1])
        assert stuck in first
        wait_for(lambda: stuck not in (pids := child_pids(supervisor)) and len(pids) == 2, timeout=TIMEOUT * 2)
        assert "starting a new one" not in server.output()  # replaced on request, not after a crash

        # The listening socket never closed: every request is answered, by the workers still in service.
        answered = {
            int(requests.get(server.url + "/", headers={"Connection": "close"}, timeout=TIMEOUT).text)
            for _ in range(10)
        }
        assert answered and stuck not in answered


def test_with_threads_0_a_hung_request_freezes_its_loop_and_the_worker_is_killed_and_replaced():
    """--threads 0 runs the app on the loop, so a request that hangs stops the loop and its heartbeats: the
    supervisor's frozen-loop rule is the safety net, and the other worker answers meanwhile."""
    args = ("tests.server.hang_app:app", "--workers", "2", "--threads", "0", "--timeout", "1")
    with ServerProcess(*args, "--graceful-timeout", "2") as server:
        supervisor = server.proc.pid
        first = wait_for(lambda: len(pids := child_pids(supervisor)) == 2 and pids)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(server.url + "/hang", timeout=0.5)
        # Sent at once, before its loop had swept even once: the first heartbeat goes out before any request.
        frozen = wait_for(lambda: re.search(r"worker (\d+)'s loop has not turned", server.output()))
        stuck = int(frozen[1])
        assert stuck in first
        wait_for(lambda: stuck not in (pids := child_pids(supervisor)) and len(pids) == 2, timeout=TIMEOUT * 2)
        answered = {
            int(requests.get(server.url + "/", headers={"Connection": "close"}, timeout=TIMEOUT).text)
            for _ in range(10)
        }
        assert answered and stuck not in answered
