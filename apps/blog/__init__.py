"""A blog, built step by step in ``docs/framework.md``: accounts, posts with authors, flash messages, SQLite, a
command to set up the database, and tests with the framework's test client.

``create_app`` is an application factory: each call builds a new, independent app, so tests can make one per
test with its own database, and the demo site can mount one with its data directory::

    python -m server "apps.blog:create_app()"                          # the blog alone
    python -m framework --app "apps.blog:create_app()" init-db         # empty the database
    python -m framework --app "apps.blog:create_app()" run             # a development server that reloads

Where settings come from, later ones winning: the defaults below, ``config.toml`` in the instance folder (for a
deployment's secret key), ``BLOG_*`` environment variables, then ``settings`` (what a test or the demo site
passes). When none of them sets ``SECRET_KEY``, a random key is generated once and kept in the instance folder
(``instance/secret_key``), so the blog never signs sessions with a key anyone could know.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from framework import App

from ..common import AttemptLimiter, secret_key, security_headers, use_site_error_pages
from . import auth, blog, db


def create_app(settings: Mapping[str, Any] | None = None, instance_path: str | Path | None = None) -> App:
    """A new blog app (see the module docstring for where its settings come from)."""
    app = App(__name__, templates="templates", static="static", instance_path=instance_path)
    app.config.from_mapping(
        DATABASE=str(app.instance_path / "blog.sqlite"),
        LOGIN_LIMITER=AttemptLimiter(limit=10, window=60),  # Login and register attempts per address and username.
        POST_LIMITER=AttemptLimiter(limit=5, window=60),  # New posts per author and per address.
        MAX_POSTS=1000,  # Posts kept, newest first: the oldest give way to new ones.
    )
    app.config.from_file(app.instance_path / "config.toml", silent=True)
    app.config.from_prefixed_env("BLOG")
    app.config.from_mapping(settings or {})
    if not app.config["SECRET_KEY"]:  # No key given: a random one, generated once and kept in the instance folder.
        app.config["SECRET_KEY"] = secret_key(app.instance_path)

    app.add_middleware(security_headers)  # Never framed by another site, never content-sniffed.
    use_site_error_pages(app)  # 404, 403 and the rest as the site answers them, in the blog's layout.
    db.init_app(app)
    auth.normalise_stored_usernames(app.config["DATABASE"])  # Names from before they were canonical.
    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)

    @app.template_filter
    def date(timestamp: str) -> str:
        """``2026-12-02T10:48:29Z`` as ``2 December 2026``."""
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        return f"{moment.day} {moment:%B %Y}"

    return app
