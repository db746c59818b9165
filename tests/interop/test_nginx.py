"""nginx in front of two instances of our server (one on TCP, one on a Unix socket), as docs/nginx.md describes.

The nginx here is the Debian package, run as an ordinary subprocess with every path inside the test's tmp_path
(``nginx -c CONF -p DIR``, ``daemon off``), on a free loopback port: it never touches the system's nginx, its
port 80, or its logs. The proxy directives are the ones docs/nginx.conf.example documents; a test below keeps
the two in step.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.interop.common import DOWNLOAD_SIZE
from tests.interop.conftest import APPS, load_app
from tests.support import ROOT, TIMEOUT, ServerProcess, ServerThread, read_response, wait_for

pytestmark = pytest.mark.timeout(60)

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")  # sbin: often not on PATH
OPENSSL = shutil.which("openssl")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian package 'nginx')")

TRUSTED = "127.0.0.1,unix"
CLIENT = "203.0.113.7"  # TEST-NET-3: an address no machine here has

# The lines of the documented `location /` block; the test config uses exactly these.
PROXY_DIRECTIVES = [
    "proxy_pass http://ladder;",
    "proxy_http_version 1.1;",
    'proxy_set_header Connection "";',
    "proxy_set_header Host $http_host;",
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "proxy_set_header X-Forwarded-Proto $scheme;",
    'proxy_set_header Forwarded "";',
    'proxy_set_header X-Forwarded-Host "";',
    'proxy_set_header X-Forwarded-Port "";',
    'proxy_set_header X-Real-IP "";',
    "proxy_redirect off;",
]

# docs/nginx.md, "nginx writing Forwarded": nginx writes RFC 7239 Forwarded itself and clears X-Forwarded-*.
FORWARDED_MAP = """map $remote_addr $forwarded_for {
        ~:      "[$remote_addr]";
        default $remote_addr;
    }"""
# Only nginx's own variables go into it: host= is left out because a client chooses $http_host (a Host may hold
# ; , and =), and the Host header passes the client's host on anyway.
FORWARDED_DIRECTIVES = [
    'proxy_set_header Forwarded "for=\\"$forwarded_for\\";proto=$scheme";',
    'proxy_set_header X-Forwarded-For "";',
    'proxy_set_header X-Forwarded-Proto "";',
]


def free_port() -> int:
    """A port nobody listens on right now (bound to port 0, then released for nginx to take)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A throwaway certificate for 127.0.0.1, so that the scheme nginx forwards can be https."""
    if OPENSSL is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    return cert, key


def nginx_config(
    prefix: Path,
    upstreams: list[str],
    port: int,
    tls: tuple[int, Path, Path] | None = None,
    user: str = "root",
    directives: list[str] = PROXY_DIRECTIVES,
    http_extra: str = "",
) -> str:
    """A complete nginx.conf whose every file lives under ``prefix``; as root, workers run as ``user``.

    ``directives`` make up ``location /``; ``http_extra`` goes into the http block (a ``map``, say)."""
    # As root, nginx's workers would otherwise drop to nobody, who cannot enter pytest's private tmp directories.
    user = f"user {user};\n" if os.geteuid() == 0 else ""
    servers = "\n".join(f"        server {address};" for address in upstreams)
    location = "\n".join(f"            {line}" for line in directives)
    tls_server = ""
    if tls:
        tls_port, cert, key = tls
        tls_server = f"""
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
{location}
        }}
    }}"""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{
    worker_connections 256;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    client_max_body_size 64m;
    {http_extra}

    upstream ladder {{
{servers}
        keepalive 8;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
{location}
        }}
    }}{tls_server}
}}
"""


@dataclass
class Front:
    """nginx balancing over two of our servers; where to reach each of them."""

    framework: str
    url: str
    https_url: str | None
    certificate: Path | None
    tcp_backend: ServerProcess
    unix_backend: ServerProcess


