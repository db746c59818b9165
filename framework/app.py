"""``App``: the WSGI application that ties routing, requests, responses, hooks, sessions and templates
together.

One request goes through these steps, in this order (the same order as Django's middleware):

1. mounted apps: a path under a ``mount()`` prefix goes to that WSGI app with ``SCRIPT_NAME``/``PATH_INFO``
   shifted, and nothing below runs;
2. a ``Request`` is built (lazily: nothing is parsed yet) and a body over ``max_body_size`` answers 413;
3. the router matches the path (a miss is remembered, not raised yet, so hooks still run);
4. ``before_request`` hooks, in registration order; the first to return something short-circuits with it;
5. the routing miss, if any, is raised now (404, 405 with ``Allow``, or a redirect for a trailing slash);
   ``OPTIONS`` on a path that has routes is answered here with 204 and ``Allow``;
6. the CSRF check, for unsafe methods on views not marked ``@app.csrf_exempt``;
7. the view, called as ``view(request, **params)``; its return value becomes a ``Response``;
8. any exception from steps 2-7 goes to an ``errorhandler`` for its status code or exception class, else to
   the framework's error page (HTML or JSON by ``Accept``; a traceback page with ``debug=True``);
9. ``after_request`` hooks, in reverse registration order, each returning the response to use;
10. the session cookie is written if the session changed (and ``Vary: Cookie`` added if it was used at all);
11. ``teardown`` hooks, always, with the unhandled exception or ``None``; uploaded files are released. For a
    streamed body this happens when the server closes it, after the last chunk (or the error that broke it).

The view's return value may be a ``Response``, ``str`` (HTML), ``bytes`` (``application/octet-stream``),
``dict``/``list`` (JSON), any other iterable (streamed), or a ``(body, status)`` / ``(body, status, headers)``
tuple of those.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .csrf import CSRFProtection, csrf_exempt
from .errors import HTTPError, MethodNotAllowed, NotFound, RequestRedirect
from .files import FileResponse, safe_join
from .middleware import shift_path, to_wsgi_string
from .pages import debug_page, error_page
from .request import Request, content_length
from .response import Response, StreamedBody, redirect, to_json
from .routing import Converter, Router, quote_path
from .sessions import CookieSessions, NoSessions
from .templates import Templates

log = logging.getLogger("framework")

View = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _app_root(import_name: str) -> Path:
    """The folder of the module that created the app: template and static folders are relative to it."""
    module = sys.modules.get(import_name)
    filename = getattr(module, "__file__", None)
    return Path(filename).resolve().parent if filename else Path.cwd()


class App:
    """A web application: register views with ``route`` (or ``get``/``post``/...), then serve it with any WSGI
    server.

    ``templates`` and ``static`` are folders relative to the module named by ``import_name`` (pass
    ``__name__``). ``static`` is off by default, since our server serves ``/static`` itself; when set, the app
    serves that folder at ``static_url``. ``secret_key`` enables sessions and CSRF protection;
    ``old_secret_keys`` are still accepted for existing sessions while rotating keys. The session cookie has
    ``Path=/``: two apps on one site (one mounted in the other) share it if they share the key, and need
    different ``session_cookie`` names if they do not, or each would overwrite the other's.
    """

    def __init__(
        self,
        import_name: str = "__main__",
        *,
        templates: str | Path = "templates",
        static: str | Path | None = None,
        static_url: str = "/static",
        secret_key: str | bytes | None = None,
        old_secret_keys: Sequence[str | bytes] = (),
        debug: bool = False,
        csrf: bool = True,
        max_body_size: int = 10 * 2**20,
        max_form_parts: int = 1000,
        max_form_field_size: int = 2**20,
        upload_spool_size: int = 2**20,
        session_cookie: str = "session",
        session_max_age: int = 14 * 24 * 3600,
        session_secure: bool = False,
    ) -> None:
        self.import_name = import_name
        self.root = _app_root(import_name)
        self.debug = debug
        self.max_body_size = max_body_size
        self.max_form_parts = max_form_parts
        self.max_form_field_size = max_form_field_size
        self.upload_spool_size = upload_spool_size
        self.router = Router()
        self.templates = Templates(self.root / templates, auto_reload=debug)
        self.sessions: CookieSessions | NoSessions = (
            CookieSessions(
                secret_key,
                old_secret_keys,
                cookie_name=session_cookie,
                max_age=session_max_age,
                secure=session_secure,
            )
            if secret_key
            else NoSessions()
        )
        # CSRF tokens live in the session, so protection needs a secret key; without one there is no session
        # cookie for a forged request to ride on.
        self.csrf = CSRFProtection()
        self.csrf_enabled = csrf and bool(secret_key)
        self.static_url = static_url.rstrip("/")
        self.static_folder = (self.root / static).resolve() if static is not None else None
        if self.static_folder is not None:
            self.router.add(self.static_url + "/<path:filename>", self._serve_static, "static", ["GET"])

        self._before: list[View] = []
        self._after: list[View] = []
        self._teardown: list[View] = []
        self._status_handlers: dict[int, View] = {}
        self._exception_handlers: dict[type[BaseException], View] = {}
        self._mounts: list[tuple[str, WSGIApp]] = []
        self._entry: WSGIApp = self._wsgi

    # --- registering views ---------------------------------------------------------------------------------

    def route(self, pattern: str, methods: Iterable[str] = ("GET",), name: str | None = None) -> Callable[[View], View]:
        """Register the decorated view for ``pattern`` and ``methods``; ``name`` (default: the function's
        name) is the endpoint that ``url_for`` uses."""

        def register(view: View) -> View:
            self.add_route(pattern, view, methods, name)
            return view

        return register

    def add_route(self, pattern: str, view: View, methods: Iterable[str] = ("GET",), name: str | None = None) -> None:
        """``route`` without the decorator."""
        self.router.add(pattern, view, name or view.__name__, methods)

    def get(self, pattern: str, name: str | None = None) -> Callable[[View], View]:
        """Register a GET (and HEAD) view."""
        return self.route(pattern, ["GET"], name)

    def post(self, pattern: str, name: str | None = None) -> Callable[[View], View]:
        """Register a POST view."""
        return self.route(pattern, ["POST"], name)

    def put(self, pattern: str, name: str | None = None) -> Callable[[View], View]:
        """Register a PUT view."""
        return self.route(pattern, ["PUT"], name)

    def patch(self, pattern: str, name: str | None = None) -> Callable[[View], View]:
        """Register a PATCH view."""
        return self.route(pattern, ["PATCH"], name)

    def delete(self, pattern: str, name: str | None = None) -> Callable[[View], View]:
        """Register a DELETE view."""
        return self.route(pattern, ["DELETE"], name)

    def add_converter(self, name: str, converter: type[Converter]) -> None:
        """Make ``<name:param>`` usable in routes registered after this call."""
        self.router.add_converter(name, converter)

    csrf_exempt = staticmethod(csrf_exempt)

    # --- hooks and error handlers --------------------------------------------------------------------------

    def before_request(self, hook: View) -> View:
        """Run ``hook(request)`` before every view; a return value other than ``None`` is the response."""
        self._before.append(hook)
        return hook

    def after_request(self, hook: View) -> View:
        """Run ``hook(request, response)`` after every view, last registered first; it returns a response."""
        self._after.insert(0, hook)
        return hook

    def teardown(self, hook: View) -> View:
        """Run ``hook(request, exception_or_None)`` at the end of every request, whatever happened.

        The exception is the one a view or hook raised, even if an ``errorhandler`` turned it into a page (a
        database hook should still roll back); ``HTTPError``s such as ``abort(404)`` are answers, not failures,
        and give ``None``. For a streamed body the hooks run once the server has closed it."""
        self._teardown.append(hook)
        return hook

    def errorhandler(self, code_or_exception: int | type[BaseException]) -> Callable[[View], View]:
        """Handle an HTTP status (``404``) or an exception class (and its subclasses) with
        ``handler(request, error)``, which returns anything a view may.

        The status defaults to the error's, also for a ``Response`` left at 200 such as ``app.render``'s
        (return ``(response, 200)`` to really answer 200), and the error's headers (``Allow`` of a 405) are
        added unless the handler set them."""

        def register(handler: View) -> View:
            if isinstance(code_or_exception, int):
                self._status_handlers[code_or_exception] = handler
            else:
                self._exception_handlers[code_or_exception] = handler
            return handler

        return register

    # --- composition ---------------------------------------------------------------------------------------

    def mount(self, prefix: str, app: WSGIApp) -> None:
        """Send every request under ``prefix`` to another WSGI app, ``SCRIPT_NAME``/``PATH_INFO`` shifted.
        The longest matching prefix wins."""
        if not prefix.startswith("/") or prefix == "/":
            raise ValueError(f"mount prefix {prefix!r} must start with '/' and not be the root")
        self._mounts.append((to_wsgi_string(prefix.rstrip("/")), app))
        self._mounts.sort(key=lambda mount: len(mount[0]), reverse=True)

    def add_middleware(self, middleware: Callable[..., WSGIApp], **options: Any) -> None:
        """Wrap the app in ``middleware(app, **options)``; the last middleware added is the outermost."""
        self._entry = middleware(self._entry, **options)

    # --- helpers for views ---------------------------------------------------------------------------------

    def url_for(self, endpoint: str, *, _request: Request | None = None, _external: bool = False, **values: Any) -> str:
        """The URL of ``endpoint``; pass ``_request`` to get it under the request's mount point (views and
        templates can use ``request.url_for`` instead)."""
        if _request is not None:
            return _request.url_for(endpoint, _external=_external, **values)
        if _external:
            raise ValueError("an external URL needs the request: url_for(..., _request=request, _external=True)")
        return self.router.build(endpoint, values)

    def render(self, request: Request, template: str, /, **context: Any) -> Response:
        """Render a template from the app's template folder into an HTML response."""
        return Response(self.templates.render(request, template, context))

    def static_path(self, filename: str) -> str:
        """The path (without mount point) of a static file."""
        if self.static_folder is not None:
            return self.router.build("static", {"filename": filename})
        return quote_path(f"{self.static_url}/{filename.lstrip('/')}")

    def _serve_static(self, request: Request, filename: str) -> Response:
        folder = self.static_folder
        if folder is None:  # __init__ routes static files here only when it has set a static folder
            raise RuntimeError("the static route is served without a static folder (static_folder is None)")
        path = safe_join(folder, filename)
        if path is None:
            raise NotFound()
        return FileResponse(path, request)  # Which raises NotFound itself for a missing file or a directory.

    def make_response(self, request: Request, value: Any, status: int = 200) -> Response:
        """Turn whatever a view returned into a ``Response`` (see the module docstring for the types)."""
        if type(value) is str:  # The most common case first: it is on the hot path.
            return Response(value, status)
        if isinstance(value, Response):
            return value
        headers = None
        if isinstance(value, tuple):
            if len(value) == 2:
                value, status = value
            elif len(value) == 3:
                value, status, headers = value
            else:
                raise TypeError(
                    f"view {request.endpoint!r} returned a {len(value)}-tuple; use (body, status[, headers])"
                )
            if isinstance(value, Response):
                value.status = status
                for name, header in headers.items() if isinstance(headers, dict) else headers or ():
                    value.headers[name] = header
                return value
        if isinstance(value, str):
            return Response(value, status, headers)
        if isinstance(value, bytes | bytearray):
            return Response(bytes(value), status, headers, "application/octet-stream")
        if isinstance(value, dict | list):
            return Response(to_json(value), status, headers, "application/json")
        if value is None:
            raise TypeError(f"view {request.endpoint!r} returned None; a view must return a response")
        if hasattr(value, "__iter__"):
            return Response(value, status, headers)
        raise TypeError(f"view {request.endpoint!r} returned {type(value).__name__}, which is not a response")

    # --- the WSGI application ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI entry point (PEP 3333), through any middleware added with ``add_middleware``."""
        return self._entry(environ, start_response)

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for prefix, app in self._mounts:
            shifted = shift_path(environ, prefix)
            if shifted is not None:
                return app(shifted, start_response)
        request = Request(environ, self)
        try:
            response, unhandled = self._handle(request)
            body = response(environ, start_response)
        except BaseException as error:
            self._finish(request, error)
            raise
        if isinstance(body, StreamedBody):
            # The view's generator runs while the server sends it, and may still read an upload or use what a
            # teardown hook would close: step 11 waits until the server closes the body.
            body.call_on_close(lambda stream_error: self._finish(request, stream_error or unhandled))
        else:
            self._finish(request, unhandled)
        return body

    def _handle(self, request: Request) -> tuple[Response, Exception | None]:
        """Steps 2-10 of the module docstring: the response for ``request``, whatever happens, and the
        exception no error handler expected (``None`` for ``HTTPError``), for the teardown hooks."""
        unhandled: Exception | None = None
        try:
            response = self._respond(request)
        except Exception as error:
            if not isinstance(error, HTTPError):
                unhandled = error
            response = self._handle_error(request, error)
        try:
            for hook in self._after:
                response = hook(request, response)
                if not isinstance(response, Response):  # Say which hook forgot its "return response".
                    raise TypeError(f"after_request hook {hook.__name__!r} returned {response!r}, not a Response")
            self.sessions.save(request, response)
        except Exception as error:
            unhandled = error
            response = self._handle_error(request, error)
        return response, unhandled

    def _finish(self, request: Request, unhandled: BaseException | None) -> None:
        """Step 11: the teardown hooks (a failing one is logged and the others still run), then the uploads'
        temporary files are released."""
        try:
            for hook in self._teardown:
                try:
                    hook(request, unhandled)
                except Exception:
                    log.exception("teardown hook %r failed", hook)
        finally:
            request.close()

    def _respond(self, request: Request) -> Response:
        environ = request.environ
        if "CONTENT_LENGTH" in environ:
            length = content_length(environ)
            if length is not None and length > self.max_body_size:
                raise HTTPError(413, f"The request body is larger than {self.max_body_size} bytes")
        try:
            rule, params = self.router.match(request.method, request.path)
            miss = None
        except HTTPError as error:
            rule, params, miss = None, {}, error
        if rule is not None:
            request.route_params = params
            request.endpoint = rule.endpoint
        for hook in self._before:
            value = hook(request)
            if value is not None:
                return self.make_response(request, value)
        if environ.get("PATH_INFO") == "" and environ.get("SCRIPT_NAME"):
            raise RequestRedirect("/")  # A mounted app's root without its slash (see middleware.shift_path).
        if rule is None:
            if miss is None:  # Router.match returns a rule or raises
                raise RuntimeError("the router matched no rule and raised no HTTPError")
            if request.method == "OPTIONS" and isinstance(miss, MethodNotAllowed):
                return Response(b"", 204, miss.headers)  # "What may I do here?": the Allow header says.
            raise miss
        if self.csrf_enabled:
            self.csrf.check(request, rule.view)
        return self.make_response(request, rule.view(request, **params))

    def _handle_error(self, request: Request, error: Exception) -> Response:
        """The response for an exception: its handler's answer, or the default error page."""
        if isinstance(error, RequestRedirect):
            # The location is the client's own path with its slash toggled: quoted, since browsers read
            # "/\evil.example" as "//evil.example", and with one leading slash, since "//host" is another site.
            location = "/" + quote_path(request.script_name + error.location).lstrip("/")
            query = request.query_string
            return redirect(location + (f"?{query}" if query else ""), error.code)
        handler, status = None, 500
        if isinstance(error, HTTPError):
            status = error.code
            handler = self._status_handlers.get(status)
        if handler is None:
            handler = next(
                (self._exception_handlers[cls] for cls in type(error).__mro__ if cls in self._exception_handlers),
                None,
            )
        if handler is None and not isinstance(error, HTTPError):
            log.error("unhandled exception in %s %s", request.method, request.path, exc_info=error)
            handler = self._status_handlers.get(500)
        if handler is not None:
            try:
                value = handler(request, error)
                if isinstance(value, Response) and value.status == 200:
                    # A Response says 200 unless told otherwise (app.render's does); from an error handler
                    # that would turn a 404 page into a success. (response, 200) still means 200.
                    value.status = status
                response = self.make_response(request, value, status)
            except Exception as handler_error:
                log.error("error handler %r failed", handler, exc_info=handler_error)
                error = handler_error
            else:
                if isinstance(error, HTTPError):
                    for name, header in error.headers:  # A 405 must say Allow, whoever wrote its page.
                        response.headers.setdefault(name, header)
                return response
        if isinstance(error, HTTPError):
            return error_page(request, error)
        if self.debug:
            return debug_page(request, error)
        return error_page(request, HTTPError(500, "The server hit an error and could not answer the request."))
