"""Issues 2 and 12's benchmark: our WSGI server against its peers on a hello-world app, in one interleaved run.

Three questions, each with targets from the issues:

1. Throughput of one process on one core. Every server runs ``bench.hello:app`` pinned to CPU 0 while ``wrk``
   drives it from CPU 1, with 100 keep-alive connections and again with ``Connection: close``. The peers frame
   the result: granian (Rust, 1 worker, 1 runtime thread), waitress (the fastest pure-Python peer), cheroot,
   gunicorn (sync, and gthread with 4 threads), uWSGI (C, 1 process, 4 threads), bjoern (written in C: the
   ceiling) and wsgiref (the floor). Ours runs twice: as it comes (``ours``: the app on a pool of 8 threads) and
   with ``--threads 0`` (``ours-loop``: the app on the event loop, for apps that never wait, as hello world does).
   Ours, granian and bjoern -- the servers issue 12 sets targets against -- are also measured with 10 keep-alive
   connections, in a second interleaved pass of their own. ``--unpinned`` runs this part (and the next) without
   ``taskset``, as users start servers: a process's threads, and wrk, go wherever the scheduler puts them.
2. Idle connections. 10,000 keep-alive connections sit idle on our server (``--loop epoll``) while a fresh
   request is timed: an event loop should not care how many sockets are merely open.
3. Processes. ``--workers 2`` against ``--workers 1`` on both cores, to show the pre-fork model scales, and
   (also with ``--threads 0``) against granian ``--workers 2`` and gunicorn ``-w 2 -k gthread --threads 4``.

Run ``python -m bench.bench_server --help``; bench/README.md lists what each part needs. A missing peer or
tool is reported with the command that installs it and skipped, so a partial setup still gives a partial
answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.metadata
import os
import platform
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import harness
from bench.harness import Results, Scenario, Server

APP = "bench.hello:app"
SERVER_CPU, WRK_CPU = 0, 1
BASELINES = ("waitress", "granian", "bjoern")
KEEP_ALIVE = Scenario("keep-alive", connections=100)
KEEP_ALIVE_10 = Scenario("keep-alive c10", connections=10)
CLOSE = Scenario("close", connections=100, headers={"Connection": "close"})
SCENARIOS = (KEEP_ALIVE, CLOSE)  # every server
# Only the servers with a target at 10 connections (issue 12) run it, so the default run stays short.
C10_SERVERS = ("ours", "ours-loop", "ours-pinned", "ours-before", "granian", "bjoern")
OUR_NAMES = ("ours", "ours-loop")  # our server as it comes, and with --threads 0 (the app on the event loop)
# Whose availability is that of our server; ours-pinned (--cpu-affinity auto) only says something with --unpinned.
OUR_SERVERS = (*OUR_NAMES, "ours-pinned")


# ---------------------------------------------------------------------------------------------------------
# Who takes part
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Contender:
    """A server in the comparison: what it needs installed, how to get it, and how to start it on a port."""

    name: str
    module: str  # the Python module that must be importable (with ``program``: the distribution, for its version)
    install: str  # the command that provides it
    argv: Callable[[int], list[str]]
    role: str = ""
    program: str | None = None  # an executable that must exist instead of a module (uwsgi)


def _python(*args: str) -> list[str]:
    return harness.python_argv(*args)


def beside_python(program: str) -> str | None:
    """``program`` from the running interpreter's bin directory (where pip puts it), else from PATH.

    The interpreter's own copy comes first: on PATH there may be a pyenv shim or a Debian build that embeds
    another Python.
    """
    local = Path(sys.executable).parent / program
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return harness.which(program)


def granian_argv(port: int, workers: int = 1) -> list[str]:
    """granian as in bench_tls: WSGI, HTTP/1 only, one runtime thread per worker, no access log."""
    return _python(
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--http",
        "1",
        "--workers",
        str(workers),
        "--runtime-threads",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        APP,
    )


def uwsgi_argv(port: int) -> list[str]:
    """uWSGI as issue 12 measured it: one process (no master), 4 threads, its own HTTP parser.

    ``--http-socket`` has no keep-alive: it closes the connection after every response (without saying so in
    a header, so wrk counts each close as a read error). ``--http11-socket`` keeps connections, but one per
    thread until it falls idle: with 4 threads, 96 of 100 busy keep-alive connections wait unanswered in the
    accept queue and wrk's figures describe the other 4. ``--listen 1024`` (granian's default backlog)
    replaces uWSGI's 100, which is exactly wrk's connection count; ``--need-app`` makes a failed import stop
    it instead of answering 500s.
    """
    return [
        beside_python("uwsgi") or "uwsgi",
        "--http-socket",
        f"127.0.0.1:{port}",
        "--module",
        APP,
        "--processes",
        "1",
        "--threads",
        "4",
        "--listen",
        "1024",
        "--need-app",
        "--disable-logging",
        "--die-on-term",
    ]


def gunicorn_gthread_argv(port: int, workers: int = 1) -> list[str]:
    return _python(
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        APP,
    )


CONTENDERS = (
    Contender(
        "ours",
        "server",
        "pip install -e .  (and the server must start: python -m server --help)",
        lambda port: _python("-m", "server", APP, "--bind", f"127.0.0.1:{port}"),
        "default settings",
    ),
    Contender(
        "ours-loop",
        "server",
        "pip install -e .",
        lambda port: _python("-m", "server", APP, "--bind", f"127.0.0.1:{port}", "--threads", "0"),
        "--threads 0: the app runs on the event loop, for apps that never wait",
    ),
    Contender(
        "ours-pinned",
        "server",
        "pip install -e .",
        lambda port: _python("-m", "server", APP, "--bind", f"127.0.0.1:{port}", "--cpu-affinity", "auto"),
        "--cpu-affinity auto: its threads on one core (the same as taskset, unless --unpinned)",
    ),
    Contender("granian", "granian", "pip install granian", granian_argv, "1 worker, 1 runtime thread, Rust"),
    Contender(
        "waitress",
        "waitress",
        "pip install -e '.[bench]'",
        lambda port: _python("-m", "waitress", f"--listen=127.0.0.1:{port}", APP),
        "baseline",
    ),
    Contender(
        "cheroot",
        "cheroot",
        "pip install -e '.[bench]'",
        lambda port: _python("-m", "cheroot", "--bind", f"127.0.0.1:{port}", APP),
    ),
    Contender(
        "gunicorn-sync",
        "gunicorn",
        "pip install -e '.[bench]'",
        lambda port: _python("-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "sync", APP),
        "1 worker",
    ),
    Contender(
        "gunicorn-gthread", "gunicorn", "pip install -e '.[bench]'", gunicorn_gthread_argv, "1 worker, 4 threads"
    ),
    Contender(
        "uwsgi",
        "uwsgi",
        "pip install uwsgi  (compiles with gcc and needs Python's headers)",
        uwsgi_argv,
        "1 process, 4 threads, C; --http-socket: no keep-alive",
        program="uwsgi",
    ),
    Contender(
        "bjoern",
        "bjoern",
        "apt-get install libev-dev && pip install bjoern",
        lambda port: _python("-m", "bench.hello", "bjoern", "127.0.0.1", str(port)),
        "the ceiling, in C",
    ),
    Contender(
        "wsgiref",
        "wsgiref",
        "(standard library)",
        lambda port: _python("-m", "bench.hello", "wsgiref", "127.0.0.1", str(port)),
        "the floor",
    ),
)


@dataclasses.dataclass(frozen=True)
class Cpus:
    """Where the server and the load generator run (None: anywhere)."""

    server: int | None
    wrk: int | None


def choose_cpus() -> tuple[Cpus, str | None]:
    cpus = harness.usable_cpus()
    if len(cpus) < 2:
        return Cpus(None, None), "only one CPU is usable: server and wrk share it, so the numbers are lower"
    if harness.which("taskset") is None:
        return Cpus(None, None), "taskset is missing (apt-get install util-linux): running unpinned"
    return Cpus(cpus[SERVER_CPU], cpus[WRK_CPU]), None


def our_server_works() -> bool:
    """True when ``python -m server --help`` succeeds, i.e. our server exists and at least imports."""
    try:
        done = subprocess.run(_python("-m", "server", "--help"), cwd=harness.REPO_ROOT, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def available(contender: Contender) -> bool:
    if contender.name in OUR_SERVERS:
        return our_server_works()
    if contender.program is not None:
        return beside_python(contender.program) is not None
    return harness.python_module_available(contender.module)


def version_of(contender: Contender) -> str:
    if contender.name in OUR_SERVERS:
        return "this repository"
    if contender.name == "wsgiref":
        return f"Python {platform.python_version()}"
    try:
        return importlib.metadata.version(contender.module)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------------------------------------------------
# Part 1: throughput on one core
# ---------------------------------------------------------------------------------------------------------


def throughput(contenders: Sequence[Contender], rounds: int, duration: float, cpus: Cpus) -> Results:
    """Every server in SCENARIOS, interleaved; then those of C10_SERVERS with 10 connections, interleaved."""

    def servers(chosen: Sequence[Contender]) -> list[Server]:
        return [Server(c.name, c.argv(port := harness.free_port()), port, cpu=cpus.server) for c in chosen]

    results = harness.interleaved(servers(contenders), SCENARIOS, rounds=rounds, duration=duration, wrk_cpu=cpus.wrk)
    few = [c for c in contenders if c.name in C10_SERVERS]
    if few:
        print(f"\n== keep-alive with 10 connections: {', '.join(c.name for c in few)}")
        harness.interleaved(
            servers(few), [KEEP_ALIVE_10], rounds=rounds, duration=duration, wrk_cpu=cpus.wrk, results=results
        )
    return results


# ---------------------------------------------------------------------------------------------------------
# Part 2: a fresh request among many idle keep-alive connections
# ---------------------------------------------------------------------------------------------------------

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclasses.dataclass
class IdleResult:
    """What the idle-connections test saw."""

    wanted: int
    opened: int  # connections that completed one request and were then left idle
    held: int  # of those, still open after the fresh requests were timed
    open_seconds: float
    fresh_ms: list[float]
    rss_before_kib: int | None
    rss_after_kib: int | None

    @property
    def fresh_median_ms(self) -> float:
        return statistics.median(self.fresh_ms)


def _response_complete(data: bytes) -> bool:
    """True when ``data`` holds a whole response head plus the body its Content-Length announces."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True  # no length: the hello app always sends one, so the head is what we wait for


