"""Issue 13's benchmark: our server over TLS against gunicorn, granian and nginx, side by side in one run.

Every server runs alone on one pinned core (``taskset``) with ``wrk`` driving it over ``https://`` from the
other core, and every server presents the same certificate, made at run time. Three parts, run one after the
other, each interleaved over rounds and summarised by medians (``bench/harness.py``):

1. ``hello``: ``bench.hello:app`` with 100 keep-alive connections, then with ``Connection: close`` (a new TCP
   connection and TLS handshake per request). wrk keeps each connection's last TLS session and offers it on the
   next connect, so ``close`` measures *resumed* handshakes wherever the server issues session tickets (the
   report says which do). Servers: ours (``--certfile/--keyfile``), the same with ``--threads 0`` (``ours-loop``:
   the app on the event loop), ours over plain HTTP (``ours-http``, so the cost of TLS shows as a ratio),
   gunicorn gthread (1 worker, 4 threads), granian (WSGI, 1 worker, 1 runtime thread) and nginx answering
   ``return 200`` itself (1 worker: the ceiling).
2. ``full-handshake``: the same ``Connection: close`` load with resumption turned off in wrk, so every request
   pays a full handshake (certificate signature included). wrk has no switch for that: a ten-line
   ``LD_PRELOAD`` shim, compiled at run time with ``cc``, makes wrk forget the session when it closes a
   connection. A self-test against a TLS server in this process proves both behaviours before it is trusted.
   The certificate is RSA 2048 by default because of this part: the server's RSA signature is what a full
   handshake costs most, so the servers are the limit. With ``--key-type ecdsa`` (P-256) the client's
   signature check costs more than the server's signing, and on two cores wrk stops near 2,000 handshakes/s
   whatever the server: the report shows each server's share of its core, which tells.
3. ``static``: a 1 MiB file, 10 keep-alive connections: ours (``--static``, no app) and nginx (``sendfile on``),
   each over TLS and over plain HTTP. Over TLS neither can use ``sendfile`` (no kernel TLS here), so the
   plain rows show what that costs.

Targets from the issue: keep-alive over TLS at least 2x gunicorn and 0.5x granian.

    python -m bench.bench_tls               # 3 rounds x 10 s, about 12 minutes
    python -m bench.bench_tls --quick       # 1 round x 3 s: a smoke run
    python -m bench.bench_tls --rounds 3 --duration 5 --only ours --only granian --skip static

Each server is checked before it is measured: a request over TLS (or plain HTTP for the ``-http`` rows) must
return the expected body, and a second connection offers the first one's session to see whether the server
resumes it. Our server is skipped with a message while ``python -m server --help`` has no ``--certfile``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import harness
from bench.harness import BenchError, Results, Scenario, Server
from bench.hello import BODY

APP = "bench.hello:app"
STATIC_FILE = "1m.bin"
STATIC_SIZE = 1024 * 1024
STATIC_URL = f"/files/{STATIC_FILE}"
CLOSE = {"Connection": "close"}
HELLO_SCENARIOS = (Scenario("keep-alive", connections=100), Scenario("close", connections=100, headers=CLOSE))
FULL_SCENARIOS = (Scenario("close, full handshake", connections=100, headers=CLOSE),)
# Fewer connections for the big file: 10 x 1 MiB in flight already keeps every socket buffer on loopback full.
STATIC_SCENARIOS = (Scenario("1 MiB", connections=10, path=STATIC_URL),)
PARTS = ("hello", "full-handshake", "static")
PEERS = ("ours", "gunicorn", "granian", "nginx")
INSTALL = {
    "gunicorn": "pip install gunicorn",
    "granian": "pip install granian",
    "nginx": "apt-get install nginx",
}
# (scenario, baseline, at least this ratio of ours to the baseline)
TARGETS = (("keep-alive", "gunicorn", 2.0), ("keep-alive", "granian", 0.5))


# ---------------------------------------------------------------------------------------------------------
# The certificate
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path  # PKCS#8, the one form every server here reads (granian accepts nothing else)
    description: str


def make_certificate(directory: Path, key_type: str) -> Certificate:
    """A certificate for 127.0.0.1 and localhost, with trustme when installed, else with ``openssl req``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    kind = "ECDSA P-256" if key_type == "ecdsa" else "RSA 2048"
    try:
        import trustme
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        trustme = None
    if trustme is not None:
        trustme_type = trustme.KeyType.ECDSA if key_type == "ecdsa" else trustme.KeyType.RSA
        leaf = trustme.CA(key_type=trustme_type).issue_cert("127.0.0.1", "localhost", key_type=trustme_type)
        # trustme writes an EC key as SEC1 ("BEGIN EC PRIVATE KEY"), which granian refuses: re-encode it.
        private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        return Certificate(cert, key, f"{kind}, a leaf signed by a throwaway CA (trustme)")
    openssl = harness.which("openssl")
    if openssl is None:
        raise BenchError("no way to make a certificate: pip install trustme (or apt-get install openssl)")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key_type == "ecdsa" else []
    newkey = newkey or ["-newkey", "rsa:2048"]
    argv = [openssl, "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
    argv += ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"openssl req failed: {done.stderr.strip()}")
    return Certificate(cert, key, f"{kind}, self-signed (openssl req)")


