"""``python -m server`` as a user runs it: options, clear errors with exit status 2, workers and signals."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from server.__main__ import parse_config
from server.config import Config
from server.engine import Engine
from server.listeners import open_listener, parse_bind, resolve_schemes
from server.workers import pin_to_cpu
from tests.support import ROOT, ServerProcess, child_pids, wait_for

TIMEOUT = 10


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={**os.environ, **(env or {})},
    )


def run_in(directory, *args: str, env: dict[str, str] | None = None, argv0: list[str] | None = None):
    """``python -m server ARGS`` started in ``directory`` (where a test put its own app module)."""
    return subprocess.run(
        [*(argv0 or []), sys.executable, "-m", "server", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The CLI's promise for a bad invocation: exit 2, one line on stderr, no traceback; returns the line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m server: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_help_documents_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--bind", "--workers", "--threads", "--loop", "--keepalive-timeout", "--header-timeout",
        "--max-header-bytes", "--max-body-bytes", "--max-connections", "--access-log", "--log-level",
        "--debug", "--forwarded-allow-ips", "--static", "--graceful-timeout",
        "--timeout", "--min-body-rate", "--max-buffered-bytes", "--proxy-headers",
    ):  # fmt: skip
        assert option in result.stdout


def test_help_prints_each_default_once():
    result = run_cli("--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines; compare words
    assert not re.search(r"\(default: [^)]*\)\s*\(default:", text), result.stdout
    for empty in ("(default: None)", "(default: False)", "(default: )", "(default: [])"):
        assert empty not in text
    for option, default in (
        ("--bind ADDR", "127.0.0.1:8000"),
        ("--workers", "1"),
        ("--max-body-bytes SIZE", "16M"),
        ("--timeout SECONDS", "30.0"),
        ("--proxy-headers", "x-forwarded"),
    ):  # fmt: skip
        entry = " ".join(next(e for e in help_entries(result.stdout) if e.startswith(option)).split())
        assert entry.count("(default:") == 1 and f"(default: {default})" in entry, entry


def help_entries(text: str) -> list[str]:
    """--help's options, one string each: an entry starts at a line indented by two and ends at the next."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"  \S", line):
            entries.append(line.strip())
        elif entries and line.startswith("   "):
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module:app"], "cannot import 'no_such_module'"),
        (["apps.hello:missing"], "has no attribute 'missing'"),
        (["apps.demo:STATIC_MOUNT"], "not a callable"),
        (["apps.hello:app", "--workers", "zero"], "--workers"),
        (["apps.hello:app", "--bind", "nonsense"], "expected HOST:PORT"),
        (["apps.hello:app", "--bind", "127.0.0.1:99999"], "port must be"),
        (["apps.hello:app", "--loop", "kqueue"], "--loop"),
        (["apps.hello:app", "--max-body-bytes", "lots"], "not a size"),
        (["apps.hello:app", "--forwarded-allow-ips", "not-an-ip"], "not an IP address"),
        (["not a spec"], "not of the form module:attribute"),
        (["apps.hello:app", "--static-max-age", "-5"], "--static-max-age: '-5' must be 0 or more"),
        (["apps.hello:app", "--static", "nodir"], "--static expects URL=DIR"),
        (["apps.hello:app", "--static", "/s=/no/such/dir"], "is not a directory"),
        (["apps.hello:app", "--workers", "0"], "--workers"),
        (["apps.hello:app", "--keepalive-timeout", "inf"], "not a finite number"),
        (["apps.hello:app", "--header-timeout", "nan"], "--header-timeout"),
        (["apps.hello:app", "--max-body-bytes", "1e400"], "not a size"),
        (["apps.hello:app", "--timeout", "-1"], "--timeout"),
        (["apps.hello:app", "--timeout", "inf"], "--timeout"),
        (["apps.hello:app", "--min-body-rate", "-1"], "--min-body-rate"),
        (["apps.hello:app", "--max-buffered-bytes", "0"], "--max-buffered-bytes"),
        (["apps.hello:app", "--proxy-headers", "x-real-ip"], "--proxy-headers"),
        (["apps.hello:app()"], "factory apps.hello:app() failed"),
        (["apps.hello:app", "--threads", "99999999999999999999"], "--threads"),
        (["apps.hello:app", "--workers", "100000"], "--workers"),
    ],
)
def test_bad_invocations_exit_2_with_one_clear_line(args, message):
    assert_one_line(run_cli(*args), message)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SERVER_STATIC_MAX_AGE", "abc", "SERVER_STATIC_MAX_AGE: 'abc' is not a whole number"),
        ("SERVER_STATIC_MAX_AGE", "-5", "SERVER_STATIC_MAX_AGE"),
        ("SERVER_DEBUG", "ture", "SERVER_DEBUG: 'ture'"),
        ("SERVER_TIMEOUT", "soon", "SERVER_TIMEOUT"),
        ("SERVER_MIN_BODY_RATE", "-1", "SERVER_MIN_BODY_RATE"),
        ("SERVER_MAX_BUFFERED_BYTES", "lots", "SERVER_MAX_BUFFERED_BYTES"),
        ("SERVER_PROXY_HEADERS", "both", "SERVER_PROXY_HEADERS"),
    ],
)
def test_bad_environment_values_exit_2_with_one_clear_line(variable, value, message):
    assert_one_line(run_cli("apps.hello:app", env={variable: value}), message)


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_access_log_that_cannot_be_opened_is_one_line(tmp_path, where):
    path = tmp_path / "no" / "such" / "access.log" if where == "missing directory" else tmp_path
    result = run_cli("apps.hello:app", "--bind", "127.0.0.1:0", "--access-log", str(path))
    assert_one_line(result, f"--access-log {path}", "cannot open it")


