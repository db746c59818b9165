"""Cross-site request forgery protection: a secret per session that forms must send back.

Another site can make a visitor's browser POST to this one, cookies included, but it cannot read this site's
pages, so it cannot know the token that this site printed into its own forms. Every request that may change
state (POST, PUT, PATCH, DELETE, and any other method that is not one of the safe GET, HEAD, OPTIONS and
TRACE) to a view that is not marked ``@app.csrf_exempt`` must carry the session's token, in the ``csrf_token``
form field or the ``X-CSRF-Token`` header (for JavaScript); otherwise it is refused with 403.

All such requests are checked, not just those with a form content type: a cross-site form can also send
``text/plain``. JSON APIs authenticated by something other than the session cookie opt out with the decorator.
The token lives in the session (so it needs the app's ``secret_key``) and is compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import HTTPError

if TYPE_CHECKING:
    from .request import Request

# RFC 9110's safe methods. Listing the safe ones rather than the unsafe ones means a view registered for an
# unusual method (PURGE, LOCK, ...) is protected too.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CSRFProtection:
    """Issues the per-session token (``token``) and checks it on unsafe requests (``check``)."""

    session_key = "_csrf_token"
    field_name = "csrf_token"
    header_name = "X-CSRF-Token"

    def token(self, request: Request) -> str:
        """The session's token, created and stored in the session on first use."""
        session = request.session
        token = session.get(self.session_key)
        if not isinstance(token, str) or not token:
            token = session[self.session_key] = secrets.token_urlsafe(32)
        return token

    def check(self, request: Request, view: Callable[..., Any]) -> None:
        """Raise 403 unless the request is safe, the view is exempt, or the right token came with it."""
        if request.method in SAFE_METHODS or getattr(view, "csrf_exempt", False):
            return
        expected = request.session.get(self.session_key)
        sent = request.headers.get(self.header_name) or request.form.get(self.field_name)
        if not isinstance(expected, str) or not expected or not sent:
            raise HTTPError(403, "The CSRF token is missing. Reload the page and submit the form again.")
        if not hmac.compare_digest(expected.encode(), sent.encode()):
            raise HTTPError(403, "The CSRF token is incorrect. Reload the page and submit the form again.")


def csrf_exempt(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view as exempt from CSRF checks (for APIs that do not rely on the session cookie)."""
    view.csrf_exempt = True  # type: ignore[attr-defined]
    return view
