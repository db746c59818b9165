"""Mounting a third-party app: a Flask application living under ``/flask`` inside our framework's site.

Flask apps are WSGI applications, and so are ours, so composing them takes one line in ``apps/demo.py``::

    site.mount("/flask", flask_mount.app)

The mount moves ``/flask`` from ``PATH_INFO`` to ``SCRIPT_NAME`` (PEP 3333), and Flask builds every URL under
it, as ``url_for`` shows on the page. Flask even renders with the site's own ``templates/base.html``: the
template asks for nothing either framework does not have.

Flask is an optional dependency (``python -m pip install flask``). Without it, ``app`` is a small page of our
framework saying how to install it, so the demo site never breaks for its absence.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from framework import App, Request, Response

from .common import TEMPLATES, use_site_error_pages

FLASK_INSTALLED = importlib.util.find_spec("flask") is not None


def create_flask_app() -> Callable[..., Any]:
    """A Flask app with two pages, rendered from the site's templates."""
    import flask

    flask_app = flask.Flask(__name__, template_folder=str(TEMPLATES))
    # Both frameworks call their cookie "session", with Path=/, and their formats differ: should this app ever use
    # Flask's session, its cookie must not overwrite the site's (docs/wsgi-apps.md explains).
    flask_app.config["SESSION_COOKIE_NAME"] = "flask_session"

    @flask_app.route("/")
    def hello() -> str:
        return flask.render_template(
            "flask.html",
            flask_version=_version("flask"),
            script_root=flask.request.script_root,
            path=flask.request.path,
            here=flask.url_for("hello"),
            other=flask.url_for("about", name="Zoë & <friends>"),
        )

    @flask_app.route("/about/<name>")
    def about(name: str) -> str:
        return flask.render_template(
            "flask.html",
            flask_version=_version("flask"),
            script_root=flask.request.script_root,
            path=flask.request.path,
            here=flask.url_for("hello"),
            other=None,
            name=name,
        )

    return flask_app


def create_install_page() -> App:
    """Our framework's stand-in for the Flask app when Flask is not installed."""
    page = App(__name__, templates=TEMPLATES)
    use_site_error_pages(page)

    @page.get("/")
    @page.get("/<path:rest>")
    def how_to_install(request: Request, rest: str = "") -> Response:
        return page.render(request, "flask_missing.html")

    return page


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


app = create_flask_app() if FLASK_INSTALLED else create_install_page()
