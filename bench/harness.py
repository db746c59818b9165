"""Shared machinery for the side-by-side benchmarks under ``bench/``.

Every benchmark here asks the same question -- "how does our server compare with a named peer on this machine,
right now?" -- and every one of them needs the same careful plumbing to get an answer that means something:

* each server runs as a subprocess pinned to one CPU with ``taskset`` and the load generator (``wrk``) is
  pinned to another, so the two never fight over a core;
* a server is "ready" when its port accepts a connection, checked against a deadline rather than a fixed
  sleep;
* the cores are shared with other work, so measurements are *interleaved* (round 1 of every server, then round
  2 of every server, ...) and summarised by their median, which keeps a burst of background noise from
  favouring whichever server happened to run during a quiet minute;
* every process started here is stopped again -- on success, on error and on Ctrl-C -- so a benchmark never
  leaves a server holding a port.

The module uses the standard library only, so a benchmark runs wherever Python and the peers are installed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

# Processes started by this module that have not been stopped yet; the atexit hook below stops any that a
# crash left behind. Keyed by pid so that stopping twice is harmless.
_LIVE: dict[int, Server] = {}
# Temporary directories (nginx configs) that outlive single runs; removed at exit, after the servers stop.
_TEMP_DIRS: list[Path] = []


class BenchError(RuntimeError):
    """A benchmark could not run (a tool is missing, a server would not start); the message says why."""


# ----------------------------------------------------------------------------------------------------------
# Environment checks
# ----------------------------------------------------------------------------------------------------------


def which(program: str) -> str | None:
    """Return the path of ``program`` on PATH, or None."""
    return shutil.which(program)


def python_module_available(module: str) -> bool:
    """True when ``module`` can be imported by the Python that runs the benchmark (and so by its servers)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order (``taskset`` can only pin to these)."""
    return sorted(os.sched_getaffinity(0))


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix ``argv`` with ``taskset -c CPU`` (or return it unchanged when ``cpu`` is None)."""
    if cpu is None:
        return list(argv)
    if which("taskset") is None:
        raise BenchError("taskset is missing: apt-get install util-linux")
    return ["taskset", "-c", str(cpu), *argv]


