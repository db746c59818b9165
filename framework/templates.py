"""Jinja2 templates for the app's pages.

One environment per app, loading from the app's template folder (then the folders of its blueprints, in the
order they were registered), with autoescaping on so that ``{{ user_input }}`` can never inject markup.
Autoescaping is on for every template except plain text (``.txt``, ``.text``, and ``.txt.j2`` as well: see
``autoescape`` and ``TEMPLATE_EXTENSIONS``), rather than
only for the extensions known to be markup: an ``.svg`` image runs scripts as an HTML page does, and the next
new kind of template should be safe before anyone thinks about it. ``App.render`` serves each with the
Content-Type that goes with how it was escaped (``content_type``): plain text as ``text/plain``, never as HTML.
A plain-text template included into an HTML one is not escaped (Jinja2 decides per template); docs/framework.md
shows the ``forceescape`` block that escapes such an include.

These names are always available, all bound to the request being rendered (taken from the template context, so
there are no thread-locals):

- ``request``: the current request, and ``g``, its per-request namespace (``request.g``);
- ``config``: the app's settings (``app.config``);
- ``url_for(endpoint, **values)``: a URL under the app's mount point (``".name"`` within the blueprint);
- ``static(path)``: the URL of a static file;
- ``csrf_token()``: the session's CSRF token, for a hidden form field;
- ``get_flashed_messages(with_categories=False, category_filter=())``: the messages left by ``request.flash``.

An app adds its own with ``template_global``, ``template_filter`` and ``context_processor``.

A missing template raises ``TemplateNotFoundError`` naming the template and the folder that was searched.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.runtime import new_context

if TYPE_CHECKING:
    from .request import Request


class TemplateNotFoundError(jinja2.TemplateNotFound):
    """A template that is not in the app's template folder (a subclass of Jinja2's own error)."""

    def __init__(self, name: str, folder: Path | str) -> None:
        super().__init__(name, f"template {name!r} not found in {folder}")


def _missing_name(error: jinja2.TemplateNotFound, requested: str) -> str:
    """The name of the template Jinja2 did not find, else ``requested``.

    Jinja2's ``error.name`` may also be None or an ``Undefined`` (``{% include [missing_variable] %}``), which is
    not a name: the template that was asked for is named instead.
    """
    missing = error.name
    return missing if isinstance(missing, str) and missing else requested


#: The extensions of templates that are not autoescaped: text that is never read as markup (a plain-text
#: email, a robots.txt). Markdown is not among them: raw HTML passes through a Markdown renderer, so a ``.md``
#: template is escaped like a page. Any other extension, or none, is escaped; ``{% autoescape false %}`` turns
#: it off within a template that really needs it.
PLAIN_TEXT_EXTENSIONS = frozenset({"txt", "text"})


@functools.lru_cache(maxsize=1024)
def autoescape(name: str | None) -> bool:
    """Whether the template ``name`` escapes what it prints: yes unless its extension (in any case) is one of
    ``PLAIN_TEXT_EXTENSIONS``; yes for a template made from a string (``name`` None).

    Jinja2 asks on every render, not once per compiled template (each render's context starts with it), so
    the answer is cached: the names are the app's own templates, a few, and the cache is bounded anyway.
    """
    return name is None or _extension(name) not in PLAIN_TEXT_EXTENSIONS


#: The Content-Type of a rendered template, by extension: plain text for the templates that are not escaped (so
#: what they print is never read as markup), the XML types for the markup that is escaped like HTML but is not HTML,
#: and HTML for everything else. An explicit table rather than ``mimetypes``, whose answers depend on the machine's
#: ``/etc/mime.types`` and which knows nothing of how each template is escaped.
CONTENT_TYPES = {
    **dict.fromkeys(PLAIN_TEXT_EXTENSIONS, "text/plain; charset=utf-8"),
    "svg": "image/svg+xml; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    # Escaped like HTML (so a visitor's text in them is harmless whatever they are), and served as what they are:
    # as text/html, a stylesheet or a data file would be a page a browser renders, the visitor's text in it too.
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",  # RFC 9239's name for JavaScript
    "json": "application/json",  # UTF-8 by definition (RFC 8259): no charset parameter
    "csv": "text/csv; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}
HTML = "text/html; charset=utf-8"

#: Extensions that name the template language rather than what a template renders (``mail.txt.j2``,
#: ``page.html.jinja``): the extension before one of them says what the template is, for escaping and
#: Content-Type alike. Alone (``page.j2``) it says nothing, and the template is escaped and served as HTML.
TEMPLATE_EXTENSIONS = frozenset({"j2", "jinja", "jinja2"})


def _extension(name: str) -> str | None:
    """The file's own extension, lower-case (not a folder's: ``v1.txt/page`` has none), or None; the one before a
    template language's extension (``TEMPLATE_EXTENSIONS``: ``mail.txt.j2`` is ``txt``).

    ``autoescape`` and ``content_type`` both read it, so they always agree on what a template is."""
    stem, dot, extension = name.rpartition("/")[2].rpartition(".")
    if not dot:
        return None
    extension = extension.lower()
    if extension in TEMPLATE_EXTENSIONS:
        _, dot, extension = stem.rpartition(".")
        return extension.lower() if dot else None
    return extension


@functools.lru_cache(maxsize=1024)
def content_type(name: str) -> str:
    """The Content-Type that ``App.render`` gives the template ``name`` (see ``CONTENT_TYPES``).

    It must agree with ``autoescape``: a plain-text template prints a visitor's ``<script>`` as it is, which is
    harmless as ``text/plain`` and a reflected XSS as ``text/html``.
    """
    return CONTENT_TYPES.get(_extension(name) or "", HTML)


@jinja2.pass_context
def _url_for(context: jinja2.runtime.Context, endpoint: str, **values: Any) -> str:
    request: Request = context["request"]
    return request.url_for(endpoint, **values)


@jinja2.pass_context
def _static(context: jinja2.runtime.Context, path: str) -> str:
    request: Request = context["request"]
    return request.static(path)


@jinja2.pass_context
def _csrf_token(context: jinja2.runtime.Context) -> str:
    request: Request = context["request"]
    return request.csrf_token()


@jinja2.pass_context
def _get_flashed_messages(
    context: jinja2.runtime.Context, with_categories: bool = False, category_filter: Iterable[str] = ()
) -> list[Any]:
    request: Request = context["request"]
    return request.get_flashed_messages(with_categories, category_filter)


# What an attribute of a plain dict can be: its methods and the like (``items``, ``get``, ``__class__``...). A dict
# has no instance attributes, so ``getattr(d, name)`` finds exactly these, on every dict.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(jinja2.Environment):
    """Jinja2's environment, with ``{{ row.name }}`` on a plain dict looked up without a failed ``getattr`` first.

    Templates are mostly fed dicts (rows, decoded JSON), and Jinja2 reads ``row.name`` by trying the attribute
    first: for a dict that is an ``AttributeError`` raised and caught before ``row["name"]`` is tried, about
    0.7 us against 0.1 for the lookup alone, and most of a ten-row page's rendering time (bench_framework's
    template row: 35 us a render before, 24 after). The answer is the same: a name that is not one of a dict's
    own attributes can only be a key, and the names that are (``row.items``) still go the usual way, so they
    find the method as before. Dict subclasses (which may define attributes or ``__missing__``) and names that
    are not plain ``str`` (Python code may pass anything) go the usual way too.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, LookupError, AttributeError):  # what Jinja2 catches there: a key's __eq__ may raise
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


