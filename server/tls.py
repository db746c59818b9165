"""HTTPS: the server's certificates, its TLS settings, and the encryption of one connection, kept apart from I/O.

TLS sits between the socket and the HTTP parser. Rather than wrapping sockets (``ssl.SSLSocket``, whose
non-blocking mode reports "try again" through exceptions that can mean either direction), each connection gets a
``TLSSession``: an ``ssl.SSLObject`` over two memory buffers. Ciphertext from ``recv`` goes in, plaintext comes
out for the parser; plaintext from the response goes in, ciphertext comes out for ``send``. That is the same
sans-IO shape as the HTTP parser, and it lets the event loop run the handshake itself, without a thread, under
its own deadline, and then use the very same send queue, backpressure and timeouts as plain connections do
(``server.connection``).

Settings follow what the standard library calls secure: ``ssl.PROTOCOL_TLS_SERVER`` with its default ciphers,
TLS 1.2 as the minimum (1.0 and 1.1 are refused; RFC 8996 deprecates them), no renegotiation (a client could
make the server redo the expensive half of a handshake at will), ALPN ``http/1.1``. The host name a client asked
for (SNI) is recorded and given to the application when it is a host name (the client's unverified claim), as
are the protocol, the cipher and a verified client certificate's subject, under the names Apache and nginx use
(``SSL_CLIENT_S_DN``...).

Certificates renew (Let's Encrypt every 60 to 90 days), so ``CertificateStore`` rebuilds the context when the
files change or on SIGHUP. A new context serves new connections; connections already open keep the one they
shook hands with, so none is dropped. A renewal that cannot be loaded (a half-copied file, a key that does not
match) leaves the old certificate in place and says why in one line.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
from dataclasses import dataclass
from typing import Any

from server.oserrors import describe

log = logging.getLogger("server.tls")

HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello (RFC 8446 5.1: ContentType handshake)
CLIENT_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
BIO_SLICE = 64 * 1024  # see TLSSession.handshake
_READ_SIZE = 16 * 1024  # a TLS record holds at most this much (RFC 8446 5.1); read() allocates what it asks for


class TLSConfigError(ValueError):
    """A certificate, key or TLS setting that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class TLSFiles:
    """What ``--certfile``, ``--keyfile``, ``--keyfile-password-file``, ``--ca-certs`` and ``--client-cert`` name."""

    certfile: str
    keyfile: str | None = None  # None: the key is in the certificate file
    password_file: str | None = None
    ca_certs: str | None = None
    client_cert: str = "none"

    def paths(self) -> list[str]:
        """Every file the context is built from, each once (a renewal may touch any of them)."""
        named = [self.certfile, self.keyfile, self.password_file, self.ca_certs]
        return list(dict.fromkeys(path for path in named if path))


# -- building a context -------------------------------------------------------------------------------------------


def build_context(files: TLSFiles) -> ssl.SSLContext:
    """A server context for ``files``; raises TLSConfigError with one line a person can act on."""
    if files.client_cert not in CLIENT_CERT_MODES:
        raise TLSConfigError(f"--client-cert {files.client_cert!r}: choose none, optional or required")
    if files.client_cert != "none" and not files.ca_certs:
        raise TLSConfigError(
            f"--client-cert {files.client_cert} needs --ca-certs FILE: the CAs whose client certificates to accept"
        )
    if files.ca_certs and files.client_cert == "none":
        raise TLSConfigError("--ca-certs is only used to check client certificates: add --client-cert optional")
    _check_pem_files(files)
    password = _read_password(files.password_file) if files.password_file else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.sni_callback = _remember_server_name
    key_source = files.keyfile or files.certfile
    asked: list[bool] = []  # whether OpenSSL asked for the password: the key is encrypted
    try:
        context.load_cert_chain(files.certfile, files.keyfile, password=_password_callback(password, asked))
    except _EncryptedKey:
        raise TLSConfigError(
            f"--keyfile {key_source}: the key is encrypted; give its password with --keyfile-password-file FILE"
        ) from None
    except OSError as error:
        if not isinstance(error, ssl.SSLError):  # a file that went away since it was checked (a renewal mid-swap)
            raise TLSConfigError(f"cannot load the certificate {files.certfile}: {describe(error)}") from None
        if asked and not _is_key_mismatch(error):
            # OpenSSL's own report here is often just "PEM lib": it was asked for a password, and failed.
            raise TLSConfigError(
                f"--keyfile {key_source}: wrong password (from --keyfile-password-file {files.password_file})"
            ) from None
        raise TLSConfigError(_explain_load_error(error, files, key_source)) from None
    if files.ca_certs:
        try:
            context.load_verify_locations(cafile=files.ca_certs)
        except OSError as error:  # ssl.SSLError, or the file gone since it was checked
            reason = getattr(error, "reason", None) or describe(error)
            raise TLSConfigError(f"--ca-certs {files.ca_certs}: no usable CA certificate in it ({reason})") from None
        context.verify_mode = CLIENT_CERT_MODES[files.client_cert]
    return context


