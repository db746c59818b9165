"""``python -m server`` as a user runs it: options, clear errors with exit status 2, workers and signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests

from server.__main__ import parse_config
from tests.support import ROOT, ServerProcess, wait_for

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


def test_help_documents_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--bind", "--workers", "--threads", "--loop", "--keepalive-timeout", "--header-timeout",
        "--max-header-bytes", "--max-body-bytes", "--max-connections", "--access-log", "--log-level",
        "--debug", "--forwarded-allow-ips", "--static", "--graceful-timeout",
    ):  # fmt: skip
        assert option in result.stdout


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
    ],
)
def test_bad_invocations_exit_2_with_one_clear_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


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
        assert "address already in use" in result.stderr
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


def worker_pids(url: str, attempts: int = 60) -> set[str]:
    """Process ids answering on ``url``, asked over fresh connections so the kernel spreads them."""
    pids = set()
    for _ in range(attempts):
        pids.add(requests.get(url, headers={"Connection": "close"}, timeout=TIMEOUT).text)
    return pids


def child_pids(pid: int) -> set[str]:
    """The supervisor's live worker processes, read from /proc (which worker the kernel hands a new connection
    to is its own business, so asking over HTTP cannot tell reliably that both are there)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return set(children.read().split())


def test_workers_supervisor_restart_reload_and_graceful_stop():
    with ServerProcess("tests.server.factory_app:pid_app", "--workers", "2") as server:
        supervisor = server.proc.pid
        first = wait_for(lambda: (pids := child_pids(supervisor)) and len(pids) == 2 and pids)
        assert worker_pids(server.url, 10) <= first
        # A worker that dies is replaced.
        victim = next(iter(first))
        os.kill(int(victim), signal.SIGKILL)
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


def test_workers_exit_when_their_supervisor_is_killed():
    with ServerProcess("tests.server.factory_app:pid_app", "--workers", "2") as server:
        pids = wait_for(lambda: (found := child_pids(server.proc.pid)) and len(found) == 2 and found)
        server.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
        server.wait(TIMEOUT)

        def all_gone() -> bool:
            for pid in pids:
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    continue
                return False
            return True

        wait_for(all_gone)


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


def test_cpu_affinity_auto_pins_each_worker_to_one_cpu():
    cpus = sorted(os.sched_getaffinity(0))
    with ServerProcess("tests.server.factory_app:pid_app", "--workers", "2", "--cpu-affinity", "auto") as server:
        pids = wait_for(lambda: (found := child_pids(server.proc.pid)) and len(found) == 2 and found)
        pinned = [os.sched_getaffinity(int(pid)) for pid in pids]
    assert all(len(allowed) == 1 for allowed in pinned)
    if len(cpus) >= 2:
        assert pinned[0] != pinned[1]  # one worker per core


def test_cpu_affinity_auto_pins_a_lone_process():
    with ServerProcess("tests.server.factory_app:pid_app", "--cpu-affinity", "auto") as server:
        pid = int(requests.get(server.url, timeout=TIMEOUT).text)
        assert len(os.sched_getaffinity(pid)) == 1
