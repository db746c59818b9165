"""The demo site that ``python -m server`` serves when no application is named: the whole stack at work.

The site is one ``framework.App`` with a home page, and every example is a WSGI application mounted under
its own prefix. Each lives in its own module, small enough to read in one sitting::

    /guestbook/   apps/guestbook.py     a form with CSRF and validation, SQLite, pagination
    /blog/        apps/blog/            accounts, posts with authors, flash messages: docs/framework.md
    /files/       apps/files.py         multipart uploads with a size limit, ranged downloads
    /todo/        apps/todo_api.py      a JSON API, and the page that uses it from static/todo.js
    /time         apps/raw_time.py      a bare application(environ, start_response), no framework
    /inspect/     apps/inspector.py     the WSGI environ the server passed, escaped
    /flask/       apps/flask_mount.py   a Flask app mounted inside ours (when Flask is installed)
    /hello        apps/hello.py         the smallest WSGI application

``/static/`` is not an app: ``python -m server`` mounts the site's ``static/`` folder there itself
(``STATIC_MOUNT``), and answers those requests straight from its event loop with ``os.sendfile``, without
reaching any Python application (the folder is at the repository root, or inside ``apps`` once installed from a
wheel: ``apps.common.STATIC``). The site also serves ``static/`` from the app (``App(static=...)``), so it
looks the same under another WSGI server, or in tests through webtest, where nothing is in front of it.

Browsers ask every site for ``/favicon.ico``, whatever its pages link to, so the site answers that path too
(``static/favicon.ico``, the same file ``templates/base.html`` links to under ``/static/``) instead of logging a
404 for every first visit.

The examples keep their data in one data directory (``--data-dir DIR``, or ``./var``; see
``apps/common.py``), so the guestbook, the todo list and the uploads survive a restart. Where that is depends on
the folder the server was started in, so the site says it at start-up, in one line of the server's log: started
somewhere else, the guestbook would otherwise look empty with no hint why.
"""

from __future__ import annotations

import logging
from pathlib import Path

from framework import App, FileResponse, Request, Response

from . import blog, files, flask_mount, guestbook, inspector, raw_time, todo_api
from .common import STATIC, TEMPLATES, default_data_dir, secret_key, security_headers, use_site_error_pages
from .hello import app as hello

# What python -m server mounts at /static when it serves the demo site (see server/__main__.py:prepare).
STATIC_MOUNT = f"/static={STATIC}"
# Icons change rarely; a day in the browser's cache saves the request on every page.
FAVICON_MAX_AGE = 24 * 60 * 60

log = logging.getLogger(__name__)


def create_app(data_dir: Path | None = None) -> App:
    """The whole site, keeping its data in ``data_dir`` (default: ``$SERVER_DATA_DIR`` or ``./var``)."""
    data_dir = data_dir or default_data_dir()
    log.info("demo site data in %s (set --data-dir or SERVER_DATA_DIR to change)", data_dir.resolve())
    site = App(__name__, templates=TEMPLATES, static=STATIC, secret_key=secret_key(data_dir))
    use_site_error_pages(site)
    site.add_middleware(security_headers)  # Around the mounts too: /time, /hello and /flask/ get them as well.

    @site.get("/")
    def home(request: Request) -> Response:
        """The home page: what the site is and a link to each example."""
        return site.render(request, "index.html", flask_installed=flask_mount.FLASK_INSTALLED)

    @site.get("/favicon.ico")
    def favicon(request: Request) -> Response:
        """The site's icon at the address browsers try on their own (pages link to ``/static/favicon.ico``)."""
        return FileResponse(STATIC / "favicon.ico", request, max_age=FAVICON_MAX_AGE)

    # Apps that keep data get the data directory; the others are the same objects their modules export.
    site.mount("/guestbook", guestbook.create_app(data_dir))
    site.mount("/blog", blog.create_app({"SECRET_KEY": secret_key(data_dir)}, instance_path=data_dir / "blog"))
    site.mount("/files", files.create_app(data_dir))
    site.mount("/todo", todo_api.create_app(data_dir))
    site.mount("/time", raw_time.application)
    site.mount("/inspect", inspector.app)
    site.mount("/flask", flask_mount.app)
    site.mount("/hello", hello)
    return site


app = create_app()
