"""Shared helpers for the networking tests: a live TFTP server in a thread, CLI processes with deadlines."""

import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from server.net.tftp.server import TftpServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tftp_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def start_tftp_server():
    """Start TftpServer instances on 127.0.0.1, port 0, each in its own thread; stop them all afterwards."""
    running = []

    def start(root, **kwargs):
        server = TftpServer(root, "127.0.0.1", 0, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive(), "TFTP server thread did not stop"


def _argv(args):
    # Bytes stay bytes, so that a test can pass arguments that are not valid text.
    return [sys.executable, "-m", "server.net", *(a if isinstance(a, bytes) else str(a) for a in args)]


def cli(*args, timeout=20, **kwargs):
    """Run ``python -m server.net ARGS`` to completion."""
    if "stderr" not in kwargs:
        kwargs["stderr"] = subprocess.PIPE
    return subprocess.run(
        _argv(args),
        cwd=kwargs.pop("cwd", ROOT),
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        **kwargs,
    )


class Process:
    """A long-running CLI command, read line by line with a deadline on every wait."""

    def __init__(self, *args, stdin=subprocess.DEVNULL, cwd=ROOT, **popen_kwargs):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            _argv(args),
            cwd=cwd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            **popen_kwargs,
        )
        self.lines = {"stdout": [], "stderr": []}
        self._partial = {"stdout": b"", "stderr": b""}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ, "stdout")
        self._selector.register(self.proc.stderr, selectors.EVENT_READ, "stderr")

    def wait_for(self, text, stream="stdout", timeout=10.0):
        """The first line of ``stream`` containing ``text``, waiting for it at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[stream][seen:]:
                if text in line:
                    return line
            seen = len(self.lines[stream])
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(f"{text!r} not seen on {stream}: {self.lines}")

    def _read(self, timeout):
        events = self._selector.select(timeout)
        for key, _ in events:
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                self._selector.unregister(key.fileobj)
                continue
            *complete, self._partial[key.data] = (self._partial[key.data] + chunk).split(b"\n")
            self.lines[key.data] += [c.decode("utf-8", "replace") for c in complete]
        return bool(events) and bool(self._selector.get_map())

    def stop(self, signal_number, timeout=10.0):
        """Send a signal, wait for the exit, and return the exit status with everything printed."""
        self.proc.send_signal(signal_number)
        out, err = self.proc.communicate(timeout=timeout)
        self.lines["stdout"] += (self._partial["stdout"] + out).decode("utf-8", "replace").splitlines()
        self.lines["stderr"] += (self._partial["stderr"] + err).decode("utf-8", "replace").splitlines()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        self._selector.close()


@pytest.fixture
def process():
    """Start CLI processes (``process(*args)``); whatever is still running at the end is killed."""
    started = []

    def start(*args, **kwargs):
        p = Process(*args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def udp_socket():
    """A UDP socket on 127.0.0.1 (port 0) for a test to play a peer with: a client, a fake server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()
