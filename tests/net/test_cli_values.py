"""What ``python -m server.net`` accepts, and what it makes of what a peer sends it (audit of the CLI).

- Every count, size and duration is checked when the command line is parsed: infinity, 1e300, NaN, negative
  numbers and zero where zero means nothing are one line on stderr and exit status 2, never a traceback
  (``OverflowError`` from a socket timeout) nor a command that runs and fails later with status 1.
- A server's ERROR text reaches the terminal escaped: no terminal escapes, no second line.
- ``tftp get HOST REMOTE DIR`` saves into DIR, as ``cp`` would; ``tftp put`` sends streams (``-``,
  ``/dev/stdin``, ``<(cmd)``, a FIFO) without a size, and refuses a FIFO nobody writes to after a short wait.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from server.net.__main__ import build_parser
from server.net.tftp.packets import Error, ErrorCode, ReadRequest, decode

from .conftest import ROOT, _argv, cli
from .test_cli_messages import one_line

# Every option that takes a number of seconds, a count or a size, with the command it belongs to and what it
# must refuse besides infinity, NaN, huge numbers and garbage: "zero" when 0 means nothing there.
_COMMANDS = {
    "udp send": ["udp", "send", "127.0.0.1:9", "x"],
    "udp broadcast": ["udp", "broadcast", "9", "x"],
    "udp echo": ["udp", "echo"],
    "udp listen": ["udp", "listen"],
    "tftp get": ["tftp", "get", "127.0.0.1", "f"],
    "tftp put": ["tftp", "put", "127.0.0.1", "f"],
    "tftp serve": ["tftp", "serve", "--root", "."],
    "msg send": ["msg", "send", "127.0.0.1:9", "m", "--secret-file", "k"],
    "msg serve": ["msg", "serve", "--secret-file", "k"],
}
OPTIONS = [
    ("udp send", "--wait", "may be zero"),
    ("udp broadcast", "--wait", "may be zero"),
    ("udp echo", "--count", "positive"),
    ("udp listen", "--count", "positive"),
    ("udp echo", "--log-interval", "positive"),
    ("tftp get", "--timeout", "positive"),
    ("tftp get", "--retries", "may be zero"),
    ("tftp put", "--timeout", "positive"),
    ("tftp put", "--retries", "may be zero"),
    ("tftp serve", "--timeout", "positive"),
    ("tftp serve", "--retries", "may be zero"),
    ("tftp serve", "--max-upload", "may be zero"),
    ("tftp serve", "--stall-limit", "positive"),
    ("msg send", "--timeout", "positive"),
    ("msg serve", "--timeout", "positive"),
    ("msg serve", "--idle-timeout", "positive"),
]
ALWAYS_BAD = ["inf", "-inf", "Infinity", "nan", "1e300", "-1", "-3", "-0.5", "", "x", "1e"]
FINE = ["0", "0.0", "1", "2.5", "86400", "86401", "9" * 400]  # 10**400 is no float, but an int count is fine


def parse(argv: list[str]) -> tuple[int | None, str]:
    """Parse ``argv`` as the CLI does; (exit status or None if parsed, what went to stderr)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0), stderr.getvalue()
    return None, stderr.getvalue()


def _is_bad(value: str, kind: str, option: str) -> bool:
    """The rule the CLI must follow, written out independently of it."""
    integer = option in ("--count", "--retries", "--max-upload")
    try:
        number: float = int(value) if integer else float(value)
    except ValueError:
        return True
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        return True
    if not integer and not number <= 86400:  # a float beyond its range, too
        return True
    return number == 0 and kind == "positive"


@pytest.mark.parametrize(("command", "option", "kind"), OPTIONS, ids=[f"{c} {o}" for c, o, _ in OPTIONS])
@given(value=st.one_of(st.sampled_from(ALWAYS_BAD + FINE), st.text(max_size=8)))
@example(value="inf")
def test_every_count_and_duration_is_finite_and_in_range_or_one_line_and_status_2(command, option, kind, value):
    status, stderr = parse([*_COMMANDS[command], f"{option}={value}"])
    if _is_bad(value, kind, option):
        assert status == 2, (option, value)
        assert len(stderr.strip().splitlines()) == 1 and option in stderr, stderr
    else:
        assert status is None, stderr


@pytest.mark.parametrize(
    "args",
    [
        ["udp", "send", "127.0.0.1:9", "x", "--wait", "inf"],
        ["udp", "send", "127.0.0.1:9", "x", "--wait", "1e300"],
        ["udp", "broadcast", "9", "x", "--wait", "inf"],
        ["tftp", "get", "127.0.0.1", "f", "--timeout", "inf"],
        ["tftp", "get", "127.0.0.1", "f", "--timeout", "-1"],
        ["tftp", "get", "127.0.0.1", "f", "--retries", "-3"],
        ["msg", "send", "127.0.0.1:9", "m", "--secret-file", "k", "--timeout", "inf"],
        ["msg", "send", "127.0.0.1:9", "m", "--secret-file", "k", "--timeout", "0"],
        ["tftp", "serve", "--root", ".", "--max-upload", "-5"],
        ["tftp", "serve", "--root", ".", "--retries", "-1"],
        ["udp", "echo", "--count", "-1"],
        ["udp", "echo", "--count", "0"],
    ],
    ids=lambda args: " ".join(args[:2] + args[-2:]),
)
def test_the_audits_bad_values_are_refused_by_the_real_command(args, tmp_path):
    result = cli(*args, cwd=tmp_path, timeout=10)
    assert result.returncode == 2, result.stderr
    assert "expected a" in one_line(result)


