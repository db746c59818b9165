"""Every ``python -m server.net`` command, run for real as a subprocess on 127.0.0.1 with timeouts."""

import os
import pty
import re
import resource
import signal
import socket
import subprocess

import pytest

from .conftest import cli


def port_of(line):
    """The port in a readiness line: "... port 6969" or "... on 127.0.0.1:6969"."""
    match = re.search(r"port (\d+)", line) or re.search(r":(\d+)(?!.*:\d)", line)
    return int(match.group(1))


@pytest.mark.parametrize(
    "command",
    [[], ["udp"], ["udp", "echo"], ["udp", "send"], ["udp", "listen"], ["udp", "chat"], ["udp", "broadcast"],
     ["tftp", "serve"], ["tftp", "get"], ["tftp", "put"], ["msg", "serve"], ["msg", "send"]],
)  # fmt: skip
def test_help(command):
    result = cli(*command, "--help")
    assert result.returncode == 0 and "usage: python -m server.net" in result.stdout


def test_usage_errors_exit_2():
    result = cli("udp", "send", "127.0.0.1:notaport", "x")
    assert result.returncode == 2 and "bad port" in result.stderr
    result = cli("tftp", "get", "127.0.0.1", "f", "--blksize", "7")
    assert result.returncode == 2 and "expected a number from 8 to 65464" in result.stderr


def test_udp_echo_and_send(process):
    echo = process("udp", "echo", "--bind", "127.0.0.1:0")
    port = port_of(echo.wait_for("echoing on"))
    result = cli("udp", "send", f"127.0.0.1:{port}", "hello", "--wait", "0.3")
    assert result.returncode == 0
    assert "sent 5 bytes" in result.stdout and re.search(r"reply from 127\.0\.0\.1:\d+ 5 bytes: hello", result.stdout)
    # Bytes that are not UTF-8 are shown escaped, and the count goes on.
    result = cli("udp", "send", f"127.0.0.1:{port}", b"\xff\x01bin", "--wait", "0.3")
    assert "5 bytes: \\xff\\x01bin" in result.stdout
    echo.wait_for("#2")
    assert echo.stop(signal.SIGINT) == 0
    assert "stopped" in echo.lines["stdout"][-1]
    assert "Traceback" not in "\n".join(echo.lines["stderr"])


def test_udp_send_refuses_oversized_datagrams(udp_socket):
    port = udp_socket.getsockname()[1]
    result = cli("udp", "send", f"127.0.0.1:{port}", "x" * 65508)
    assert result.returncode == 2 and "exceeds the UDP maximum of 65507" in result.stderr


def test_udp_listen(process, udp_socket):
    listener = process("udp", "listen", "--bind", "127.0.0.1:0")
    port = port_of(listener.wait_for("listening on"))
    udp_socket.sendto("café\n\x00".encode(), ("127.0.0.1", port))
    line = listener.wait_for("bytes:")
    sender_port = udp_socket.getsockname()[1]
    assert f"127.0.0.1:{sender_port} 7 bytes: café\\n\\x00" in line
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line)
    assert listener.stop(signal.SIGTERM) == 0


def test_udp_chat_is_full_duplex(process, udp_socket):
    peer_port = udp_socket.getsockname()[1]
    chat = process("udp", "chat", "--bind", "127.0.0.1:0", "--peer", f"127.0.0.1:{peer_port}", stdin=subprocess.PIPE)
    port = port_of(chat.wait_for("chatting on").split(" with ")[0])
    # Receive while nothing has been typed: the socket is not waiting behind stdin.
    udp_socket.sendto(b"are you there?", ("127.0.0.1", port))
    chat.wait_for("> are you there?")
    chat.proc.stdin.write(b"yes\nand more\n")
    chat.proc.stdin.flush()
    assert udp_socket.recvfrom(100)[0] == b"yes"
    assert udp_socket.recvfrom(100)[0] == b"and more"
    chat.proc.stdin.close()  # end of input ends the chat
    assert chat.proc.wait(timeout=10) == 0


def test_udp_broadcast():
    # The loopback network's broadcast address keeps the datagram on this machine; binding the receiver to that
    # address (rather than to every interface) is how a socket on Linux hears broadcasts to it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.255.255.255", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        result = cli("udp", "broadcast", port, "hi all", "--address", "127.255.255.255")
        assert result.returncode == 0 and f"broadcast 6 bytes to 127.255.255.255:{port}" in result.stdout
        assert receiver.recvfrom(100)[0] == b"hi all"


def start_tftp(process, root, *extra, **kwargs):
    server = process("tftp", "serve", "--root", root, "--port", "0", *extra, **kwargs)
    return server, port_of(server.wait_for("TFTP serving", stream="stderr"))