# ---------------------------------------------------------------------------------------------------------
# A server checked before it is measured
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Probe:
    """What one checked request saw."""

    version: str | None  # "TLSv1.3"; None over plain HTTP
    cipher: str | None
    resumed: bool | None  # did a second connection resume the first one's session?

    def describe(self) -> str:
        if self.version is None:
            return "plain HTTP"
        resumed = {True: "resumes sessions", False: "no session resumption", None: "resumption unknown"}
        return f"{self.version} {self.cipher}, {resumed[self.resumed]}"


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one response (head, body): up to its Content-Length, or to the end without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"the connection closed before a whole response head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def probe(host: str, port: int, path: str, expect: bytes, tls: bool) -> Probe:
    """One GET over TLS (or plain HTTP) that must answer 200 with ``expect``; then a second TLS connection
    offering the first one's session, as wrk does on reconnecting. Raises BenchError with what went wrong."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def fetch(session: ssl.SSLSession | None = None) -> tuple[socket.socket, bytes, bytes]:
        raw = socket.create_connection((host, port), timeout=10)
        try:
            sock = context.wrap_socket(raw, server_hostname="localhost", session=session) if tls else raw
            sock.sendall(request)
            head, body = _read_response(sock)
        except BaseException:
            raw.close()
            raise
        return sock, head, body

    scheme = "https" if tls else "http"
    try:
        sock, head, body = fetch()
        with sock:
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            if status.split()[1:2] != ["200"] or body != expect:
                shown = body[:80] + (b"..." if len(body) > 80 else b"")
                raise BenchError(f"{scheme}://{host}:{port}{path} answered {status!r} with {len(body)} bytes {shown!r}")
            if not tls:
                return Probe(None, None, None)
            assert isinstance(sock, ssl.SSLSocket)
            version, cipher, session = sock.version(), (sock.cipher() or ("?",))[0], sock.session
        resumed = None
        if session is not None:
            again, _, _ = fetch(session)
            with again:
                assert isinstance(again, ssl.SSLSocket)
                resumed = again.session_reused
        return Probe(version, cipher, resumed)
    except (OSError, ValueError, IndexError) as exc:
        raise BenchError(f"{scheme}://{host}:{port}{path} failed: {exc}") from None


@dataclasses.dataclass
class Checked(Server):
    """A Server that speaks https:// (unless ``tls`` is False) and is probed once it accepts connections."""

    tls: bool = True
    check_path: str = "/"
    expect: bytes = BODY
    seen: Probe | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    def start(self) -> Checked:
        super().start()
        try:
            self.seen = probe(self.host, self.port, self.check_path, self.expect, self.tls)
        except BenchError as exc:
            tail = self.log_tail()
            self.stop()
            output = f"\n--- its output ---\n{tail}" if tail else ""
            raise BenchError(f"{self.name}: {exc}{output}") from None
        except BaseException:
            self.stop()
            raise
        return self