# -- what the server says reaches the terminal escaped


def test_a_servers_error_text_cannot_drive_the_terminal_nor_add_lines(udp_socket, tmp_path):
    port = udp_socket.getsockname()[1]
    args = ("tftp", "get", "127.0.0.1", "f", tmp_path / "f", "--port", port, "--timeout", "5")
    with cli_in_background(*args) as proc:
        request, client = udp_socket.recvfrom(65536)
        assert isinstance(decode(request), ReadRequest)
        udp_socket.sendto(Error(ErrorCode.FILE_NOT_FOUND, "gone\x1b[2J\nerror: forged line\r").encode(), client)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert stderr.strip().splitlines() == ["error: gone\\x1b[2J\\nerror: forged line\\r (peer error 1)"]


@contextlib.contextmanager
def cli_in_background(*args):
    """``python -m server.net ARGS`` running while the test plays the other side; killed if still running."""
    proc = subprocess.Popen(_argv(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


# -- where a download lands, and what an upload may read


def test_get_into_an_existing_folder_saves_the_remote_base_name_there(tftp_root, tmp_path, start_tftp_server):
    (tftp_root / "sub").mkdir()
    (tftp_root / "sub" / "f.bin").write_bytes(b"payload")
    server = start_tftp_server(tftp_root)
    folder = tmp_path / "downloads"
    folder.mkdir()
    result = cli("tftp", "get", "127.0.0.1", "sub/f.bin", folder, "--port", server.address[1], timeout=10)
    assert result.returncode == 0, result.stderr
    assert (folder / "f.bin").read_bytes() == b"payload"
    assert sorted(os.listdir(folder)) == ["f.bin"]


@pytest.mark.parametrize("remote", ["..", ".", "sub/..", "/"])
def test_a_remote_name_with_no_base_name_is_refused_before_any_request(remote, udp_socket, tmp_path):
    port = udp_socket.getsockname()[1]
    result = cli("tftp", "get", "127.0.0.1", remote, tmp_path, "--port", port, timeout=10)
    assert result.returncode == 2
    assert "no file name of its own" in one_line(result)
    udp_socket.settimeout(0)
    with pytest.raises(BlockingIOError):  # nothing was asked of the server
        udp_socket.recvfrom(65536)
    assert os.listdir(tmp_path) == []


def test_put_of_a_fifo_nobody_writes_to_is_refused_after_a_short_wait(udp_socket, tmp_path):
    """Opening it does not block (it used to, until a writer came); its first byte must come within 5 s."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    port = udp_socket.getsockname()[1]
    result = cli("tftp", "put", "127.0.0.1", fifo, "--port", port, timeout=20)
    assert result.returncode == 2
    assert one_line(result) == f"error: cannot send {fifo}: nothing to read within 5 s: is anything writing to it?"
    udp_socket.settimeout(0)
    with pytest.raises(BlockingIOError):  # nothing was asked of the server
        udp_socket.recvfrom(65536)


@pytest.mark.parametrize("local", ["-", "/dev/stdin"])
def test_put_sends_the_standard_input(tftp_root, start_tftp_server, local):
    server = start_tftp_server(tftp_root, allow_upload=True)
    result = cli("tftp", "put", "127.0.0.1", local, "x.txt", "--port", server.address[1], input="piped\n" * 500)
    assert result.returncode == 0, result.stderr
    assert (tftp_root / "x.txt").read_text() == "piped\n" * 500


def test_put_sends_a_process_substitution(tftp_root, start_tftp_server):
    server = start_tftp_server(tftp_root, allow_upload=True)
    command = " ".join([*map(shlex.quote, _argv(["tftp", "put", "127.0.0.1"])), "<(seq 1000)", "s.txt"])
    result = subprocess.run(
        ["bash", "-c", f"{command} --port {server.address[1]}"], cwd=ROOT, capture_output=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert (tftp_root / "s.txt").read_text() == "".join(f"{n}\n" for n in range(1, 1001))


def test_put_of_the_standard_input_needs_a_remote_name(udp_socket):
    result = cli("tftp", "put", "127.0.0.1", "-", "--port", udp_socket.getsockname()[1], input="x")
    assert result.returncode == 2
    assert one_line(result) == "error: give REMOTE, the name on the server, to send the standard input"
