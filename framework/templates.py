"""Jinja2 templates for the app's pages.

One environment per app, loading from the app's template folder, with autoescaping on for HTML and XML so that
``{{ user_input }}`` can never inject markup. Four globals are always available, all bound to the request
being rendered (taken from the template context, so there are no thread-locals):

- ``request``: the current request;
- ``url_for(endpoint, **values)``: a URL under the app's mount point;
- ``static(path)``: the URL of a static file;
- ``csrf_token()``: the session's CSRF token, for a hidden form field.

A missing template raises ``TemplateNotFoundError`` naming the template and the folder that was searched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    from .request import Request


class TemplateNotFoundError(jinja2.TemplateNotFound):
    """A template that is not in the app's template folder (a subclass of Jinja2's own error)."""

    def __init__(self, name: str, folder: Path) -> None:
        super().__init__(name, f"template {name!r} not found in {folder}")


def _missing_name(error: jinja2.TemplateNotFound, requested: str) -> str:
    """The name of the template Jinja2 did not find, else ``requested``.

    Jinja2's ``error.name`` may also be None or an ``Undefined`` (``{% include [missing_variable] %}``), which is
    not a name: the template that was asked for is named instead.
    """
    missing = error.name
    return missing if isinstance(missing, str) and missing else requested


@jinja2.pass_context
def _url_for(context: jinja2.runtime.Context, endpoint: str, **values: Any) -> str:
    return context["request"].url_for(endpoint, **values)


@jinja2.pass_context
def _static(context: jinja2.runtime.Context, path: str) -> str:
    return context["request"].static(path)


@jinja2.pass_context
def _csrf_token(context: jinja2.runtime.Context) -> str:
    return context["request"].csrf_token()


class Templates:
    """The app's Jinja2 environment and its ``render`` entry point.

    ``auto_reload`` (checking each template file's modification time on every render) is on only in debug
    mode: it is handy while editing and a needless ``stat`` per render in production. Without it, compiled
    templates are also kept in a plain dict, which skips Jinja2's own cache lookup (weak references and a lock,
    a few microseconds a render).
    """

    def __init__(self, folder: Path, *, auto_reload: bool = False) -> None:
        self.folder = folder
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder),
            autoescape=jinja2.select_autoescape(("html", "htm", "xml", "xhtml"), default_for_string=True),
            auto_reload=auto_reload,
        )
        self.environment.globals.update(url_for=_url_for, static=_static, csrf_token=_csrf_token)
        self._compiled: dict[str, jinja2.Template] | None = None if auto_reload else {}

    def get(self, name: str) -> jinja2.Template:
        """The compiled template ``name``; ``TemplateNotFoundError`` if there is no such file."""
        cache = self._compiled
        template = cache.get(name) if cache is not None else None
        if template is None:
            try:
                template = self.environment.get_template(name)
            except jinja2.TemplateNotFound as error:
                raise TemplateNotFoundError(_missing_name(error, name), self.folder) from error
            if cache is not None:
                cache[name] = template
        return template

    def render(self, request: Request, name: str, context: dict[str, Any]) -> str:
        """Render template ``name`` for ``request`` with ``context`` as its variables."""
        template = self.get(name)
        try:
            return template.render(context, request=request)
        except jinja2.TemplateNotFound as error:
            # Also covers {% extends %} / {% include %} of a missing template, named by Jinja in error.name.
            raise TemplateNotFoundError(_missing_name(error, name), self.folder) from error
