"""``--redirect-to-https``: plain HTTP listeners answer every request with 308 to the same URL on HTTPS.

A site that serves HTTPS still gets plain requests: URLs typed without a scheme, old links, bookmarks. Answering
them from the server, on the loop, keeps the application from ever seeing a request it would serve insecurely.
308 (RFC 9110 15.4.9) rather than 301: a POST is repeated as a POST, with its body, instead of turning into a GET.
The host is the one the client asked for (its Host header was checked by the parser), the port that of the
HTTPS listener, left out when it is 443.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.http import Request


@dataclass(frozen=True)
class HTTPSRedirect:
    """Where a plain request goes: the same host and target on ``port``, over HTTPS."""

    port: int

    def location(self, request: Request, fallback_host: str) -> str:
        """The https:// URL for ``request``; ``fallback_host`` when it named none (HTTP/1.0 without Host)."""
        host = request.host or (f"[{fallback_host}]" if ":" in fallback_host else fallback_host)
        if host.startswith("["):  # [IPv6]:port
            host = host[: host.index("]") + 1]
        else:
            host = host.partition(":")[0]
        port = "" if self.port == 443 else f":{self.port}"
        path = "/" if request.path == "*" else request.path
        query = f"?{request.query}" if request.query else ""
        return f"https://{host}{port}{path}{query}"
