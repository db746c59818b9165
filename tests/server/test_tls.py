"""HTTPS on the event loop: the handshake and its deadline, what the application sees, the hardening guarantees
over TLS (slow clients, pipelining, backpressure), client certificates, and certificate reloads.

In-process servers (``ServerThread``) with certificates from a test CA (``tests.tls_certs``); the real-peer
tests (curl, openssl s_client, Flask) are in ``tests/interop/test_tls_peers.py`` and the command line's errors
in ``test_tls_cli.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from server.config import Config
from server.engine import Engine
from server.http import Request, valid_host
from server.listeners import open_listener, parse_bind, resolve_schemes
from server.redirect import HTTPSRedirect
from server.tls import (
    CertificateStore,
    TLSConfigError,
    TLSFiles,
    TLSSession,
    distinguished_name,
    valid_server_name,
)
from tests.support import (
    TIMEOUT,
    AnswerOnCue,
    ServerProcess,
    ServerThread,
    read_response,
    recv_until_closed,
    wait_for,
)
from tests.tls_certs import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def store(certs: Certificates, **options: str) -> CertificateStore:
    return CertificateStore(TLSFiles(str(certs.cert), str(certs.key), **options))


def environ_app(environ, start_response):
    """Answers with the environ's str values as JSON, and echoes the length of any body."""
    body = environ["wsgi.input"].read()
    facts = {key: value for key, value in environ.items() if isinstance(value, str)}
    facts["body_length"] = str(len(body))
    facts["pid"] = str(os.getpid())
    data = json.dumps(facts).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def tls_connect(server: ServerThread, certs: Certificates, **options) -> ssl.SSLSocket:
    context = certs.client_context()
    for name, value in options.items():
        setattr(context, name, value)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    return context.wrap_socket(sock, server_hostname="localhost")


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


# -- what the application sees --------------------------------------------------------------------------------------


