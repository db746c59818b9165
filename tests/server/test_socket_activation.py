"""systemd socket activation: the server serves on descriptors 3.. when ``LISTEN_PID`` is its own pid.

The tests start the server the way systemd does: this process opens a listening socket, and a small wrapper
(passed the socket with ``pass_fds``) moves it to descriptor 3, sets ``LISTEN_PID`` to its own pid and execs
``python -m server``, which keeps that pid. What the wrapper cannot fake is only systemd itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from server.listeners import BindError, systemd_listeners
from tests.server.test_cli import assert_one_line
from tests.support import ROOT, TIMEOUT, ServerProcess, recv_until_closed, wait_for

# argv: the descriptor to move to 3, the LISTEN_PID to set ("self": the pid that execs the server), the command.
WRAPPER = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)  # inheritable, as systemd passes it
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid()) if sys.argv[2] == "self" else sys.argv[2]
os.execv(sys.argv[3], sys.argv[3:])  # the same process, so LISTEN_PID stays true
"""

# Answers with what a worker sees: its pid, any LISTEN_* variable left over, and whether descriptor 3 (the
# listening socket) would be passed on to a program it runs.
APP = """\
import json, os

def app(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(),
        "listen": {k: v for k, v in os.environ.items() if k.startswith("LISTEN_")},
        "inheritable": os.get_inheritable(3),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def activation_env(fdnames: str | None = "web.socket") -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT), "LISTEN_FDS": "1"}
    if fdnames is not None:
        env["LISTEN_FDNAMES"] = fdnames
    return env


def wrapped(sock: socket.socket, listen_pid: str, argv: list[str]) -> list[str]:
    return [sys.executable, "-c", WRAPPER, str(sock.fileno()), listen_pid, *argv]


class ActivatedServer(ServerProcess):
    """A ServerProcess started as systemd starts a socket-activated service, with ``sock`` as descriptor 3."""

    def __init__(self, sock: socket.socket, *args: str, listen_pid: str = "self", **kwargs) -> None:
        super().__init__(*args, pass_fds=(sock.fileno(),), **kwargs)
        self.sock = sock
        self.argv = wrapped(sock, listen_pid, self.argv)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "activated_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
def listening():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    with sock:
        yield sock


def ask(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=TIMEOUT).json()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_socket_systemd_passes_is_served_instead_of_bind(app_dir, listening, workers):
    port = listening.getsockname()[1]
    with ActivatedServer(
        listening, "activated_app:app", "--workers", workers, cwd=app_dir, env=activation_env()
    ) as server:
        assert server.port == port  # the passed socket, not the --bind 127.0.0.1:0 ServerProcess adds
        seen = [ask(port) for _ in range(4)]
        assert all(answer["listen"] == {} for answer in seen)  # cleared: no child takes them again
        assert not any(answer["inheritable"] for answer in seen)  # close-on-exec, as sd_listen_fds makes it
        output = server.output()
    assert f"socket activation: descriptor 3 (web.socket) is 127.0.0.1:{port}" in output
    assert "not on --bind" in output
    assert len({line for line in output.splitlines() if "serving activated_app:app on" in line}) == 1


def test_a_unix_socket_from_systemd(app_dir, tmp_path):
    path = tmp_path / "site.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        sock.listen()
        with ActivatedServer(sock, "activated_app:app", cwd=app_dir, env=activation_env(fdnames=None)) as server:
            assert server.url == f"unix:{path}"
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(TIMEOUT)
                client.connect(str(path))
                client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                reply = recv_until_closed(client)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["listen"] == {}


def test_a_listen_pid_that_is_not_ours_is_ignored(app_dir, listening):
    port = listening.getsockname()[1]
    # The pid of a parent that left the variables set: they are not for us, and not for our children either.
    with ActivatedServer(
        listening, "activated_app:app", listen_pid=str(os.getpid()), cwd=app_dir, env=activation_env()
    ) as server:
        assert server.port != port  # bound --bind 127.0.0.1:0 instead
        assert ask(server.port)["listen"] == {}
        wait_for(lambda: "is not this process" in server.output())


def test_socket_activation_under_reload(app_dir, listening):
    port = listening.getsockname()[1]
    env = {**activation_env(), "PYTHONDONTWRITEBYTECODE": "1"}
    with ActivatedServer(listening, "activated_app:app", "--reload", cwd=app_dir, env=env) as server:
        assert server.port == port
        answer = ask(port)
        assert answer["listen"] == {}
        assert answer["pid"] != server.proc.pid  # served by the reload child, on the parent's inherited socket


def test_a_descriptor_that_is_not_a_listening_socket_is_one_line(app_dir):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        result = subprocess.run(
            wrapped(udp, "self", [sys.executable, "-m", "server", "activated_app:app"]),
            cwd=app_dir,
            env={**os.environ, **activation_env()},
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            pass_fds=(udp.fileno(),),
        )
    assert_one_line(result, "LISTEN_FDS=1: descriptor 3 (web.socket) is not a stream socket", "ListenStream=")


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="systemd's test tool is not installed")
def test_with_systemds_own_socket_activate_tool(tmp_path):
    # systemd-socket-activate listens as a .socket unit would, and on the first connection execs the server with
    # the listening socket as descriptor 3 and LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES set as systemd sets them.
    path = tmp_path / "site.sock"
    command = ["systemd-socket-activate", "-l", str(path), "--fdname=web", "-E", f"PYTHONPATH={ROOT}"]
    command += [sys.executable, "-m", "server", "tests.server.factory_app:pid_app"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(path.exists)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(TIMEOUT)
            # The path exists from the tool's bind(), a moment before its listen(): until then a connect is
            # refused, so retry within the deadline. This connection starts the server, which then answers it.
            wait_for(lambda: client.connect_ex(str(path)) == 0)
            client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            reply = recv_until_closed(client)
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert reply.endswith(str(proc.pid).encode())  # the tool execs the server: the same process
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate(timeout=TIMEOUT)
    assert f"socket activation: descriptor 3 (web) is unix:{path}" in output


# -- systemd_listeners in this process: a descriptor of our own stands in for 3 ----------------------------------


def take(fd: int, count: str = "1", pid: int | None = None, names: str | None = None) -> list:
    environ = {"LISTEN_PID": str(os.getpid() if pid is None else pid), "LISTEN_FDS": count}
    if names is not None:
        environ["LISTEN_FDNAMES"] = names
    try:
        return systemd_listeners(environ, start=fd) or []
    finally:
        assert environ == {}  # cleared in every case, as sd_listen_fds(unset_environment=1) does


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def free_pair(start: int = 600) -> int:
    """Two consecutive descriptor numbers that nothing in this process uses."""
    fd = start
    while is_open(fd) or is_open(fd + 1):
        fd += 2
    return fd


def test_each_descriptor_is_checked_before_it_is_served_on(tmp_path):
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        for sock, message in ((tcp, "is not listening (the .socket unit needs Accept=no"), (udp, "is not a stream")):
            with pytest.raises(BindError) as raised:
                take(sock.fileno(), names="api")
            assert str(raised.value).startswith(f"LISTEN_FDS=1: descriptor {sock.fileno()} (api) {message}")
            os.fstat(sock.fileno())  # a descriptor that is refused is left open, not closed under its owner
    with open(tmp_path / "file", "w") as file, pytest.raises(BindError, match="is not a socket"):
        take(file.fileno())
    with pytest.raises(BindError, match="is not open"):
        take(free_pair())
    with pytest.raises(BindError, match="expected the number of sockets"):
        take(0, count="two")


def test_listening_sockets_of_every_family_are_taken_with_their_addresses(tmp_path):
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(("127.0.0.1", 0))
        unix.bind(str(tmp_path / "s.sock"))
        for sock in (tcp, unix):
            sock.listen()
        first = free_pair()  # systemd's descriptors are consecutive
        os.dup2(tcp.fileno(), first)
        os.dup2(unix.fileno(), first + 1)
        listeners = take(first, count="2", names="web:local")
        try:
            assert [listener.url for listener in listeners] == [
                f"http://127.0.0.1:{tcp.getsockname()[1]}",
                f"unix:{tmp_path / 's.sock'}",
            ]
            assert all(not listener.sock.get_inheritable() for listener in listeners)
        finally:
            for listener in listeners:
                listener.sock.close()
    assert take(5, count="0") == []  # none passed: --bind is bound
    assert take(5, pid=os.getpid() + 1) == []  # not ours


def test_no_variables_no_activation():
    assert systemd_listeners({}) is None
    assert systemd_listeners({"LISTEN_FDS": "1"}) is None  # without LISTEN_PID nothing says they are ours
