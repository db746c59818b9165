"""A small web framework on WSGI: routing, requests, responses, templates, sessions and CSRF.

Read it in this order: ``routing`` (paths to views), ``request`` and ``response`` (what a view gets and
gives), ``app`` (one request's journey through hooks and error handlers), then ``templates``, ``sessions``,
``csrf``, ``forms`` (uploads) and ``files``. The helpers underneath are ``errors`` and ``pages`` (HTTP errors
and their pages), ``datastructures``, ``cookies`` and ``middleware`` (mounting). The whole public API is
importable from here::

    from framework import App, Response, abort, redirect

    app = App(__name__, secret_key="change me")

    @app.route("/hello/<name>")
    def hello(request, name):
        return app.render(request, "hello.html", name=name)
"""

from .app import App
from .csrf import csrf_exempt
from .datastructures import Headers, MultiDict
from .errors import HTTPError, MethodNotAllowed, MissingField, NotFound, abort
from .files import FileResponse, safe_join
from .forms import UploadedFile
from .request import Request
from .response import Response, redirect
from .routing import BuildError, Converter
from .sessions import Session, Signer
from .templates import TemplateNotFoundError

__all__ = [
    "App",
    "BuildError",
    "Converter",
    "FileResponse",
    "HTTPError",
    "Headers",
    "MethodNotAllowed",
    "MissingField",
    "MultiDict",
    "NotFound",
    "Request",
    "Response",
    "Session",
    "Signer",
    "TemplateNotFoundError",
    "UploadedFile",
    "abort",
    "csrf_exempt",
    "redirect",
    "safe_join",
]
