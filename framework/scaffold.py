"""What ``App`` and ``Blueprint`` have in common: the decorators that register views, hooks, error handlers and
template helpers.

Both expose the same surface (``route``, ``get``, ``before_request``, ``errorhandler``...), so a group of views
can move from an app into a blueprint, or back, without changing a line of them. They differ in *when* a
registration happens: an ``App`` applies it at once, a ``Blueprint`` records it and applies it each time it is
registered on an app. Each subclass therefore implements the three primitives at the bottom of this module
(``add_route``, ``_add_hook``, ``_add_error_handler``) and inherits everything else.

Registration is also where mistakes are cheapest to report. A view, hook or handler whose signature cannot
take the arguments the framework will pass (``request``, the path's parameters, ``response``, ``error``) fails
here, naming the function and what it must accept, rather than as a 500 on the first request that reaches it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

View = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

# The hooks a request goes through, by the name ``_add_hook`` files them under.
HOOK_KINDS = ("before", "after", "teardown", "context")


def check_signature(function: Callable[..., Any], what: str, positional: int, keywords: Iterable[str] = ()) -> None:
    """Raise ``TypeError`` unless ``function`` can be called with ``positional`` positional arguments and the
    ``keywords`` by name.

    ``what`` says in the error what the function is for and how it is called (``"view for '/u/<int:id>'
    (called as view(request, id=...))"``). Callables whose signature Python cannot tell (some builtins and C
    extensions) are accepted as they are.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(positional), **dict.fromkeys(keywords))
    except TypeError as error:
        name = getattr(function, "__qualname__", repr(function))
        raise TypeError(f"{name} cannot be the {what}: {error}") from None


class Scaffold:
    """The registration methods of ``App`` and ``Blueprint`` (see the module docstring)."""

    # --- the primitives each subclass implements -----------------------------------------------------------

    def add_route(self, pattern: str, view: View, methods: Iterable[str] = ("GET",), name: str | None = None) -> None:
        """Register ``view`` for ``pattern`` and ``methods``; ``name`` (default: the function's name) is the
        endpoint that ``url_for`` uses."""
        raise NotImplementedError

    def _add_hook(self, kind: str, hook: View) -> None:
        raise NotImplementedError

    def _add_error_handler(self, key: int | type[BaseException], handler: View) -> None:
        raise NotImplementedError

    # --- views ---------------------------------------------------------------------------------------------

    def route(self, pattern: str, methods: Iterable[str] = ("GET",), name: str | None = None) -> Callable[[F], F]:
        """Register the decorated view for ``pattern`` and ``methods`` (see ``add_route``)."""

        def register(view: F) -> F:
            self.add_route(pattern, view, methods, name)
            return view

        return register

    def get(self, pattern: str, name: str | None = None) -> Callable[[F], F]:
        """Register a GET (and HEAD) view."""
        return self.route(pattern, ["GET"], name)

    def post(self, pattern: str, name: str | None = None) -> Callable[[F], F]:
        """Register a POST view."""
        return self.route(pattern, ["POST"], name)

    def put(self, pattern: str, name: str | None = None) -> Callable[[F], F]:
        """Register a PUT view."""
        return self.route(pattern, ["PUT"], name)

    def patch(self, pattern: str, name: str | None = None) -> Callable[[F], F]:
        """Register a PATCH view."""
        return self.route(pattern, ["PATCH"], name)

    def delete(self, pattern: str, name: str | None = None) -> Callable[[F], F]:
        """Register a DELETE view."""
        return self.route(pattern, ["DELETE"], name)

    # --- hooks ---------------------------------------------------------------------------------------------

    def before_request(self, hook: F) -> F:
        """Run ``hook(request)`` before the view; a return value other than ``None`` is the response, and the
        view (and the CSRF check) are skipped. This is the place for a login check that redirects."""
        check_signature(hook, "before_request hook (called as hook(request))", 1)
        self._add_hook("before", hook)
        return hook

    def after_request(self, hook: F) -> F:
        """Run ``hook(request, response)`` after the view, last registered first; it returns the response to
        send. Runs only for requests whose ``before_request`` hooks ran."""
        check_signature(hook, "after_request hook (called as hook(request, response))", 2)
        self._add_hook("after", hook)
        return hook

    def teardown(self, hook: F) -> F:
        """Run ``hook(request, exception_or_None)`` at the end of every request, whatever happened.

        The exception is the one a view or hook raised, even if an ``errorhandler`` turned it into a page (a
        database hook should still roll back); ``HTTPError``s such as ``abort(404)`` are answers, not failures,
        and give ``None``. For a streamed body the hooks run once the server has closed it."""
        check_signature(hook, "teardown hook (called as hook(request, exception_or_None))", 2)
        self._add_hook("teardown", hook)
        return hook

    teardown_request = teardown  # Flask's name for it.

    def context_processor(self, processor: F) -> F:
        """Add variables to every template rendered for this app's (or blueprint's) requests:
        ``processor()`` or ``processor(request)`` returns a dict of them. Variables passed to ``render``
        explicitly win over these."""
        _check_context_processor(processor)
        self._add_hook("context", processor)
        return processor

    def errorhandler(self, code_or_exception: int | type[BaseException]) -> Callable[[F], F]:
        """Handle an HTTP status (``404``) or an exception class (and its subclasses) with
        ``handler(request, error)``, which returns anything a view may.

        The status defaults to the error's, also for a ``Response`` left at 200 such as ``render``'s (return
        ``(response, 200)`` to really answer 200), and the error's headers (``Allow`` of a 405) are added
        unless the handler set them. A blueprint's handlers see the errors of its own views and hooks."""
        if not isinstance(code_or_exception, int) and not (
            isinstance(code_or_exception, type) and issubclass(code_or_exception, BaseException)
        ):
            raise TypeError(f"errorhandler takes a status code or an exception class, not {code_or_exception!r}")

        def register(handler: F) -> F:
            check_signature(handler, "error handler (called as handler(request, error))", 2)
            self._add_error_handler(code_or_exception, handler)
            return handler

        return register


def template_helper_decorator(
    register: Callable[[Callable[..., Any], str], None],
    function: Callable[..., Any] | str | None,
    name: str | None = None,
) -> Any:
    """The body of ``template_global``/``template_filter``/``template_test``, which work bare
    (``@app.template_filter``), called (``@app.template_filter()``, ``@app.template_filter("name")``,
    ``@app.template_filter(name="name")``) and directly (``app.template_filter(function, name="name")``)."""
    if callable(function):
        register(function, name or function.__name__)
        return function

    def decorate(helper: F) -> F:
        register(helper, name or function or helper.__name__)
        return helper

    return decorate


def _check_context_processor(processor: Callable[..., Any]) -> None:
    """A context processor takes nothing or the request; refuse anything else now."""
    try:
        inspect.signature(processor).bind()
        return
    except TypeError:
        pass
    except ValueError:
        return
    check_signature(processor, "context processor (called as processor() or processor(request))", 1)


def takes_request(processor: Callable[..., Any]) -> bool:
    """Whether a context processor wants the request (``processor(request)``) or nothing (``processor()``)."""
    try:
        inspect.signature(processor).bind()
    except TypeError:
        return True
    except ValueError:
        return False
    return False