def test_an_https_request_reaches_the_app_with_https_facts(certs):
    with ServerThread(environ_app, certificates=store(certs)) as server:
        response = requests.get(f"https://localhost:{server.port}/x?y=1", verify=str(certs.ca_pem), timeout=TIMEOUT)
    assert response.status_code == 200
    seen = response.json()
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTPS"] == "on"
    assert seen["SSL_PROTOCOL"] == "TLSv1.3"
    assert seen["SSL_CIPHER"]
    assert seen["SSL_TLS_SNI"] == "localhost"
    assert seen["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in seen
    assert seen["SERVER_PORT"] == str(server.port)


def sni_seen_by_the_app(certs: Certificates, server_name: str) -> dict:
    """The environ of a request over a connection whose client sent ``server_name`` in its SNI extension (the
    certificate's chain is checked, its names not: the test is of what the client may send)."""
    context = certs.client_context()
    context.check_hostname = False
    with ServerThread(environ_app, certificates=store(certs)) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        with context.wrap_socket(raw, server_hostname=server_name) as sock:
            sock.sendall(get(extra="Connection: close\r\n"))
            response = recv_until_closed(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return json.loads(body)


@pytest.mark.parametrize("name", ["bad\r\nname", "<script>alert(1)</script>", "a b", "a/b", "x:443"])
def test_a_server_name_that_is_not_a_host_name_does_not_reach_the_app(certs, name):
    """OpenSSL passes on whatever bytes the client put in SNI; an app may log SSL_TLS_SNI or show it."""
    assert "SSL_TLS_SNI" not in sni_seen_by_the_app(certs, name)


def test_a_host_name_in_sni_reaches_the_app_as_sent(certs):
    assert sni_seen_by_the_app(certs, "WWW.exa_mple-1.test")["SSL_TLS_SNI"] == "WWW.exa_mple-1.test"
    assert sni_seen_by_the_app(certs, "fully.qualified.")["SSL_TLS_SNI"] == "fully.qualified"


@given(st.text(max_size=300))
def test_a_server_name_is_kept_only_when_it_is_a_dns_host_name(name):
    kept = valid_server_name(name)
    assert kept in (None, name, name[:-1])
    if kept is not None:
        labels = kept.split(".")
        assert len(kept) <= 253 and all(0 < len(label) <= 63 for label in labels)
        assert all(c.isascii() and (c.isalnum() or c in "-_") for label in labels for c in label)
        assert valid_host(kept)  # a name the HTTP parser would take in Host as well


def test_an_absolute_form_target_cannot_make_a_tls_request_plain(certs):
    with ServerThread(environ_app, certificates=store(certs)) as server, tls_connect(server, certs) as sock:
        sock.sendall(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200
    assert json.loads(body)["wsgi.url_scheme"] == "https"


def test_alpn_selects_http_1_1(certs):
    with ServerThread(environ_app, certificates=store(certs)) as server:
        context = certs.client_context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        with context.wrap_socket(server.connect(), server_hostname="localhost") as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"
            sock.sendall(get())
            assert read_response(sock)[0] == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_2_is_accepted_and_1_1_refused_by_the_server(certs, caplog):
    with ServerThread(environ_app, certificates=store(certs)) as server:
        with tls_connect(server, certs, maximum_version=ssl.TLSVersion.TLSv1_2) as sock:
            assert sock.version() == "TLSv1.2"
            sock.sendall(get())
            assert read_response(sock)[0] == 200
        # The client is made willing (its security level lowered) so that the refusal is the server's.
        old = certs.client_context()
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with caplog.at_level(logging.INFO, logger="server.connection"):
            with pytest.raises(ssl.SSLError, match=r"(?i)protocol version|unsupported protocol"):
                old.wrap_socket(server.connect(), server_hostname="localhost")
            wait_for(lambda: "TLS handshake failed" in caplog.text)
        with tls_connect(server, certs) as sock:  # and it goes on serving
            sock.sendall(get())
            assert read_response(sock)[0] == 200


# -- the handshake's deadline and garbage ----------------------------------------------------------------------------


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closes ``sock`` within ``seconds`` (reading and dropping whatever it sends)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def memory_client(certs: Certificates) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLS client trusting ``certs``, over memory buffers: (client, what it reads, what it wrote)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost"), incoming, outgoing


def handshake_over(
    sock: socket.socket,
    client: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    send_finished: bool = True,
) -> None:
    """Complete a memory client's handshake over a real socket, by hand (so that what it sends next is ours to
    shape: a record altered, or two messages in one send). ``send_finished=False`` leaves the client's last
    flight in ``outgoing``, to go out with what follows it."""
    while True:
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    if send_finished:
        sock.sendall(outgoing.read())


def client_hello(certs: Certificates) -> bytes:
    """The bytes a real client opens its handshake with."""
    client, _, outgoing = memory_client(certs)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_a_client_that_never_completes_the_handshake_is_closed_at_the_deadline(certs):
    calls = []

    def app(environ, start_response):
        calls.append(1)
        return environ_app(environ, start_response)

    with ServerThread(app, certificates=store(certs), tls_handshake_timeout=0.3, threads=1) as server:
        silent = server.connect()
        half = server.connect()
        half.sendall(client_hello(certs)[:20])  # a ClientHello cut short
        started = time.monotonic()
        assert closed_within(silent, 5.0)
        assert closed_within(half, 5.0)
        assert time.monotonic() - started < 3.0
        wait_for(lambda: not server.engine.connections)
    assert calls == []  # no application thread was ever involved


def test_silent_connections_hold_no_thread(certs):
    """Fifty clients that connect and say nothing, with one application thread: a real request still gets in."""
    with ServerThread(environ_app, certificates=store(certs), threads=1) as server:
        idle = [server.connect() for _ in range(50)]
        try:
            wait_for(lambda: len(server.engine.connections) == 50)
            # Nor a TLS session: that is made when a client's first bytes arrive.
            assert all(conn.tls is None for conn in list(server.engine.connections.values()))
            response = requests.get(f"https://localhost:{server.port}/", verify=str(certs.ca_pem), timeout=5)
            assert response.status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_plain_http_on_the_tls_port_gets_a_plain_400(certs, caplog):
    with ServerThread(environ_app, certificates=store(certs)) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, headers, body = read_response(sock)
        assert closed_within(sock, 5.0)
    assert status == 400
    assert headers.get("connection") == "close"
    assert b"HTTPS" in body


def test_bytes_that_are_neither_tls_nor_http_are_closed_quietly(certs, caplog):
    with ServerThread(environ_app, certificates=store(certs)) as server:
        with caplog.at_level(logging.INFO), server.connect() as sock:
            sock.sendall(b"\x00\x01\x02garbage" * 10)
            assert closed_within(sock, 5.0)
        assert "Traceback" not in caplog.text
        with tls_connect(server, certs) as sock:
            sock.sendall(get())
            assert read_response(sock)[0] == 200


# -- the hardening guarantees, over TLS ------------------------------------------------------------------------------


def test_pipelined_requests_over_tls_are_answered_in_order(certs):
    with ServerThread(environ_app, certificates=store(certs)) as server, tls_connect(server, certs) as sock:
        sock.sendall(b"".join(get(f"/{i}") for i in range(20)))
        buffer = bytearray()
        paths = [json.loads(read_response(sock, buffer)[2])["PATH_INFO"] for _ in range(20)]
    assert paths == [f"/{i}" for i in range(20)]


def test_a_slow_request_head_over_tls_gets_408(certs):
    server = ServerThread(environ_app, certificates=store(certs), header_timeout=0.3)
    with server, tls_connect(server, certs) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: loc")
        status, _, _ = read_response(sock)
    assert status == 408


def test_a_large_body_over_tls_reaches_the_app_whole(certs):
    body = os.urandom(3 * 1024 * 1024)
    with ServerThread(environ_app, certificates=store(certs), body_spool_bytes=64 * 1024) as server:
        response = requests.post(
            f"https://localhost:{server.port}/upload", data=body, verify=str(certs.ca_pem), timeout=TIMEOUT
        )
    assert response.json()["body_length"] == str(len(body))


def test_a_static_file_over_tls_to_a_slow_reader_arrives_whole(certs, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 123)
    (tmp_path / "big.bin").write_bytes(data)
    with ServerThread(environ_app, certificates=store(certs), static=(f"/files={tmp_path}",)) as server:
        with tls_connect(server, certs) as sock:
            sock.sendall(get("/files/big.bin"))
            received = bytearray()
            while len(received) < 256 * 1024:  # read a little, slowly enough for the server's queue to fill
                received += sock.recv(16 * 1024)
            engine_conn = next(iter(server.engine.connections.values()))
            # The loop holds at most one encrypted chunk for this reader, not the file.
            assert len(engine_conn.out) <= 2 * 256 * 1024
            while True:
                chunk = sock.recv(1 << 20)
                received += chunk
                head, _, rest = bytes(received).partition(b"\r\n\r\n")
                if len(rest) >= len(data):
                    break
        assert rest == data
        assert b"200 OK" in head


def test_ranges_and_validators_work_over_tls(certs, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"0123456789" * 100)
    with ServerThread(environ_app, certificates=store(certs), static=(f"/files={tmp_path}",)) as server:
        url = f"https://localhost:{server.port}/files/a.txt"
        first = requests.get(url, verify=str(certs.ca_pem), timeout=TIMEOUT)
        part = requests.get(url, headers={"Range": "bytes=10-19"}, verify=str(certs.ca_pem), timeout=TIMEOUT)
        again = requests.get(
            url, headers={"If-None-Match": first.headers["ETag"]}, verify=str(certs.ca_pem), timeout=TIMEOUT
        )
    assert (first.status_code, part.status_code, again.status_code) == (200, 206, 304)
    assert part.content == b"0123456789"


def test_connection_close_ends_with_close_notify(certs):
    """The client can tell a complete response from a cut connection: a clean TLS close, not a bare FIN."""
    with ServerThread(environ_app, certificates=store(certs)) as server:
        context = certs.client_context()
        raw = server.connect()
        with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as sock:
            sock.sendall(get(extra="Connection: close\r\n"))
            received = bytearray()
            while chunk := sock.recv(65536):  # SSLEOFError here would mean no close_notify
                received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK")


def test_a_worker_ends_a_closing_response_with_close_notify_then_fin_without_waiting_for_the_loop(certs):
    """As over plain HTTP (see test_live): the end of the stream follows the response at once, and in order: the
    close_notify that vouches for the response, then the FIN."""
    app = AnswerOnCue(lambda: server)
    with ServerThread(app, certificates=store(certs), threads=2) as server:
        context = certs.client_context()
        with context.wrap_socket(server.connect(), server_hostname="localhost", suppress_ragged_eofs=False) as sock:
            sock.sendall(get(extra="Connection: close\r\n"))
            with app.hold_the_loop():
                received = bytearray()
                while chunk := sock.recv(65536):  # SSLEOFError: no close_notify; a timeout: none yet
                    received += chunk
                plain = sock.unwrap()  # (says our close_notify, which the held server cannot read yet)
                assert plain.recv(1) == b""  # the FIN, behind the close_notify (else: a timeout here)
    assert received.startswith(b"HTTP/1.1 200 OK") and received.endswith(b"\r\n\r\nok")


# -- client certificates ---------------------------------------------------------------------------------------------


def test_an_optional_client_certificate_is_verified_and_named(certs):
    certificates = store(certs, ca_certs=str(certs.ca_pem), client_cert="optional")
    with ServerThread(environ_app, certificates=certificates) as server:
        url = f"https://localhost:{server.port}/"
        anonymous = requests.get(url, verify=str(certs.ca_pem), timeout=TIMEOUT).json()
        alice = requests.get(url, verify=str(certs.ca_pem), cert=str(certs.client_cert), timeout=TIMEOUT).json()
    assert anonymous["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in anonymous
    assert alice["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert alice["SSL_CLIENT_S_DN"] == certs.client_subject
    assert alice["SSL_CLIENT_I_DN"].startswith("OU=Testing CA")


def test_a_required_client_certificate_refuses_clients_without_one_or_with_a_stranger(certs, tmp_path):
    stranger = make_certificates(tmp_path / "other")  # signed by a CA the server does not trust
    certificates = store(certs, ca_certs=str(certs.ca_pem), client_cert="required")
    with ServerThread(environ_app, certificates=certificates) as server:
        url = f"https://localhost:{server.port}/"
        for cert in (None, str(stranger.client_cert)):
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(url, verify=str(certs.ca_pem), cert=cert, timeout=TIMEOUT)
        alice = requests.get(url, verify=str(certs.ca_pem), cert=str(certs.client_cert), timeout=TIMEOUT)
    assert alice.json()["SSL_CLIENT_S_DN"] == certs.client_subject


# -- redirect to HTTPS -----------------------------------------------------------------------------------------------


def test_plain_listeners_redirect_to_the_https_one(certs):
    plain = open_listener(parse_bind("http://127.0.0.1:0"))
    secure = open_listener(parse_bind("127.0.0.1:0"))
    listeners = [plain, secure]
    resolve_schemes(listeners, have_certificate=True)
    config = Config(redirect_to_https=True)
    engine = Engine(config, environ_app, listeners, certificates=store(certs))
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        plain_port, secure_port = plain.sock.getsockname()[1], secure.sock.getsockname()[1]
        response = requests.post(
            f"http://localhost:{plain_port}/form?a=1", data=b"x" * 10, allow_redirects=False, timeout=TIMEOUT
        )
        assert response.status_code == 308
        assert response.headers["Location"] == f"https://localhost:{secure_port}/form?a=1"
        # requests repeats a POST with its body across a 308.
        followed = requests.post(
            f"http://localhost:{plain_port}/form?a=1", data=b"x" * 10, verify=str(certs.ca_pem), timeout=TIMEOUT
        )
        assert followed.json()["REQUEST_METHOD"] == "POST"
        assert followed.json()["body_length"] == "10"
        assert followed.json()["wsgi.url_scheme"] == "https"
        # An HTTP/1.0 client that asked to keep the connection is told it is kept (else it would close it).
        with socket.create_connection(("127.0.0.1", plain_port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(sock)
        assert (status, headers.get("connection")) == (308, "keep-alive")
    finally:
        engine.reactor.call_soon_threadsafe(engine.shutdown, False)
        thread.join(TIMEOUT)
        for listener in listeners:
            listener.sock.close()


def request_for(host: str, path: str = "/", query: str = "") -> Request:
    return Request("GET", path, path, query, "HTTP/1.1", [], host, None, True, 0, False, False)


def test_the_redirect_location():
    assert HTTPSRedirect(443).location(request_for("example.org:80", "/a", "b=1"), "0.0.0.0") == (
        "https://example.org/a?b=1"
    )
    assert HTTPSRedirect(8443).location(request_for("[::1]:8080"), "::") == "https://[::1]:8443/"
    assert HTTPSRedirect(8443).location(request_for(""), "::1") == "https://[::1]:8443/"
    assert HTTPSRedirect(443).location(request_for("example.org", "*"), "x") == "https://example.org/"


# -- certificate reloads ---------------------------------------------------------------------------------------------


def served_certificate(port: int, trust: list[Certificates]) -> bytes:
    """The certificate (DER) the server presents to a new connection now."""
    context = ssl.create_default_context()
    for certs in trust:
        context.load_verify_locations(cafile=str(certs.ca_pem))
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with raw, context.wrap_socket(raw, server_hostname="localhost") as sock:
        certificate = sock.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def der(certs: Certificates) -> bytes:
    """The server certificate of ``certs``, as served."""
    text = certs.cert.read_text()
    first = text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


def install(source: Certificates, live: Path) -> None:
    """Put ``source``'s certificate and key where the server reads them, each replaced atomically (as certbot)."""
    for name, path in (("cert.pem", source.cert), ("key.pem", source.key)):
        staged = live / f".{name}.new"
        shutil.copyfile(path, staged)
        os.replace(staged, live / name)


@pytest.fixture
def renewals(tmp_path: Path) -> tuple[Certificates, Certificates, Path]:
    old, new = make_certificates(tmp_path / "old"), make_certificates(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    install(old, live)
    return old, new, live


def test_a_renewed_certificate_is_picked_up_without_dropping_connections(renewals, caplog):
    old, new, live = renewals
    certificates = CertificateStore(TLSFiles(str(live / "cert.pem"), str(live / "key.pem")))
    with ServerThread(environ_app, certificates=certificates, cert_check_interval=0.05) as server:
        assert served_certificate(server.port, [old, new]) == der(old)
        kept = tls_connect(server, old)  # opened before the renewal, kept alive across it
        kept.sendall(get())
        assert read_response(kept)[0] == 200
        with caplog.at_level(logging.INFO, logger="server.tls"):
            install(new, live)
            wait_for(lambda: served_certificate(server.port, [old, new]) == der(new))
        assert "loaded the certificate" in caplog.text
        kept.sendall(get("/again"))
        assert read_response(kept)[0] == 200
        kept.close()


def test_a_renewal_that_cannot_be_loaded_keeps_the_old_certificate(renewals, caplog, tmp_path):
    old, new, live = renewals
    certificates = CertificateStore(TLSFiles(str(live / "cert.pem"), str(live / "key.pem")))
    with ServerThread(environ_app, certificates=certificates, cert_check_interval=0.05) as server:
        with caplog.at_level(logging.INFO, logger="server.tls"):
            shutil.copyfile(new.cert, live / ".cert.new")
            os.replace(live / ".cert.new", live / "cert.pem")  # the new certificate, but still the old key
            wait_for(lambda: "cannot be loaded" in caplog.text)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # one line, not one per check
        assert "does not match" in warnings[0].getMessage()
        assert served_certificate(server.port, [old, new]) == der(old)
        install(new, live)  # the key follows: now it loads
        wait_for(lambda: served_certificate(server.port, [old, new]) == der(new))


def test_a_handshake_finished_during_a_stop_keeps_the_stops_grace(certs):
    """A connection accepted but silent when the stop begins gets a moment (1 s) to send its request; finishing
    its TLS handshake meanwhile must not give it a whole head timeout again (the stop took 8.8 s with 8)."""
    server = ServerThread(environ_app, certificates=store(certs), header_timeout=8.0).__enter__()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    wait_for(lambda: len(server.engine.connections) == 1)
    stopping = time.monotonic()
    server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)
    wait_for(lambda: server.engine.stopping)
    with raw, certs.client_context().wrap_socket(raw, server_hostname="localhost"):
        wait_for(lambda: not server._thread.is_alive())  # the request never comes
        took = time.monotonic() - stopping
    server.listener.sock.close()
    assert took < 4.0, f"the stop took {took:.1f} s"


def test_a_renewal_refused_for_its_permissions_is_tried_again_after_a_chmod(renewals, monkeypatch):
    """The warning tells the operator to make the files readable; a chmod changes neither their contents nor
    their modification time, only their ctime, and that must be enough for the next check to try again."""
    from server import tls

    _old, new, live = renewals
    store = CertificateStore(TLSFiles(str(live / "cert.pem"), str(live / "key.pem")))
    before = store.context
    real_build = tls.build_context

    def build_unless_unreadable(files):  # as root every file is readable: the refusal is simulated
        if not os.stat(files.keyfile).st_mode & 0o444:
            raise TLSConfigError(f"cannot read it: permission denied: {files.keyfile}")
        return real_build(files)

    monkeypatch.setattr(tls, "build_context", build_unless_unreadable)
    install(new, live)
    os.chmod(live / "key.pem", 0o000)
    assert not store.check() and not store.check()  # settled, tried once, refused
    os.chmod(live / "key.pem", 0o600)
    assert not store.check()  # a change seen: it waits one check for the files to settle
    assert store.check()
    assert store.context is not before and not store.check()


def test_sighup_reloads_a_single_process_under_load_without_a_failed_request(renewals):
    old, new, live = renewals
    trust = certs_bundle(live.parent, [old, new])
    args = ["tests.server.test_tls:environ_app", "--bind", "127.0.0.1:0", "--cert-check-interval", "0"]
    args += ["--certfile", str(live / "cert.pem"), "--keyfile", str(live / "key.pem")]
    with ServerProcess(*args, bind=False) as server:
        assert server.url.startswith("https://")
        failures: list[BaseException] = []
        done = threading.Event()
        count = [0]

        def load() -> None:
            with requests.Session() as session:
                while not done.is_set():
                    try:
                        # A new connection now and then, so that handshakes happen during the reload too.
                        if count[0] % 5 == 0:
                            session.close()
                        response = session.get(f"https://localhost:{server.port}/", verify=trust, timeout=TIMEOUT)
                        assert response.status_code == 200
                    except BaseException as error:  # every failure is reported below
                        failures.append(error)
                    count[0] += 1

        clients = [threading.Thread(target=load) for _ in range(4)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: count[0] > 50)
            install(new, live)
            server.signal(signal.SIGHUP)
            wait_for(lambda: served_certificate(server.port, [old, new]) == der(new))
            before = count[0]
            wait_for(lambda: count[0] > before + 50)
        finally:
            done.set()
            for client in clients:
                client.join(TIMEOUT)
        assert failures == []
        assert server.proc is not None and server.proc.poll() is None  # SIGHUP did not kill it
    assert "loaded the certificate" in server.output()


def test_sighup_under_workers_starts_fresh_workers_with_the_new_certificate(renewals):
    old, new, live = renewals
    args = ["tests.server.test_tls:environ_app", "--bind", "127.0.0.1:0", "--workers", "2"]
    args += ["--certfile", str(live / "cert.pem"), "--keyfile", str(live / "key.pem")]
    with ServerProcess(*args, bind=False) as server:
        assert served_certificate(server.port, [old, new]) == der(old)
        install(new, live)
        server.signal(signal.SIGHUP)
        # Each new connection may land on either worker: wait until several in a row show the new certificate.
        wait_for(lambda: all(served_certificate(server.port, [old, new]) == der(new) for _ in range(6)))


def test_sighup_under_workers_with_a_bad_renewal_keeps_the_old_certificate_and_says_so_once(renewals):
    old, new, live = renewals
    args = ["tests.server.test_tls:environ_app", "--bind", "127.0.0.1:0", "--workers", "2"]
    args += ["--certfile", str(live / "cert.pem"), "--keyfile", str(live / "key.pem")]
    with ServerProcess(*args, bind=False) as server:
        # Both first workers forked before the SIGHUP, or one forked late (on a busy machine) would be counted
        # among the fresh ones below.
        wait_for(lambda: server.output().count("supervisor: started worker") >= 2)
        shutil.copyfile(new.cert, live / ".cert.new")
        os.replace(live / ".cert.new", live / "cert.pem")  # a certificate without its key
        server.signal(signal.SIGHUP)
        wait_for(lambda: server.output().count("supervisor: started worker") >= 4)  # the fresh workers are up
        assert all(served_certificate(server.port, [old, new]) == der(old) for _ in range(6))
    # The supervisor tried the renewal before forking; the fresh workers inherited its verdict instead of each
    # trying again. (A first worker still starting when the files changed may report them itself.)
    output = server.output()
    supervisor = re.search(r"\[(\d+)\] \[INFO\] serving", output).group(1)
    after_sighup = output[output.index("SIGHUP, replacing") :]
    fresh = re.findall(r"started worker (\d+)", after_sighup)
    complaints = re.findall(r"\[(\d+)\] \[WARNING\] keeping the certificate in use", after_sighup)
    assert complaints.count(supervisor) == 1, output
    assert len(fresh) == 2 and not set(fresh) & set(complaints), output


def certs_bundle(directory: Path, certs: list[Certificates]) -> str:
    bundle = directory / "trust.pem"
    bundle.write_bytes(b"".join(c.ca_pem.read_bytes() for c in certs))
    return str(bundle)


# -- the sans-IO session and its helpers ------------------------------------------------------------------------------


def handshake_pair(certs: Certificates) -> tuple[TLSSession, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    session = TLSSession(store(certs).context)
    client, incoming, outgoing = memory_client(certs)
    for _ in range(5):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        session.handshake(outgoing.read())
        incoming.write(session.outgoing())
    client.do_handshake()
    assert session.established
    return session, client, incoming, outgoing


def test_the_session_decrypts_records_split_anywhere(certs):
    session, client, _, outgoing = handshake_pair(certs)
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    records = outgoing.read()
    plaintext = b""
    for i in range(len(records)):
        plaintext += session.decrypt(records[i : i + 1]) or b""
    assert plaintext == b"GET / HTTP/1.1\r\n\r\n"


def test_the_session_reports_close_notify(certs):
    session, client, _, outgoing = handshake_pair(certs)
    with pytest.raises(ssl.SSLWantReadError):
        client.unwrap()
    assert session.decrypt(outgoing.read()) is None


def test_data_followed_by_close_notify_in_one_read_is_kept(certs):
    session, client, _, outgoing = handshake_pair(certs)
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ssl.SSLWantReadError):
        client.unwrap()
    assert session.decrypt(outgoing.read()) == b"GET / HTTP/1.1\r\n\r\n"
    assert session.peer_closed


@pytest.mark.parametrize("threads", [4, 0])
@pytest.mark.parametrize("request_bytes", [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"GET / HTTP/1.1\r\nHo"])
@pytest.mark.parametrize("with_the_finished", [False, True], ids=["after-the-handshake", "with-the-finished"])
def test_close_notify_behind_a_request_in_one_read_ends_the_connection_at_once(
    certs, threads, request_bytes, with_the_finished
):
    """A client that sends its request and close_notify together and keeps its TCP side open is done: a whole
    request is answered, then the connection ends with our close_notify, at once, not after the keep-alive
    timeout (5 s); an unfinished one is not waited for until the head timeout (10 s). Also when the three come in
    one send with the client's Finished, read by the handshake's code (which did not look for the close_notify)."""
    with ServerThread(environ_app, certificates=store(certs), threads=threads) as server:
        client, incoming, outgoing = memory_client(certs)
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            handshake_over(sock, client, incoming, outgoing, send_finished=not with_the_finished)
            client.write(request_bytes)
            with pytest.raises(ssl.SSLWantReadError):
                client.unwrap()  # our close_notify, in the same send as the request
            sock.sendall(outgoing.read())
            started = time.monotonic()
            received = b""
            while chunk := sock.recv(65536):  # until the server closes its side
                received += chunk
            took = time.monotonic() - started
        incoming.write(received)
        plaintext = b""
        with contextlib.suppress(ssl.SSLZeroReturnError, ssl.SSLWantReadError):
            while piece := client.read(65536):
                plaintext += piece
    assert took < 2.0, f"the server closed after {took:.1f} s"
    assert plaintext.startswith(b"HTTP/1.1 200 ") == request_bytes.endswith(b"\r\n\r\n")


@given(cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=12))
def test_a_client_handshake_cut_into_any_pieces_completes(certs, cuts):
    """However the network splits the client's flights, the handshake completes and the request is read."""
    session = TLSSession(store(certs).context)
    client, incoming, outgoing = memory_client(certs)
    for _ in range(6):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        data = outgoing.read()
        pieces, start = [], 0
        for cut in cuts:
            pieces.append(data[start : start + cut])
            start += cut
        pieces.append(data[start:])
        for piece in pieces:
            if piece and not session.established:
                session.handshake(piece)
            elif piece:
                assert session.decrypt(piece) == b""
        incoming.write(session.outgoing())
    assert session.established
    client.write(b"ping")
    assert session.decrypt(outgoing.read()) == b"ping"


@given(garbage=st.binary(min_size=1, max_size=2048))
def test_any_bytes_on_the_tls_port_leave_the_server_serving(tls_server, garbage):
    server, certs = tls_server
    with server.connect(timeout=5.0) as sock:
        try:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            closed_within(sock, 5.0)
        except OSError:
            pass  # reset by the server: as good as closed
    with tls_connect(server, certs) as sock:
        sock.sendall(get())
        assert read_response(sock)[0] == 200


@pytest.fixture(scope="module")
def tls_server(certs):
    with ServerThread(environ_app, certificates=store(certs), tls_handshake_timeout=2.0) as server:
        yield server, certs


def test_distinguished_names_are_escaped_as_rfc_4514_says():
    subject = ((("countryName", "NL"),), (("organizationName", "Smith, Jones & Co"),), (("commonName", " #x"),))
    assert distinguished_name(subject) == "CN=\\ #x,O=Smith\\, Jones & Co,C=NL"


# -- found in review: truncation, buffer growth, one line per renewal ----------------------------------------------


def failing_stream_app(environ, start_response):
    """Sends its head and half its body, then fails: the response on the wire is cut short."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"first half of the body..."
        raise RuntimeError("the second half never comes")

    return body()


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_a_response_cut_short_does_not_end_with_close_notify(certs, version, caplog):
    """close_notify would tell the client the response was whole; after a failure mid-body it must not come."""
    with ServerThread(failing_stream_app, certificates=store(certs)) as server:
        context = certs.client_context()
        raw = server.connect()
        with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as sock:
            sock.sendall(f"GET / {version}\r\nHost: localhost\r\n\r\n".encode())
            received = bytearray()
            with pytest.raises(ssl.SSLEOFError):  # a bare end of the stream: detectably cut
                while chunk := sock.recv(65536):
                    received += chunk
    assert b"first half of the body..." in received


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _malloc_trim() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not os.path.exists("/proc/self/status") or not _malloc_trim(), reason="Linux and glibc only")
def test_sessions_do_not_keep_their_largest_burst(certs):
    """OpenSSL's memory buffers keep the largest size they ever held, for the life of the connection; fed in
    slices, they stay small. Before the slices, each session that had sent a 4 MiB response and received a 256 KiB
    upload kept about 4.5 MiB (measured here: 4,464 KiB per session, against 380 KiB with slices)."""
    sessions = [handshake_pair(certs)]  # the first one loads OpenSSL's tables: not counted
    _malloc_trim()
    before = rss_kib(os.getpid())
    body, upload = b"x" * 4 * 1024 * 1024, b"u" * 256 * 1024
    for _ in range(10):
        session, client, incoming, outgoing = handshake_pair(certs)
        records = session.encrypt(body)
        for start in range(0, len(records), 65536):  # the client reads in small pieces: its buffers stay small
            incoming.write(records[start : start + 65536])
            with contextlib.suppress(ssl.SSLWantReadError):
                while client.read(65536):
                    pass
        del records
        client.write(upload)
        while piece := outgoing.read(65536):
            session.decrypt(piece)
        sessions.append((session, client, incoming, outgoing))
    _malloc_trim()
    per_session = (rss_kib(os.getpid()) - before) / 10
    assert per_session < 2048, f"{per_session:.0f} KiB per session"


def test_a_bad_renewal_found_by_the_workers_checks_is_reported_once(renewals):
    old, new, live = renewals
    args = ["tests.server.test_tls:environ_app", "--bind", "127.0.0.1:0", "--workers", "3", "--log-level", "debug"]
    args += ["--certfile", str(live / "cert.pem"), "--keyfile", str(live / "key.pem"), "--cert-check-interval", "0.1"]
    with ServerProcess(*args, bind=False) as server:
        wait_for(lambda: server.output().count("supervisor: started worker") == 3)
        shutil.copyfile(new.cert, live / ".cert.new")
        os.replace(live / ".cert.new", live / "cert.pem")  # a certificate without its key
        # Every process notices (the workers at debug level); then exactly one warning has been said.
        wait_for(lambda: server.output().count("keeping the certificate in use") >= 4)
        output = server.output()
        assert served_certificate(server.port, [old, new]) == der(old)
    warnings = re.findall(r"\[(\d+)\] \[WARNING\] keeping the certificate in use", output)
    supervisor = re.search(r"\[(\d+)\] \[INFO\] serving", output)
    assert supervisor is not None
    assert warnings == [supervisor.group(1)], output


def test_distinguished_names_use_openssls_short_names_and_leave_equals_signs_alone():
    subject = ((("surname", "Smith"),), (("commonName", "a=b, c"),))
    assert distinguished_name(subject) == "CN=a=b\\, c,SN=Smith"


def test_large_writes_and_reads_go_through_the_session_in_slices(certs):
    session, client, incoming, outgoing = handshake_pair(certs)
    body = os.urandom(1024 * 1024 + 7)
    incoming.write(session.encrypt(body))
    received = bytearray()
    while len(received) < len(body):
        received += client.read(65536)
    assert received == body
    client.write(body)
    assert session.decrypt(outgoing.read()) == body


def test_a_certificate_gone_between_the_check_and_the_load_is_one_line(certs, monkeypatch, tmp_path):
    """A renewal swapping files at the wrong moment: the load fails with an OSError, reported like any bad file."""
    import server.tls

    missing = tmp_path / "gone.pem"
    monkeypatch.setattr(server.tls, "_check_pem_files", lambda files: None)  # the file was there when checked
    with pytest.raises(server.tls.TLSConfigError, match=r"cannot load the certificate .*gone\.pem"):
        server.tls.build_context(TLSFiles(str(missing), str(certs.key)))


@pytest.mark.parametrize("with_the_finished", [False, True], ids=["after-the-handshake", "with-the-finished"])
def test_a_record_that_does_not_decrypt_is_answered_with_an_alert(certs, with_the_finished, caplog):
    """The client learns why the connection ends (bad_record_mac), rather than seeing it cut; and the log says it.
    Also for a record that came in one send with the client's Finished (it was closed on without a word)."""
    caplog.set_level(logging.INFO, logger="server")
    with ServerThread(environ_app, certificates=store(certs)) as server, server.connect() as sock:
        client, incoming, outgoing = memory_client(certs)
        handshake_over(sock, client, incoming, outgoing, send_finished=not with_the_finished)
        finished = b"" if not with_the_finished else outgoing.read()
        client.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        record = bytearray(outgoing.read())
        record[-1] ^= 0xFF  # one flipped bit in the authentication tag
        sock.sendall(finished + record)
        incoming.write(recv_until_closed(sock))
        with pytest.raises(ssl.SSLError, match=r"(?i)alert"):
            while client.read(65536):
                pass
    assert "closing: TLS error" in caplog.text
