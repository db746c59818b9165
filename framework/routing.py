"""Routing: turn a method and a path into a view and its typed parameters, and back into a URL.

A rule such as ``/users/<int:user_id>`` is compiled once into a regular expression with one named group per
parameter; each parameter has a converter that says what it matches (``int`` matches digits) and how to turn
the text into a Python value and back (``to_python`` / ``to_url``).

Matching is designed to cost the same for the first and the two-hundredth route:

1. Rules without parameters live in a dict keyed by path: one hash lookup, whatever the number of routes.
2. Rules with parameters are grouped by their first path segment when it is literal (``/users/<int:id>`` goes
   in group ``users``); a request only tries the rules of its own group plus the few rules whose first segment
   is itself a parameter. Registration order is kept inside each candidate list, so the first rule added wins.

When nothing matches, the router tells the two helpful failures apart: the path matches with another method
(405, with ``Allow``), or it would match with its trailing slash toggled (a 308 redirect to the canonical URL,
so ``/docs`` reaches a rule written ``/docs/`` and ``/about/`` reaches ``/about``). Everything else is a 404.
Parameterless rules win over rules with parameters: ``/users/new`` beats ``/users/<name>``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlencode

from .errors import MethodNotAllowed, NotFound, RequestRedirect


class Converter:
    """Matches one parameter with ``regex``, converts it with ``to_python``, and rebuilds it with ``to_url``.

    Subclass it and register it with ``App.add_converter(name, cls)`` to add your own; ``to_python`` may raise
    ``ValueError`` to reject a value its regex let through, and the router then tries the next rule.
    """

    regex = r"[^/]+"

    def to_python(self, value: str) -> Any:
        return value

    def to_url(self, value: Any) -> str:
        return quote(str(value), safe="")


class StringConverter(Converter):
    """The default: any text up to the next slash."""


class IntConverter(Converter):
    """Non-negative decimal integers, as ``int``."""

    regex = r"\d+"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(int(value))


class FloatConverter(Converter):
    """Non-negative decimal numbers with an optional fraction, as ``float``."""

    regex = r"\d+(?:\.\d+)?"

    def to_python(self, value: str) -> float:
        return float(value)

    def to_url(self, value: Any) -> str:
        return repr(float(value))


class PathConverter(Converter):
    """The rest of a path, slashes included (``/files/<path:name>``)."""

    regex = r"[^/].*?"

    def to_url(self, value: Any) -> str:
        return quote(str(value), safe="/")


class UUIDConverter(Converter):
    """A canonical UUID (``8-4-4-4-12`` hex digits), as ``uuid.UUID``."""

    regex = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: Any) -> str:
        return str(value)


DEFAULT_CONVERTERS: dict[str, type[Converter]] = {
    "str": StringConverter,
    "string": StringConverter,
    "int": IntConverter,
    "float": FloatConverter,
    "path": PathConverter,
    "uuid": UUIDConverter,
}

_PARAM = re.compile(r"<(?:(?P<converter>[A-Za-z_]\w*):)?(?P<name>[A-Za-z_]\w*)>")


class BuildError(LookupError):
    """``url_for`` could not build a URL: unknown endpoint, or a parameter missing or rejected."""


class Rule:
    """One route: a path pattern, the methods it answers, and the view that handles it.

    ``parts`` keeps the pattern as literal strings and ``(name, converter)`` pairs, which is all ``build``
    needs to produce a URL again; ``regex`` is the compiled matcher, or ``None`` for a rule without
    parameters.
    """

    __slots__ = (
        "converters",
        "endpoint",
        "first_segment",
        "index",
        "methods",
        "parts",
        "pattern",
        "regex",
        "view",
    )

    def __init__(
        self,
        pattern: str,
        view: Callable[..., Any],
        endpoint: str,
        methods: Iterable[str],
        converters: dict[str, Converter],
        index: int,
    ) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route {pattern!r} must start with '/'")
        self.pattern = pattern
        self.view = view
        self.endpoint = endpoint
        self.index = index
        methods = {method.upper() for method in methods}
        if "GET" in methods:
            methods.add("HEAD")  # HEAD runs the GET view; the app drops the body.
        self.methods = frozenset(methods)
        self.parts: list[str | tuple[str, Converter]] = []
        self.converters: dict[str, Converter] = {}
        regex_parts: list[str] = []
        position = 0
        for match in _PARAM.finditer(pattern):
            literal = pattern[position : match.start()]
            name, kind = match["name"], match["converter"] or "str"
            if kind not in converters:
                raise ValueError(f"route {pattern!r} uses unknown converter {kind!r}")
            if name in self.converters:
                raise ValueError(f"route {pattern!r} uses parameter {name!r} twice")
            converter = converters[kind]
            self.parts += [literal, (name, converter)]
            self.converters[name] = converter
            regex_parts += [re.escape(literal), f"(?P<{name}>{converter.regex})"]
            position = match.end()
        tail = pattern[position:]
        if "<" in tail or ">" in tail:
            raise ValueError(f"route {pattern!r} has a malformed parameter")
        self.parts.append(tail)
        regex_parts.append(re.escape(tail))
        self.regex = re.compile("".join(regex_parts)) if self.converters else None
        # The literal first segment, used to group rules; None when the first segment holds a parameter.
        first = pattern[1:].split("/", 1)[0]
        self.first_segment = None if "<" in first else first

    def convert(self, match: re.Match[str]) -> dict[str, Any]:
        """The matched text of each parameter turned into Python values; ``ValueError`` rejects the match."""
        return {name: self.converters[name].to_python(text) for name, text in match.groupdict().items()}

    def build(self, values: dict[str, Any]) -> str:
        """This rule's path with ``values`` filled in (each one passed through its converter's ``to_url``)."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(quote(part, safe="/:@!$&'()*+,;=-._~"))
            else:
                name, converter = part
                out.append(converter.to_url(values[name]))
        return "".join(out)

    def __repr__(self) -> str:
        return f"<Rule {self.pattern!r} {sorted(self.methods)} -> {self.endpoint}>"