def raise_nofile_limit(wanted: int) -> int:
    """Raise the open-file limit towards ``wanted`` (children inherit it); return the new soft limit.

    Holding thousands of connections needs a descriptor each on both ends, and the usual soft limit is 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """Ask the kernel for a currently unused loopback port.

    There is a small window in which another process could take it, but for a benchmark on a quiet loopback
    that is an acceptable trade for being able to pass the port on a server's command line.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(
    host: str, port: int, timeout: float, alive: Callable[[], bool] | None = None, interval: float = 0.05
) -> None:
    """Block until ``host:port`` accepts a TCP connection, or raise BenchError after ``timeout`` seconds.

    ``alive`` is polled between attempts so that a server which dies during start-up is reported at once
    instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(1.0, timeout))):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise BenchError(f"the server on port {port} exited during start-up")
        if time.monotonic() >= deadline:
            raise BenchError(f"nothing accepted connections on {host}:{port} within {timeout:.0f}s")
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    """One server under test: how to start it, where it listens and which CPU it may use.

    It is a description plus, while running, the process. Use it as a context manager (``with server: ...``)
    or call ``start()``/``stop()``; either way the whole process group is stopped, so a pre-forking server's
    workers go with their master. Output goes to a log file (not a pipe, which a chatty server could fill and
    block on); its tail is quoted when the server fails to start.
    """

    name: str
    argv: Sequence[str]
    port: int
    cpu: int | None = None
    env: Mapping[str, str] | None = None
    cwd: Path = REPO_ROOT
    host: str = LOOPBACK
    start_timeout: float = 20.0
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, init=False, repr=False)
    log_path: Path | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> Server:
        """Start the process and wait until its port accepts connections."""
        if self.process is not None:
            raise BenchError(f"{self.name} is already running")
        env = dict(os.environ)
        # The repository root on the path lets every server import ``bench.hello:app`` the same way.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env.update(self.env or {})
        fd, log_name = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                pinned(self.argv, self.cpu),
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C reaches us, and we stop it ourselves
            )
        process = self.process
        _LIVE[process.pid] = self
        try:
            wait_for_port(self.host, self.port, self.start_timeout, alive=lambda: process.poll() is None)
        except BenchError as exc:
            tail = self.log_tail()
            self.stop()
            output = f"\n--- its output ---\n{tail}" if tail else ""
            raise BenchError(f"{self.name}: {exc}{output}") from None
        except BaseException:  # Ctrl-C while waiting: ``with`` will not call __exit__, so stop it here
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL for whatever is left after ``timeout`` seconds."""
        proc, self.process = self.process, None
        if proc is not None:
            _LIVE.pop(proc.pid, None)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            # Workers of a pre-forking server may outlive their master by a moment; make sure none is left.
            _signal_group(proc.pid, signal.SIGKILL)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server's live processes (all of its process group), or None."""
        if self.process is None:
            return None
        return process_group_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def process_group_cpu_seconds(pgid: int) -> float | None:
    """User plus system CPU seconds of every live process in group ``pgid`` (None without Linux's /proc).

    A server's workers share its process group (we start it as a session leader, and ``taskset`` execs it),
    so this covers pre-forking servers too.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    ticks = 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # Fields after the parenthesised command name: state, ppid, pgrp, ..., utime (12th), stime.
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@atexit.register
def stop_all() -> None:
    """Stop every server this process started and has not stopped (the last line of defence against leaks)."""
    for server in list(_LIVE.values()):
        server.stop()
    while _TEMP_DIRS:
        shutil.rmtree(_TEMP_DIRS.pop(), ignore_errors=True)


def install_signal_handlers() -> None:
    """Make SIGINT and SIGTERM unwind the stack, so ``with`` blocks and atexit stop every server we started.

    SIGTERM would otherwise end Python without running either, and SIGINT may arrive ignored when the
    benchmark was started in the background by a shell.
    """

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ----------------------------------------------------------------------------------------------------------
# nginx
# ----------------------------------------------------------------------------------------------------------

_NGINX_CONF = """\
{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    {mime}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{upstream}    server {{
        listen {host}:{port} reuseport backlog=4096;
        server_name localhost;
{location}    }}
}}
"""


def nginx_server(
    name: str,
    port: int,
    cpu: int | None = None,
    *,
    root: Path | None = None,
    proxy_to: Sequence[str] = (),
    extra_http: str = "",
) -> Server:
    """Describe an nginx with one worker that serves ``root`` as static files or proxies to ``proxy_to``.

    ``proxy_to`` holds ``host:port`` (or ``unix:/path``) addresses, balanced round-robin with upstream
    keep-alive; exactly one of ``root`` and ``proxy_to`` must be given. Its config, pid file and temp paths
    live in a private temporary directory that is removed when the benchmark exits.
    """
    nginx = which("nginx")
    if nginx is None:
        raise BenchError("nginx is missing: apt-get install nginx")
    if (root is None) == (not proxy_to):
        raise BenchError("nginx_server needs exactly one of root= or proxy_to=")
    # The directory outlives each start/stop (interleaved rounds restart the server), so it goes at exit.
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    _TEMP_DIRS.append(tmp)
    if root is not None:
        upstream = ""
        location = f"        root {Path(root).resolve()};\n        location / {{ }}\n"
    else:
        servers = "".join(f"        server {address};\n" for address in proxy_to)
        upstream = f"    upstream backend {{\n{servers}        keepalive 64;\n    }}\n"
        location = (
            "        location / {\n"
            "            proxy_pass http://backend;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $host;\n"
            "        }\n"
        )
    # As root, nginx would drop its worker to "nobody", which may not read a private temp dir: keep our own
    # user.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
    mime_types = Path("/etc/nginx/mime.types")
    conf = _NGINX_CONF.format(
        user=user,
        tmp=tmp,
        mime=f"include {mime_types};" if mime_types.exists() else "",
        upstream=upstream + extra_http,
        host=LOOPBACK,
        port=port,
        location=location,
    )
    conf_path = tmp / "nginx.conf"
    conf_path.write_text(conf)
    return Server(
        name=name,
        argv=[nginx, "-p", str(tmp), "-c", str(conf_path), "-g", "daemon off;"],
        port=port,
        cpu=cpu,
    )


# ----------------------------------------------------------------------------------------------------------
# One measurement at a time
# ----------------------------------------------------------------------------------------------------------

LOCK_PATH = Path(tempfile.gettempdir()) / "bench-harness.lock"
_LOCK_POLL = 0.1  # seconds between attempts while another benchmark holds the lock
_last_release = -1e9  # monotonic time this process last released the lock


@contextlib.contextmanager
def measurement_lock(wait: float = 900.0) -> Iterator[None]:
    """Hold the machine-wide benchmark lock: two benchmarks loading the same cores would spoil both.

    Every wrk run takes it, so benchmarks started side by side (say the server's and the static files')
    take turns run by run instead of measuring each other. After ``wait`` seconds we measure anyway: a stuck
    holder must not hang a benchmark forever.
    """
    global _last_release
    # flock has no queue: a process that releases and at once asks again would win every time against
    # waiters that poll. So, having just released it, pause for a few polls and let a waiter in first.
    pause = 3 * _LOCK_POLL - (time.monotonic() - _last_release)
    if pause > 0:
        time.sleep(pause)
    with open(LOCK_PATH, "a") as handle:
        deadline = time.monotonic() + wait
        locked = False
        while not locked and time.monotonic() < deadline:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)
                _last_release = time.monotonic()


# ----------------------------------------------------------------------------------------------------------
# wrk
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """What one ``wrk --latency`` run measured. Latencies are in milliseconds."""

    requests_per_sec: float
    requests: int
    latency_ms: Mapping[int, float]  # percentile (50, 75, 90, 99) -> milliseconds
    socket_errors: int  # connect + read + write + timeout
    non_2xx: int
    server_cpu_seconds: float | None = None  # filled in by interleaved() from the server's process group

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    @property
    def requests_per_cpu_second(self) -> float | None:
        """Requests per CPU-second the server spent: unlike requests/s, barely moved by others' load."""
        if not self.server_cpu_seconds:
            return None
        return self.requests / self.server_cpu_seconds


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RE_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_RE_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.M)
_RE_PCT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RE_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_RE_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkResult:
    """Read the numbers out of ``wrk --latency`` output (raises BenchError when there are none)."""
    rps = _RE_RPS.search(output)
    total = _RE_TOTAL.search(output)
    if rps is None or total is None:
        raise BenchError(f"could not read wrk's output:\n{output}")
    latency = {int(pct): float(value) * _UNIT_MS[unit] for pct, value, unit in _RE_PCT.findall(output)}
    sockerr = _RE_SOCKERR.search(output)
    non2xx = _RE_NON2XX.search(output)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        requests=int(total.group(1)),
        latency_ms=latency,
        socket_errors=sum(map(int, sockerr.groups())) if sockerr else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def run_wrk(
    url: str,
    connections: int = 100,
    duration: float = 10.0,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    cpu: int | None = None,
    timeout: float = 5.0,
) -> WrkResult:
    """Run ``wrk`` against ``url`` (pinned to ``cpu`` when given) and return what it measured.

    One wrk thread is plenty on loopback for the servers here (it drives well over 100,000 requests/s) and
    keeps wrk on its own core.
    """
    wrk = which("wrk")
    if wrk is None:
        raise BenchError("wrk is missing: apt-get install wrk")
    argv = [
        wrk,
        "--latency",
        f"-t{max(1, threads)}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    try:
        with measurement_lock():
            done = subprocess.run(
                pinned(argv, cpu), capture_output=True, text=True, timeout=duration + timeout + 30, check=False
            )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


# ----------------------------------------------------------------------------------------------------------
# Interleaved rounds and their summary
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One load pattern: wrk's settings for a run against a server."""

    name: str
    connections: int = 100
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: str = "/"
    threads: int = 1


@dataclasses.dataclass
class Results:
    """Every run of every (server, scenario) pair, in the order they were first measured."""

    runs: dict[tuple[str, str], list[WrkResult]] = dataclasses.field(default_factory=dict)
    failures: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def add(self, server: str, scenario: str, result: WrkResult) -> None:
        self.runs.setdefault((server, scenario), []).append(result)

    @property
    def servers(self) -> list[str]:
        return list(dict.fromkeys(server for server, _ in [*self.runs, *self.failures]))

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(scenario for _, scenario in [*self.runs, *self.failures]))

    def median_rps(self, server: str, scenario: str) -> float | None:
        runs = self.runs.get((server, scenario))
        return statistics.median(r.requests_per_sec for r in runs) if runs else None

    def median_per_cpu(self, server: str, scenario: str) -> float | None:
        values = [r.requests_per_cpu_second for r in self.runs.get((server, scenario), [])]
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    def median_latency(self, server: str, scenario: str, percentile: int) -> float | None:
        runs = self.runs.get((server, scenario), [])
        values = [r.latency_ms[percentile] for r in runs if percentile in r.latency_ms]
        return statistics.median(values) if values else None

    def rps_range(self, server: str, scenario: str) -> tuple[float, float] | None:
        runs = self.runs.get((server, scenario))
        if not runs:
            return None
        values = [r.requests_per_sec for r in runs]
        return min(values), max(values)

    def errors(self, server: str, scenario: str) -> int:
        return sum(r.errors for r in self.runs.get((server, scenario), []))

    def ratio(self, server: str, baseline: str, scenario: str, per_cpu: bool = False) -> float | None:
        """Median requests/s (or per CPU-second) of ``server`` over ``baseline``'s (None if unknown)."""
        median = self.median_per_cpu if per_cpu else self.median_rps
        ours, theirs = median(server, scenario), median(baseline, scenario)
        return ours / theirs if ours is not None and theirs else None