def _open_idle_batch(address: tuple[str, int], size: int, timeout: float) -> list[socket.socket]:
    """Open ``size`` connections at once and make one request on each; return those answered in ``timeout``.

    Non-blocking sockets let a batch connect in parallel. A completed response proves the server accepted the
    connection (a bare connect only proves the kernel queued it), and what remains is an idle keep-alive
    connection.
    """
    done: list[socket.socket] = []
    received: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for _ in range(size):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                continue
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, events in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if events & selectors.EVENT_WRITE:
                    # Connected (or failed): the request is tiny, so one send never blocks on a fresh socket.
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or sock.send(REQUEST) != len(REQUEST):
                        selector.unregister(sock)
                        sock.close()
                    else:
                        selector.modify(sock, selectors.EVENT_READ)
                        received[sock] = b""
                    continue
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(sock)
                    sock.close()
                    continue
                received[sock] += chunk
                if _response_complete(received[sock]):
                    selector.unregister(sock)
                    done.append(sock)
        for key in list(selector.get_map().values()):  # too slow: not counted, not kept
            selector.unregister(key.fileobj)
            key.fileobj.close()
    return done


def _time_fresh_request(address: tuple[str, int], timeout: float = 5.0) -> float:
    """Milliseconds from connect to a complete response, on a new connection."""
    started = time.perf_counter()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(REQUEST)
        data = b""
        while not _response_complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                raise harness.BenchError("the server closed the fresh connection without a full response")
            data += chunk
    return (time.perf_counter() - started) * 1000.0


