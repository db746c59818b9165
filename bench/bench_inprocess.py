"""The Python cost of one request, without the kernel: a keep-alive connection driven in process.

``bench_server`` and ``bench_static`` measure what a client sees, and that includes the kernel's share (epoll,
recv, send, wake-ups) and wrk's, on a shared machine where a run moves by several percent. This one isolates the
part a change to our Python can move: one ``HTTPConnection`` of a real ``Engine``, with ``--threads 0`` (the
application on the calling thread), driven as the loop drives it when a turn brings one request: the event,
then the end of the turn (the loop's own dispatch of the event, a few dictionary lookups, is left out). Its
socket is a stand-in that hands over wrk's request on every ``recv`` and takes every ``send`` whole, so no
system call is made for the connection (a static file still costs its ``stat`` and ``pread``, which are part of
its answer).

Two scenarios: ``hello`` (``bench/hello.py``) and ``static`` (a 1 KiB file under ``--static /=DIR``, answered from
the open-file cache as every request after the first is). It prints microseconds per request (best and median
of the batches), and with ``--callgrind`` the instructions per request that valgrind counts: the difference
between two runs of different lengths, so that start-up cancels out. With a fixed hash seed the count repeats
to a few dozen instructions where the timings move by 5%, which makes it the figure to judge a small change by::

    python -m bench.bench_inprocess                  # a few seconds
    python -m bench.bench_inprocess --callgrind      # about a minute (apt-get install valgrind)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import harness
from bench.bench_static import make_site
from bench.hello import app as hello_app
from server.config import Config
from server.connection import HTTPConnection
from server.engine import Engine
from server.listeners import open_listener, parse_bind, resolve_schemes
from server.loop import READ
from server.static import reply as static_reply
from server.static.cache import OpenFileCache

# What wrk sends for each request: the request line and a Host.
REQUESTS = {
    "hello": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "static": b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
}


class StandInSocket:
    """A connected socket as a keep-alive client keeps it busy: the same request on every ``recv``, every
    ``send`` taken whole. Anything else (``fileno``, ``shutdown``...) goes to a real socket of a socketpair."""

    def __init__(self, real: socket.socket, request: bytes) -> None:
        self.real = real
        self.request = request
        self.sends = 0
        # A copy of the last thing sent (the connection reuses its buffer), when a check of the answers asks for it.
        self.keep_last = False
        self.last = b""

    def recv(self, size: int, flags: int = 0) -> bytes:
        return self.request

    def send(self, data: Any, flags: int = 0) -> int:
        self.sends += 1
        if self.keep_last:
            self.last = bytes(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class Driver:
    """One engine and one connection of it, answering ``scenario``'s request once per ``run`` step."""

    def __init__(self, scenario: str, site: Path) -> None:
        static = (f"/={site}",) if scenario == "static" else ()
        # A cache of our own, emptied by close(): the process-wide one would keep the file open past the site.
        self.saved_cache, static_reply.OPEN_FILES = static_reply.OPEN_FILES, OpenFileCache()
        self.listener = open_listener(parse_bind("127.0.0.1:0"))
        resolve_schemes([self.listener], have_certificate=False)
        self.engine = Engine(Config(threads=0, static=static), hello_app, [self.listener])
        self.engine.reactor.thread = threading.current_thread()  # this thread plays the loop
        self.ends = socket.socketpair()
        self.conn = HTTPConnection(self.engine, self.ends[0], ("127.0.0.1", 40000), self.listener.local_facts)
        self.conn.start()
        self.sock = StandInSocket(self.ends[0], REQUESTS[scenario])
        self.conn.sock = self.sock  # type: ignore[assignment]

    def run(self, requests: int) -> float:
        """Answer ``requests`` requests; the seconds it took."""
        handle = self.conn.handle_event
        end_turn = self.engine.reactor.end_turn_early
        before = self.sock.sends
        started = time.perf_counter()
        for _ in range(requests):
            handle(READ)
            end_turn()
        elapsed = time.perf_counter() - started
        if self.sock.sends - before < requests:
            raise SystemExit(f"only {self.sock.sends - before} responses for {requests} requests: see the log")
        return elapsed

    def check(self) -> None:
        """Answer one request and make sure it was a 200: a benchmark of a path that fails measures the failure."""
        self.sock.keep_last = True
        self.run(1)
        self.sock.keep_last = False
        if not self.sock.last.startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"the benchmark's request is not answered with 200: {self.sock.last[:200]!r}")

    def close(self) -> None:
        """Release what the engine and the connection hold: descriptors, the loop's, the file cache's."""
        self.engine.reactor.remove(self.conn.fd)
        self.engine.reactor.close()
        for end in self.ends:
            end.close()
        self.listener.sock.close()
        static_reply.OPEN_FILES.clear()
        static_reply.OPEN_FILES = self.saved_cache


def timings(scenario: str, site: Path, batches: int, batch: int) -> tuple[float, float]:
    """Microseconds per request: the best and the median batch, after a warm-up batch."""
    driver = Driver(scenario, site)
    try:
        driver.check()
        driver.run(batch)
        per_request = sorted(driver.run(batch) / batch * 1e6 for _ in range(batches))
    finally:
        driver.close()
    return per_request[0], statistics.median(per_request)


def instructions(scenario: str, short: int = 5_000, long: int = 25_000) -> float:
    """Instructions per request under callgrind: (a run of ``long`` requests - a run of ``short``) / the difference.

    With a fixed hash seed: string hashes decide where dictionary entries land, and so how many probes a lookup
    takes; a random seed per run moves the count by several hundred instructions per request."""

    def collected(requests: int) -> int:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
                "bench.bench_inprocess", "--only", scenario, "--raw", str(requests)]  # fmt: skip
        environment = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(argv, capture_output=True, text=True, cwd=harness.REPO_ROOT, env=environment, timeout=900)
        for line in done.stderr.splitlines():
            if "Collected" in line:
                return int(line.split(":")[1])
        raise SystemExit(f"callgrind failed:\n{done.stderr[-2000:]}")

    return (collected(long) - collected(short)) / (long - short)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], choices=sorted(REQUESTS), help="repeatable")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per scenario (default 30)")
    parser.add_argument("--batch", type=int, default=20_000, help="requests per batch (default 20000)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per request (valgrind)")
    parser.add_argument("--raw", type=int, metavar="N", help=argparse.SUPPRESS)  # one untimed run, for --callgrind
    parser.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)  # (the test: keep bench/results)
    args = parser.parse_args(argv)
    scenarios = args.only or sorted(REQUESTS)
    if args.callgrind and harness.which("valgrind") is None:
        print("valgrind is missing: apt-get install valgrind", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as tmp:
        site = make_site(Path(tmp))
        if args.raw is not None:
            for scenario in scenarios:
                driver = Driver(scenario, site)
                driver.check()
                driver.run(args.raw)
                driver.close()
            return 0
        rows = ["| scenario | µs per request (best) | µs (median) | instructions per request |", "|---|---:|---:|---:|"]
        for scenario in scenarios:
            best, median = timings(scenario, site, args.batches, args.batch)
            counted = f"{instructions(scenario):,.0f}" if args.callgrind else "(--callgrind)"
            rows.append(f"| {scenario} | {best:.2f} | {median:.2f} | {counted} |")
    text = "\n".join(rows) + "\n"
    print(text)
    if not args.no_write:
        print(f"(written to {harness.write_results('inprocess.md', text)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
