"""HTTPS from the command line: what the TLS options of ``python -m server`` refuse, and what they serve.

What is covered here:

- The invocations that must not serve. Each ends, before anything listens, with one line on stderr that names the
  file or the flag and says what to do, and exit status 2: certificate, key, password and CA files that are
  missing, unreadable, not PEM or do not fit together; the TLS options without ``--certfile``; ``--client-cert``
  and ``--ca-certs`` without each other; ``--redirect-to-https`` without both kinds of listener; ``--bind``
  schemes that cannot work.
- The starts that must serve: an encrypted key with its password, an expired certificate (a warning, not an
  error), the settings from a ``--config`` file, HTTPS and plain listeners side by side (``--bind`` without a
  scheme is HTTPS once there is a certificate), ``--redirect-to-https``, and sockets from systemd labelled
  ``FileDescriptorName=http`` or ``=https``.
- The pieces underneath, in this process: ``parse_bind`` with schemes, ``resolve_schemes``, and
  ``systemd_listeners`` reading the labels.

Certificates come from ``tests/tls_certs.py`` (a throwaway CA per test); clients trust that CA and nothing else.
"""

from __future__ import annotations

import datetime
import http.client
import os
import re
import socket
import ssl
from pathlib import Path

import pytest
import requests
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.listeners import BindAddress, BindError, Listener, parse_bind, resolve_schemes
from tests.server.test_cli import assert_one_line, run_cli
from tests.server.test_socket_activation import ActivatedServer, free_pair, take
from tests.support import ROOT, TIMEOUT, ServerProcess, wait_for
from tests.tls_certs import Certificates, make_certificates

PASSWORD = "correct horse battery staple"

# Says which scheme the application was reached by, and whether the server told it HTTPS=on.
SCHEME_APP = """\
def app(environ, start_response):
    body = f"{environ['wsgi.url_scheme']} HTTPS={environ.get('HTTPS', '')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "site")


@pytest.fixture
def encrypted_key(tmp_path: Path, certs: Certificates) -> Path:
    """The site's key, encrypted with PASSWORD, as ``openssl genpkey -aes256`` would write it."""
    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    path = tmp_path / "encrypted-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return path


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "scheme_app.py").write_text(SCHEME_APP)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tls_args(certs: Certificates, **settings: object) -> list[str]:
    """``--certfile ... --keyfile ...`` for ``certs``, with ``settings`` (certfile=None leaves an option out)."""
    settings = {"certfile": certs.cert, "keyfile": certs.key, **settings}
    args = []
    for name, value in settings.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def refused(*args: object) -> str:
    """``python -m server apps.hello:app ARGS`` (on a free port unless ARGS bind): one line, exit 2; the line."""
    argv = ["apps.hello:app", *map(str, args)]
    if "--bind" not in argv:
        argv += ["--bind", "127.0.0.1:0"]
    return assert_one_line(run_cli(*argv))


def listening_urls(server: ServerProcess, count: int) -> list[str]:
    """The URLs the server says it serves on, once it has said all ``count`` of them."""

    def announced() -> list[str]:
        urls = re.findall(r"serving \S+ on (\S+) \(", server.output())
        return urls if len(urls) >= count else []

    return wait_for(announced)