@contextlib.contextmanager
def running_nginx(prefix: Path, conf: str, port: int) -> Iterator[str]:
    """``nginx -c CONF -p PREFIX`` in the foreground until the block ends; yields its URL once it answers."""
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    with (prefix / "nginx.out").open("wb") as out:
        nginx = subprocess.Popen([NGINX, "-c", str(conf_path), "-p", str(prefix)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(nginx, prefix, url), timeout=TIMEOUT)
        yield url
    finally:
        nginx.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            nginx.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(TIMEOUT)


def _answers(nginx: subprocess.Popen, prefix: Path, url: str) -> bool:
    if nginx.poll() is not None:
        raise AssertionError(f"nginx exited with {nginx.returncode}:\n{nginx_logs(prefix)}")
    try:
        requests.get(f"{url}/hello", timeout=1)
    except requests.ConnectionError:
        return False
    return True  # nginx is up; whether the upstream answered well is for the test to judge


def nginx_logs(prefix: Path) -> str:
    return "".join(p.read_text() for p in (prefix / "nginx.out", prefix / "error.log") if p.exists())


@pytest.fixture(scope="module", params=list(APPS))
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """nginx and two backends serving one framework's app, shared by the tests of this module."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package 'nginx')")
    app = APPS[request.param]
    tmp_path = tmp_path_factory.mktemp(f"nginx-{request.param}")
    sock = tmp_path / "backend.sock"
    with (
        ServerProcess(app, "--forwarded-allow-ips", TRUSTED) as tcp_backend,
        ServerProcess(app, "--bind", f"unix:{sock}", "--forwarded-allow-ips", TRUSTED) as unix_backend,
    ):
        port = free_port()
        certificate = self_signed_certificate(tmp_path)
        tls = (free_port(), *certificate) if certificate else None
        upstreams = [tcp_backend.url.removeprefix("http://"), unix_backend.url]
        with running_nginx(tmp_path, nginx_config(tmp_path, upstreams, port, tls), port) as url:
            https_url = tls and f"https://127.0.0.1:{tls[0]}"
            yield Front(request.param, url, https_url, certificate and certificate[0], tcp_backend, unix_backend)


@needs_nginx
def test_requests_are_balanced_and_see_the_client(front: Front) -> None:
    answers = [
        requests.get(f"{front.url}/whoami", headers={"X-Forwarded-For": CLIENT}, timeout=TIMEOUT).json()
        for _ in range(12)
    ]
    # Both instances took requests (the apps report their process ids).
    assert {a["pid"] for a in answers} == {front.tcp_backend.proc.pid, front.unix_backend.proc.pid}
    for answer in answers:
        # nginx appended the real peer (127.0.0.1, trusted) to the chain; the client is the hop before it.
        assert answer["remote_addr"] == CLIENT
        assert answer["scheme"] == "http"
        assert answer["url"] == f"{front.url}/whoami"
    # Without a chain from the client, the client is nginx's peer, even on the Unix socket (which has no address).
    plain = [requests.get(f"{front.url}/whoami", timeout=TIMEOUT).json() for _ in range(4)]
    assert {a["remote_addr"] for a in plain} == {"127.0.0.1"}
    assert {a["pid"] for a in plain} == {front.tcp_backend.proc.pid, front.unix_backend.proc.pid}


@needs_nginx
def test_the_app_sees_the_https_scheme_from_x_forwarded_proto(front: Front) -> None:
    if front.https_url is None:
        pytest.skip("openssl is not installed: no certificate for an https listener")
    for _ in range(2):  # once per backend
        answer = requests.get(f"{front.https_url}/whoami", verify=str(front.certificate), timeout=TIMEOUT).json()
        assert answer["scheme"] == "https"
        assert answer["url"] == f"{front.https_url}/whoami"


@needs_nginx
def test_django_csrf_over_https_through_the_proxy(front: Front) -> None:
    # Over https Django also checks that Origin matches the host and scheme it believes it is serving: this
    # passes only if both Host and X-Forwarded-Proto made it through nginx and the server.
    if front.framework != "django":
        pytest.skip("CSRF middleware is Django's")
    if front.https_url is None:
        pytest.skip("openssl is not installed: no certificate for an https listener")
    with requests.Session() as session:
        options = {"verify": str(front.certificate), "timeout": TIMEOUT}  # per request: env vars beat session.verify
        token = session.get(f"{front.https_url}/csrf", **options).json()["token"]
        headers = {"X-CSRFToken": token, "Origin": front.https_url}
        accepted = session.post(f"{front.https_url}/protected", data={"x": "1"}, headers=headers, **options)
        assert accepted.status_code == 200, accepted.text[:500]
        assert accepted.json() == {"form": {"x": ["1"]}, "secure": True}
        headers["Origin"] = front.https_url.replace("https:", "http:")
        forged = session.post(f"{front.https_url}/protected", data={"x": "1"}, headers=headers, **options)
        assert forged.status_code == 403


@needs_nginx
def test_uploads_and_large_downloads_through_the_proxy(front: Front, download_sha256: str) -> None:
    data = random.Random(11).randbytes(3 * 1024 * 1024 + 5)
    expected = {"filename": "big.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for _ in range(2):  # once per backend
        upload = requests.post(f"{front.url}/upload", files={"f": ("big.bin", data)}, timeout=TIMEOUT)
        assert upload.status_code == 200
        assert upload.json()["files"]["f"] == expected

        digest = hashlib.sha256()
        with requests.get(f"{front.url}/download", stream=True, timeout=TIMEOUT) as download:
            assert download.status_code == 200
            assert download.headers["Content-Length"] == str(DOWNLOAD_SIZE)
            for piece in download.iter_content(chunk_size=1024 * 1024):
                digest.update(piece)
        assert digest.hexdigest() == download_sha256

    def chunked_body() -> Iterator[bytes]:
        yield from (data[i : i + 65536] for i in range(0, len(data), 65536))

    for _ in range(2):  # a chunked upload: nginx buffers it and passes it on with a Content-Length
        echoed = requests.post(f"{front.url}/echo", data=chunked_body(), timeout=TIMEOUT)
        assert echoed.json() == {"size": len(data), "sha256": expected["sha256"]}

    redirected = requests.get(f"{front.url}/redirect", timeout=TIMEOUT)
    assert redirected.url == f"{front.url}/query?from=redirect"


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A directory nginx's unprivileged workers can enter (pytest's own tmp directories are private, mode 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="ladder-nginx-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _unprivileged() -> tuple[str, int]:
    """nginx's ``user`` line for the nobody account, and its group id."""
    nobody = pwd.getpwnam("nobody")
    return f"{nobody.pw_name} {grp.getgrgid(nobody.pw_gid).gr_name}", nobody.pw_gid


def _hello_through_unprivileged_nginx(directory: Path, sock: Path, *server_args: str) -> None:
    user, _ = _unprivileged()
    with ServerProcess(APPS["flask"], "--bind", f"unix:{sock}", "--forwarded-allow-ips", "unix", *server_args) as app:
        port = free_port()
        with running_nginx(directory, nginx_config(directory, [app.url], port, user=user), port) as url:
            response = requests.get(f"{url}/hello", timeout=TIMEOUT)
            assert response.status_code == 200, (
                f"socket mode {sock.stat().st_mode & 0o777:o}; nginx says:\n{nginx_logs(directory)}"
            )


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run nginx's workers as an unprivileged user")


@needs_nginx
@as_root
def test_an_unprivileged_nginx_can_use_the_unix_socket() -> None:
    # In production nginx's workers run as www-data, not as the user running our server, and connecting to a
    # Unix socket needs write permission on it. A socket left with the usual umask 022 (mode 0755) makes nginx
    # answer 502 (EACCES); like gunicorn, the server makes its socket 0777 and leaves access to the directory.
    with shared_directory() as directory:
        _hello_through_unprivileged_nginx(directory, directory / "app.sock")


@needs_nginx
@as_root
def test_the_documented_socket_directory_lets_nginx_in() -> None:
    # docs/nginx.md: the socket's directory belongs to nginx's group, mode 0750, so that only the server's user
    # and nginx can reach the socket.
    _, gid = _unprivileged()
    with shared_directory() as directory:
        sockets = directory / "run"
        sockets.mkdir()
        os.chown(sockets, -1, gid)
        sockets.chmod(0o750)
        _hello_through_unprivileged_nginx(directory, sockets / "app.sock")


def test_the_documented_config_uses_the_tested_directives() -> None:
    example = (ROOT / "docs" / "nginx.conf.example").read_text()
    lines = {line.split("#")[0].strip() for line in example.splitlines()}
    missing = [directive for directive in PROXY_DIRECTIVES if directive not in lines]
    assert not missing, f"docs/nginx.conf.example lacks the tested directives {missing}"
    for needed in ("keepalive", "keepalive_timeout", "upstream ladder {"):
        assert any(line.startswith(needed) for line in lines), needed


@needs_nginx
def test_the_documented_config_is_valid_nginx(tmp_path: Path) -> None:
    """``nginx -t`` on docs/nginx.conf.example, with only its file paths moved into tmp_path."""
    example = (ROOT / "docs" / "nginx.conf.example").read_text()
    temp_paths = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                                   "uwsgi", "scgi"))  # fmt: skip
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        example.replace("/var/log/nginx/", f"{tmp_path}/")
        .replace("/run/nginx.pid", f"{tmp_path}/nginx.pid")
        .replace("http {\n", "http {\n" + temp_paths, 1)
    )
    result = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


