"""Blueprints: a group of views, hooks and error handlers that an app takes in under a URL prefix.

A blueprint is a recording: ``bp.route(...)`` and the other decorators remember what to register, and
``app.register_blueprint(bp)`` replays it on the app, prefixing each URL with the blueprint's ``url_prefix``
and each endpoint with its name (``"blog.index"``). Because it is a recording, one blueprint can be registered
on several apps, or twice on one app under different names and prefixes (an API at ``/v1`` and ``/v2``).

What belongs to a blueprint applies to its own views only: its ``before_request`` hooks run (after the app's)
for requests routed to one of its views, its ``errorhandler``s see the errors of those requests, its
``context_processor``s feed the templates they render. The ``*_app_*`` variants (``before_app_request``,
``app_errorhandler``, ``app_template_filter``...) register on the whole app instead. Inside a blueprint's view,
``request.url_for(".index")`` means the blueprint's own ``index``, whatever name it was registered under.

A blueprint cannot change once registered: a route added later would exist on no app, silently. Adding one
then is an error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .scaffold import F, Scaffold, View, template_helper_decorator

if TYPE_CHECKING:
    from .app import App

# What a recorded registration does, given the app, the blueprint's registered name and its URL prefix.
Deferred = Callable[["App", str, str], object]


def join_prefix(prefix: str, pattern: str) -> str:
    """``"/blog"`` + ``"/<int:id>"`` = ``"/blog/<int:id>"``; ``"/blog"`` + ``"/"`` = ``"/blog/"``."""
    if not prefix:
        return pattern
    return prefix.rstrip("/") + "/" + pattern.lstrip("/")


class Blueprint(Scaffold):
    """A named group of routes and hooks for ``App.register_blueprint`` (see the module docstring).

    ``url_prefix`` is put in front of every route (``register_blueprint`` may give another); ``templates`` is a
    folder, relative to the module named by ``import_name``, searched after the app's own template folder.
    """

    def __init__(
        self,
        name: str,
        import_name: str | None = None,
        *,
        url_prefix: str | None = None,
        templates: str | Path | None = None,
    ) -> None:
        if not name or "." in name:
            raise ValueError(f"blueprint name {name!r} must be non-empty and contain no '.' (it joins endpoints)")
        if url_prefix and not url_prefix.startswith("/"):
            raise ValueError(f"blueprint {name!r}: url_prefix {url_prefix!r} must start with '/'")
        self.name = name
        self.import_name = import_name
        self.url_prefix = url_prefix or ""
        self.template_folder: Path | None = None
        if templates is not None:
            module = sys.modules.get(import_name or "")
            filename = getattr(module, "__file__", None)
            base = Path(filename).resolve().parent if filename else Path.cwd()
            self.template_folder = base / templates
        self._deferred: list[Deferred] = []
        self._registered = False

    def __repr__(self) -> str:
        return f"<Blueprint {self.name!r}>"

    def _record(self, action: Deferred) -> None:
        if self._registered:
            raise RuntimeError(
                f"blueprint {self.name!r} is already registered on an app; add its routes, hooks and handlers "
                "before app.register_blueprint()"
            )
        self._deferred.append(action)

    # --- the Scaffold primitives: recorded, applied on registration -----------------------------------------

    def add_route(self, pattern: str, view: View, methods: Iterable[str] = ("GET",), name: str | None = None) -> None:
        """Record a route; on registration it becomes ``url_prefix + pattern``, named ``"<blueprint>.<name>"``."""
        if not pattern.startswith("/"):
            raise ValueError(f"blueprint {self.name!r}: route {pattern!r} must start with '/'")
        methods = list(methods) if not isinstance(methods, str) else methods
        endpoint = name or getattr(view, "__name__", "")
        if not endpoint or "." in endpoint:
            raise ValueError(f"blueprint {self.name!r}: endpoint {endpoint!r} must be non-empty and contain no '.'")
        self._record(
            lambda app, bp_name, prefix: app.add_route(
                join_prefix(prefix, pattern), view, methods, f"{bp_name}.{endpoint}", _blueprint=True
            )
        )

    def _add_hook(self, kind: str, hook: View) -> None:
        self._record(lambda app, bp_name, prefix: app._add_hook(kind, hook, bp_name))

    def _add_error_handler(self, key: int | type[BaseException], handler: View) -> None:
        self._record(lambda app, bp_name, prefix: app._add_error_handler(key, handler, bp_name))

    # --- registrations on the whole app ---------------------------------------------------------------------

    def before_app_request(self, hook: F) -> F:
        """``before_request`` for every request of the app, not only this blueprint's."""
        self._record(lambda app, bp_name, prefix: app.before_request(hook))
        return hook

    def after_app_request(self, hook: F) -> F:
        """``after_request`` for every request of the app."""
        self._record(lambda app, bp_name, prefix: app.after_request(hook))
        return hook

    def teardown_app_request(self, hook: F) -> F:
        """``teardown`` for every request of the app."""
        self._record(lambda app, bp_name, prefix: app.teardown(hook))
        return hook

    def app_errorhandler(self, code_or_exception: int | type[BaseException]) -> Callable[[F], F]:
        """``errorhandler`` for errors anywhere in the app."""

        def register(handler: F) -> F:
            self._record(lambda app, bp_name, prefix: app.errorhandler(code_or_exception)(handler))
            return handler

        return register

    def app_context_processor(self, processor: F) -> F:
        """``context_processor`` for every template the app renders."""
        self._record(lambda app, bp_name, prefix: app.context_processor(processor))
        return processor

    def app_template_global(self, function: Callable[..., Any] | str | None = None, *, name: str | None = None) -> Any:
        """``App.template_global``, registered on the app this blueprint joins."""
        return template_helper_decorator(
            lambda helper, given: self._record(lambda app, bp_name, prefix: app.template_global(helper, name=given)),
            function,
            name,
        )

    def app_template_filter(self, function: Callable[..., Any] | str | None = None, *, name: str | None = None) -> Any:
        """``App.template_filter``, registered on the app this blueprint joins."""
        return template_helper_decorator(
            lambda helper, given: self._record(lambda app, bp_name, prefix: app.template_filter(helper, name=given)),
            function,
            name,
        )

    def app_template_test(self, function: Callable[..., Any] | str | None = None, *, name: str | None = None) -> Any:
        """``App.template_test``, registered on the app this blueprint joins."""
        return template_helper_decorator(
            lambda helper, given: self._record(lambda app, bp_name, prefix: app.template_test(helper, name=given)),
            function,
            name,
        )

    def command(self, name: str | Callable[..., Any] | None = None, **options: Any) -> Any:
        """``App.command``, registered on the app this blueprint joins (see ``framework.cli``)."""
        if callable(name):
            function = name
            self._record(lambda app, bp_name, prefix: app.command(**options)(function))
            return function

        def register(function: F) -> F:
            self._record(lambda app, bp_name, prefix: app.command(name, **options)(function))
            return function

        return register

    # --- nesting and registration ---------------------------------------------------------------------------

    def register_blueprint(
        self, blueprint: Blueprint, *, url_prefix: str | None = None, name: str | None = None
    ) -> None:
        """Nest ``blueprint`` in this one: its prefix follows this one's, its endpoints are
        ``"<this>.<nested>.<view>"``, and this blueprint's hooks and handlers apply to its requests too."""
        if blueprint is self:
            raise ValueError(f"blueprint {self.name!r} cannot be nested in itself")
        self._record(
            lambda app, bp_name, prefix: blueprint.register(
                app,
                url_prefix=join_prefix(prefix, blueprint.url_prefix if url_prefix is None else url_prefix),
                name=f"{bp_name}.{name or blueprint.name}",
            )
        )

    def register(self, app: App, *, url_prefix: str | None = None, name: str | None = None) -> None:
        """Replay the recording on ``app``; ``App.register_blueprint`` calls this."""
        registered_name = name or self.name
        prefix = self.url_prefix if url_prefix is None else url_prefix
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"blueprint {registered_name!r}: url_prefix {prefix!r} must start with '/'")
        app._claim_blueprint_name(registered_name, self)
        self._registered = True
        if self.template_folder is not None:
            app.templates.add_folder(self.template_folder)
        for action in self._deferred:
            action(app, registered_name, prefix)