# ---------------------------------------------------------------------------------------------------------
# Who takes part
# ---------------------------------------------------------------------------------------------------------


def nginx_tls(name: str, cpu: int | None, cert: Certificate | None, *, root: Path, hello: bool) -> Checked:
    """harness.nginx_server's config with ``ssl`` on its listen line (when ``cert``) and, for ``hello``, a
    ``return 200`` with bench/hello.py's body instead of the files under ``root``."""
    port = harness.free_port()
    # nginx before 1.23.4 leaves TLSv1.3 out of its default ssl_protocols: every server here should speak it.
    extra = "    ssl_protocols TLSv1.2 TLSv1.3;\n" if cert else ""
    extra += f"    ssl_certificate {cert.cert};\n    ssl_certificate_key {cert.key};\n" if cert else ""
    base = harness.nginx_server(name, port, cpu=cpu, root=root, extra_http=extra)
    conf_path = Path(base.argv[list(base.argv).index("-c") + 1])
    conf = conf_path.read_text()
    edits = []
    if cert is not None:
        edits.append((f"listen {harness.LOOPBACK}:{port} ", f"listen {harness.LOOPBACK}:{port} ssl "))
    if hello:
        body = BODY.decode().replace("\n", "\\n")
        edits.append(("location / { }", f'location / {{ default_type text/plain; return 200 "{body}"; }}'))
    for old, new in edits:
        if conf.count(old) != 1:
            raise BenchError(f"harness.nginx_server's config changed: {old!r} not found once in {conf_path}")
        conf = conf.replace(old, new)
    conf_path.write_text(conf)
    check_path, expect = ("/", BODY) if hello else (STATIC_URL, (root / STATIC_URL.lstrip("/")).read_bytes())
    return Checked(name, base.argv, port, cpu=cpu, tls=cert is not None, check_path=check_path, expect=expect)