def interleaved(
    servers: Sequence[Server],
    scenarios: Sequence[Scenario],
    rounds: int = 3,
    duration: float = 10.0,
    wrk_cpu: int | None = None,
    warmup: float = 1.0,
    results: Results | None = None,
    log: Callable[[str], None] = print,
) -> Results:
    """Measure every server in every scenario ``rounds`` times, interleaved, and return all the runs.

    All servers start first and stay up (idle ones cost nothing) and each gets a short warm-up (imports,
    thread pools, caches). Then each round runs every scenario against every server in turn, so the runs
    being compared are never more than one pass over the servers apart: background load that comes and goes
    over minutes hits them alike. The server order rotates from round to round, so none is always first or
    always right behind a particular neighbour. A server that fails to start or dies is reported and left
    out from then on; the others carry on.
    """
    results = results or Results()
    live: list[Server] = []

    def fail(server: Server, exc: BenchError, when: str) -> None:
        for scenario in scenarios:
            results.failures.setdefault((server.name, scenario.name), str(exc).splitlines()[0])
        log(f"{when}  {server.name}: FAILED, leaving it out from now on\n{exc}")
        if server in live:
            live.remove(server)
        server.stop()

    with contextlib.ExitStack() as stack:
        for server in servers:
            try:
                stack.enter_context(server)
                if warmup > 0:
                    run_wrk(server.url, connections=10, duration=warmup, cpu=wrk_cpu)
                live.append(server)
            except BenchError as exc:
                fail(server, exc, "start")
        for number in range(rounds):
            when = f"round {number + 1}/{rounds}"
            shift = number % max(1, len(live))
            for scenario in scenarios:
                for server in [*live[shift:], *live[:shift]]:
                    url = server.url.rstrip("/") + scenario.path
                    try:
                        if not server.running:
                            raise BenchError(f"{server.name} exited\n--- its output ---\n{server.log_tail()}")
                        cpu_before = server.cpu_seconds()
                        result = run_wrk(
                            url, scenario.connections, duration, scenario.threads, scenario.headers, cpu=wrk_cpu
                        )
                        cpu_after = server.cpu_seconds()
                        if cpu_before is not None and cpu_after is not None:
                            result = dataclasses.replace(result, server_cpu_seconds=cpu_after - cpu_before)
                        if result.requests == 0:
                            raise BenchError(f"{server.name} answered no request in {duration:g}s")
                    except BenchError as exc:
                        fail(server, exc, when)
                        continue
                    results.add(server.name, scenario.name, result)
                    errors = f"  ({result.errors} errors)" if result.errors else ""
                    log(
                        f"{when}  {server.name:<18} {scenario.name:<12} {result.requests_per_sec:>10,.0f} req/s{errors}"
                    )
    return results