def https_get(url: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    """GET / over ``context``, which decides what the client checks: (status, body)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=TIMEOUT)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def trusting_anything() -> ssl.SSLContext:
    """A client context that checks nothing: the browser whose user clicked through the warning."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- files that cannot be used -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["certfile", "keyfile", "keyfile_password_file", "ca_certs"])
def test_a_missing_file_is_named_with_its_flag(tmp_path, certs, flag):
    missing = tmp_path / "no-such.pem"
    extra = {"client_cert": "optional"} if flag == "ca_certs" else {}
    line = refused(*tls_args(certs, **{flag: missing}, **extra))
    assert f"--{flag.replace('_', '-')} {missing}: cannot read it: no such file or folder (check the path)" in line


@pytest.mark.parametrize("flag", ["certfile", "keyfile", "keyfile_password_file", "ca_certs"])
def test_a_file_that_cannot_be_read_is_named_with_its_flag(tmp_path, certs, flag):
    # A folder where a file should be: unreadable as a file even to root, who reads files whatever their mode.
    folder = tmp_path / "a-folder"
    folder.mkdir()
    extra = {"client_cert": "optional"} if flag == "ca_certs" else {}
    line = refused(*tls_args(certs, **{flag: folder}, **extra))
    assert f"--{flag.replace('_', '-')} {folder}: cannot read it: it is a folder, not a file (name a file)" in line


def test_a_certificate_without_read_permission_is_one_line(certs):
    certs.cert.chmod(0)
    try:
        try:
            certs.cert.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("running as root: a file without read permission is readable all the same")
        line = refused(*tls_args(certs))
        assert f"--certfile {certs.cert}: cannot read it: permission denied" in line
    finally:
        certs.cert.chmod(0o644)


def test_a_key_that_does_not_match_the_certificate(tmp_path, certs):
    other = make_certificates(tmp_path / "other")
    line = refused(*tls_args(certs, keyfile=other.key))
    assert f"--keyfile {other.key} does not match the certificate in --certfile {certs.cert}" in line


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_key_of_another_type_than_the_certificate_is_a_mismatch(tmp_path, certs, encrypted):
    """An RSA key for an ECDSA certificate: OpenSSL 3 says only NO_CERTIFICATE_ASSIGNED, which was reported as "must
    be PEM files" (both are) or, with a password file, as a wrong password (it was right)."""
    site_key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    assert isinstance(
        site_key, ec.EllipticCurvePrivateKey
    )  # the site's certificate is ECDSA: the RSA key is another type
    rsa = trustme.CA().issue_cert("localhost", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(rsa.private_key_pem.bytes(), password=None)
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode()) if encrypted else serialization.NoEncryption()
    path = tmp_path / "rsa-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    extra = {"keyfile_password_file": write(tmp_path / "password", PASSWORD + "\n")} if encrypted else {}
    line = refused(*tls_args(certs, keyfile=path, **extra))
    assert f"--keyfile {path} does not match the certificate in --certfile {certs.cert}" in line, line


def test_a_certificate_file_without_a_key_asks_for_keyfile(certs):
    # The common mistake with Let's Encrypt's files: fullchain.pem alone, privkey.pem forgotten.
    line = refused(*tls_args(certs, keyfile=None))
    assert f"--certfile {certs.cert}: no private key in it; give the key with --keyfile FILE" in line, line


def test_an_encrypted_key_without_its_password(certs, encrypted_key):
    line = refused(*tls_args(certs, keyfile=encrypted_key))
    assert f"--keyfile {encrypted_key}: the key is encrypted" in line
    assert "give its password with --keyfile-password-file FILE" in line


def test_a_wrong_password(tmp_path, certs, encrypted_key):
    wrong = write(tmp_path / "password", "not the password\n")
    line = refused(*tls_args(certs, keyfile=encrypted_key, keyfile_password_file=wrong))
    assert f"--keyfile {encrypted_key}: wrong password (from --keyfile-password-file {wrong})" in line, line


def test_an_empty_password_file(tmp_path, certs, encrypted_key):
    empty = write(tmp_path / "password", "\nthe password on the second line does not count\n")
    line = refused(*tls_args(certs, keyfile=encrypted_key, keyfile_password_file=empty))
    assert f"--keyfile-password-file {empty}: its first line is empty" in line


@pytest.mark.parametrize("flag", ["certfile", "keyfile"])
def test_a_certificate_or_key_that_is_not_pem(tmp_path, certs, flag):
    # DER, a PKCS#12 bundle, or the wrong file altogether: OpenSSL finds no "-----BEGIN" line.
    not_pem = write(tmp_path / "notes.txt", "this is not a certificate\n")
    line = refused(*tls_args(certs, **{flag: not_pem}))
    assert f"--{flag}" in line, line
    assert "no PEM" in line and "-----BEGIN" in line, line


def test_ca_certs_that_hold_no_certificate(tmp_path, certs):
    not_pem = write(tmp_path / "notes.txt", "this is not a certificate\n")
    line = refused(*tls_args(certs, ca_certs=not_pem, client_cert="optional"))
    assert f"--ca-certs {not_pem}: no PEM CA certificate in it" in line


# -- options that do not fit together ------------------------------------------------------------------------------


def test_an_https_bind_needs_a_certificate():
    line = refused("--bind", "https://127.0.0.1:0")
    assert "--bind https://127.0.0.1:0 needs a certificate: give --certfile" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keyfile", "key.pem"], "--keyfile is for HTTPS: give --certfile too"),
        (["--keyfile-password-file", "password"], "--keyfile-password-file is for HTTPS: give --certfile too"),
        (["--ca-certs", "ca.pem"], "--ca-certs is for HTTPS: give --certfile too"),
        (["--client-cert", "optional"], "--client-cert optional is for HTTPS: give --certfile and --ca-certs too"),
        (["--client-cert", "required"], "--client-cert required is for HTTPS: give --certfile and --ca-certs too"),
    ],
)
def test_tls_options_without_a_certificate(args, message):
    # Refused before any file is read: the paths need not exist.
    assert message in refused(*args)


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_client_certificates_need_ca_certs(certs, mode):
    line = refused(*tls_args(certs, client_cert=mode))
    assert f"--client-cert {mode} needs --ca-certs FILE: the CAs whose client certificates to accept" in line