class Templates:
    """The app's Jinja2 environment and its ``render`` entry point.

    ``auto_reload`` (checking each template file's modification time on every render) is for development
    (the app turns it on with ``DEBUG`` or ``TEMPLATES_AUTO_RELOAD``): it is handy while editing and a needless
    ``stat`` per render in production. Without it, compiled templates are also kept in a plain dict, which
    skips Jinja2's own cache lookup (weak references and a lock, a few microseconds a render).
    """

    def __init__(self, folder: Path, *, auto_reload: bool = False) -> None:
        self.folders = [folder]
        self.environment = _Environment(
            loader=jinja2.FileSystemLoader(self.folders),
            autoescape=autoescape,
            auto_reload=auto_reload,
        )
        self.environment.globals.update(
            url_for=_url_for, static=_static, csrf_token=_csrf_token, get_flashed_messages=_get_flashed_messages
        )
        self._compiled: dict[str, jinja2.Template] = {}

    @property
    def folder(self) -> Path:
        """The app's own template folder, searched first."""
        return self.folders[0]

    @property
    def auto_reload(self) -> bool:
        return self.environment.auto_reload

    @auto_reload.setter
    def auto_reload(self, value: bool) -> None:
        self.environment.auto_reload = value
        self._compiled.clear()

    def add_folder(self, folder: Path) -> None:
        """Search ``folder`` too, after the folders already known (a blueprint's templates)."""
        if folder not in self.folders:
            self.folders.append(folder)
            self.environment.loader = jinja2.FileSystemLoader(self.folders)
            self._compiled.clear()

    def get(self, name: str) -> jinja2.Template:
        """The compiled template ``name``; ``TemplateNotFoundError`` if there is no such file."""
        template = self._compiled.get(name)
        if template is None:
            try:
                template = self.environment.get_template(name)
            except jinja2.TemplateNotFound as error:
                raise TemplateNotFoundError(_missing_name(error, name), self._searched()) from error
            if not self.environment.auto_reload:
                self._compiled[name] = template
        return template

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render template ``name`` with ``context`` as its variables (``request`` among them)."""
        template = self.get(name)
        try:
            return _render(self.environment, template, context)
        except jinja2.TemplateNotFound as error:
            # Also covers {% extends %} / {% include %} of a missing template, named by Jinja in error.name.
            raise TemplateNotFoundError(_missing_name(error, name), self._searched()) from error

    def _searched(self) -> Path | str:
        return self.folders[0] if len(self.folders) == 1 else " or ".join(map(str, self.folders))


def _render(environment: jinja2.Environment, template: jinja2.Template, context: dict[str, Any]) -> str:
    """``template.render(context)``, less the part that costs the most and changes the least.

    Jinja2 builds every render's context by merging the template's globals, a ChainMap of its own (usually empty)
    over the environment's, into a new dict, and takes the set of their names for the context as well: iterating
    a ChainMap is slow, and that was 7 of the 33 microseconds of a ten-item page (bench_framework's template row).
    Copying the environment's plain dict instead, and handing Jinja the finished dict as the shared context,
    gives the same variables (globals first, the render's own winning) and the same traceback rewriting on an
    error. Any other shape of globals, or an async environment, takes Jinja's own path.
    """
    own_globals = template.globals
    if (
        environment.is_async
        or not isinstance(own_globals, ChainMap)
        or len(own_globals.maps) != 2
        or own_globals.maps[1] is not environment.globals
    ):
        return template.render(context)
    variables = environment.globals.copy()
    if own_globals.maps[0]:
        variables.update(own_globals.maps[0])
    variables.update(context)
    shared = new_context(environment, template.name, template.blocks, variables, True, environment.globals)
    try:
        return environment.concat(template.root_render_func(shared))
    except Exception:
        environment.handle_exception()  # re-raises, with the template's lines in the traceback