def hello_servers(cert: Certificate, cpu: int | None, wanted: Sequence[str], plain: bool, empty: Path) -> list[Checked]:
    """The hello-world contenders; ``plain`` adds ours over plain HTTP."""
    tls_args = ["--certfile", str(cert.cert), "--keyfile", str(cert.key)]
    servers = []

    def bind() -> tuple[int, str]:
        port = harness.free_port()
        return port, f"127.0.0.1:{port}"

    if "ours" in wanted:
        port, address = bind()
        argv = harness.python_argv("-m", "server", APP, "--bind", address, *tls_args)
        servers.append(Checked("ours", argv, port, cpu=cpu))
        port, address = bind()
        argv = harness.python_argv("-m", "server", APP, "--bind", address, "--threads", "0", *tls_args)
        servers.append(Checked("ours-loop", argv, port, cpu=cpu))  # the app on the event loop
        if plain:
            port, address = bind()
            argv = harness.python_argv("-m", "server", APP, "--bind", address)
            servers.append(Checked("ours-http", argv, port, cpu=cpu, tls=False))
    if "gunicorn" in wanted:
        port, address = bind()
        argv = harness.python_argv("-m", "gunicorn", "--bind", address, "--worker-class", "gthread", "--threads", "4")
        servers.append(Checked("gunicorn", [*argv, *tls_args, APP], port, cpu=cpu))
    if "granian" in wanted:
        port = harness.free_port()
        argv = harness.python_argv("-m", "granian", "--interface", "wsgi", "--http", "1", "--workers", "1")
        argv += ["--runtime-threads", "1", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        argv += ["--ssl-certificate", str(cert.cert), "--ssl-keyfile", str(cert.key), APP]
        servers.append(Checked("granian", argv, port, cpu=cpu))
    if "nginx" in wanted:
        servers.append(nginx_tls("nginx", cpu, cert, root=empty, hello=True))
    return servers


def static_servers(cert: Certificate, cpu: int | None, wanted: Sequence[str], site: Path) -> list[Checked]:
    """Ours and nginx serving ``site``/files/1m.bin, each over TLS and over plain HTTP."""
    files = site / "files"
    expect = (files / STATIC_FILE).read_bytes()
    servers = []
    if "ours" in wanted:
        for name, extra in (("ours", ["--certfile", str(cert.cert), "--keyfile", str(cert.key)]), ("ours-http", [])):
            port = harness.free_port()
            argv = harness.python_argv("-m", "server", "--static", f"/files={files}", "--bind", f"127.0.0.1:{port}")
            tls = bool(extra)
            servers.append(Checked(name, [*argv, *extra], port, cpu=cpu, tls=tls, check_path=STATIC_URL, expect=expect))
    if "nginx" in wanted:
        servers.append(nginx_tls("nginx", cpu, cert, root=site, hello=False))
        servers.append(nginx_tls("nginx-http", cpu, None, root=site, hello=False))
    return servers


def available_peers(only: Sequence[str]) -> list[str]:
    """The contenders to run: those asked for (all by default) that are installed; the rest said why."""
    wanted = []
    for name in dict.fromkeys(only or PEERS):
        if name == "ours":
            reason = harness.our_server_lacks(
                "--certfile", "python -m server --help has no --certfile yet (server/tls.py has not landed)"
            )
        elif name == "nginx":
            reason = None if harness.which("nginx") else f"not installed: {INSTALL[name]}"
        else:
            reason = None if harness.python_module_available(name) else f"not installed: {INSTALL[name]}"
        if reason is None:
            wanted.append(name)
        else:
            print(f"skipping {name}: {reason}")
    return wanted


def versions(wanted: Sequence[str]) -> str:
    parts = [f"Python {sys.version.split()[0]} with {ssl.OPENSSL_VERSION}"]
    for name in ("gunicorn", "granian"):
        if name in wanted:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                parts.append(f"{name} {importlib.metadata.version(name)}")
    for program, flag in (("nginx", "-v"), ("wrk", "-v")):
        if program in wanted or program == "wrk":
            path = harness.which(program)
            if path:
                done = subprocess.run([path, flag], capture_output=True, text=True, check=False)
                first = (done.stderr or done.stdout).strip().splitlines()[:1]
                parts.append(first[0].split(" Copyright")[0].replace("nginx version: ", "") if first else program)
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# wrk without session resumption
# ---------------------------------------------------------------------------------------------------------

# On close, wrk calls SSL_shutdown then SSL_clear, which keeps the session for the next connect on the same SSL
# object. Dropping it after SSL_clear makes every connect a full handshake. Nothing else of wrk changes.
# (wrk also polls a connection for writability while its handshake waits for the server, so wrk's own CPU time
# says nothing about how loaded it is; the report uses the servers' CPU time instead.)
_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
typedef struct ssl_st SSL;
int SSL_clear(SSL *s) {
    int (*real_clear)(SSL *) = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    int (*set_session)(SSL *, void *) = (int (*)(SSL *, void *))dlsym(RTLD_DEFAULT, "SSL_set_session");
    int result = real_clear(s);
    if (set_session != 0)
        set_session(s, 0);
    return result;
}
"""


def build_no_resume_wrk(directory: Path) -> Path:
    """Compile the shim and write a ``wrk`` wrapper that preloads it; return the directory that holds it."""
    compiler = harness.which("cc") or harness.which("gcc")
    wrk = harness.which("wrk")
    if compiler is None or wrk is None:
        raise BenchError("a C compiler is needed for the shim: apt-get install gcc")
    source, shim = directory / "no_resume.c", directory / "no_resume.so"
    source.write_text(_SHIM_C)
    argv = [compiler, "-O2", "-shared", "-fPIC", "-o", str(shim), str(source), "-ldl"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"the shim did not compile: {done.stderr.strip()}")
    bin_dir = directory / "no-resume"
    bin_dir.mkdir()
    wrapper = bin_dir / "wrk"
    wrapper.write_text(f'#!/bin/sh\nLD_PRELOAD="{shim}${{LD_PRELOAD:+ $LD_PRELOAD}}" exec "{wrk}" "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


@contextlib.contextmanager
def wrk_from(bin_dir: Path | None) -> Iterator[None]:
    """While inside, ``harness.run_wrk`` finds the ``wrk`` in ``bin_dir`` first on PATH (None: no change)."""
    if bin_dir is None:
        yield
        return
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(bin_dir), saved])
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def resumption_self_test(cert: Certificate, no_resume: Path, cpu: int | None) -> tuple[float, float]:
    """The share of resumed handshakes wrk makes with ``Connection: close`` against a TLS server in this
    process: as installed, then with the shim. The second must be 0 for the full-handshake part."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    counts: Counter[bool] = Counter()
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                with context.wrap_socket(self.request, server_side=True) as sock:
                    counts[sock.session_reused] += 1
                    data = b""
                    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
                        data += chunk
                    sock.sendall(reply)
            except OSError:
                pass  # wrk stopping mid-handshake

    class Threaded(socketserver.ThreadingTCPServer):
        daemon_threads = True
        request_queue_size = 64

    shares = []
    with Threaded((harness.LOOPBACK, 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"https://{harness.LOOPBACK}:{server.server_address[1]}/"
        try:
            for bin_dir in (None, no_resume):
                counts.clear()
                with wrk_from(bin_dir):
                    harness.run_wrk(url, connections=2, duration=1, headers=CLOSE, cpu=cpu)
                total = counts[True] + counts[False]
                if total == 0:
                    raise BenchError("wrk made no TLS connection to the self-test server")
                shares.append(counts[True] / total)
        finally:
            server.shutdown()
    return shares[0], shares[1]


# ---------------------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------------------


def measure(
    servers: Sequence[Checked],
    scenarios: Sequence[Scenario],
    args: argparse.Namespace,
    wrk_cpu: int | None,
    seen: dict[str, str],
    results: Results | None = None,
) -> Results:
    """One part: harness.interleaved, then each server's TLS as its probe saw it."""
    results = harness.interleaved(
        servers, scenarios, rounds=args.rounds, duration=args.duration, wrk_cpu=wrk_cpu, results=results
    )
    for server in servers:
        if server.seen is not None:
            seen.setdefault(server.name, server.seen.describe())
    return results


def busy_lines(results: Results | None) -> list[str]:
    """How much of its core each server used (requests/s over requests per CPU-second). Well under 100%, the
    limit was elsewhere: for the handshake scenarios, usually wrk's own share of the handshakes."""
    lines = []
    for scenario in results.scenarios if results else []:
        cells = []
        for server in results.servers:
            rps, per_cpu = results.median_rps(server, scenario), results.median_per_cpu(server, scenario)
            if rps and per_cpu:
                cells.append(f"{server} {rps / per_cpu:.0%}")
        if cells:
            lines.append(f"- {scenario}: share of its core each server used: {', '.join(cells)}")
    return lines


def cost_lines(hello: Results | None, static: Results | None) -> list[str]:
    """What TLS costs each server that ran both ways, as TLS req/s over plain req/s."""
    lines = []
    pairs = [(hello, "keep-alive", "ours", "ours-http"), (hello, "close", "ours", "ours-http")]
    pairs += [(static, "1 MiB", "ours", "ours-http"), (static, "1 MiB", "nginx", "nginx-http")]
    for results, scenario, tls, plain in pairs:
        ratio = results.ratio(tls, plain, scenario) if results else None
        if ratio is not None:
            lines.append(f"- {tls}, {scenario}: TLS gives {ratio:.2f}x the requests/s of plain HTTP")
    if static:
        for server in static.servers:
            rps = static.median_rps(server, "1 MiB")
            if rps is not None:
                lines.append(f"- {server}: {rps * STATIC_SIZE / 1e9:.2f} GB/s for the 1 MiB file")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s: a smoke run")
    parser.add_argument("--only", action="append", default=[], choices=PEERS, help="repeatable")
    parser.add_argument("--skip", action="append", default=[], choices=PARTS, help="repeatable")
    parser.add_argument("--key-type", choices=["rsa", "ecdsa"], default="rsa", help="RSA 2048 (default) or ECDSA P-256")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3.0
    if harness.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    harness.install_signal_handlers()
    cpus = harness.server_and_wrk_cpus()
    wanted = available_peers(args.only)
    if not wanted:
        print("nothing to measure", file=sys.stderr)
        return 2
    parts = [part for part in PARTS if part not in args.skip]
    seen: dict[str, str] = {}
    notes: list[str] = []
    hello = static = None
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp_name:
        tmp = Path(tmp_name)
        cert = make_certificate(tmp, args.key_type)
        print(f"certificate: {cert.description}")
        empty = tmp / "empty"
        empty.mkdir()
        if "hello" in parts:
            servers = hello_servers(cert, cpus[0], wanted, True, empty)
            hello = measure(servers, HELLO_SCENARIOS, args, cpus[1], seen)
        if "full-handshake" in parts:
            try:
                no_resume = build_no_resume_wrk(tmp)
                plain_share, shim_share = resumption_self_test(cert, no_resume, cpus[1])
            except BenchError as exc:
                notes.append(f"- the full-handshake part did not run: {exc}")
            else:
                notes.append(
                    f"- self-test: wrk's reconnects resumed {plain_share:.0%} of TLS sessions as installed, "
                    f"{shim_share:.0%} with the shim"
                )
                if shim_share > 0:
                    notes.append("- the shim did not stop resumption: the full-handshake part did not run")
                else:
                    servers = hello_servers(cert, cpus[0], wanted, False, empty)
                    with wrk_from(no_resume):
                        hello = measure(servers, FULL_SCENARIOS, args, cpus[1], seen, hello)
        if "static" in parts and ("ours" in wanted or "nginx" in wanted):
            site = tmp / "site"
            (site / "files").mkdir(parents=True)
            (site / "files" / STATIC_FILE).write_bytes(os.urandom(STATIC_SIZE))
            static = measure(static_servers(cert, cpus[0], wanted, site), STATIC_SCENARIOS, args, cpus[1], seen)
    load = os.getloadavg()
    report = [
        f"TLS, {args.rounds} round(s) x {args.duration:g} s, server on CPU {cpus[0]}, wrk on CPU {cpus[1]}, "
        f"load average {load[0]:.2f} at the end",
        "",
        f"Certificate: {cert.description}. {versions(wanted)}.",
        "",
    ]
    if hello is not None:
        report += [
            "Hello world (bench/hello.py; nginx answers `return 200` itself), 100 connections. `close`: a new "
            "connection per request, wrk offering the previous session; `close, full handshake`: never resumed.",
            "",
            harness.markdown_table(hello, baselines=["gunicorn", "granian", "nginx", "ours-http"]),
            "",
        ]
    if static is not None:
        report += [
            "A 1 MiB file, 10 keep-alive connections (nginx: sendfile on, which TLS without kernel TLS bypasses).",
            "",
            harness.markdown_table(static, baselines=["nginx", "ours-http"]),
            "",
        ]
    report += ["What each server negotiated with a Python client (OpenSSL, as wrk):"]
    report += [f"- {name}: {description}" for name, description in seen.items()]
    report += ["", *busy_lines(hello), *busy_lines(static), *cost_lines(hello, static), *notes]
    report += ["", "Targets:", *harness.verdict_lines(hello or Results(), TARGETS, ("ours", "ours-loop")), ""]
    text = "\n".join(report)
    print()
    print(text)
    print(f"written to {harness.write_results('tls.md', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