# -- without a trusted proxy, forwarding headers are just text ------------------------------------------------------

SPOOFED = {
    "X-Forwarded-For": CLIENT,
    "X-Forwarded-Proto": "https",
    "Forwarded": f"for={CLIENT};proto=https",
}


def test_forwarding_headers_are_ignored_without_forwarded_allow_ips() -> None:
    with ServerProcess(APPS["flask"]) as server:
        answer = requests.get(f"{server.url}/whoami", headers=SPOOFED, timeout=TIMEOUT).json()
    assert answer["remote_addr"] == "127.0.0.1"
    assert answer["scheme"] == "http"


@pytest.mark.parametrize("framework", list(APPS))
@pytest.mark.parametrize(
    ("allowed", "trusted"), [(("10.0.0.0/8", "unix"), False), (("127.0.0.1",), True)], ids=["other", "listed"]
)
def test_forwarding_headers_are_believed_only_from_listed_proxies(
    framework: str, allowed: tuple[str, ...], trusted: bool
) -> None:
    x_forwarded = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}
    forwarded = {"Forwarded": SPOOFED["Forwarded"]}
    for family, headers, other in (("x-forwarded", x_forwarded, forwarded), ("forwarded", forwarded, x_forwarded)):
        with ServerThread(load_app(framework), forwarded_allow_ips=allowed, proxy_headers=family) as server:
            answer = requests.get(f"{server.url}/whoami", headers=headers, timeout=TIMEOUT).json()
            expected = (CLIENT, "https") if trusted else ("127.0.0.1", "http")
            assert (answer["remote_addr"], answer["scheme"]) == expected, family
            # The other family is ignored, even from a listed proxy.
            answer = requests.get(f"{server.url}/whoami", headers=other, timeout=TIMEOUT).json()
            assert (answer["remote_addr"], answer["scheme"]) == ("127.0.0.1", "http"), family