def test_static_max_age_zero_is_accepted_and_sent(tmp_path):
    assert parse_config(["--static-max-age", "0"], environ={}).static_max_age == 0
    (tmp_path / "a.txt").write_text("a")
    with ServerProcess("--static", f"/s={tmp_path}", "--static-max-age", "0") as server:
        response = requests.get(server.url + "/s/a.txt", timeout=TIMEOUT)
        assert response.headers["Cache-Control"] == "public, max-age=0"


def test_the_same_address_twice_is_named_as_such(tmp_path):
    port = free_port()
    line = assert_one_line(
        run_cli("apps.hello:app", "--bind", f"127.0.0.1:{port}", "--bind", f"127.0.0.1:{port}"), "given twice"
    )
    assert "another server" not in line
    # Two spellings of one address, or a wildcard that covers the other: the earlier --bind is named.
    for first in (f"0.0.0.0:{port}", f"localhost:{port}"):
        line = assert_one_line(run_cli("apps.hello:app", "--bind", first, "--bind", f"127.0.0.1:{port}"))
        assert f"--bind {first}" in line and "another server" not in line
    sock = tmp_path / "s.sock"
    line = assert_one_line(
        run_cli("apps.hello:app", "--bind", f"unix:{sock}", "--bind", f"unix:{tmp_path}/./s.sock"), "same address"
    )
    assert not sock.exists()  # nothing left behind by a start that failed


def test_port_zero_twice_is_two_free_ports():
    with ServerProcess("apps.hello:app", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0", bind=False) as server:
        ports = wait_for(
            lambda: len(found := set(re.findall(r"http://127\.0\.0\.1:(\d+)", server.output()))) == 2 and found
        )
        for port in ports:
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).status_code == 200


def test_a_module_alone_names_the_attribute_it_looked_for():
    line = assert_one_line(run_cli("apps.hello"), "'application'", "module:attr")
    assert "apps.hello:app" in line  # the module's own callable, offered


def test_an_app_that_calls_sys_exit_is_a_load_error(tmp_path):
    (tmp_path / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "quitting_factory.py").write_text("import sys\ndef make():\n    sys.exit('no config')\n")
    assert_one_line(run_in(tmp_path, "quitter:app"), "importing 'quitter' failed", "sys.exit(3)")
    assert_one_line(run_in(tmp_path, "quitting_factory:make()"), "factory quitting_factory:make() failed", "no config")


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory\n")
    result = run_cli("--data-dir", str(tmp_path / "afile"), "--bind", "127.0.0.1:0")
    assert_one_line(result, "--data-dir", "not a directory")


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run_cli("--data-dir", str(tmp_path / "afile" / "var"), "--bind", "127.0.0.1:0")
    assert_one_line(result, "--data-dir", "cannot create it: Not a directory")