class Router:
    """All the rules of one app, indexed for matching (``match``) and for building URLs (``build``)."""

    def __init__(self) -> None:
        self.converter_types: dict[str, type[Converter]] = dict(DEFAULT_CONVERTERS)
        self._converters: dict[str, Converter] = {}
        self.rules: list[Rule] = []
        self._static: dict[str, dict[str, Rule]] = {}
        self._by_endpoint: dict[str, list[Rule]] = {}
        # Built lazily by _index() from the dynamic rules; reset whenever a rule is added.
        self._groups: dict[str, list[Rule]] | None = None
        self._wildcards: list[Rule] = []

    def add_converter(self, name: str, converter: type[Converter]) -> None:
        """Make ``<name:param>`` available to rules added from now on."""
        self.converter_types[name] = converter
        self._converters.pop(name, None)

    def add(self, pattern: str, view: Callable[..., Any], endpoint: str, methods: Iterable[str]) -> Rule:
        """Compile and register a rule; the first rule added wins when two match the same request."""
        for name, cls in self.converter_types.items():
            if name not in self._converters:
                self._converters[name] = cls()
        rule = Rule(pattern, view, endpoint, methods, self._converters, len(self.rules))
        for other in self._by_endpoint.get(endpoint, ()):
            if other.view is not view:
                raise ValueError(f"endpoint {endpoint!r} is already used by another view ({other.pattern!r})")
        self.rules.append(rule)
        self._by_endpoint.setdefault(endpoint, []).append(rule)
        if rule.regex is None:
            by_method = self._static.setdefault(pattern, {})
            for method in rule.methods:
                by_method.setdefault(method, rule)
        else:
            self._groups = None
        return rule

    def _index(self) -> dict[str, list[Rule]]:
        """Group the dynamic rules by literal first segment, each group merged with the wildcard rules."""
        dynamic = [rule for rule in self.rules if rule.regex is not None]
        self._wildcards = [rule for rule in dynamic if rule.first_segment is None]
        groups: dict[str, list[Rule]] = {}
        for rule in dynamic:
            if rule.first_segment is not None:
                groups.setdefault(rule.first_segment, [])
        for segment, members in groups.items():
            # Keep registration order across the group and the wildcards: the first rule added wins.
            members.extend(rule for rule in dynamic if rule.first_segment in (segment, None))
        self._groups = groups
        return groups

    def match(self, method: str, path: str) -> tuple[Rule, dict[str, Any]]:
        """The rule and converted parameters for this request, or ``NotFound`` / ``MethodNotAllowed`` /
        ``RequestRedirect`` (whose location is the path with its trailing slash toggled)."""
        static = self._static.get(path)
        if static is not None:
            rule = static.get(method)
            if rule is not None:
                return rule, {}
        allowed: set[str] = set(static or ())
        for rule in self._candidates(path):
            found = rule.regex.fullmatch(path)
            if found is None:
                continue
            try:
                params = rule.convert(found)
            except ValueError:
                continue
            if method in rule.methods:
                return rule, params
            allowed |= rule.methods
        if allowed:
            raise MethodNotAllowed(sorted(allowed))
        if path != "/":
            other = path[:-1] if path.endswith("/") else path + "/"
            if self._path_exists(other):
                raise RequestRedirect(other)
        raise NotFound()

    def _candidates(self, path: str) -> list[Rule]:
        groups = self._groups if self._groups is not None else self._index()
        end = path.find("/", 1)
        return groups.get(path[1:end] if end > 0 else path[1:], self._wildcards)

    def _path_exists(self, path: str) -> bool:
        """Does any rule match ``path`` with some method? Used only on the way to a 404."""
        if path in self._static:
            return True
        for rule in self._candidates(path):
            found = rule.regex.fullmatch(path)
            if found is not None:
                try:
                    rule.convert(found)
                except ValueError:
                    continue
                return True
        return False

    def build(self, endpoint: str, values: dict[str, Any]) -> str:
        """The path (and query string, for values no parameter takes) that reaches ``endpoint``.

        With several rules for one endpoint, the first whose parameters are all given is used.
        """
        rules = self._by_endpoint.get(endpoint)
        if not rules:
            raise BuildError(f"no route is named {endpoint!r}")
        for rule in rules:
            if rule.converters.keys() <= values.keys():
                try:
                    path = rule.build(values)
                except (TypeError, ValueError) as error:
                    raise BuildError(f"cannot build {endpoint!r} ({rule.pattern!r}): {error}") from error
                extra = [(key, value) for key, value in values.items() if key not in rule.converters]
                return path + "?" + urlencode(extra, doseq=True) if extra else path
        needed = ", ".join(sorted(rules[0].converters))
        raise BuildError(
            f"cannot build {endpoint!r}: it needs {needed}, got {', '.join(sorted(values)) or 'nothing'}"
        )