# -- behind the documented nginx, a client's forwarding headers change nothing ---------------------------------------

SPOOF = "6.6.6.6"
# Each a block of header lines a client might send to pass for someone else, on https, at another host.
SPOOFS = [
    f"Forwarded: for={SPOOF};proto=https;host=evil.example",
    f'Forwarded: for="{SPOOF};proto="https',  # an unbalanced quote, hoping to swallow what the proxy appends
    f"X-Forwarded-For: {SPOOF}",
    f"X-Forwarded-For: {SPOOF}\r\nX-Forwarded-For: 7.7.7.7",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 443",
    f"X-Real-IP: {SPOOF}",
    f'X-Forwarded-For: {SPOOF}, unknown, _x, "[::1\r\nForwarded: for=unknown, for=_hidden;proto=https',
    f"Forwarded: for={SPOOF};proto=https;host=evil.example\r\nX-Forwarded-For: {SPOOF}\r\n"
    f"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Real-IP: {SPOOF}",
]


def raw_get(url: str, path: str, extra: str, host_header: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` with ``extra`` header lines sent verbatim (repeated lines included, which requests cannot do),
    and the Host ``host_header`` (the URL's authority by default)."""
    authority = url.removeprefix("http://")
    host, _, port = authority.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host_header or authority}", *([extra] if extra else []),
                 "Connection: close"]  # fmt: skip
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, _, body = read_response(sock)
    return status, body


def assert_spoofs_change_nothing(url: str, requests_per_spoof: int = 1) -> None:
    authority = url.removeprefix("http://")
    for spoof in SPOOFS:
        for _ in range(requests_per_spoof):
            status, body = raw_get(url, "/whoami", spoof)
            assert status == 200, body[:500]
            answer = json.loads(body)
            seen = (answer["remote_addr"], answer["scheme"], answer["host"])
            # 127.0.0.1 also shows nginx was believed: the connection itself comes from elsewhere (a Unix socket
            # or 127.0.0.2), so only the proxy's header can have said 127.0.0.1.
            assert seen == ("127.0.0.1", "http", authority), spoof


@needs_nginx
def test_a_clients_forwarding_headers_change_nothing_behind_the_documented_config(tmp_path: Path) -> None:
    # The documented instance (--forwarded-allow-ips unix, --proxy-headers left at x-forwarded) behind the
    # documented location block. nginx is the only trusted peer; the client, on 127.0.0.1, is not.
    sock = tmp_path / "a.sock"
    with ServerProcess(APPS["flask"], "--bind", f"unix:{sock}", "--forwarded-allow-ips", "unix") as backend:
        port = free_port()
        with running_nginx(tmp_path, nginx_config(tmp_path, [backend.url], port), port) as url:
            assert_spoofs_change_nothing(url)


# Hosts a client may send, which nginx accepts and passes on (a Host may hold ; , and =), each written to read
# as more Forwarded pairs or elements once copied into a header.
FORGED_HOSTS = [
    f"x;for={SPOOF};proto=https;a=",
    f"x,for={SPOOF};proto=https;host=evil.example;a=",
    f'x;for={SPOOF};proto=https;a="',  # (nginx refuses this one with 400; the server would too)
]


def assert_forged_hosts_change_nothing(url: str) -> None:
    for forged in FORGED_HOSTS:
        status, body = raw_get(url, "/whoami", "", host_header=forged)
        if status == 400:
            continue  # refused at the edge: nothing to forge with
        assert status == 200, body[:500]
        answer = json.loads(body)
        assert (answer["remote_addr"], answer["scheme"]) == ("127.0.0.1", "http"), forged


def nginx_writing_forwarded(tmp_path: Path, backend: ServerThread, forwarded: list[str]) -> tuple[str, int]:
    """An nginx.conf for the "nginx writing Forwarded" recipe with the ``forwarded`` lines, and its port.

    Over TCP: nginx connects from 127.0.0.2 (proxy_bind), the only address the instance trusts, while the client
    stays on 127.0.0.1."""
    directives = [*(line for line in PROXY_DIRECTIVES if not line.startswith(CLEARED_BY_FORWARDED)),
                  *forwarded, "proxy_bind 127.0.0.2;"]  # fmt: skip
    port = free_port()
    upstream = [backend.url.removeprefix("http://")]
    return nginx_config(tmp_path, upstream, port, directives=directives, http_extra=FORWARDED_MAP), port


@needs_nginx
def test_a_clients_forwarding_headers_change_nothing_when_nginx_writes_forwarded(tmp_path: Path) -> None:
    # docs/nginx.md, "nginx writing Forwarded", with --proxy-headers forwarded.
    with ServerThread(load_app("flask"), forwarded_allow_ips=("127.0.0.2",), proxy_headers="forwarded") as backend:
        conf, port = nginx_writing_forwarded(tmp_path, backend, FORWARDED_DIRECTIVES)
        with running_nginx(tmp_path, conf, port) as url:
            assert_spoofs_change_nothing(url)
            assert_forged_hosts_change_nothing(url)
            # nginx's own word is believed (had it not been, the app would see nginx's 127.0.0.2).
            assert json.loads(raw_get(url, "/whoami", "")[1])["remote_addr"] == "127.0.0.1"


@needs_nginx
def test_a_forged_host_copied_into_forwarded_stays_one_quoted_value(tmp_path: Path) -> None:
    # The recipe docs/nginx.md used to give put the client's Host into Forwarded as host="$http_host". A Host of
    # "x;for=6.6.6.6;proto=https;a=" then made the server believe 6.6.6.6 on https. The parser now honours the
    # quotes, so even this configuration cannot be forged through.
    legacy = FORWARDED_DIRECTIVES[0].replace(';proto=$scheme"', ';proto=$scheme;host=\\"$http_host\\""')
    assert "$http_host" in legacy
    with ServerThread(load_app("flask"), forwarded_allow_ips=("127.0.0.2",), proxy_headers="forwarded") as backend:
        conf, port = nginx_writing_forwarded(tmp_path, backend, [legacy, *FORWARDED_DIRECTIVES[1:]])
        with running_nginx(tmp_path, conf, port) as url:
            assert_forged_hosts_change_nothing(url)
            answer = json.loads(raw_get(url, "/whoami", "")[1])
            assert (answer["remote_addr"], answer["host"]) == ("127.0.0.1", url.removeprefix("http://"))


CLEARED_BY_FORWARDED = ("proxy_set_header X-Forwarded-For ", "proxy_set_header X-Forwarded-Proto ",
                        "proxy_set_header Forwarded ")  # fmt: skip


def test_the_documented_forwarded_config_is_the_tested_one() -> None:
    text = (ROOT / "docs" / "nginx.md").read_text()
    for line in [*FORWARDED_DIRECTIVES, *FORWARDED_MAP.splitlines()]:
        assert line.strip() in text, line


@contextlib.contextmanager
def recording_backend() -> Iterator[tuple[str, list[str]]]:
    """A bare HTTP/1.1 listener that keeps each request head it receives and answers 200; yields (address, heads)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    heads: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(TIMEOUT)
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                heads.append(data.partition(b"\r\n\r\n")[0].decode("latin-1"))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, name="recording-backend", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", heads
    finally:
        stop.set()
        thread.join(TIMEOUT)
        listener.close()


@needs_nginx
def test_what_the_documented_config_forwards(tmp_path: Path) -> None:
    # What nginx really sends upstream for a client that sends every forwarding header, some twice: a header named
    # in proxy_set_header replaces the client's (all its lines), an empty value removes it, and the client's
    # X-Forwarded-For lines are joined, with the address nginx saw appended.
    with recording_backend() as (address, heads):
        port = free_port()
        with running_nginx(tmp_path, nginx_config(tmp_path, [address], port), port) as url:
            heads.clear()  # running_nginx's readiness probe went through too
            assert raw_get(url, "/x", SPOOFS[-1] + f"\r\nX-Forwarded-For: 7.7.7.7\r\n{SPOOFS[5]}")[0] == 200
            head = wait_for(lambda: heads and heads[0])
    fields = [line.partition(":")[::2] for line in head.split("\r\n")[1:]]
    forwarded = [(name.lower(), value.strip()) for name, value in fields if name.lower() not in ("host", "connection")]
    assert sorted(forwarded) == [("x-forwarded-for", f"{SPOOF}, 7.7.7.7, 127.0.0.1"), ("x-forwarded-proto", "http")]
    assert ("Host", f" 127.0.0.1:{port}") in fields