def _fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def markdown_table(results: Results, baselines: Sequence[str] = (), scenarios: Sequence[str] | None = None) -> str:
    """Render the medians as a markdown table, one row per (scenario, server), with ratios to each baseline.

    The min-max column shows the spread over the rounds, so a reader can tell a real difference from noise.
    When the servers' CPU time was measured, requests per CPU-second are shown too, and each ratio cell reads
    "by req/s / by req per CPU-s": on shared cores the second is the steadier measure of the work per request.
    """
    baselines = [b for b in baselines if b in results.servers]
    per_cpu = any(r.server_cpu_seconds for runs in results.runs.values() for r in runs)
    header = ["scenario", "server", "req/s (median)", "min-max"]
    header += ["req/CPU-s"] if per_cpu else []
    header += ["p50 ms", "p99 ms"]
    header += [f"x {b}" + (" (req/s / per CPU-s)" if per_cpu else "") for b in baselines] + ["errors"]
    align = ["---"] * 2 + ["---:"] * (len(header) - 2)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for scenario in scenarios or results.scenarios:
        for server in results.servers:
            if (server, scenario) not in results.runs:
                if (server, scenario) in results.failures:
                    failed = f"failed: {results.failures[server, scenario]}"
                    lines.append(f"| {scenario} | {server} | {failed} |" + " |" * (len(header) - 3))
                continue
            spread = results.rps_range(server, scenario)
            row = [
                scenario,
                server,
                _fmt(results.median_rps(server, scenario)),
                f"{spread[0]:,.0f}-{spread[1]:,.0f}" if spread else "n/a",
            ]
            row += [_fmt(results.median_per_cpu(server, scenario))] if per_cpu else []
            row += [
                _fmt(results.median_latency(server, scenario, 50), 2),
                _fmt(results.median_latency(server, scenario, 99), 2),
            ]
            for baseline in baselines:
                cell = _fmt(results.ratio(server, baseline, scenario), 2, "x")
                if per_cpu:
                    cell += " / " + _fmt(results.ratio(server, baseline, scenario, per_cpu=True), 2, "x")
                row.append(cell)
            row.append(str(results.errors(server, scenario)))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[list[Server]]:
    """Start several servers for the length of a ``with`` block and stop all of them afterwards."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(server) for server in servers]


def write_results(name: str, text: str) -> Path:
    """Write ``text`` to ``bench/results/NAME`` (a git-ignored directory) and return its path."""
    path = REPO_ROOT / "bench" / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def python_argv(*args: str) -> list[str]:
    """``python ARGS`` with the interpreter running the benchmark, so servers see the same packages."""
    return [sys.executable, *args]


def python_module_from(checkout: Path, module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with another checkout of this repository first on the import path.

    For measuring a change side by side with the code before it (``git worktree add /tmp/before main``): the
    packages installed for the benchmark stay the same, only this project's own modules come from ``checkout``.
    """
    bootstrap = (
        "import runpy, sys; sys.argv[0] = sys.argv[1]; del sys.argv[1]; "
        f"sys.path.insert(0, {str(checkout.resolve())!r}); runpy.run_module({module!r}, run_name='__main__')"
    )
    return [sys.executable, "-c", bootstrap, module, *args]


