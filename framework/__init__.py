"""A small web framework on WSGI: routing, requests, responses, templates, sessions and CSRF.

Read it in this order: ``routing`` (paths to views), ``request`` and ``response`` (what a view gets and
gives), ``app`` (one request's journey through hooks and error handlers), ``scaffold`` and ``blueprints``
(groups of views), ``config``, then ``templates``, ``sessions``, ``csrf``, ``security`` (passwords), ``forms``
(uploads) and ``files``; ``testing`` and ``cli`` are for tests and the command line. The helpers underneath
are ``errors`` and ``pages`` (HTTP errors and their pages), ``datastructures``, ``cookies`` and ``middleware``
(mounting). ``docs/framework.md`` is the guide. The whole public API is importable from here::

    from framework import App, Response, abort, redirect

    app = App(__name__, secret_key="change me")

    @app.route("/hello/<name>")
    def hello(request, name):
        return request.render("hello.html", name=name)
"""

from .app import App, current_request
from .blueprints import Blueprint
from .config import Config
from .csrf import csrf_exempt
from .datastructures import Headers, MultiDict
from .errors import HTTPError, MethodNotAllowed, MissingField, NotFound, abort
from .files import FileResponse, safe_join
from .forms import UploadedFile
from .request import Globals, Request
from .response import Response, redirect
from .routing import BuildError, Converter
from .sessions import Session, Signer
from .templates import TemplateNotFoundError

__all__ = [
    "App",
    "Blueprint",
    "BuildError",
    "Config",
    "Converter",
    "FileResponse",
    "Globals",
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
    "current_request",
    "redirect",
    "safe_join",
]