def test_ca_certs_without_client_cert(certs):
    line = refused(*tls_args(certs, ca_certs=certs.ca_pem))
    assert "--ca-certs is only used to check client certificates: add --client-cert optional" in line


@pytest.mark.parametrize(
    "binds",
    [
        ["https://127.0.0.1:0"],  # nowhere to answer plain requests
        ["127.0.0.1:0"],  # HTTPS, as --certfile makes an address without a scheme
        ["http://127.0.0.1:0"],  # nowhere to send them
        ["http://127.0.0.1:0", "unix:{tmp}/site.sock"],  # a unix socket is plain, never a place to redirect to
    ],
)
def test_redirect_to_https_needs_an_https_and_a_plain_listener(tmp_path, certs, binds):
    args = [arg for bind in binds for arg in ("--bind", bind.format(tmp=tmp_path))]
    line = refused(*args, *tls_args(certs), "--redirect-to-https")
    assert "--redirect-to-https needs an HTTPS listener to send to and a plain one to answer on" in line
    assert "--bind https://0.0.0.0:443 --bind http://0.0.0.0:80" in line  # what to write instead


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("https://unix:/run/site.sock", "unix sockets are always plain HTTP; write unix:PATH"),
        ("http://unix:/run/site.sock", "unix sockets are always plain HTTP; write unix:PATH"),
        ("ftp://127.0.0.1:0", "the scheme must be http:// or https://"),
        ("HTTPS://127.0.0.1:0", "the scheme must be http:// or https://"),
    ],
)
def test_a_scheme_that_cannot_work_is_one_line(certs, bind, message):
    line = refused("--bind", bind, *tls_args(certs))
    assert f"--bind {bind!r}: {message}" in line


# -- starts that serve ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_an_encrypted_key_with_its_password_serves_https(tmp_path, certs, encrypted_key, ending):
    password = write(tmp_path / "password", PASSWORD + ending)
    args = tls_args(certs, keyfile=encrypted_key, keyfile_password_file=password)
    with ServerProcess("apps.hello:app", *args) as server:
        assert server.url.startswith("https://127.0.0.1:")
        answer = requests.get(server.url + "/", verify=str(certs.ca_pem), timeout=TIMEOUT)
    assert answer.text == "Hello, world!\n"


def test_the_key_may_be_in_the_certificate_file(tmp_path, certs):
    both = tmp_path / "cert-and-key.pem"
    both.write_bytes(certs.cert.read_bytes() + certs.key.read_bytes())
    with ServerProcess("apps.hello:app", "--certfile", str(both)) as server:
        answer = requests.get(server.url + "/", verify=str(certs.ca_pem), timeout=TIMEOUT)
    assert answer.text == "Hello, world!\n"