def test_a_module_the_app_imports_that_is_missing_is_named_as_such(tmp_path):
    """The message said only "No module named 'nosuchdep'", which read as if the app's own module were missing."""
    (tmp_path / "baddep.py").write_text("import nosuchdep\napp = None\n")
    line = assert_one_line(run_in(tmp_path, "baddep:app"), "importing 'baddep' failed", "No module named 'nosuchdep'")
    assert "a module that 'baddep' imports" in line and "installed" in line
    # A missing module whose name begins the app's (flask, imported by flask_app) is still the app's import.
    (tmp_path / "mylib_app.py").write_text("import mylib\napp = None\n")
    line = assert_one_line(run_in(tmp_path, "mylib_app:app"), "importing 'mylib_app' failed", "'mylib'")
    assert "a module that 'mylib_app' imports" in line


def test_an_app_with_a_syntax_error_is_one_line(tmp_path):
    (tmp_path / "typo_app.py").write_text("def app(environ, start_response:\n    pass\n")
    assert_one_line(run_in(tmp_path, "typo_app:app"), "syntax error in", "typo_app.py:1")


def test_a_factory_that_raises_is_one_line(tmp_path):
    (tmp_path / "raising.py").write_text("def make():\n    raise RuntimeError('no database\\nat all')\n")
    assert_one_line(run_in(tmp_path, "raising:make()"), "RuntimeError: no database at all")


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root reads anything without setpriv")
def test_an_unreadable_static_directory_is_one_line(tmp_path):
    unreadable = tmp_path / "locked"
    unreadable.mkdir()
    unreadable.chmod(0)
    # root reads any directory; without the two capabilities that let it, it is held to the permission bits.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        result = run_in(tmp_path, "--static", f"/s={unreadable}", "--bind", "127.0.0.1:0", argv0=drop)
    finally:
        unreadable.chmod(0o755)
    assert_one_line(result, f"--static /s={unreadable}", "Permission denied")


def test_an_engine_that_cannot_start_is_one_line_and_never_says_serving():
    # Under a 1 GiB address-space limit, 4096 thread stacks cannot all be had: the pool fails to start.
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "server", "apps.hello:app", "--threads", "4096", "--bind", "127.0.0.1:0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        preexec_fn=limit_memory,
    )
    assert "serving apps.hello:app on" not in result.stderr
    assert_one_line(result, "cannot start serving", "thread")


def test_new_settings_from_flags_and_environment():
    config = parse_config(
        [
            "apps.hello:app", "--timeout", "0", "--min-body-rate", "0", "--max-buffered-bytes", "64M",
            "--proxy-headers", "forwarded",
        ],
        environ={},
    )  # fmt: skip
    assert (config.timeout, config.min_body_rate, config.max_buffered_bytes, config.proxy_headers) == (
        0,
        0,
        64 * 1024**2,
        "forwarded",
    )
    config = parse_config(
        ["apps.hello:app", "--min-body-rate", "2K"],
        environ={
            "SERVER_TIMEOUT": "2.5",
            "SERVER_MIN_BODY_RATE": "100",
            "SERVER_MAX_BUFFERED_BYTES": "1M",
            "SERVER_PROXY_HEADERS": "forwarded",
        },
    )
    assert (config.timeout, config.min_body_rate, config.max_buffered_bytes, config.proxy_headers) == (
        2.5,
        2048,  # the flag wins over SERVER_MIN_BODY_RATE
        1024**2,
        "forwarded",
    )
    defaults = parse_config(["apps.hello:app"], environ={})
    assert defaults.max_body_bytes == 16 * 1024**2 and defaults.proxy_headers == "x-forwarded"