def _still_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""  # data would be odd, but it's open
    except BlockingIOError:
        return True
    except OSError:
        return False


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def idle_connections(count: int, cpus: Cpus, batch: int = 500, samples: int = 21) -> IdleResult:
    """Hold ``count`` idle keep-alive connections to our server and time fresh requests meanwhile.

    The keep-alive timeout is raised for this test only: with the default (seconds) the server would rightly
    close the idle connections before we finish opening them, and the question is what holding them costs.
    """
    limit = harness.raise_nofile_limit(count + 1024)  # the server, our child, inherits it too
    if limit < count + 64:
        raise harness.BenchError(f"open-file limit {limit} is too low for {count} connections (ulimit -n)")
    port = harness.free_port()
    argv = [*CONTENDERS[0].argv(port), "--loop", "epoll", "--keepalive-timeout", "3600"]
    server = Server("ours-idle", argv, port, cpu=cpus.server)
    address = (harness.LOOPBACK, port)
    idle: list[socket.socket] = []
    # Our own process does the connecting and timing, so keep it off the server's core as wrk would be.
    affinity = os.sched_getaffinity(0)
    if cpus.wrk is not None:
        os.sched_setaffinity(0, {cpus.wrk})
    try:
        with harness.measurement_lock(), server:
            assert server.process is not None
            pid = server.process.pid  # taskset execs the server, so this is the server's own pid
            rss_before = _rss_kib(pid)
            started = time.monotonic()
            for first in range(0, count, batch):
                idle += _open_idle_batch(address, min(batch, count - first), timeout=15.0)
            open_seconds = time.monotonic() - started
            time.sleep(0.5)  # let the server settle back into its idle state before timing
            fresh = [_time_fresh_request(address) for _ in range(samples)]
            held = sum(map(_still_open, idle))
            rss_after = _rss_kib(pid)
    finally:
        for sock in idle:
            sock.close()
        os.sched_setaffinity(0, affinity)
    return IdleResult(count, len(idle), held, open_seconds, fresh, rss_before, rss_after)