def test_tftp_serve_get_put(process, tftp_root, tmp_path):
    data = os.urandom(200_000)
    (tftp_root / "data.bin").write_bytes(data)
    server, port = start_tftp(process, tftp_root, "--allow-upload")
    get = cli("tftp", "get", "127.0.0.1", "data.bin", tmp_path / "copy.bin", "--port", port,
              "--blksize", "1468", "--windowsize", "4")  # fmt: skip
    assert get.returncode == 0, get.stderr
    assert "got data.bin" in get.stdout and "200000 bytes" in get.stdout and "blksize 1468" in get.stdout
    assert get.stderr == ""  # no progress bar when stderr is not a terminal
    assert (tmp_path / "copy.bin").read_bytes() == data
    put = cli("tftp", "put", "127.0.0.1", tmp_path / "copy.bin", "up.bin", "--port", port)
    assert put.returncode == 0 and (tftp_root / "up.bin").read_bytes() == data
    # LOCAL defaults to the remote name, in the current directory.
    get = cli("tftp", "get", "127.0.0.1", "up.bin", "--port", port, "--mode", "netascii", cwd=tmp_path)
    assert get.returncode == 0 and (tmp_path / "up.bin").exists()

    missing = cli("tftp", "get", "127.0.0.1", "missing.bin", tmp_path / "missing.bin", "--port", port)
    assert missing.returncode == 1
    assert "error: File not found (peer error 1)" in missing.stderr
    assert not (tmp_path / "missing.bin").exists()
    again = cli("tftp", "put", "127.0.0.1", tmp_path / "copy.bin", "up.bin", "--port", port)
    assert again.returncode == 1 and "File already exists" in again.stderr
    assert "--overwrite" in again.stderr  # says what would let it through

    assert server.stop(signal.SIGTERM) == 0
    log = "\n".join(server.lines["stderr"])
    assert re.search(r"127\.0\.0\.1:\d+ RRQ data\.bin 200000 bytes in [\d.]+ s \([\d.]+ \w+/s\) ok", log)
    assert "WRQ up.bin 200000 bytes" in log and "RRQ missing.bin refused: File not found" in log


def test_tftp_get_from_nobody(udp_socket, tmp_path):
    port = udp_socket.getsockname()[1]
    result = cli("tftp", "get", "127.0.0.1", "f", tmp_path / "f", "--port", port, "--timeout", "0.1", "--retries", "1")
    assert result.returncode == 1 and "no answer from the server" in result.stderr
    # What to try, and none of the protocol's numbers for an error nobody sent.
    assert f"is a TFTP server listening on 127.0.0.1:{port}?" in result.stderr and "local error" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def _limit_file_size():
    # Writes beyond 64 KiB fail with EFBIG instead of killing the process: the server's view of a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))


def test_tftp_full_disk_answers_error_3(process, tftp_root, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(300_000))
    server, port = start_tftp(process, tftp_root, "--allow-upload", preexec_fn=_limit_file_size)
    put = cli("tftp", "put", "127.0.0.1", source, "--port", port, "--blksize", "1468")
    assert put.returncode == 1 and "Disk full or allocation exceeded (peer error 3)" in put.stderr
    server.wait_for("failed: Disk full", stream="stderr")
    assert list(tftp_root.iterdir()) == []


def test_msg_serve_and_send(process, tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret shared key\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    server = process("msg", "serve", "--bind", "127.0.0.1:0", "--secret-file", key)
    port = port_of(server.wait_for("receiving authenticated messages on"))
    sent = cli("msg", "send", f"127.0.0.1:{port}", "--secret-file", key, "first", "second message")
    assert sent.returncode == 0 and "sent 2 message(s)" in sent.stdout
    server.wait_for("closed after 2 message(s)")
    assert any("#2 14 bytes: second message" in line for line in server.lines["stdout"])
    refused = cli("msg", "send", f"127.0.0.1:{port}", "--secret-file", wrong, "let me in")
    assert refused.returncode == 1 and "refused" in refused.stderr
    server.wait_for("refused: wrong key")
    assert server.stop(signal.SIGINT) == 0
    assert not any("let me in" in line for line in server.lines["stdout"])


def test_tftp_get_draws_a_progress_bar_on_a_terminal(tftp_root, tmp_path, start_tftp_server):
    (tftp_root / "f.bin").write_bytes(os.urandom(100_000))
    port = start_tftp_server(tftp_root).address[1]
    controller, terminal = pty.openpty()
    try:
        result = cli("tftp", "get", "127.0.0.1", "f.bin", tmp_path / "f.bin", "--port", port, stderr=terminal)
        os.close(terminal)
        terminal = None
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's other side is closed and everything has been read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    assert result.returncode == 0
    assert b"[##############################] 100%" in drawn and re.search(rb"\d (KiB|MiB)/s", drawn)
    assert drawn.endswith(b"\r\n")  # the bar's line is ended, so the summary starts on its own line


def test_tftp_get_interrupted_cleans_up(process, udp_socket, tmp_path):
    port = udp_socket.getsockname()[1]
    client = process("tftp", "get", "127.0.0.1", "f", tmp_path / "f", "--port", port, "--timeout", "5")
    request, client_addr = udp_socket.recvfrom(1024)  # the request arrived: the client is waiting for us
    assert request.startswith(b"\x00\x01f\x00")
    udp_socket.sendto(b"\x00\x03\x00\x01" + b"p" * 512, client_addr)  # one block, then silence
    assert udp_socket.recvfrom(1024)[0] == b"\x00\x04\x00\x01"  # written to the partial file, acknowledged
    assert len(list(tmp_path.iterdir())) == 1
    assert client.stop(signal.SIGINT) == 130
    assert "interrupted" in "\n".join(client.lines["stderr"])
    abort, _ = udp_socket.recvfrom(1024)
    assert abort.startswith(b"\x00\x05\x00\x00")  # ERROR 0 tells our side the transfer is cancelled
    assert list(tmp_path.iterdir()) == []