def test_proxy_headers_choose_which_family_is_believed(tmp_path):
    (tmp_path / "whoami.py").write_text(
        "def app(environ, start_response):\n"
        "    body = environ['REMOTE_ADDR'].encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    both = {"Forwarded": "for=192.0.2.7", "X-Forwarded-For": "198.51.100.9"}
    env = {"PYTHONPATH": str(ROOT)}
    for family, believed in (("forwarded", "192.0.2.7"), ("x-forwarded", "198.51.100.9")):
        args = ("whoami:app", "--forwarded-allow-ips", "127.0.0.1", "--proxy-headers", family)
        with ServerProcess(*args, cwd=tmp_path, env=env) as server:
            assert requests.get(server.url + "/", headers=both, timeout=TIMEOUT).text == believed


def test_import_error_inside_the_app_module_is_explained(tmp_path):
    (tmp_path / "broken_app.py").write_text("import not_installed_dependency\n")
    result = subprocess.run(
        [sys.executable, "-m", "server", "broken_app:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert "broken_app" in result.stderr and "not_installed_dependency" in result.stderr


def test_port_in_use_exits_2():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        result = run_cli("apps.hello:app", "--bind", f"127.0.0.1:{port}")
        assert result.returncode == 2
        assert "the address is already in use" in result.stderr
    finally:
        holder.close()


def test_environment_variables_stand_in_for_flags():
    config = parse_config(
        ["apps.hello:app", "--threads", "3"],
        environ={
            "SERVER_WORKERS": "4",
            "SERVER_THREADS": "9",
            "SERVER_BIND": "127.0.0.1:1,[::1]:2",
            "SERVER_DEBUG": "1",
        },
    )
    assert (config.workers, config.threads, config.binds, config.debug) == (4, 3, ("127.0.0.1:1", "[::1]:2"), True)


def test_factory_call_and_access_log():
    with ServerProcess("tests.server.factory_app:create_app('from the factory')", "--access-log", "-") as server:
        response = requests.get(server.url + "/path?x=1", headers={"User-Agent": "test-agent"}, timeout=TIMEOUT)
        assert response.text == "from the factory"
        line = wait_for(lambda: next((entry for entry in server.log if '"GET /path?x=1 HTTP/1.1" 200' in entry), None))
        assert '"test-agent"' in line and line.rstrip().endswith("us")


def test_demo_site_is_the_default(tmp_path):
    with ServerProcess("--data-dir", str(tmp_path)) as server:
        home = requests.get(server.url + "/", timeout=TIMEOUT)
        assert home.status_code == 200 and "/static/style.css" in home.text
        css = requests.get(server.url + "/static/style.css", timeout=TIMEOUT)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_unix_socket_and_ipv6(tmp_path):
    path = tmp_path / "server.sock"
    args = ["apps.hello:app", "--bind", f"unix:{path}"]
    ipv6 = _has_ipv6_loopback()
    if ipv6:
        args += ["--bind", "[::1]:0"]
    with ServerProcess(*args, bind=False) as server:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello, world!\n")
        if ipv6:
            port = wait_for(lambda: re.search(r"http://\[::1\]:(\d+)", server.output()))[1]
            assert requests.get(f"http://[::1]:{port}/", timeout=TIMEOUT).text == "Hello, world!\n"


def worker_pids(url: str, attempts: int = 60) -> set[int]:
    """Process ids answering on ``url``, asked over fresh connections so the kernel spreads them."""
    pids = set()
    for _ in range(attempts):
        pids.add(int(requests.get(url, headers={"Connection": "close"}, timeout=TIMEOUT).text))
    return pids


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the third (state) on, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def engine_built(pid: int) -> bool:
    """Whether a forked worker has built its engine. A child starts with one thread, and a worker's first other
    threads are its engine's app threads, started in Engine() after it has noted who its supervisor is."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except (FileNotFoundError, ProcessLookupError):
        return False


def exited(started: dict[int, str]) -> bool:
    """Whether every process in ``started`` (pid -> its start time) has exited. A zombie has exited: an orphan's
    zombie waits for init to reap it, which takes init its own time (here up to two seconds), and ``kill(pid,
    0)`` still succeeds on it. A different start time is a new process that reuses the pid."""
    for pid, start in started.items():
        fields = _stat(pid)
        if fields is not None and fields[0] not in ("Z", "X") and fields[19] == start:
            return False
    return True


def running_workers(supervisor: int, count: int) -> dict[int, str]:
    """Wait until ``supervisor`` has ``count`` workers, each with its engine built; returns pid -> start time."""

    def ready() -> dict[int, str] | None:
        pids = child_pids(supervisor)
        if len(pids) != count or not all(map(engine_built, pids)):
            return None
        started = {pid: fields[19] for pid in pids if (fields := _stat(pid)) is not None}
        return started if len(started) == count else None

    return wait_for(ready)


def test_workers_supervisor_restart_reload_and_graceful_stop():
    with ServerProcess("tests.server.factory_app:pid_app", "--workers", "2") as server:
        supervisor = server.proc.pid
        first = wait_for(lambda: (pids := child_pids(supervisor)) and len(pids) == 2 and pids)
        assert worker_pids(server.url, 10) <= first
        # A worker that dies is replaced.
        victim = next(iter(first))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in (pids := child_pids(supervisor)) and len(pids) == 2)
        assert victim not in worker_pids(server.url, 10)
        # SIGHUP replaces every worker while the listening socket stays open.
        before = child_pids(supervisor)
        server.signal(signal.SIGHUP)
        wait_for(lambda: len(pids := child_pids(supervisor)) == 2 and not (pids & before))
        assert not (worker_pids(server.url, 10) & before)
        # SIGTERM: graceful stop, exit status 0.
        server.signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_each_worker_accepts_one_connection_per_turn(workers):
    """With --workers N each process takes one waiting connection per turn of its loop, so a burst (wrk opens its
    100 connections at once) is dealt out between the processes: 64 per turn, woken one process at a time
    (EPOLLEXCLUSIVE), one of two workers took all 100 in about one run of three, and the other idled. A single
    process takes up to 64 a turn."""
    listener = open_listener(parse_bind("127.0.0.1:0"))
    resolve_schemes([listener], have_certificate=False)
    # threads=0: no pool of app threads to start (and leave behind) for a test that never runs the application
    config = Config(threads=0, workers=workers)
    engine = Engine(config, lambda environ, start_response: [], [listener], multiprocess=True)
    clients = [socket.create_connection(listener.sock.getsockname(), timeout=TIMEOUT) for _ in range(3)]
    try:
        acceptor = engine._acceptors[0]
        acceptor.handle_event(0)
        assert len(engine.connections) == (3 if workers == 1 else 1)  # one process alone (--max-requests): 64
    finally:
        for conn in list(engine.connections.values()):
            conn.close()
        for client in clients:
            client.close()
        engine.reactor.close()
        listener.sock.close()


def test_workers_exit_when_their_supervisor_is_killed():
    with ServerProcess("tests.server.factory_app:pid_app", "--workers", "2") as server:
        # Workers that are serving, not ones just forked: see the next test for a supervisor killed sooner.
        workers = running_workers(server.proc.pid, 2)
        server.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
        server.wait(TIMEOUT)
        wait_for(lambda: exited(workers))


HELD_FORK_APP = """\
import os, time

_supervisor = os.getpid()  # the app is imported once, in the supervisor, before it forks


def _hold_until_orphaned():
    # In a child, straight after the fork: wait (a while at most) until the supervisor is gone, so that
    # everything the worker does next happens after its supervisor was killed.
    deadline = time.monotonic() + 10
    while os.getppid() == _supervisor and time.monotonic() < deadline:
        time.sleep(0.01)


os.register_at_fork(after_in_child=_hold_until_orphaned)


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_workers_exit_when_their_supervisor_is_killed_right_after_forking_them(tmp_path):
    # Deterministically, what a supervisor killed a moment after a fork does (at start, or when it replaces a
    # worker): each child is held right after its fork until the supervisor is gone.
    (tmp_path / "held_fork.py").write_text(HELD_FORK_APP)
    workers: dict[int, str] = {}
    with ServerProcess("held_fork:app", "--workers", "2", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}) as server:
        try:
            pids = wait_for(lambda: len(found := child_pids(server.proc.pid)) == 2 and found)
            workers = {pid: fields[19] for pid in pids if (fields := _stat(pid)) is not None}
            server.proc.kill()
            server.wait(TIMEOUT)
            wait_for(lambda: exited(workers))
        finally:
            for pid in workers:  # the orphans the bug leaves behind would otherwise serve on forever
                if not exited({pid: workers[pid]}):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def test_sigterm_lets_an_in_flight_request_finish():
    with ServerProcess("tests.server.factory_app:slow_app", "--graceful-timeout", "5") as server:
        session = requests.Session()
        result: dict = {}

        import threading

        def slow_request():
            result["response"] = session.get(server.url + "/slow", timeout=TIMEOUT)

        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_for(lambda: any("slow request started" in line for line in server.log))
        server.signal(signal.SIGTERM)
        thread.join(TIMEOUT)
        assert result["response"].text == "done"
        assert server.wait(TIMEOUT) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_after_sigterm_new_clients_are_refused_while_requests_in_flight_finish(workers):
    """Stopping, the server closes its listening sockets (the supervisor too): a new client is refused at once and
    tries elsewhere, where before it was accepted into a backlog nobody read, then reset at exit with its request
    sent (a POST then fails without a way to know whether it was done)."""
    args = ("tests.server.factory_app:long_app", "--workers", workers, "--graceful-timeout", "3")
    with ServerProcess(*args) as server:
        in_flight = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        with in_flight:
            in_flight.sendall(b"GET /long HTTP/1.1\r\nHost: h\r\n\r\n")
            wait_for(lambda: any("long request started" in line for line in server.log))
            server.signal(signal.SIGTERM)  # the process now lives until the graceful timeout, 3 s

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT).close()
                except ConnectionRefusedError:
                    return True
                except ConnectionResetError:
                    return False  # accepted a moment before the close, and reset by it: the next try is refused
                return False

            wait_for(refused, timeout=2.0)
            assert server.proc.poll() is None  # refused by a server still finishing its request, not by none


def test_ctrl_c_on_the_process_group_stops_workers_without_restarting_them():
    with ServerProcess("apps.hello:app", "--workers", "2", session=True) as server:
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 200
        os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process in the group
        assert server.wait(TIMEOUT) == 0
    assert "starting a new one" not in server.output()


def test_sigint_exits_promptly():
    with ServerProcess("apps.hello:app") as server:
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 200
        server.signal(signal.SIGINT)
        assert server.wait(TIMEOUT) == 0


@pytest.mark.parametrize("threads", ["4", "0"])
@pytest.mark.parametrize("signals", [("SIGTERM", "SIGINT"), ("SIGINT",)], ids=["TERM-then-INT", "INT"])
def test_sigint_stops_the_workers_at_once(threads, signals):
    """A graceful stop can wait --graceful-timeout for a request in flight; an operator who then presses Ctrl-C (or a
    service manager sending SIGINT) wants out now. The supervisor used to ignore any signal once stopping, so the
    request held it for the whole graceful timeout. With --threads 0 the request runs on the worker's loop, which
    cannot act on the signal until the app returns: the supervisor kills it after a short grace (it used to wait
    for the app, here 30 s, however long that took)."""
    args = ("tests.server.factory_app:long_app", "--workers", "2", "--threads", threads, "--graceful-timeout", "60")
    with ServerProcess(*args) as server:
        in_flight = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        with in_flight:
            in_flight.sendall(b"GET /long HTTP/1.1\r\nHost: h\r\n\r\n")
            wait_for(lambda: any("long request started" in line for line in server.log))
            workers = child_pids(server.proc.pid)
            for name in signals:
                server.signal(getattr(signal, name))
                wait_for(lambda name=name: any(f"{name}, stopping" in line for line in server.log))
            assert server.wait(TIMEOUT) == 0
        for pid in workers:  # reaped by the supervisor before it exited, none left behind
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_cpu_affinity_auto_pins_each_worker_to_its_own_cpu():
    cpus = sorted(os.sched_getaffinity(0))
    with ServerProcess("tests.server.factory_app:pid_app", "--workers", "2", "--cpu-affinity", "auto") as server:
        pids = wait_for(lambda: (found := child_pids(server.proc.pid)) and len(found) == 2 and found)

        def each_pinned() -> list[set[int]] | None:
            # A worker pins itself a moment after its fork: until then it has the supervisor's CPUs.
            allowed = [os.sched_getaffinity(pid) for pid in pids]
            return allowed if all(len(one) == 1 for one in allowed) else None

        pinned = wait_for(each_pinned)
    assert all(len(allowed) == 1 for allowed in pinned)
    if len(cpus) >= 2:
        assert pinned[0] != pinned[1]  # one worker per core


def test_cpu_affinity_auto_keeps_a_lone_process_s_threads_on_one_cpu():
    with ServerProcess("tests.server.factory_app:pid_app", "--cpu-affinity", "auto") as server:
        pid = int(requests.get(server.url, timeout=TIMEOUT).text)
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        assert len(threads) > 1  # the loop and the app threads
        assert len({frozenset(os.sched_getaffinity(tid)) for tid in threads}) == 1
        assert len(os.sched_getaffinity(pid)) == 1


def test_by_default_the_threads_are_left_to_the_scheduler():
    with ServerProcess("tests.server.factory_app:pid_app") as server:
        pid = int(requests.get(server.url, timeout=TIMEOUT).text)
        assert os.sched_getaffinity(pid) == os.sched_getaffinity(0)


def test_a_system_that_cannot_pin_runs_unpinned(monkeypatch, caplog):
    # macOS has no sched_setaffinity; a container may refuse it. Asking for a pin must never stop the server
    # from starting: the scheduler places the threads instead.
    def refuse(pid: int, cpus: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    restore, cpus = os.sched_setaffinity, os.sched_getaffinity(0)
    try:
        monkeypatch.setattr(os, "sched_setaffinity", refuse)
        with caplog.at_level(logging.WARNING, logger="server"):
            assert pin_to_cpu(None) is None
        assert "could not pin process" in caplog.text
        monkeypatch.delattr(os, "sched_setaffinity")
        assert pin_to_cpu(0) is None
    finally:
        restore(0, cpus)  # had anything pinned this process, every later test would run on one CPU


def test_a_process_that_may_not_choose_its_cpu_serves_unpinned(tmp_path):
    # A container may refuse sched_setaffinity (here a sitecustomize makes it refuse): --cpu-affinity auto then
    # costs a warning, never the start.
    (tmp_path / "sitecustomize.py").write_text(
        "import os\n\n\ndef _refuse(pid, cpus):\n    raise PermissionError(1, 'Operation not permitted')\n\n\n"
        "os.sched_setaffinity = _refuse\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    with ServerProcess("tests.server.factory_app:pid_app", "--cpu-affinity", "auto", env=env) as server:
        pid = int(requests.get(server.url, timeout=TIMEOUT).text)
        assert os.sched_getaffinity(pid) == os.sched_getaffinity(0)
    assert "could not pin process" in server.output()


def test_a_supervisor_says_serving_only_once_it_answers_its_signals():
    """A deploy script may send SIGHUP as soon as it reads "serving": said before the supervisor's handlers were
    in place, the signal's default action killed it (on a busy machine, one start in two)."""
    from server.workers import _SUPERVISED_SIGNALS, Supervisor

    class Started(Exception):
        pass

    handlers: dict[int, object] = {}

    def on_start() -> None:
        handlers.update({sig: signal.getsignal(sig) for sig in _SUPERVISED_SIGNALS})
        raise Started  # enough: nothing is forked

    saved = {sig: signal.getsignal(sig) for sig in _SUPERVISED_SIGNALS}
    supervisor = Supervisor(2, lambda slot: None, graceful_timeout=1.0, on_start=on_start)
    try:
        with pytest.raises(Started):
            supervisor.run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert handlers == {sig: supervisor._on_signal for sig in _SUPERVISED_SIGNALS}


def test_sighup_right_after_serving_replaces_the_workers():
    with ServerProcess("bench.hello:app", "--workers", "2") as server:
        server.signal(signal.SIGHUP)  # at once: ServerProcess returns as soon as the line says "serving"
        wait_for(lambda: server.output().count("supervisor: started worker") >= 4)
        assert server.proc.poll() is None
        assert requests.get(server.url, timeout=10).status_code == 200


def test_a_stop_during_a_crash_loops_back_off_forks_nothing():
    """A crash-looping supervisor waits up to 5 s before forking again; a SIGTERM in that wait used to be answered
    only after fresh workers were forked, to be stopped at once."""
    from server.workers import Supervisor

    supervisor = Supervisor(2, lambda slot: None, graceful_timeout=1.0)
    spawned: list[int] = []
    supervisor._spawn = spawned.append  # type: ignore[method-assign]  # nothing is forked in this test
    supervisor._failures = 6  # the longest back-off
    supervisor._signals.append(signal.SIGTERM)
    started = time.monotonic()
    supervisor._refill()
    assert spawned == [] and time.monotonic() - started < 1.0


# -- audit regressions: empty values, home folders, app modules that leave threads behind, odd digits -------------


@pytest.mark.parametrize("variable", ["SERVER_APP", "SERVER_STATIC", "SERVER_BIND"])
@pytest.mark.parametrize("value", ["", "  ", " , "])
def test_an_empty_variable_is_refused_not_taken_for_the_default(variable, value):
    # Taken as "not set", it used to override the config file and fall back to the demo site on 127.0.0.1:8000.
    assert_one_line(run_cli(env={variable: value}), variable, "empty")


def test_an_empty_app_argument_is_refused():
    assert_one_line(run_cli(""), "the app is empty")


@pytest.mark.parametrize("directory", ["~no_such_user_here/static", "~no_such_user_here"])
def test_a_home_folder_that_cannot_be_found_is_one_line(directory):
    line = assert_one_line(run_cli("apps.hello:app", "--static", f"/s={directory}"), "--static", directory)
    assert "RuntimeError" not in line


def test_an_app_that_leaves_a_thread_running_and_fails_still_exits_2(tmp_path):
    """The module starts a thread that is not a daemon, then fails: the error line, then exit 2, not a hang."""
    (tmp_path / "threaded.py").write_text(
        "import threading\nthreading.Thread(target=threading.Event().wait).start()\nraise RuntimeError('no database')\n"
    )
    assert_one_line(run_in(tmp_path, "threaded:app"), "importing 'threaded' failed", "RuntimeError: no database")


def test_the_installed_command_exits_too_when_a_failed_app_left_a_thread(tmp_path):
    """The ``ladder`` script pip installs calls its entry point as ``sys.exit(entry())``: pointed at ``main``, it
    waited for the app's thread after the error line, as ``python -m server`` did before it ended on its own."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["ladder"].partition(":")
    (tmp_path / "threaded.py").write_text(
        "import threading\nthreading.Thread(target=threading.Event().wait).start()\nraise RuntimeError('no db')\n"
    )
    script = f"import sys\nfrom {module} import {function} as entry\nsys.argv[1:] = ['threaded:app']\nsys.exit(entry())"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT * 2, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert_one_line(done, "importing 'threaded' failed")


def test_a_base_exception_of_the_app_s_own_is_one_line(tmp_path):
    (tmp_path / "based.py").write_text("class Stop(BaseException):\n    pass\nraise Stop('halt')\n")
    (tmp_path / "based_factory.py").write_text(
        "class Stop(BaseException):\n    pass\ndef make():\n    raise Stop('halt')\n"
    )
    assert_one_line(run_in(tmp_path, "based:app"), "importing 'based' failed", "Stop: halt")
    assert_one_line(run_in(tmp_path, "based_factory:make()"), "factory based_factory:make() failed", "Stop: halt")


def test_ctrl_c_while_importing_still_ends_quietly_with_130(tmp_path):
    (tmp_path / "interrupted.py").write_text("raise KeyboardInterrupt\n")
    result = run_in(tmp_path, "interrupted:app")
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr


# A superscript two (int() refuses it), full-width 8080 and Arabic-Indic 80 (int() reads both), a digit and a "²".
@pytest.mark.parametrize("port", ["\u00b2", "\uff18\uff10\uff18\uff10", "\u0668\u0660", "1\u00b2"])
def test_a_port_takes_ascii_digits_only(port):
    assert_one_line(run_cli("apps.hello:app", "--bind", f"127.0.0.1:{port}"), "the port must be a number")
