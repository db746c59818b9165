"""Certificates for the HTTPS tests, from a test CA made on the spot with trustme (never a real CA's).

``make_certificates(directory)`` writes a server certificate for localhost and 127.0.0.1, its key, the CA that
signed it (for clients to trust), and a client certificate for the client-certificate tests, all as PEM files.
A second call gives a different CA: a "renewed" certificate that the first CA's clients do not trust, which is
how the reload tests tell the old certificate from the new one.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    """PEM files for one test CA and what it issued."""

    ca: trustme.CA
    ca_pem: Path  # what clients trust
    cert: Path  # the server's certificate chain
    key: Path  # its key
    client_cert: Path  # a client certificate and its key in one file (for requests' cert=)
    client_subject: str  # the client certificate's subject, as SSL_CLIENT_S_DN gives it

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client context that trusts this CA (and only it); ``minimum_version=``/``maximum_version=``."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        for name, value in versions.items():
            setattr(context, name, value)
        return context


def make_certificates(directory: Path, *, not_after: datetime.datetime | None = None) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    extra = {"not_after": not_after} if not_after else {}
    server = ca.issue_cert("localhost", "127.0.0.1", **extra)
    client = ca.issue_cert(
        "alice@example.test", common_name="alice", organization_name="Example", organization_unit_name="People"
    )
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key", "client")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    with open(paths["cert"], "wb") as file:
        for blob in server.cert_chain_pems:
            file.write(blob.bytes())
    with open(paths["client"], "wb") as file:
        file.write(client.private_key_pem.bytes())
        for blob in client.cert_chain_pems:
            file.write(blob.bytes())
    return Certificates(ca, paths["ca"], paths["cert"], paths["key"], paths["client"], "CN=alice,OU=People,O=Example")
