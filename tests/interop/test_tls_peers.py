"""HTTPS against real clients: curl, ``openssl s_client``, ``requests``, a Flask app and our own framework.

The certificates come from a test CA made on the spot (``tests.tls_certs``); the clients trust that CA and only
it, so every handshake below is verified the way a browser would verify it. Where a refusal is the point (TLS 1.0
and 1.1, a missing client certificate), the test proves that the *server* refused, by its log line
"TLS handshake failed" and by the alert the client reports, not merely that the client gave up on its own.

The servers run as ``python -m server`` (the flags under test) or in-process (``ServerThread``) where only the
engine matters. The WSGI app below, ``tests.interop.test_tls_peers:app``, tells the client what it saw.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from server.tls import CertificateStore, TLSFiles
from tests.support import TIMEOUT, ServerProcess, ServerThread, read_response, wait_for
from tests.tls_certs import Certificates, make_certificates

pytestmark = pytest.mark.timeout(60)

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (Debian package 'curl')")
needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command is not installed (Debian package 'openssl')"
)

APP = "tests.interop.test_tls_peers:app"
BIG_SIZE = 3 * 1024 * 1024 + 777  # not a multiple of any buffer or TLS record size


# -- the app: what it saw, as JSON ---------------------------------------------------------------------------------


def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
    """Answers every request with the facts a test checks: method, path, body digest, scheme, SSL_* variables."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    facts = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ.get("QUERY_STRING", ""),
        "scheme": environ["wsgi.url_scheme"],
        "remote_port": environ.get("REMOTE_PORT"),
        "body_size": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    facts.update({key: value for key, value in environ.items() if key == "HTTPS" or key.startswith("SSL_")})
    payload = json.dumps(facts).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("static")
    path = directory / "big.bin"
    path.write_bytes(random.Random(443).randbytes(BIG_SIZE))
    return path


def tls_args(certs: Certificates) -> list[str]:
    return ["--certfile", str(certs.cert), "--keyfile", str(certs.key)]


@pytest.fixture(scope="module")
def https_server(certs: Certificates, big_file: Path) -> Iterator[ServerProcess]:
    """``python -m server`` on HTTPS only, with a static mount holding the 3 MB file."""
    args = [APP, *tls_args(certs), "--static", f"/files={big_file.parent}", "--bind", "https://127.0.0.1:0"]
    with ServerProcess(*args) as server:
        assert server.url.startswith("https://"), server.output()
        yield server
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture(scope="module")
def mtls_server(certs: Certificates) -> Iterator[ServerProcess]:
    """``python -m server`` that requires a client certificate issued by the test CA."""
    args = [APP, *tls_args(certs), "--client-cert", "required", "--ca-certs", str(certs.ca_pem)]
    with ServerProcess(*args, "--bind", "https://127.0.0.1:0") as server:
        yield server
        assert "Traceback" not in server.output(), server.output()


@dataclass(frozen=True)
class Redirecting:
    server: ServerProcess
    https_port: int
    http_port: int


@pytest.fixture(scope="module")
def redirecting(certs: Certificates) -> Iterator[Redirecting]:
    """HTTPS on one port, and plain HTTP on another answering everything with 308 to the HTTPS one."""
    args = [APP, *tls_args(certs), "--redirect-to-https", "--bind", "https://127.0.0.1:0"]
    with ServerProcess(*args, "--bind", "http://127.0.0.1:0") as server:
        pattern = re.compile(r"serving .* on (https?)://127\.0\.0\.1:(\d+)")

        def both_listening() -> dict[str, int] | None:
            found = {m.group(1): int(m.group(2)) for m in pattern.finditer(server.output())}
            return found if len(found) == 2 else None

        ports = wait_for(both_listening)
        assert isinstance(ports, dict)
        yield Redirecting(server, ports["https"], ports["http"])
        assert "Traceback" not in server.output(), server.output()


