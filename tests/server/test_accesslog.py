"""The access log cannot be forged: every field escapes ``"``, ``\\`` and non-printable characters as ``\\xHH``.

Unit tests format lines directly; the live tests send hostile bytes over a raw socket to a ServerThread and parse
the logged line back into exactly the combined-format fields.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from server.accesslog import escape, log_response, timestamp
from server.http import Request
from tests.support import TIMEOUT, ServerProcess, ServerThread, read_response, wait_for

# The combined format plus our response time. Escaped fields hold no '"', so each quoted group is unambiguous.
COMBINED = re.compile(
    r'(?P<remote>\S+) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) (?P<version>\S+)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<micros>\d+)us'
)


def parse(line: str) -> dict[str, str]:
    """The fields of one log line, unescaped; fails the test if the line is not exactly one combined line."""
    assert line.isascii() and line.isprintable(), line
    match = COMBINED.fullmatch(line)
    assert match is not None, line
    return {name: unescape(value) for name, value in match.groupdict().items()}


def unescape(value: str) -> str:
    # Every backslash in the log starts an escape (a literal one is written \x5C), so this is exact.
    return re.sub(r"\\x([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def request(method: str = "GET", target: str = "/", version: str = "HTTP/1.1") -> Request:
    return Request(
        method=method,
        target=target,
        path=target,
        query="",
        version=version,
        headers=[],
        host="h",
        scheme=None,
        keep_alive=True,
        content_length=0,
        chunked=False,
        expect_continue=False,
    )


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    """The ``server.access`` messages logged during the test (the logger enabled at INFO, as --access-log does)."""
    logger = logging.getLogger("server.access")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


# -- escape -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("curl/8.5.0", "curl/8.5.0"),
        ("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
        ('" 200 1 "-" "x', r"\x22 200 1 \x22-\x22 \x22x"),
        ("a\\b", r"a\x5Cb"),
        ("\x1b[31mred", r"\x1B[31mred"),
        ("\x9b31m", r"\x9B31m"),  # C1 CSI: one latin-1-decoded character from the byte 0x9b
        ("line\r\nforged 200", r"line\x0D\x0Aforged 200"),
        ("tab\there\x00\x7f", r"tab\x09here\x00\x7F"),
        ("caf\xe9", r"caf\xE9"),  # a latin-1 character is the byte it came from
        ("\u20ac", r"\xE2\x82\xAC"),  # above U+00FF: its UTF-8 bytes
        ("\udcff", r"\xED\xB3\xBF"),  # a lone surrogate does not raise
        ("", ""),
    ],
)
def test_escape(value: str, escaped: str) -> None:
    assert escape(value) == escaped


def test_escape_returns_a_clean_value_itself() -> None:
    value = "Mozilla/5.0 (compatible; x)"
    assert escape(value) is value


def test_escape_covers_every_latin1_character_exactly() -> None:
    for code in range(256):
        char = chr(code)
        expected = char if 0x20 <= code <= 0x7E and char not in '"\\' else f"\\x{code:02X}"
        assert escape(char) == expected
        assert escape("ok" + char) == "ok" + expected  # not only the fast path


def test_escape_is_linear() -> None:
    # 2 MB of the worst case (every character escaped, and a wide one to force the slow path) in well under a second.
    for value in ("\x9b" * 2_000_000, "\u20ac" + '"' * 2_000_000):
        started = time.monotonic()
        assert len(escape(value)) >= 4 * 2_000_000
        assert time.monotonic() - started < 2.0


# -- log_response -----------------------------------------------------------------------------------------------------


def test_a_clean_line_is_the_combined_format(access_lines: list[str]) -> None:
    log_response("192.0.2.1", request(target="/x?y=1"), 200, 14, None, "curl/8.5.0", time.monotonic())
    (line,) = access_lines
    fields = parse(line)
    assert fields | {"time": "", "micros": ""} == {
        "remote": "192.0.2.1",
        "time": "",
        "method": "GET",
        "target": "/x?y=1",
        "version": "HTTP/1.1",
        "status": "200",
        "size": "14",
        "referer": "-",
        "agent": "curl/8.5.0",
        "micros": "",
    }


def test_every_field_is_escaped(access_lines: list[str]) -> None:
    hostile = '" 200 1 "-" "x\x9b\x1b[31m\\\n'
    log_response(
        "1.2.3.4 - - [x] " + hostile,
        request(method="GET" + hostile, target="/" + hostile, version="HTTP/1.1" + hostile),
        404,
        0,
        "http://r/" + hostile,
        "ua" + hostile,
        time.monotonic(),
    )
    (line,) = access_lines
    fields = parse(line)
    assert fields["remote"] == "1.2.3.4 - - [x] " + hostile  # spaces too, outside quotes
    assert (fields["method"], fields["target"], fields["version"]) == (
        "GET" + hostile,
        "/" + hostile,
        "HTTP/1.1" + hostile,
    )
    assert (fields["status"], fields["size"]) == ("404", "-")
    assert (fields["referer"], fields["agent"]) == ("http://r/" + hostile, "ua" + hostile)


def test_nothing_is_formatted_when_the_log_is_off() -> None:
    logger = logging.getLogger("server.access")
    saved = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        broken: Any = object()  # would raise if touched
        log_response("1.2.3.4", broken, 200, 1, None, None, 0.0)
    finally:
        logger.setLevel(saved)


# -- live: hostile bytes from a raw socket --------------------------------------------------------------------------


def echo_agent(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
    body = environ.get("HTTP_USER_AGENT", "").encode("latin-1")
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def send(server: ServerThread, head: bytes) -> tuple[int, bytes]:
    with server.connect() as sock:
        sock.sendall(head)
        status, _, body = read_response(sock)
    return status, body


def test_live_hostile_request_logs_one_parsable_line(access_lines: list[str]) -> None:
    agent = b'" 200 1 "-" "x \x9b \\ \t \xff end'
    referer = b'http://r/"\\\x9b'
    target = b'/odd/"quoted"/\\back/\x9b\xff\x80%00?q="1"'
    head = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nUser-Agent: " + agent + b"\r\nReferer: " + referer + b"\r\n\r\n"
    with ServerThread(echo_agent) as server:
        status, body = send(server, head)
        assert (status, body) == (200, agent)
        line = wait_for(lambda: access_lines and access_lines[0])
    assert len(access_lines) == 1
    fields = parse(line)
    assert fields["remote"] == "127.0.0.1"
    assert (fields["method"], fields["target"], fields["version"]) == ("GET", target.decode("latin-1"), "HTTP/1.1")
    assert (fields["status"], fields["size"]) == ("200", str(len(agent)))
    assert fields["referer"] == referer.decode("latin-1")
    assert fields["agent"] == agent.decode("latin-1")


def test_live_escape_sequence_never_reaches_the_log(access_lines: list[str]) -> None:
    # The parser refuses an ESC (any control but HTAB) in a field value with 400, before anything is logged to the
    # access log; the refusal goes to the error log, which names the peer, not the header.
    head = b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: \x1b[31mred\x1b[0m\r\n\r\n"
    with ServerThread(echo_agent) as server:
        status, _ = send(server, head)
        assert status == 400
        assert send(server, b"GET /after HTTP/1.1\r\nHost: h\r\nUser-Agent: ok\r\n\r\n")[0] == 200
        wait_for(lambda: any(" /after " in line for line in access_lines))
    assert not any("\x1b" in line for line in access_lines)
    assert len(access_lines) == 1


def test_live_what_an_app_puts_in_its_environ_is_escaped_too(access_lines: list[str]) -> None:
    # The WSGI path logs from the environ after the app ran, so middleware that rewrites it could inject anything.
    def rewriting(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        environ["REMOTE_ADDR"] = "10.0.0.1 forged"
        environ["HTTP_USER_AGENT"] = "\x1b[31m\u20ac\n"
        start_response("204 No Content", [])
        return []

    with ServerThread(rewriting) as server:
        assert send(server, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")[0] == 204
        line = wait_for(lambda: access_lines and access_lines[0])
    fields = parse(line)
    assert fields["remote"] == "10.0.0.1 forged"
    assert fields["agent"] == "\x1b[31m" + "\u20ac".encode().decode("latin-1") + "\n"


def test_live_a_file_sent_with_sendfile_is_logged_once_after_its_last_byte(
    access_lines: list[str], tmp_path: Any
) -> None:
    # A wsgi.file_wrapper body goes out with sendfile from the loop, and its line is logged from there: the code
    # path that logs a response after the application has returned.
    data = b"f" * 100_000
    (tmp_path / "big.bin").write_bytes(data)

    def file_app(environ: dict[str, Any], start_response: Callable) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](open(tmp_path / "big.bin", "rb"))

    with ServerThread(file_app) as server:
        assert send(server, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n") == (200, data)
        line = wait_for(lambda: access_lines and access_lines[0])
    assert len(access_lines) == 1
    assert (parse(line)["target"], parse(line)["status"], parse(line)["size"]) == ("/big", "200", str(len(data)))


def test_live_the_logged_duration_counts_from_the_head_so_a_slow_upload_shows(access_lines: list[str]) -> None:
    # What the client waited for, as nginx's $request_time: from the head's arrival, through the body's upload,
    # to the response. The 100 Continue proves that the server had the head before the pause began.
    pause = 0.2

    def read_body(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    head = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    with ServerThread(read_body) as server, server.connect() as sock:
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(pause)  # the slow upload under test, not a wait for readiness
        sock.sendall(b"hello")
        assert read_response(sock)[::2] == (200, b"hello")
        line = wait_for(lambda: access_lines and access_lines[0])
    assert int(parse(line)["micros"]) >= pause * 1_000_000


# -- the log file, its rotation and its failures (audit regressions) ------------------------------------------------


def test_the_month_is_english_whatever_the_locale(access_lines: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # No other locale may be installed where the tests run: strftime is made to answer as a German one would.
    real_strftime = time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt, *t: real_strftime(fmt.replace("%b", "Mär"), *t))
    log_response("127.0.0.1", request(), 200, 1, None, None, time.monotonic())
    stamp = parse(access_lines[0])["time"]
    assert re.fullmatch(r"\d\d/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", stamp)


def test_the_timestamp_matches_strftime_in_the_c_locale() -> None:
    now = time.time()
    assert timestamp(now) == time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))


def get_until(url: str, count: int) -> None:
    for _ in range(count):
        assert requests.get(url, headers={"Connection": "close"}, timeout=TIMEOUT).status_code == 200


def test_a_rotated_log_file_is_reopened_by_every_worker(tmp_path: Path) -> None:
    """logrotate without copytruncate: the file is renamed; the next lines go to a new file at the path."""
    path = tmp_path / "access.log"
    with ServerProcess("apps.hello:app", "--workers", "2", "--access-log", str(path)) as server:
        get_until(server.url, 4)
        wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 4)
        path.rename(tmp_path / "access.log.1")
        get_until(server.url, 20)  # new connections each: both workers take some
        wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 20)
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 4
    assert len(path.read_text().splitlines()) == 20


def test_a_failing_access_log_is_reported_once_not_per_request() -> None:
    with ServerProcess("apps.hello:app", "--access-log", "/dev/full") as server:
        get_until(server.url, 5)
        wait_for(lambda: "cannot write the access log" in server.output())
        get_until(server.url, 5)
    output = server.output()
    assert "Traceback" not in output, output
    assert output.count("cannot write the access log") == 1, output


def test_a_fifo_recreated_at_the_log_path_does_not_block_the_next_line(tmp_path: Path) -> None:
    """A log shipper reads a FIFO; its entrypoint, run again, makes a new one at the same path. The handler that
    follows rotated files reopened the path in blocking mode, and waited for a reader of the new FIFO: static
    files are logged on the event loop, which froze with it. A path that is no regular file is kept open."""
    import os
    import threading

    from server.accesslog import access_handler

    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        handler = access_handler(str(fifo))

        def line(text: str) -> logging.LogRecord:
            return logging.LogRecord("server.access", logging.INFO, __file__, 0, text, None, None)

        handler.emit(line("one"))
        fifo.unlink()
        os.mkfifo(fifo)
        written = threading.Event()
        threading.Thread(target=lambda: (handler.emit(line("two")), written.set()), daemon=True).start()
        assert written.wait(TIMEOUT)
        assert os.read(reader, 100) == b"one\ntwo\n"
        handler.close()
    finally:
        os.close(reader)


# -- the error log ---------------------------------------------------------------------------------------------------


def test_the_error_log_escapes_the_request_it_names(caplog: pytest.LogCaptureFixture) -> None:
    """A target may hold bytes 0x80-0xFF, among them 0x9B, the C1 CSI that terminals act on as ESC [ does: printed
    raw by the error log's "error in application for GET /...", it could clear an operator's screen or forge
    lines. The error log names the request escaped as the access log does."""

    def failing(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        raise RuntimeError("boom")

    target = b"/x?\x9b2J\x9b31mFORGED\xff"
    with ServerThread(failing) as server:
        assert send(server, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")[0] == 500
    [record] = [r for r in caplog.records if "error in application" in r.getMessage()]
    message = record.getMessage()
    assert "\x9b" not in message and "\xff" not in message
    assert "/x?\\x9B2J\\x9B31mFORGED\\xFF" in message


@pytest.mark.parametrize(
    ("family", "header"),
    [("x-forwarded", "X-Forwarded-For: 198.51.100.1, 203.0.113.7"), ("forwarded", "Forwarded: for=203.0.113.7")],
)
def test_behind_a_trusted_proxy_every_line_names_the_client(
    tmp_path: Path, access_lines: list[str], family: str, header: str
) -> None:
    """A static file, like an app's response, is logged with the client the proxy names: the loop answers files
    without an environ, and their lines named the proxy (127.0.0.1), so the log showed two clients for one."""
    (tmp_path / "a.txt").write_text("a file\n")
    settings = {"forwarded_allow_ips": ("127.0.0.1",), "proxy_headers": family, "static": (f"/s={tmp_path}",)}
    with ServerThread(echo_agent, **settings) as server:
        for path in ("/s/a.txt", "/app"):
            head = f"GET {path} HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\r\n{header}\r\n\r\n".encode()
            assert send(server, head)[0] == 200
        wait_for(lambda: len(access_lines) == 2)
    assert [(parse(line)["target"], parse(line)["remote"]) for line in access_lines] == [
        ("/s/a.txt", "203.0.113.7"),
        ("/app", "203.0.113.7"),
    ]
