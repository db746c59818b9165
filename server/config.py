"""All of the server's settings in one frozen dataclass, with safe defaults.

Every limit the server enforces lives here, so a reader can see in one place what a client can make the server
hold and for how long. The command line (``server.__main__``) and tests build a ``Config``; nothing else reads
flags, environment variables or the ``--config`` file. The three are layers over these defaults, and each field
is named the same way in all three: ``--max-body-bytes 1M``, ``SERVER_MAX_BODY_BYTES=1M``,
``max-body-bytes = "1M"``; a flag wins over the environment, which wins over the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.http import Limits


@dataclass(frozen=True)
class Config:
    """Settings for one server (shared by all its worker processes)."""

    app: str | None = None
    binds: tuple[str, ...] = ("127.0.0.1:8000",)
    workers: int = 1
    threads: int = 8
    loop: str = "auto"
    cpu_affinity: str = "off"  # "auto": each process's threads on one CPU (see workers.pin_to_cpu for the trade)
    # Recycle a worker process after this many requests (0: never), plus a random 0..max_requests_jitter of its
    # own so that workers started together do not all restart together. For apps that leak memory: a new
    # worker is started first, then the old one finishes what it has in hand (see server.workers.Supervisor).
    max_requests: int = 0
    max_requests_jitter: int = 0

    # Timeouts, in seconds. The header timeout is a total deadline for the whole request head.
    keepalive_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
    graceful_timeout: float = 30.0
    # An application request running longer than this is reported with its thread's stack (0: never); under
    # --workers, a worker whose every thread is past it is replaced, a new worker first.
    timeout: float = 30.0
    # The slowest a request body may arrive, in bytes per second, owed in every window of body_timeout seconds
    # (after Apache's mod_reqtimeout MinRate): a trickle cannot hold a connection and its buffer forever.
    min_body_rate: int = 1024

    # Limits; each answers with its own status when exceeded (see server.http).
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    max_target_length: int = 8 * 1024
    max_body_bytes: int = 16 * 1024**2
    max_connections: int = 16384
    # Request bodies larger than this are spooled to a temporary file instead of memory.
    body_spool_bytes: int = 1024 * 1024
    # What all the request bodies buffered by one process (in memory and spooled) may add up to: a body that
    # would pass it is refused with 503 and Retry-After before any of it is stored.
    max_buffered_bytes: int = 256 * 1024**2

    access_log: str = "off"
    log_level: str = "info"
    debug: bool = False
    reload: bool = False  # python -m server --reload: a parent that restarts the server when its files change

    # Proxies whose X-Forwarded-* and Forwarded headers are believed: IPs, CIDR networks, "*", or "unix".
    forwarded_allow_ips: tuple[str, ...] = ()
    # Which forwarding headers those proxies write: "x-forwarded" (X-Forwarded-For/-Proto) or "forwarded"
    # (RFC 7239). Only that family is read; the other is ignored, so a client cannot slip one past the proxy.
    proxy_headers: str = "x-forwarded"

    # HTTPS (server.tls). With a certificate, every --bind address is HTTPS unless written http://HOST:PORT.
    certfile: str | None = None
    keyfile: str | None = None  # None: the key is in the certificate file
    keyfile_password_file: str | None = None
    ca_certs: str | None = None  # CAs whose client certificates are accepted (with client_cert)
    client_cert: str = "none"  # none, optional or required
    # A client has this long from connecting to finishing the TLS handshake; until then it holds a descriptor
    # (never a thread), so this bounds what a client that connects and sends nothing can hold.
    tls_handshake_timeout: float = 10.0
    # How often each worker looks at the certificate files for a renewal (0: only on SIGHUP).
    cert_check_interval: float = 5.0
    # Plain-HTTP listeners answer every request with 308 to the same URL on the first HTTPS listener.
    redirect_to_https: bool = False

    # Static mounts as given to --static ("URL=DIR"), with their shared options.
    static: tuple[str, ...] = ()
    static_max_age: int | None = None
    static_listing: bool = False
    static_dotfiles: bool = False
    follow_symlinks: bool = False

    @property
    def limits(self) -> Limits:
        """The parser's share of the limits."""
        return Limits(
            max_header_bytes=self.max_header_bytes,
            max_header_count=self.max_header_count,
            max_target_length=self.max_target_length,
            max_body_bytes=self.max_body_bytes,
        )