def test_an_expired_certificate_is_a_warning_and_still_serves(tmp_path):
    old = make_certificates(tmp_path / "old", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    with ServerProcess("apps.hello:app", *tls_args(old)) as server:
        warnings = [line for line in server.output().splitlines() if "[WARNING]" in line]
        # A client that checks certificates refuses it, as the warning says; one that does not is served.
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
            https_get(server.url, old.client_context())
        status, _ = https_get(server.url, trusting_anything())
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith(
        f"[WARNING] the certificate in {old.cert} expired on 2020-01-01 00:00 UTC: clients will refuse it"
    )
    assert status == 200


def test_certificate_settings_from_a_config_file(tmp_path, certs, encrypted_key):
    password = write(tmp_path / "password", PASSWORD + "\n")
    config = write(
        tmp_path / "site.toml",
        f"""\
app = "apps.hello:app"
bind = ["127.0.0.1:0"]
certfile = "{certs.cert}"
keyfile = "{encrypted_key}"
keyfile-password-file = "{password}"
ca-certs = ""
client-cert = "none"
tls-handshake-timeout = 5
cert-check-interval = 0
""",
    )
    with ServerProcess("--config", str(config), bind=False) as server:
        assert server.url.startswith("https://127.0.0.1:")
        answer = requests.get(server.url + "/", verify=str(certs.ca_pem), timeout=TIMEOUT)
    assert answer.text == "Hello, world!\n"


def test_a_config_file_with_a_bad_tls_value_is_one_line(tmp_path, certs):
    config = write(tmp_path / "site.toml", f'certfile = "{certs.cert}"\nclient-cert = "sometimes"\n')
    line = assert_one_line(run_cli("--config", str(config), "--bind", "127.0.0.1:0"))
    assert f'--config {config}: client-cert: expected one of "none", "optional", "required"' in line


def test_a_bare_bind_is_https_and_http_is_plain_on_one_server(app_dir, certs):
    args = ["--bind", "127.0.0.1:0", "--bind", "http://127.0.0.1:0", *tls_args(certs)]
    with ServerProcess("scheme_app:app", *args, cwd=app_dir, env={"PYTHONPATH": str(ROOT)}) as server:
        tls_url, plain_url = listening_urls(server, 2)
        assert tls_url.startswith("https://127.0.0.1:") and plain_url.startswith("http://127.0.0.1:")
        secure = requests.get(tls_url + "/", verify=str(certs.ca_pem), timeout=TIMEOUT)
        plain = requests.get(plain_url + "/", timeout=TIMEOUT)
        # A URL typed with http:// for the HTTPS port: a plain-text 400 that says what to type instead.
        mistaken = requests.get("http://" + tls_url.removeprefix("https://") + "/", timeout=TIMEOUT)
    assert secure.text == "https HTTPS=on"
    assert plain.text == "http HTTPS="
    assert mistaken.status_code == 400
    assert "use an https:// URL" in mistaken.text


def test_redirect_to_https_sends_plain_requests_to_the_https_listener(certs):
    args = ["--bind", "https://127.0.0.1:0", "--bind", "http://127.0.0.1:0", "--redirect-to-https"]
    with ServerProcess("apps.hello:app", *args, *tls_args(certs)) as server:
        tls_url, plain_url = listening_urls(server, 2)
        answer = requests.post(plain_url + "/form?x=1", data=b"body", allow_redirects=False, timeout=TIMEOUT)
        secure = requests.get(tls_url + "/", verify=str(certs.ca_pem), timeout=TIMEOUT)
    assert answer.status_code == 308  # a POST stays a POST, with its body
    assert answer.headers["Location"] == tls_url + "/form?x=1"
    assert secure.text == "Hello, world!\n"


@pytest.mark.parametrize(("label", "scheme"), [("https", "https"), ("http", "http"), ("web", "https")])
def test_systemd_socket_labels_choose_the_scheme(app_dir, certs, label, scheme):
    # FileDescriptorName=https or =http in the .socket unit, as --bind https:// or http:// would; any other name
    # leaves the choice to --certfile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {"PYTHONPATH": str(ROOT), "LISTEN_FDS": "1", "LISTEN_FDNAMES": label}
        with ActivatedServer(sock, "scheme_app:app", *tls_args(certs), cwd=app_dir, env=env) as server:
            assert server.url == f"{scheme}://127.0.0.1:{port}"
            verify = str(certs.ca_pem) if scheme == "https" else True
            answer = requests.get(server.url + "/", verify=verify, timeout=TIMEOUT)
            output = server.output()
    assert answer.text.startswith(scheme + " ")
    # The log's account of the socket must agree with how it is served: a label that names a scheme shows it,
    # another leaves it to --certfile and shows the bare address (the "serving ... on" line has the scheme).
    shown = f"{label}://127.0.0.1:{port}" if label in ("http", "https") else f"127.0.0.1:{port}"
    assert f"socket activation: descriptor 3 ({label}) is {shown}\n" in output, output


# -- in this process: parse_bind, resolve_schemes, systemd_listeners -----------------------------------------------


@pytest.mark.parametrize(
    ("value", "address", "shown"),
    [
        ("https://0.0.0.0:443", BindAddress(socket.AF_INET, "0.0.0.0", 443, "https"), None),
        ("http://0.0.0.0:80", BindAddress(socket.AF_INET, "0.0.0.0", 80, "http"), None),
        ("https://[::]:443", BindAddress(socket.AF_INET6, "::", 443, "https"), None),
        ("https://localhost:8443", BindAddress(socket.AF_INET, "localhost", 8443, "https"), None),
        ("https://:443", BindAddress(socket.AF_INET, "0.0.0.0", 443, "https"), "https://0.0.0.0:443"),
        ("127.0.0.1:8000", BindAddress(socket.AF_INET, "127.0.0.1", 8000, None), None),
        ("unix:/run/site.sock", BindAddress(socket.AF_UNIX, "/run/site.sock", 0, None), None),
    ],
)
def test_parse_bind_keeps_the_scheme(value, address, shown):
    assert parse_bind(value) == address
    assert str(parse_bind(value)) == (shown or value)  # as the log and the error messages write it


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://127.0.0.1:21", "the scheme must be http:// or https://"),
        ("https://unix:/run/site.sock", "unix sockets are always plain HTTP"),
        ("https://", "expected HOST:PORT"),
        ("https://127.0.0.1", "expected HOST:PORT"),
        ("https://[::1]", "expected [IPV6]:PORT"),
        ("https://127.0.0.1:99999", "the port must be a number from 0 to 65535"),
    ],
)
def test_parse_bind_errors_quote_the_value_as_written(value, message):
    with pytest.raises(BindError) as raised:
        parse_bind(value)
    assert str(raised.value).startswith(f"--bind {value!r}: {message}"), str(raised.value)


