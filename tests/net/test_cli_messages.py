"""Failures of ``python -m server.net`` end with one line a person can act on, and a status a script can read:
2 for a command that cannot run as invoked, 1 for one whose other side failed (issue 11's "messages for people").
"""

import re
import socket

import pytest

from .conftest import cli


def one_line(result) -> str:
    """The single line of stderr, with no errno in brackets, no repr of a tuple and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "[Errno" not in line and "('127.0.0.1'" not in line and "Traceback" not in line, line
    return line


@pytest.fixture
def busy_tcp_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def busy_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def free_tcp_port():
    """A port that nothing listens on (bound and closed: the kernel will refuse connections to it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_address_in_use_says_so_and_what_to_try(busy_tcp_port, busy_udp_port, tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    for args in (
        ["msg", "serve", "--bind", f"127.0.0.1:{busy_tcp_port}", "--secret-file", key],
        ["udp", "echo", "--bind", f"127.0.0.1:{busy_udp_port}"],
        ["udp", "listen", "--bind", f"127.0.0.1:{busy_udp_port}"],
        ["tftp", "serve", "--root", tmp_path, "--port", busy_udp_port],
    ):
        result = cli(*args, timeout=10)
        line = one_line(result)
        assert result.returncode == 2, line
        assert re.search(r"cannot listen on 127\.0\.0\.1:\d+: the address is already in use \(.*another", line)


def test_nobody_listening_is_an_operational_failure(free_tcp_port, tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    result = cli("msg", "send", f"127.0.0.1:{free_tcp_port}", "hi", "--secret-file", key, timeout=10)
    line = one_line(result)
    assert result.returncode == 1
    assert f"cannot reach 127.0.0.1:{free_tcp_port}: connection refused: nothing is listening there" in line


def test_udp_send_that_waits_for_a_reply_says_when_none_came(busy_udp_port):
    result = cli("udp", "send", f"127.0.0.1:{busy_udp_port}", "anyone?", "--wait", "0.2", timeout=10)
    assert result.returncode == 1
    assert one_line(result) == f"error: no reply from 127.0.0.1:{busy_udp_port} within 0.2 s"
    assert "sent 7 bytes" in result.stdout


def test_a_download_into_a_missing_folder_names_the_folder_not_a_temporary_file(busy_udp_port, tmp_path):
    target = tmp_path / "no" / "such" / "x.bin"
    result = cli("tftp", "get", "127.0.0.1", "x.bin", target, "--port", busy_udp_port, timeout=10)
    line = one_line(result)
    assert result.returncode == 2
    assert line == f"error: cannot save {target}: the folder {target.parent} does not exist"
    assert ".part" not in line


def test_a_missing_or_wrong_tftp_root_is_named_as_such(tmp_path):
    result = cli("tftp", "serve", "--root", tmp_path / "files", "--port", "0", timeout=10)
    assert result.returncode == 2
    assert "the TFTP root" in one_line(result) and "does not exist (create it" in result.stderr
    (tmp_path / "file").write_text("x")
    result = cli("tftp", "serve", "--root", tmp_path / "file", "--port", "0", timeout=10)
    assert result.returncode == 2 and "is not a folder" in one_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ["tftp", "get", "127.0.0.1", "f", "--blksize", "7"],
        ["tftp", "get", "127.0.0.1", "f", "--blksize", "9" * 5000],
        ["udp", "send", "127.0.0.1:notaport", "x"],
        ["msg", "send"],
        ["nonsense"],
    ],
)
def test_a_usage_error_is_one_line_not_a_usage_block(args):
    result = cli(*args, timeout=10)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("python -m server.net") and "error:" in line and "--help" in line


def test_help_documents_the_exit_statuses():
    for args in (["--help"], ["tftp", "get", "--help"], ["msg", "send", "--help"]):
        text = " ".join(cli(*args, timeout=10).stdout.split())
        assert "1 the other side failed" in text and "2 bad invocation" in text, args


def test_udp_echo_flags_reach_the_echo_limits():
    from server.net.__main__ import build_parser

    args = build_parser().parse_args(
        ["udp", "echo", "--rate", "5", "--byte-rate", "1000", "--max-peers", "3", "--allow-well-known-ports"]
    )
    assert (args.rate, args.byte_rate, args.max_peers, args.allow_well_known_ports) == (5.0, 1000.0, 3, True)
    for bad in ("0", "inf", "nan"):  # found in review: infinity locked every new peer out for good
        result = cli("udp", "echo", "--rate", bad, timeout=10)
        assert result.returncode == 2 and "expected a finite number above 0" in one_line(result)


def test_msg_serve_flags_reach_the_server(tmp_path):
    from server.net.__main__ import build_parser

    key = tmp_path / "key"
    args = build_parser().parse_args(
        ["msg", "serve", "--secret-file", str(key), "--max-connections", "10", "--max-handshakes", "4"]
    )
    assert (args.max_connections, args.max_handshakes, args.idle_timeout) == (10, 4, 300.0)
    key.write_text("k")
    result = cli("msg", "serve", "--secret-file", key, "--bind", "127.0.0.1:0", "--max-handshakes", "0", timeout=10)
    assert result.returncode == 2 and "expected a finite number above 0" in one_line(result)


def test_tftp_serve_flags_reach_the_server(tmp_path):
    from server.net.__main__ import build_parser

    limits = ["--max-transfers-per-source", "2", "--stall-limit", "5", "--max-timeout", "3"]
    args = build_parser().parse_args(["tftp", "serve", "--root", str(tmp_path), *limits])
    assert (args.max_transfers_per_source, args.stall_limit, args.max_timeout) == (2, 5.0, 3)
    # A stall limit shorter than the retransmission timeout could never be honoured: one line, exit 2.
    result = cli("tftp", "serve", "--root", tmp_path, "--port", "0", "--timeout", "2", "--stall-limit", "1", timeout=10)
    assert result.returncode == 2 and "stall" in one_line(result)
    result = cli(
        "tftp", "serve", "--root", tmp_path, "--port", "0", "--stall-limit", "inf", timeout=10
    )  # was a traceback
    assert result.returncode == 2 and "finite" in one_line(result)