def our_server_lacks(option: str, missing: str) -> str | None:
    """None if ``python -m server --help`` lists ``option``; else why ours is skipped (``missing`` when it does not)."""
    try:
        done = subprocess.run(
            python_argv("-m", "server", "--help"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "python -m server --help did not answer within 30 s"
    if done.returncode != 0:
        return f"python -m server --help failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    if option not in done.stdout:
        return missing
    return None


def server_and_wrk_cpus() -> tuple[int | None, int | None]:
    """The CPU for the server and the one for wrk, or (None, None) to run unpinned (and say so)."""
    cpus = usable_cpus()
    if len(cpus) < 2 or which("taskset") is None:
        print("fewer than two usable CPUs (or no taskset): running unpinned, the numbers will be lower")
        return None, None
    return cpus[0], cpus[1]


def verdict_lines(
    results: Results, targets: Sequence[tuple[str, str, float]], ours: Sequence[str] = ("ours",)
) -> list[str]:
    """One line per (scenario, baseline, target ratio) and each of ``ours`` that ran: against the baseline, met
    or not. (Several of ours: the same server in different settings, such as ``--threads 0``.)"""
    lines = []
    for scenario, baseline, target in targets:
        for name in [n for n in ours if n in results.servers] or ours[:1]:
            who = "" if name == "ours" else f"{name} "
            ratio = results.ratio(name, baseline, scenario)
            if ratio is None:
                lines.append(f"- {who}{scenario} vs {baseline}: not measured (target {target}x)")
            else:
                verdict = "met" if ratio >= target else "NOT met"
                lines.append(f"- {who}{scenario} vs {baseline}: {ratio:.2f}x (target {target}x): {verdict}")
    return lines