# ---------------------------------------------------------------------------------------------------------
# Part 3: one worker process against two
# ---------------------------------------------------------------------------------------------------------


OURS_1, OURS_2, OURS_2_LOOP = "ours --workers 1", "ours --workers 2", "ours --workers 2 --threads 0"
OURS_2_PINNED = "ours --workers 2 --cpu-affinity auto"
GRANIAN_2, GUNICORN_2 = "granian --workers 2", "gunicorn gthread -w 2"


def workers(rounds: int, duration: float, peers: Sequence[str]) -> Results:
    """``--workers 1`` against ``--workers 2``, and the peers named in ``peers`` (``granian``,
    ``gunicorn-gthread``) with 2 workers, unpinned: the processes, and wrk, share both cores."""
    candidates: list[tuple[str, Callable[[int], list[str]]]] = [
        (OURS_1, lambda port: [*CONTENDERS[0].argv(port), "--workers", "1"]),
        (OURS_2, lambda port: [*CONTENDERS[0].argv(port), "--workers", "2"]),
        (OURS_2_LOOP, lambda port: [*CONTENDERS[0].argv(port), "--workers", "2", "--threads", "0"]),
        (OURS_2_PINNED, lambda port: [*CONTENDERS[0].argv(port), "--workers", "2", "--cpu-affinity", "auto"]),
    ]
    if "granian" in peers:
        candidates.append((GRANIAN_2, lambda port: granian_argv(port, workers=2)))
    if "gunicorn-gthread" in peers:
        candidates.append((GUNICORN_2, lambda port: gunicorn_gthread_argv(port, workers=2)))
    servers = [Server(name, argv(port := harness.free_port()), port, cpu=None) for name, argv in candidates]
    return harness.interleaved(servers, [KEEP_ALIVE], rounds=rounds, duration=duration, wrk_cpu=None)


# ---------------------------------------------------------------------------------------------------------
# Verdicts and the report
# ---------------------------------------------------------------------------------------------------------