def certificate_store(certs: Certificates, **settings: str) -> CertificateStore:
    return CertificateStore(TLSFiles(certfile=str(certs.cert), keyfile=str(certs.key), **settings))


@pytest.fixture(scope="module")
def https_thread(certs: Certificates) -> Iterator[ServerThread]:
    """The engine in-process, on HTTPS."""
    with ServerThread(app, certificates=certificate_store(certs)) as server:
        yield server


def wait_for_log(server: ServerProcess, since: int, pattern: str) -> str:
    """Poll (with a deadline) until a log line after ``since`` matches ``pattern``; returns that line."""

    def find() -> str | None:
        for line in server.log[since:]:
            if re.search(pattern, line):
                return line
        return None

    try:
        line = wait_for(find)
    except AssertionError:
        raise AssertionError(f"no log line matching {pattern!r}; the log:\n{server.output()}") from None
    assert isinstance(line, str)
    return line


# -- curl ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    returncode: int
    status: int
    headers: dict[str, str]  # of the last response, names in lower case
    body: bytes
    stderr: str
    written: str  # what --write-out printed


def curl(*args: str, data: bytes | None = None, workdir: Path, write_out: str = "") -> Fetched:
    """Run curl (bounded by --max-time and a subprocess timeout); headers and body are kept apart in files."""
    headers_path, body_path = workdir / "headers.txt", workdir / "body.bin"
    headers_path.unlink(missing_ok=True)
    body_path.unlink(missing_ok=True)
    argv = ["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT), "--dump-header", str(headers_path)]
    argv += ["--output", str(body_path), "--write-out", write_out, *args]
    result = subprocess.run(argv, input=data or b"", capture_output=True, timeout=TIMEOUT + 5)
    heads = headers_path.read_bytes().decode("latin-1") if headers_path.exists() else ""  # keep the CRLFs
    status, headers = 0, {}
    # With -L there is one head per response: keep the last one.
    blocks = [block for block in heads.split("\r\n\r\n") if block.strip()]
    if blocks:
        lines = blocks[-1].split("\r\n")
        status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = body_path.read_bytes() if body_path.exists() else b""
    return Fetched(result.returncode, status, headers, body, result.stderr.decode("latin-1"), result.stdout.decode())


@needs_curl
def test_curl_get_over_https(https_server: ServerProcess, certs: Certificates, tmp_path: Path) -> None:
    url = f"https://localhost:{https_server.port}/hello?x=1"
    got = curl("--cacert", str(certs.ca_pem), url, workdir=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.status == 200
    facts = json.loads(got.body)
    assert facts["method"] == "GET"
    assert facts["path"] == "/hello"
    assert facts["query"] == "x=1"
    assert facts["scheme"] == "https"
    assert facts["HTTPS"] == "on"
    assert facts["SSL_PROTOCOL"] == "TLSv1.3"  # what curl and the server both prefer
    assert facts["SSL_CIPHER"]
    assert facts["SSL_TLS_SNI"] == "localhost"  # curl sends SNI for a host name (not for an IP address)
    assert facts["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in facts


@needs_curl
def test_curl_post_with_a_body(https_server: ServerProcess, certs: Certificates, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(300_000)
    url = f"https://localhost:{https_server.port}/submit"
    got = curl("--cacert", str(certs.ca_pem), "--data-binary", "@-", url, data=data, workdir=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.status == 200
    facts = json.loads(got.body)
    assert (facts["method"], facts["path"]) == ("POST", "/submit")
    assert (facts["body_size"], facts["body_sha256"]) == (len(data), sha256(data))


@needs_curl
def test_curl_static_file_range_and_etag(
    https_server: ServerProcess, certs: Certificates, big_file: Path, tmp_path: Path
) -> None:
    url = f"https://localhost:{https_server.port}/files/big.bin"
    ca = ["--cacert", str(certs.ca_pem)]
    expected = big_file.read_bytes()

    whole = curl(*ca, url, workdir=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert whole.status == 200
    assert whole.headers["content-length"] == str(BIG_SIZE)
    assert len(whole.body) == BIG_SIZE
    assert whole.body == expected  # byte for byte, through the chunked encryption of a static file

    part = curl(*ca, "--range", "1000-1999", url, workdir=tmp_path)
    assert part.returncode == 0, part.stderr
    assert part.status == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{BIG_SIZE}"
    assert part.body == expected[1000:2000]

    tail = curl(*ca, "--range", f"{BIG_SIZE - 70_000}-", url, workdir=tmp_path)
    assert tail.status == 206
    assert tail.body == expected[-70_000:]

    etag = whole.headers["etag"]
    cached = curl(*ca, "--header", f"If-None-Match: {etag}", url, workdir=tmp_path)
    assert cached.returncode == 0, cached.stderr
    assert cached.status == 304
    assert cached.body == b""

    # And the connection stays usable after a 304 and a 206: two URLs on one curl invocation share it.
    both = curl(*ca, "--header", f"If-None-Match: {etag}", url, url, workdir=tmp_path,
                write_out="%{num_connects}\n")  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert both.written.split() == ["1", "0"]  # the second transfer reused the first one's connection


@needs_curl
def test_curl_tls_1_1_is_refused_by_the_server(
    https_server: ServerProcess, certs: Certificates, tmp_path: Path
) -> None:
    url = f"https://localhost:{https_server.port}/"
    since = len(https_server.log)
    # SECLEVEL=0 lets curl's OpenSSL offer TLS 1.1 at all, so the refusal can only come from the server.
    got = curl("--cacert", str(certs.ca_pem), "--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0",
               url, workdir=tmp_path, write_out="%{local_port}")  # fmt: skip
    if "no protocols available" in got.stderr:
        pytest.skip("this curl's OpenSSL cannot offer TLS 1.1 even at SECLEVEL=0")
    assert got.returncode == 35, got.stderr  # CURLE_SSL_CONNECT_ERROR
    assert "alert protocol version" in got.stderr  # the server's alert, not a client-side refusal
    assert got.status == 0
    port = int(got.written)
    wait_for_log(https_server, since, rf"127\.0\.0\.1:{port}: TLS handshake failed: .*UNSUPPORTED_PROTOCOL")


@needs_curl
def test_curl_client_certificate(mtls_server: ServerProcess, certs: Certificates, tmp_path: Path) -> None:
    url = f"https://localhost:{mtls_server.port}/whoami"
    got = curl("--cacert", str(certs.ca_pem), "--cert", str(certs.client_cert), url, workdir=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.status == 200
    facts = json.loads(got.body)
    assert facts["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert facts["SSL_CLIENT_S_DN"] == certs.client_subject
    assert "trustme" in facts["SSL_CLIENT_I_DN"]  # issued by the test CA


@needs_curl
def test_curl_without_a_client_certificate_is_refused(
    mtls_server: ServerProcess, certs: Certificates, tmp_path: Path
) -> None:
    url = f"https://localhost:{mtls_server.port}/whoami"
    since = len(mtls_server.log)
    got = curl("--cacert", str(certs.ca_pem), url, workdir=tmp_path, write_out="%{local_port}")
    assert got.returncode != 0
    assert got.status == 0  # no HTTP response at all: the app never saw the request
    # TLS 1.3: the client finishes its half first, then reads the server's "certificate required" alert.
    assert "certificate required" in got.stderr, got.stderr
    port = int(got.written)
    wait_for_log(mtls_server, since, rf"127\.0\.0\.1:{port}: TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE")


@needs_curl
def test_curl_plain_http_on_the_tls_port_gets_400(https_server: ServerProcess, tmp_path: Path) -> None:
    got = curl(f"http://localhost:{https_server.port}/hello", workdir=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.status == 400
    assert got.headers["connection"] == "close"
    assert b"HTTPS" in got.body
    assert b"https://" in got.body


@needs_curl
def test_curl_follows_the_308_to_https(redirecting: Redirecting, certs: Certificates, tmp_path: Path) -> None:
    start = f"http://127.0.0.1:{redirecting.http_port}/some/page?a=1&b=two"
    got = curl("--cacert", str(certs.ca_pem), "--location", "--verbose", start, workdir=tmp_path,
               write_out="%{url_effective} %{num_redirects}")  # fmt: skip
    assert got.returncode == 0, got.stderr
    target = f"https://127.0.0.1:{redirecting.https_port}/some/page?a=1&b=two"
    assert "< HTTP/1.1 308" in got.stderr
    assert f"< Location: {target}" in got.stderr
    assert got.written.split() == [target, "1"]
    assert got.status == 200
    facts = json.loads(got.body)
    assert (facts["scheme"], facts["HTTPS"], facts["path"], facts["query"]) == (
        "https",
        "on",
        "/some/page",
        "a=1&b=two",
    )


@needs_curl
def test_curl_post_keeps_method_and_body_across_the_308(
    redirecting: Redirecting, certs: Certificates, tmp_path: Path
) -> None:
    data = random.Random(2).randbytes(50_000)
    start = f"http://127.0.0.1:{redirecting.http_port}/form"
    got = curl("--cacert", str(certs.ca_pem), "--location", "--verbose", "--data-binary", "@-", start, data=data,
               workdir=tmp_path)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert "< HTTP/1.1 308" in got.stderr
    assert got.status == 200
    facts = json.loads(got.body)
    assert (facts["method"], facts["scheme"], facts["path"]) == ("POST", "https", "/form")
    assert (facts["body_size"], facts["body_sha256"]) == (len(data), sha256(data))


# -- openssl s_client ---------------------------------------------------------------------------------------------


def s_client(port: int, certs: Certificates, *args: str, request: bytes = b"") -> tuple[int, str, bytes]:
    """``openssl s_client`` against 127.0.0.1:port, verifying against the test CA; ``request`` is written once the
    handshake is done and the output is read until the server closes (so send ``Connection: close``).

    Returns (exit status, the text it printed, the HTTP response found in it)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(certs.ca_pem)]
    argv += ["-verify_return_error", "-ign_eof", *args]
    result = subprocess.run(argv, input=request, capture_output=True, timeout=TIMEOUT + 5)
    output = result.stdout + result.stderr
    start = result.stdout.find(b"HTTP/1.1 ")
    response = result.stdout[start:] if start >= 0 else b""
    return result.returncode, output.decode("latin-1"), response


def parse_http(response: bytes) -> tuple[int, dict]:
    """(status, JSON body) of one Content-Length response as s_client printed it."""
    head, _, rest = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    body = rest[: int(headers["content-length"])]
    return int(lines[0].split(" ")[1]), json.loads(body)


GET_AND_CLOSE = b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@needs_openssl
@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_openssl_old_protocols_refused(https_server: ServerProcess, certs: Certificates, flag: str) -> None:
    since = len(https_server.log)
    # SECLEVEL=0: OpenSSL 3 would otherwise not offer TLS 1.0/1.1 (their SHA-1 signatures) and refuse by itself.
    code, output, response = s_client(https_server.port, certs, flag, "-cipher", "DEFAULT@SECLEVEL=0",
                                      request=GET_AND_CLOSE)  # fmt: skip
    if "no protocols available" in output:
        pytest.skip(f"this openssl cannot offer {flag} even at SECLEVEL=0")
    assert code != 0, output
    assert response == b""
    assert "alert protocol version" in output, output  # the server's alert
    wait_for_log(https_server, since, r"TLS handshake failed: .*UNSUPPORTED_PROTOCOL")


@needs_openssl
@pytest.mark.parametrize(("flag", "version"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_openssl_current_protocols_accepted(
    https_server: ServerProcess, certs: Certificates, flag: str, version: str
) -> None:
    code, output, response = s_client(https_server.port, certs, flag, "-servername", "localhost",
                                      request=GET_AND_CLOSE)  # fmt: skip
    assert code == 0, output
    assert re.search(rf"Protocol\s*:\s*{re.escape(version)}\b", output), output
    assert "Verify return code: 0 (ok)" in output
    status, facts = parse_http(response)
    assert status == 200
    assert facts["SSL_PROTOCOL"] == version
    assert facts["path"] == "/tls"


@needs_openssl
def test_openssl_alpn_selects_http_1_1(https_server: ServerProcess, certs: Certificates) -> None:
    code, output, response = s_client(https_server.port, certs, "-alpn", "h2,http/1.1", request=GET_AND_CLOSE)
    assert code == 0, output
    assert "ALPN protocol: http/1.1" in output, output  # not h2, which the server does not speak
    assert parse_http(response)[0] == 200


@needs_openssl
def test_openssl_sni_reaches_the_app(https_server: ServerProcess, certs: Certificates) -> None:
    code, output, response = s_client(https_server.port, certs, "-servername", "localhost", request=GET_AND_CLOSE)
    assert code == 0, output
    status, facts = parse_http(response)
    assert status == 200
    assert facts["SSL_TLS_SNI"] == "localhost"

    code, output, response = s_client(https_server.port, certs, "-noservername", request=GET_AND_CLOSE)
    assert code == 0, output
    status, facts = parse_http(response)
    assert status == 200
    assert "SSL_TLS_SNI" not in facts  # no name asked for, none made up


# -- requests -----------------------------------------------------------------------------------------------------


def test_requests_with_a_client_certificate(certs: Certificates) -> None:
    store = certificate_store(certs, ca_certs=str(certs.ca_pem), client_cert="required")
    with ServerThread(app, certificates=store) as server:
        response = requests.get(f"{server.url}/me", verify=str(certs.ca_pem), cert=str(certs.client_cert),
                                timeout=TIMEOUT)  # fmt: skip
        assert response.status_code == 200
        facts = response.json()
        assert facts["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert facts["SSL_CLIENT_S_DN"] == certs.client_subject

        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
            requests.get(f"{server.url}/me", verify=str(certs.ca_pem), timeout=TIMEOUT)


def test_requests_keep_alive_over_one_tls_connection(https_thread: ServerThread, certs: Certificates) -> None:
    with requests.Session() as session:
        ports = set()
        for index in range(50):
            # verify= on each call: a session's own .verify loses to REQUESTS_CA_BUNDLE (requests issue 3829).
            response = session.get(f"{https_thread.url}/n/{index}", verify=str(certs.ca_pem), timeout=TIMEOUT)
            assert response.status_code == 200
            facts = response.json()
            assert facts["path"] == f"/n/{index}"
            assert facts["HTTPS"] == "on"
            ports.add(facts["remote_port"])
    assert len(ports) == 1, f"the 50 requests came over {len(ports)} connections"


def test_requests_rejects_a_server_from_another_ca(https_thread: ServerThread, tmp_path: Path) -> None:
    stranger = make_certificates(tmp_path / "other")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https_thread.url, verify=str(stranger.ca_pem), timeout=TIMEOUT)


# -- Flask and our framework --------------------------------------------------------------------------------------


def make_flask_app(secure_cookie: bool) -> Callable:
    from flask import Flask, jsonify, request, session, url_for

    flask_app = Flask(__name__)
    flask_app.config.update(SECRET_KEY="test secret", SESSION_COOKIE_SECURE=secure_cookie)

    @flask_app.get("/facts")
    def facts() -> Any:
        return jsonify(
            is_secure=request.is_secure,
            scheme=request.scheme,
            url=request.url,
            external=url_for("facts", _external=True),
        )

    @flask_app.get("/login")
    def login() -> Any:
        session["user"] = "alice"
        return "logged in"

    return flask_app


def cookie_attributes(set_cookie: str) -> set[str]:
    """The attribute names of one Set-Cookie value, in lower case (``secure``, ``httponly``, ``path``...)."""
    return {part.split("=")[0].strip().lower() for part in set_cookie.split(";")[1:]}


@pytest.mark.parametrize("secure_cookie", [False, True])
def test_flask_over_https(certs: Certificates, secure_cookie: bool) -> None:
    pytest.importorskip("flask")
    with ServerThread(make_flask_app(secure_cookie), certificates=certificate_store(certs)) as server:
        facts = requests.get(f"{server.url}/facts", verify=str(certs.ca_pem), timeout=TIMEOUT).json()
        assert facts["is_secure"] is True
        assert facts["scheme"] == "https"
        assert facts["url"] == f"{server.url}/facts"
        assert facts["external"] == f"{server.url}/facts"

        login = requests.get(f"{server.url}/login", verify=str(certs.ca_pem), timeout=TIMEOUT)
        assert login.status_code == 200
        cookies = login.raw.headers.getlist("Set-Cookie")
        assert len(cookies) == 1 and cookies[0].startswith("session="), cookies
        # Flask marks its session cookie Secure only when configured to, HTTPS or not.
        assert ("secure" in cookie_attributes(cookies[0])) is secure_cookie, cookies[0]


def make_framework_app() -> Callable:
    from framework import App

    framework_app = App(__name__, secret_key="test secret")

    @framework_app.route("/login")
    def login(request: Any) -> str:
        request.session["user"] = "alice"
        return f"logged in over {request.scheme}"

    return framework_app


@pytest.mark.parametrize("over_https", [True, False])
def test_framework_session_cookie_is_secure_over_https_only(certs: Certificates, over_https: bool) -> None:
    store = certificate_store(certs) if over_https else None
    with ServerThread(make_framework_app(), certificates=store) as server:
        login = requests.get(f"{server.url}/login", verify=str(certs.ca_pem), timeout=TIMEOUT)
        assert login.status_code == 200
        assert login.text == f"logged in over {'https' if over_https else 'http'}"
        cookies = login.raw.headers.getlist("Set-Cookie")
        assert len(cookies) == 1 and cookies[0].startswith("session="), cookies
        attributes = cookie_attributes(cookies[0])
        assert "httponly" in attributes
        assert ("secure" in attributes) is over_https, cookies[0]


# -- pipelining ---------------------------------------------------------------------------------------------------


def test_pipelining_over_tls(https_thread: ServerThread, certs: Certificates) -> None:
    requests_out = []
    bodies = {}
    for index in range(20):
        if index % 5 == 4:  # a POST with a body now and then, so request boundaries fall inside records
            body = random.Random(index).randbytes(1000 + index)
            bodies[index] = body
            head = f"POST /pipe/{index} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
            requests_out.append(head.encode() + body)
        else:
            requests_out.append(f"GET /pipe/{index} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    context = certs.client_context()
    raw = socket.create_connection(("127.0.0.1", https_thread.port), timeout=TIMEOUT)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.sendall(b"".join(requests_out))  # all twenty at once
        buffer = bytearray()
        ports = set()
        for index in range(20):
            status, headers, body = read_response(sock, buffer)
            assert status == 200, (index, headers, body)
            facts = json.loads(body)
            assert facts["path"] == f"/pipe/{index}"  # in order
            if index in bodies:
                assert facts["method"] == "POST"
                assert facts["body_sha256"] == sha256(bodies[index])
            else:
                assert facts["method"] == "GET"
            ports.add(facts["remote_port"])
        assert ports == {str(sock.getsockname()[1])}  # one connection, and the app saw our port
        assert buffer == b""  # nothing more than the twenty answers

        # The connection is still usable after the batch, and closes cleanly on request.
        sock.sendall(b"GET /last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(sock, buffer)
        assert status == 200 and json.loads(body)["path"] == "/last"
        try:
            assert sock.recv(1) == b""  # close_notify, then EOF
        except ssl.SSLEOFError:
            pytest.fail("the server closed without close_notify")