def unbound(*binds: str) -> list[Listener]:
    """Listeners for ``binds`` with no socket: resolve_schemes decides from the addresses alone."""
    return [Listener(None, parse_bind(bind)) for bind in binds]  # type: ignore[arg-type]


def test_resolve_schemes_with_a_certificate_makes_tcp_without_a_scheme_https():
    listeners = unbound("127.0.0.1:1", "[::1]:2", "http://127.0.0.1:3", "https://127.0.0.1:4", "unix:/run/s.sock")
    resolve_schemes(listeners, have_certificate=True)
    assert [listener.scheme for listener in listeners] == ["https", "https", "http", "https", "http"]
    assert [listener.tls for listener in listeners] == [True, True, False, True, False]


def test_resolve_schemes_without_a_certificate():
    listeners = unbound("127.0.0.1:1", "http://127.0.0.1:2", "unix:/run/s.sock")
    resolve_schemes(listeners, have_certificate=False)
    assert [listener.scheme for listener in listeners] == ["http", "http", "http"]
    with pytest.raises(BindError, match=re.escape("--bind https://127.0.0.1:3 needs a certificate: give --certfile")):
        resolve_schemes(unbound("127.0.0.1:1", "https://127.0.0.1:3"), have_certificate=False)


def test_systemd_labels_http_and_https_are_schemes():
    with socket.socket() as secure, socket.socket() as plain, socket.socket() as other:
        for sock in (secure, plain, other):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        first = free_pair()
        third = free_pair(first + 2)
        for fd, sock in ((first, secure), (first + 1, plain), (third, other)):
            os.dup2(sock.fileno(), fd)
        listeners = take(first, count="2", names="https:http") + take(third, names="web")
        try:
            assert [listener.address.scheme for listener in listeners] == ["https", "http", None]
            with pytest.raises(BindError, match="needs a certificate"):
                resolve_schemes(listeners, have_certificate=False)  # as --bind https:// without --certfile
            resolve_schemes(listeners, have_certificate=True)
            assert [listener.scheme for listener in listeners] == ["https", "http", "https"]
            assert listeners[0].url == f"https://127.0.0.1:{secure.getsockname()[1]}"
        finally:
            for listener in listeners:
                listener.sock.close()


def test_a_unix_socket_from_systemd_stays_plain_whatever_its_label(tmp_path):
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "site.sock"))
        unix.listen()
        fd = free_pair()
        os.dup2(unix.fileno(), fd)
        listeners = take(fd, names="https")
        try:
            resolve_schemes(listeners, have_certificate=True)
            assert [listener.scheme for listener in listeners] == ["http"]
        finally:
            for listener in listeners:
                listener.sock.close()