def _shown(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    if value < target and round(value, 2) >= target:  # 1.996 must not read "2.00x ... FAIL"
        return f"{value:.3f}x"
    return f"{value:.2f}x"


def _ratio_row(issue: int, label: str, value: float | None, target: float, per_cpu: float | None = None) -> list[str]:
    """One target row. The verdict is on requests/s, as the issues state their targets; the ratio per
    CPU-second is shown beside it because on shared cores it is the steadier of the two."""
    verdict = "not measured" if value is None else "PASS" if value >= target else "FAIL"
    return [str(issue), label, f">= {target:g}x", _shown(value, target), _shown(per_cpu, target), verdict]


# (issue, scenario, baseline, target): ours over the baseline, median requests/s. Issue 12's are checked for
# both of our settings (OUR_NAMES), each on its own row.
THROUGHPUT_TARGETS = (
    (2, "keep-alive", "waitress", 2),
    (2, "keep-alive", "bjoern", 0.25),
    (2, "close", "waitress", 1.5),
    (12, "keep-alive", "granian", 0.8),
    (12, "keep-alive c10", "granian", 0.8),
    (12, "close", "granian", 0.8),
    (12, "keep-alive", "bjoern", 0.35),
    (12, "keep-alive c10", "bjoern", 0.35),
)


def verdicts(results: Results | None, idle: IdleResult | None, scaling: Results | None) -> list[list[str]]:
    """The issues' targets, each with what was measured and whether it was met."""
    rows = []
    if results is not None:
        for issue, scenario, baseline, target in THROUGHPUT_TARGETS:
            for ours in OUR_SERVERS if issue == 12 else OUR_NAMES[:1]:
                if ours not in results.servers:
                    continue
                label = f"{ours} {scenario}{' c100' if scenario == 'keep-alive' else ''} vs {baseline}"
                ratio = results.ratio(ours, baseline, scenario)
                per_cpu = results.ratio(ours, baseline, scenario, per_cpu=True)
                rows.append(_ratio_row(issue, label, ratio, target, per_cpu))
        granian_p99 = results.median_latency("granian", "keep-alive", 99)
        for ours in [name for name in OUR_SERVERS if name in results.servers]:
            ours_p99 = results.median_latency(ours, "keep-alive", 99)
            measured, verdict = "n/a", "not measured"
            if ours_p99 is not None and granian_p99 is not None:
                measured = f"{ours_p99:.2f} ms vs {granian_p99:.2f} ms"
                verdict = "PASS" if ours_p99 <= granian_p99 else "FAIL"
            rows.append(["12", f"{ours} p99 latency, keep-alive c100, vs granian", "no higher", measured, "", verdict])
    if idle is not None:
        ok = idle.held == idle.wanted and idle.fresh_median_ms < 50
        rows.append(
            [
                "2",
                f"fresh request with {idle.wanted:,} idle connections",
                "< 50 ms, all held",
                f"{idle.fresh_median_ms:.1f} ms (max {max(idle.fresh_ms):.1f}), {idle.held:,} held",
                "",
                "PASS" if ok else "FAIL",
            ]
        )
        if idle.rss_before_kib is not None and idle.rss_after_kib is not None and idle.held:
            # Issue 12's budget: what holding one idle keep-alive connection costs the server process (its RSS;
            # the kernel's socket buffers are not in it).
            per_connection = (idle.rss_after_kib - idle.rss_before_kib) / idle.held
            rows.append(
                [
                    "12",
                    "server memory per idle keep-alive connection",
                    "<= 2 KiB",
                    f"{per_connection:.2f} KiB",
                    "",
                    "PASS" if per_connection <= 2 else "FAIL",
                ]
            )
    if scaling is not None:
        # Per CPU-second means nothing here: two workers are meant to use more CPU, not less per request.
        ratio = scaling.ratio(OURS_2, OURS_1, "keep-alive")
        rows.append(_ratio_row(2, "--workers 2 vs --workers 1 (2 cores, shared with wrk)", ratio, 1.3))
        rows[-1][4] = ""
        # Between servers of the same shape it means something again, so it stays.
        for ours in (OURS_2, OURS_2_LOOP, OURS_2_PINNED):
            ratio = scaling.ratio(ours, GRANIAN_2, "keep-alive")
            per_cpu = scaling.ratio(ours, GRANIAN_2, "keep-alive", per_cpu=True)
            rows.append(_ratio_row(12, f"{ours.removeprefix('ours ')} vs {GRANIAN_2}", ratio, 0.8, per_cpu))
        ratio = scaling.ratio(OURS_2, GUNICORN_2, "keep-alive")
        per_cpu = scaling.ratio(OURS_2, GUNICORN_2, "keep-alive", per_cpu=True)
        row = _ratio_row(12, f"--workers 2 vs {GUNICORN_2} --threads 4", ratio, 0, per_cpu)
        row[2], row[5] = "(reported)", "not measured" if ratio is None else "-"
        rows.append(row)
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(
    command: str,
    args: argparse.Namespace,
    contenders: Sequence[Contender],
    skipped: Sequence[str],
    notes: Sequence[str],
    results: Results | None,
    idle: IdleResult | None,
    scaling: Results | None,
) -> str:
    cpus = len(harness.usable_cpus())
    parts = [
        "# Server benchmark: hello-world WSGI app",
        "",
        f"Command: `{command}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpus} CPUs, Python "
        f"{platform.python_version()}, {args.rounds} interleaved round(s) of {args.duration:g}s, medians.",
    ]
    parts += [f"Note: {note}  " for note in notes]
    if results is not None:
        c10 = [c.name for c in contenders if c.name in C10_SERVERS]
        parts += [
            "",
            "## One process, unpinned (server and wrk wherever the scheduler puts them, 100 connections unless named)"
            if args.unpinned
            else "## One process on one core (server on CPU 0, wrk on CPU 1, 100 connections unless named)",
            "",
            harness.markdown_table(results, BASELINES, [s.name for s in (KEEP_ALIVE, KEEP_ALIVE_10, CLOSE)]),
            "",
            "Servers: "
            + "; ".join(f"{c.name} {version_of(c)}" + (f" ({c.role})" if c.role else "") for c in contenders)
            + ".  ",
            f"`keep-alive c10` (10 connections) is measured for {', '.join(c10) or 'none of them'} only, in a "
            "second interleaved pass.",
        ]
        if any(c.name == "uwsgi" for c in contenders):
            parts += [
                "",
                "uWSGI runs with `--http-socket`, which has no keep-alive: it closes every connection after its "
                "response, without a `Connection: close` header, so its keep-alive rows are a connection per "
                "request and wrk counts each close as a read error (its errors column). `--http11-socket` keeps "
                "connections, but one per thread until it falls idle: with 4 threads, 96 of 100 keep-alive "
                "connections would wait unanswered in the accept queue.",
            ]
    if idle is not None:
        rss = ""
        if idle.rss_before_kib is not None and idle.rss_after_kib is not None:
            rss = f"; server memory {idle.rss_before_kib / 1024:.0f} -> {idle.rss_after_kib / 1024:.0f} MiB RSS"
        parts += [
            "",
            "## Idle keep-alive connections (ours, --loop epoll, --keepalive-timeout 3600)",
            "",
            f"Opened {idle.opened:,} of {idle.wanted:,} connections in {idle.open_seconds:.1f}s "
            f"(one request each, then idle); {idle.held:,} still open after timing "
            f"{len(idle.fresh_ms)} fresh requests{rss}.  ",
            f"Fresh request, connect to full response: median {idle.fresh_median_ms:.2f} ms, "
            f"max {max(idle.fresh_ms):.2f} ms.",
        ]
    if scaling is not None:
        parts += [
            "",
            "## Worker processes (no taskset: both cores, shared with wrk; keep-alive, 100 connections)",
            "",
            harness.markdown_table(scaling, [OURS_1, GRANIAN_2, GUNICORN_2]),
            "",
            f"{GRANIAN_2}: 1 runtime thread per worker, as above; {GUNICORN_2}: `--threads 4` per worker. "
            "Requests per CPU-second say nothing between 1 and 2 workers (two are meant to use more CPU), but "
            "between servers of 2 workers they do.",
        ]
    rows = verdicts(results, idle, scaling)
    if rows:
        parts += [
            "",
            "## Targets (issues 2 and 12)",
            "",
            _table(["issue", "target", "wanted", "measured", "per CPU-s", "verdict"], rows),
        ]
    if skipped:
        parts += ["", "## Skipped", ""] + [f"- {line}" for line in skipped]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    names = [c.name for c in CONTENDERS]
    parser = argparse.ArgumentParser(prog="python -m bench.bench_server", description=__doc__.split("\n")[0])
    # Many short rounds beat a few long ones on shared cores: a burst of someone else's work spoils one round,
    # and the median of five shrugs off two spoiled rounds.
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default: 6; --quick: 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds; medians are reported (5; --quick: 1)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=names,
        help=f"measure only this server (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["throughput", "idle", "workers"],
        help="leave out a part of the benchmark (repeatable)",
    )
    parser.add_argument("--idle", type=int, help="idle connections to hold (10000; --quick: 1000)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--unpinned",
        action="store_true",
        help="run the one-process parts (throughput, idle) without taskset, as users start servers: the server's "
        "threads and wrk wherever the scheduler puts them",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also measure our server from another checkout (e.g. a git worktree of main) as 'ours-before'",
    )
    args = parser.parse_args(argv)
    # --quick changes the defaults only: an explicit --duration, --rounds or --idle still wins.
    defaults = (
        {"duration": 2.0, "rounds": 1, "idle": 1000} if args.quick else {"duration": 6.0, "rounds": 5, "idle": 10_000}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.duration <= 0 or args.rounds < 1 or args.idle < 1:
        parser.error("--duration, --rounds and --idle must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    harness.install_signal_handlers()
    command = " ".join(["python -m bench.bench_server", *argv])
    log = print

    load_before = os.getloadavg()[0]
    cpus, cpu_note = (Cpus(None, None), "--unpinned: no taskset") if args.unpinned else choose_cpus()
    notes = [cpu_note] if cpu_note else []
    skipped: list[str] = []
    have_wrk = harness.which("wrk") is not None
    if not have_wrk:
        skipped.append("throughput and workers: wrk is missing (apt-get install wrk)")
    # Pinned by taskset, ours-pinned would only repeat ours: it runs with --unpinned.
    chosen = [
        c for c in CONTENDERS if (not args.only or c.name in args.only) and (args.unpinned or c.name != "ours-pinned")
    ]
    if args.only and "ours-pinned" in args.only and not args.unpinned:
        skipped.append("ours-pinned: it only runs with --unpinned (taskset pins every server already)")
    if args.before is not None:
        before = args.before
        chosen.insert(
            1,
            Contender(
                "ours-before",
                "server",
                f"a checkout of this repository at {before}",
                lambda port: harness.python_module_from(before, "server", APP, "--bind", f"127.0.0.1:{port}"),
                f"default settings, from {before}",
            ),
        )
    contenders = []
    for contender in chosen:
        if available(contender):
            contenders.append(contender)
        else:
            skipped.append(f"{contender.name}: not installed or not working; install with: {contender.install}")
    ours = any(c.name == "ours" for c in contenders)
    for line in skipped:
        log(f"skipping {line}")

    results = idle = scaling = None
    if have_wrk and "throughput" not in args.skip and contenders:
        log(f"\n== throughput: {', '.join(c.name for c in contenders)}")
        results = throughput(contenders, args.rounds, args.duration, cpus)
    if ours and "idle" not in args.skip:
        log(f"\n== idle: {args.idle:,} keep-alive connections")
        try:
            idle = idle_connections(args.idle, cpus)
        except harness.BenchError as exc:
            skipped.append(f"idle: {exc}")
            log(f"idle test failed: {exc}")
    if ours and have_wrk and "workers" not in args.skip:
        peers = [c.name for c in contenders if c.name in ("granian", "gunicorn-gthread")]
        log(f"\n== workers: ours --workers 1 and 2, {', '.join(peers) or 'no peers'} with 2 workers")
        scaling = workers(args.rounds, args.duration, peers)

    load_after = os.getloadavg()[0]
    notes.append(f"load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end")
    text = report(command, args, contenders, skipped, notes, results, idle, scaling)
    path = harness.write_results("server.md", text)
    print("\n" + text)
    print(f"(written to {path.relative_to(harness.REPO_ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