class _EncryptedKey(Exception):
    """OpenSSL asked for a password that was not given (instead of prompting on a terminal nobody watches)."""


def _password_callback(password: bytes | None, asked: list[bool]) -> Any:
    def give() -> bytes:
        asked.append(True)
        if password is None:
            raise _EncryptedKey()
        return password

    return give


_PEM_LIMIT = 1024 * 1024  # certificate chains and keys are a few KiB; a larger file is not one


def _read_pem(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(_PEM_LIMIT)
    except OSError as error:
        raise TLSConfigError(f"{flag} {path}: cannot read it: {describe(error)}") from None


def _check_pem_files(files: TLSFiles) -> None:
    """Each file readable and holding what it should, in PEM. Checked before OpenSSL loads them, because for
    these mistakes its error says only "PEM lib" (the cause is further down its error queue, which Python drops)."""
    certificate = _read_pem("--certfile", files.certfile)
    if b"-----BEGIN CERTIFICATE-----" not in certificate:
        raise TLSConfigError(
            f"--certfile {files.certfile}: no PEM certificate in it (expected a -----BEGIN CERTIFICATE----- block)"
        )
    if files.keyfile is None:
        if b"PRIVATE KEY-----" not in certificate:
            raise TLSConfigError(
                f"--certfile {files.certfile}: no private key in it; give the key with --keyfile FILE "
                "(with Let's Encrypt: --certfile fullchain.pem --keyfile privkey.pem)"
            )
    elif b"PRIVATE KEY-----" not in _read_pem("--keyfile", files.keyfile):
        raise TLSConfigError(
            f"--keyfile {files.keyfile}: no PEM private key in it (expected a -----BEGIN PRIVATE KEY----- block)"
        )
    if files.ca_certs and b"-----BEGIN CERTIFICATE-----" not in _read_pem("--ca-certs", files.ca_certs):
        raise TLSConfigError(f"--ca-certs {files.ca_certs}: no PEM CA certificate in it")


def _read_password(path: str) -> bytes:
    """The first line of ``--keyfile-password-file``, without its line ending (so ``echo pw > file`` works)."""
    try:
        with open(path, "rb") as file:
            first = file.readline()
    except OSError as error:
        raise TLSConfigError(f"--keyfile-password-file {path}: cannot read it: {describe(error)}") from None
    password = first.rstrip(b"\r\n")
    if not password:
        raise TLSConfigError(f"--keyfile-password-file {path}: its first line is empty")
    return password


# How OpenSSL says the key loaded but is not the certificate's: KEY_VALUES_MISMATCH for another key of the same type;
# NO_CERTIFICATE_ASSIGNED (OpenSSL 3) for a key of another type (an RSA key beside an ECDSA certificate), since the
# key then fills a slot of its own type, which holds no certificate; KEY_TYPE_MISMATCH where other builds check the
# pair with X509_check_private_key.
_KEY_MISMATCH_REASONS = ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED", "KEY_TYPE_MISMATCH")


def _is_key_mismatch(error: ssl.SSLError) -> bool:
    return (error.reason or "").upper() in _KEY_MISMATCH_REASONS


def _explain_load_error(error: ssl.SSLError, files: TLSFiles, key_source: str) -> str:
    reason = (error.reason or "").upper()
    if _is_key_mismatch(error):
        return f"--keyfile {key_source} does not match the certificate in --certfile {files.certfile}"
    if "NO_START_LINE" in reason or "CERTIFICATE" in reason or error.library == "PEM":
        what = error.reason or error
        return f"cannot load the certificate or key ({what}): --certfile and --keyfile must be PEM files"
    return f"cannot load the certificate {files.certfile} with the key {key_source}: {error.reason or error}"


def _remember_server_name(tls: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
    # The standard library has no server-side accessor for the name a client asked for, so keep it on the object.
    tls.requested_server_name = valid_server_name(server_name)  # type: ignore[attr-defined]


_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def valid_server_name(name: str | None) -> str | None:
    """``name`` if it is a DNS host name (RFC 6066 3: the SNI extension carries one, in ASCII), else None. The
    client chooses these bytes freely and OpenSSL passes on any of them, CR, LF and ``<`` included, while an
    application may log ``SSL_TLS_SNI`` or put it in a page: a name that is not a host name is dropped, as if the
    client had sent none. (It is the client's claim, never checked against the certificate.) Letters, digits,
    hyphens and underscores (found in real names despite RFC 952), in dot-separated labels of 1 to 63 characters,
    253 in all; one trailing dot (a fully qualified name, which RFC 6066 leaves out but clients send) is dropped.
    str methods only, linear in the name's length."""
    if name and name[-1] == ".":
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    for label in name.split("."):
        if not 0 < len(label) <= 63 or not _NAME_CHARACTERS.issuperset(label):
            return None
    return name


# -- certificate validity, for the operator's warning --------------------------------------------------------------


def certificate_validity(path: str) -> tuple[datetime.datetime, datetime.datetime] | None:
    """(not before, not after) of the first certificate in the PEM file ``path``, or None if it cannot be read.

    The standard library loads certificates but does not show their dates, so the two are read from the DER
    encoding (RFC 5280 4.1: Certificate → TBSCertificate → [version], serial, signature, issuer, validity)."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read()
        begin = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
        der = ssl.PEM_cert_to_DER_cert(text[begin:end])
        _, certificate, _ = _der_item(der, 0)
        tbs = _der_children(der, certificate)
        if tbs[0][0] == 0xA0:  # the explicit [0] version, absent in v1 certificates
            tbs = tbs[1:]
        _, validity, validity_end = tbs[3]  # after the serial number, the signature algorithm and the issuer
        not_before, not_after = _der_children(der, validity, validity_end)[:2]
        return _der_time(der, not_before), _der_time(der, not_after)
    except (OSError, ValueError, IndexError):
        return None


def _der_item(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, where its content starts, where it ends) of the DER item at ``pos``."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    return tag, pos, pos + length


def _der_children(der: bytes, start: int, end: int | None = None) -> list[tuple[int, int, int]]:
    """The items inside the constructed item whose content starts at ``start`` (``end``: where it stops)."""
    if end is None:
        _, start, end = _der_item(der, start)
    items = []
    while start < end:
        items.append(_der_item(der, start))
        start = items[-1][2]
    return items


def _der_time(der: bytes, item: tuple[int, int, int]) -> datetime.datetime:
    tag, start, end = item
    text = der[start:end].decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime: two-digit years, 50-99 meaning 19xx (RFC 5280 4.1.2.5.1)
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    elif tag != 0x18:  # GeneralizedTime
        raise ValueError(f"unexpected time tag {tag:#x}")
    return datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)


def validity_warning(path: str, now: datetime.datetime | None = None) -> str | None:
    """A warning when the certificate in ``path`` has expired or is not valid yet: clients will refuse it."""
    validity = certificate_validity(path)
    if validity is None:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    not_before, not_after = validity
    if now > not_after:
        return f"the certificate in {path} expired on {not_after:%Y-%m-%d %H:%M} UTC: clients will refuse it"
    if now < not_before:
        return f"the certificate in {path} is not valid before {not_before:%Y-%m-%d %H:%M} UTC: clients will refuse it"
    return None


# -- renewals -----------------------------------------------------------------------------------------------------


def _signature(paths: list[str]) -> tuple[tuple[int, int, int, int], ...]:
    """What changes when a file is replaced or rewritten (inode: certbot swaps symlinks; mtime; size) or when its
    permissions or owner change (ctime): a renewal that failed for want of read permission is tried again as soon
    as the operator's chmod or chown, which the warning asked for, makes it readable."""
    marks = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            marks.append((0, 0, -1, 0))
        else:
            marks.append((st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns))
    return tuple(marks)


class CertificateStore:
    """The current server context, rebuilt when its files change (``check``) or on request (``reload``).

    Built once in the parent process, before workers are forked, so a certificate that cannot be loaded stops
    the start with one line (exit 2) and every worker starts with a good context. Each worker then watches the
    files itself: a change is loaded once the files have stopped changing (two checks in a row see the same
    files), so a certificate and key replaced one after the other are not loaded half-way."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        # A worker under a supervisor reloads quietly (debug): the supervisor watches the same files and says
        # once what happened, instead of every worker saying it (see server.__main__.serve).
        self.quiet = False
        self._paths = files.paths()
        self._loaded = _signature(self._paths)
        self.context = build_context(files)
        self._seen = self._loaded
        self._failed: tuple[tuple[int, int, int, int], ...] | None = None

    def check(self, *, settled: bool = False) -> bool:
        """Reload if the files changed and have settled since the last check (or, with ``settled``, have changed
        at all: a worker starting after SIGHUP). True when a new context is in use."""
        now = _signature(self._paths)
        settled, self._seen = settled or now == self._seen, now
        if now == self._loaded or now == self._failed or not settled:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Build a new context from the files now; on failure keep the old one and log why. True on success."""
        now = _signature(self._paths)
        try:
            context = build_context(self.files)
        except TLSConfigError as error:
            self._failed = now
            log.log(
                logging.DEBUG if self.quiet else logging.WARNING,
                "keeping the certificate in use: the new one cannot be loaded: %s",
                error,
            )
            return False
        self.context = context
        self._loaded = self._seen = now
        self._failed = None
        log.log(logging.DEBUG if self.quiet else logging.INFO, "loaded the certificate %s", self.files.certfile)
        warning = validity_warning(self.files.certfile)
        if warning and not self.quiet:
            log.warning("%s", warning)
        return True


# -- one connection -----------------------------------------------------------------------------------------------


class TLSFailure(Exception):
    """The peer broke the TLS protocol or the handshake failed; the message says how, for the log."""


class TLSSession:
    """One server-side TLS connection as a sans-IO object: ciphertext in and out, plaintext out and in.

    Not thread-safe: the connection calls it with its lock held, since both the loop (reading) and an
    application thread (writing a response) use it."""

    __slots__ = ("_incoming", "_leftover", "_outgoing", "_tls", "established", "peer_closed")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._leftover = b""  # bytes that arrived with the handshake's last flight, for decrypt()
        self.established = False
        self.peer_closed = False  # the client said close_notify: nothing it sends after that counts

    # A memory BIO keeps the largest size it ever held until the connection ends (OpenSSL does not shrink it),
    # so bytes go in and out of both in slices of this size: an idle connection that once received a 256 KiB
    # upload or sent a 4 MiB response holds about two slices, not the largest burst. (Measured before: 100
    # idle connections after a 4 MiB response each held 4.7 MiB apiece.) 64 KiB rather than 16: a 1 MiB file over
    # TLS measured 1,360 req/s with 64 KiB slices, 1,230 with 16 KiB (each 48 KiB file piece then went in three).
    def handshake(self, data: bytes) -> bool:
        """Feed the client's bytes to the handshake; True once it is complete. Raises TLSFailure.

        What the server must answer is then in ``outgoing()``, also after a failure (the alert that says why)."""
        view = memoryview(data)
        for start in range(0, len(view), BIO_SLICE):
            self._incoming.write(view[start : start + BIO_SLICE])
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLError as error:
                raise TLSFailure(error.reason or str(error)) from None
            self.established = True
            self._leftover = bytes(view[start + BIO_SLICE :])  # a request sent right behind the client's Finished
            return True
        return False

    def decrypt(self, data: bytes) -> bytes | None:
        """The plaintext ``data`` completes (b"" if no record is complete yet); None once the client said
        close_notify. Raises TLSFailure for a record that does not decrypt."""
        if self._leftover:
            data, self._leftover = self._leftover + data, b""
        if len(data) <= BIO_SLICE:  # the usual case: one request, a record or two
            if data:
                self._incoming.write(data)
            return self._read_records([])
        chunks: list[bytes] = []
        view = memoryview(data)
        for start in range(0, len(view), BIO_SLICE):
            self._incoming.write(view[start : start + BIO_SLICE])
            if self._read_records(chunks) is None:
                return b"".join(chunks) if chunks else None
        return b"".join(chunks)

    def _read_records(self, chunks: list[bytes]) -> bytes | None:
        """Append the plaintext of every whole record in the incoming buffer to ``chunks``; return it all, or
        None when a close_notify came (and nothing before it)."""
        read = self._tls.read
        while True:
            try:
                chunk = read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as error:
                raise TLSFailure(error.reason or str(error)) from None
            if not chunk:  # close_notify: what came before it is still a request (the closing FIN follows)
                self.peer_closed = True
                return b"".join(chunks) if chunks else None
            chunks.append(chunk)
            if not self._incoming.pending and not self._tls.pending():
                break  # all consumed: asking again would only raise SSLWantReadError, a cost on every request
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """The records that carry ``data`` (and anything the session had to send before them)."""
        if len(data) <= BIO_SLICE:
            self._tls.write(data)
            return self._outgoing.read()
        pieces = []
        view = memoryview(data)
        for start in range(0, len(view), BIO_SLICE):
            self._tls.write(view[start : start + BIO_SLICE])
            pieces.append(self._outgoing.read())
        return b"".join(pieces)

    def outgoing(self) -> bytes:
        """Bytes the session has produced for the client and not yet handed out (handshake flights, alerts)."""
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        """The alert that ends the session cleanly (so a client can tell our close from a truncation)."""
        try:
            self._tls.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: the client's close_notify has not come, and need not
        return self._outgoing.read()

    def environ(self) -> dict[str, str]:
        """What the application learns about the connection, under Apache's and nginx's names."""
        tls = self._tls
        cipher = tls.cipher()
        facts = {
            "HTTPS": "on",
            "SSL_PROTOCOL": tls.version() or "",
            "SSL_CIPHER": cipher[0] if cipher else "",
            "SSL_CLIENT_VERIFY": "NONE",
        }
        server_name = getattr(tls, "requested_server_name", None)
        if server_name:
            facts["SSL_TLS_SNI"] = server_name
        # getpeercert() returns a certificate only when it was verified against --ca-certs.
        certificate = tls.getpeercert()
        if certificate:
            facts["SSL_CLIENT_VERIFY"] = "SUCCESS"
            facts["SSL_CLIENT_S_DN"] = distinguished_name(certificate.get("subject", ()))
            facts["SSL_CLIENT_I_DN"] = distinguished_name(certificate.get("issuer", ()))
            if "serialNumber" in certificate:
                facts["SSL_CLIENT_M_SERIAL"] = str(certificate["serialNumber"])
            if "notAfter" in certificate:
                facts["SSL_CLIENT_V_END"] = str(certificate["notAfter"])
        return facts


# The attribute names getpeercert() uses, as RFC 4514 abbreviates them.
_SHORT_NAMES = {
    "commonName": "CN",
    "surname": "SN",
    "givenName": "GN",
    "serialNumber": "SERIALNUMBER",
    "title": "title",
    "initials": "initials",
    "generationQualifier": "generationQualifier",
    "pseudonym": "pseudonym",
    "dnQualifier": "dnQualifier",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "emailAddress",
}


def distinguished_name(rdns: Any) -> str:
    """An RFC 4514 string (``CN=alice,O=Example,C=NL``) from getpeercert()'s nested tuples, as nginx's
    ``$ssl_client_s_dn`` and Apache's ``SSL_CLIENT_S_DN`` (with RFC 2253 formatting) give it: most specific
    first, which is the reverse of the order in the certificate."""
    parts = []
    for rdn in reversed(rdns):
        parts.append("+".join(f"{_SHORT_NAMES.get(name, name)}={_escape_dn_value(value)}" for name, value in rdn))
    return ",".join(parts)


def _escape_dn_value(value: str) -> str:
    escaped = "".join("\\" + ch if ch in ',+"\\<>;' else ch for ch in value)
    if escaped[:1] in (" ", "#"):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped
