"""Routing: turn a method and a path into a view and its typed parameters, and back into a URL.

A rule such as ``/users/<int:user_id>`` names its parameters in angle brackets; each parameter has a converter
that says what it matches (``int`` matches digits) and how to turn the text into a Python value and back
(``to_python`` / ``to_url``).

Matching is designed to cost the same for the first and the two-hundredth route, whatever they look like:

1. Rules without parameters live in a dict keyed by path: one hash lookup.
2. Rules with parameters live in a tree of path segments. ``/api/users/<int:id>`` is the branch
   ``api`` -> ``users`` -> ``<int:id>``; a request walks down its own segments, with one dict lookup per
   literal segment and one converter match per parameter. Its cost depends on the depth of the path, not on
   the number of routes (a regex per rule, tried in turn, would make the 200th route 200 times slower).

At each level a literal segment is tried before a parameter, and parameters in registration order; a branch
that leads nowhere is backtracked. A converter that can match slashes (``path``) takes the rest of the path
from where it starts; such rules are tried with the most literal text first. So the most specific rule wins:
``/users/new`` beats ``/users/<name>``, and ``/files/<path:p>/edit`` beats ``/files/<path:p>``.

When nothing matches, the router tells the two helpful failures apart: the path matches with another method
(405, with ``Allow``), or it would match with its trailing slash toggled (a 308 redirect to the canonical URL,
so ``/docs`` reaches a rule written ``/docs/`` and ``/about/`` reaches ``/about``). Everything else is a 404.
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
    #: True for converters whose regex can match a "/": they take the rest of the path where they start.
    spans_segments = False

    def to_python(self, value: str) -> Any:
        """The view's value for the matched (decoded) text; raise ``ValueError`` to refuse it."""
        return value

    def to_url(self, value: Any) -> str:
        """The text for ``value`` in a URL built by ``url_for``, percent-encoded (a "/" too: it would start
        another segment)."""
        return quote(str(value), safe="")


class StringConverter(Converter):
    """The default: any text up to the next slash."""


INT_MAX = 2**63 - 1


class IntConverter(Converter):
    """Non-negative decimal integers up to ``INT_MAX`` (2**63 - 1), as ``int``; larger ones do not match.

    The bound is what a database's integer column holds (SQLite's, PostgreSQL's bigint): an id one past it made
    ``WHERE id = ?`` raise OverflowError, a 500 for any client who typed twenty nines. Beyond it is no id, so the
    route does not match (404), as for any other text the converter refuses."""

    regex = r"[0-9]+"  # (not \d, which takes every script's digits: /posts/١٢ would be a second URL of /posts/12)

    def to_python(self, value: str) -> int:
        number = int(value) if len(value) <= 19 else INT_MAX + 1  # (no int() of a 4,000-digit string)
        if number > INT_MAX:
            raise ValueError(f"{value[:30]} is larger than {INT_MAX}")
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


class FloatConverter(Converter):
    """Non-negative decimal numbers with an optional fraction, as ``float``."""

    regex = r"[0-9]+(?:\.[0-9]+)?"

    def to_python(self, value: str) -> float:
        return float(value)

    def to_url(self, value: Any) -> str:
        return repr(float(value))


class PathConverter(Converter):
    """The rest of a path, slashes included (``/files/<path:name>``)."""

    regex = r"[^/].*?"
    spans_segments = True

    def to_url(self, value: Any) -> str:
        text = str(value)
        if text.startswith("/"):
            # "/files/" + "/evil.example" would be "//evil.example", a URL of another site (and one this rule,
            # whose path starts with a character other than "/", never matches anyway).
            raise ValueError(f"a path parameter cannot start with '/': {text!r}")
        return quote(text, safe="/")


class UUIDConverter(Converter):
    """A canonical UUID (``8-4-4-4-12`` hex digits), as ``uuid.UUID``."""

    regex = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: Any) -> str:
        # Canonical, and only a UUID: str() of anything else ("x?admin=1#frag", "../..") would go into the URL raw.
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


DEFAULT_CONVERTERS: dict[str, type[Converter]] = {
    "str": StringConverter,
    "string": StringConverter,
    "int": IntConverter,
    "float": FloatConverter,
    "path": PathConverter,
    "uuid": UUIDConverter,
}

# What RFC 3986 lets a path carry unescaped ("pchar" and "/"). "%" is not in it: the paths quoted here are
# decoded text, so a "%" in them is a literal percent sign. Nor is "\", which browsers read as "/".
PATH_SAFE = "/:@!$&'()*+,;=-._~"


def quote_path(path: str) -> str:
    """A decoded path as it must appear in a URL: ``/a b/ü`` -> ``/a%20b/%C3%BC``."""
    return quote(path, safe=PATH_SAFE)


_PARAM = re.compile(r"<(?:(?P<converter>[A-Za-z_]\w*):)?(?P<name>[A-Za-z_]\w*)>")


class BuildError(LookupError):
    """``url_for`` could not build a URL: unknown endpoint, or a parameter missing or rejected."""


Part = str | tuple[str, Converter]


def parse_pattern(pattern: str, converters: dict[str, Converter]) -> list[Part]:
    """Split a pattern into literal text and ``(name, converter)`` pairs: ``/u/<int:id>`` ->
    ``["/u/", ("id", IntConverter())]``."""
    parts: list[Part] = []
    position = 0
    for match in _PARAM.finditer(pattern):
        kind = match["converter"] or "str"
        if kind not in converters:
            raise ValueError(f"route {pattern!r} uses unknown converter {kind!r}")
        if match.start() > position:
            parts.append(pattern[position : match.start()])
        parts.append((match["name"], converters[kind]))
        position = match.end()
    tail = pattern[position:]
    if "<" in tail or ">" in tail:
        raise ValueError(f"route {pattern!r} has a malformed parameter")
    if tail:
        parts.append(tail)
    return parts


MAX_PARAMETERS = 2  # in one segment, or in the rest of a path after a converter that spans segments


class Matcher:
    """Matches a piece of path made of literal text and parameters, and converts the parameters.

    Used for one segment (``<int:id>`` or ``v<int:n>.json``) and for the rest of a path after a converter
    that spans segments (``<path:name>/edit``). A lone parameter skips the regex groups: its converter's regex
    and ``to_python`` are applied to the whole text.
    """

    __slots__ = ("converters", "key", "literal_length", "literals", "lone", "regex")

    def __init__(self, parts: list[Part], *, tail: bool = False) -> None:
        """``tail``: ``parts`` are the rest of a path from a converter that spans segments (``<path:p>/edit``)."""
        names = [part[0] for part in parts if not isinstance(part, str)]
        if len(names) > MAX_PARAMETERS:
            # Two parameters are matched in linear time (see _may_match); with three, a path that almost matches
            # makes the regex try every split of it: time grows as the square of its length, as the cube with
            # four (an 8 KiB target held a worker for minutes).
            where = f"from <path:{names[0]}> on" if tail else "in one segment"
            raise ValueError(
                f"parameters {', '.join(names)} {where}: at most {MAX_PARAMETERS} fit there (matching more takes "
                "time that grows as a power of the path's length); "
                + ("end the route with fewer parameters" if tail else "put them in separate segments")
            )
        self.key = tuple(parts)  # Segments written alike, with the same converters, share one tree node.
        self.converters = {part[0]: part[1] for part in parts if not isinstance(part, str)}
        self.literal_length = sum(len(part) for part in parts if isinstance(part, str))
        self.lone = parts[0] if len(parts) == 1 and not isinstance(parts[0], str) else None
        # (text, anchor) for each literal piece: -1 at the start, 1 at the end, 0 in between (see _may_match).
        last = len(parts) - 1
        self.literals = [
            (part, -1 if index == 0 else 1 if index == last else 0)
            for index, part in enumerate(parts)
            if isinstance(part, str)
        ]
        # DOTALL: the path is decoded text, and "%0A" in a file name is a newline that "." must match too.
        if self.lone is not None:
            self.regex = re.compile(self.lone[1].regex, re.DOTALL)
        else:
            pieces = [re.escape(part) if isinstance(part, str) else f"(?P<{part[0]}>{part[1].regex})" for part in parts]
            self.regex = re.compile("".join(pieces), re.DOTALL)

    def match(self, text: str) -> dict[str, Any] | None:
        """The converted parameters if ``text`` matches, else ``None`` (also when a converter refuses)."""
        if self.literals and not self._may_match(text):
            return None
        found = self.regex.fullmatch(text)
        if found is None:
            return None
        try:
            if self.lone is not None:
                return {self.lone[0]: self.lone[1].to_python(text)}
            return {name: self.converters[name].to_python(value) for name, value in found.groupdict().items()}
        except ValueError:
            return None

    def _may_match(self, text: str) -> bool:
        """Can ``text`` match at all? Its literal pieces must appear in order, the first and last in place.

        The regex of a piece with two parameters (``<a>-<b>.json``, ``<path:a>/to/<path:b>/end``) is ambiguous:
        the first parameter can also match the literal that follows it, so on a path that almost matches the
        regex engine tries every split, which costs time quadratic in the path (seconds for 64 KiB of
        ``a-a-a-...``). Checking these necessary conditions first with ``str`` methods costs linear time and
        refuses exactly such paths; the regex then only sees text whose literals are all there, where its first
        greedy (or lazy) choice succeeds.
        """
        position, end = 0, len(text)
        for literal, anchor in self.literals:
            if anchor < 0:
                if not text.startswith(literal):
                    return False
                position = len(literal)
            elif anchor > 0:
                return text.endswith(literal) and end - len(literal) >= position
            else:
                found = text.find(literal, position)
                if found < 0:
                    return False
                position = found + len(literal)
        return True


class Rule:
    """One route: a path pattern, the methods it answers, and the view that handles it.

    ``parts`` keeps the pattern as literal strings and ``(name, converter)`` pairs, which is all ``build``
    needs to produce a URL again.
    """

    __slots__ = ("converters", "endpoint", "methods", "parts", "pattern", "view")

    def __init__(
        self,
        pattern: str,
        view: Callable[..., Any],
        endpoint: str,
        methods: Iterable[str],
        converters: dict[str, Converter],
    ) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route {pattern!r} must start with '/'")
        self.pattern = pattern
        self.view = view
        self.endpoint = endpoint
        if isinstance(methods, str):
            # methods="POST" would otherwise register the methods "P", "O", "S" and "T".
            raise TypeError(f"route {pattern!r}: methods must be a list such as [{methods!r}], not a string")
        methods = {method.upper() for method in methods}
        if "GET" in methods:
            methods.add("HEAD")  # HEAD runs the GET view; the app drops the body.
        self.methods = frozenset(methods)
        self.parts = parse_pattern(pattern, converters)
        self.converters: dict[str, Converter] = {}
        for part in self.parts:
            if not isinstance(part, str):
                if part[0] in self.converters:
                    raise ValueError(f"route {pattern!r} uses parameter {part[0]!r} twice")
                self.converters[part[0]] = part[1]

    def build(self, values: dict[str, Any]) -> str:
        """This rule's path with ``values`` filled in (each one passed through its converter's ``to_url``)."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(quote_path(part))
            else:
                name, converter = part
                text = converter.to_url(values[name])
                _check_built(name, text, converter)
                out.append(text)
        return "".join(out)

    def __repr__(self) -> str:
        return f"<Rule {self.pattern!r} {sorted(self.methods)} -> {self.endpoint}>"


def _check_built(name: str, text: str, converter: Converter) -> None:
    """Refuse (ValueError) a parameter's URL text that would not lead back to its rule: empty where the
    converter takes nothing empty ("/users/" is another rule's URL, or none), or a dot segment, which browsers
    and HTTP clients resolve away ("/users/.." is "/", "/files/../admin" is "/admin"), "%2e" and "%2E" as well."""
    if not text and not re.fullmatch(converter.regex, "", re.DOTALL):
        raise ValueError(f"{name} is empty")
    for piece in text.split("/"):
        if piece.lower().replace("%2e", ".") in (".", ".."):
            raise ValueError(f"{name} would make a dot segment ({text!r}), which clients resolve to another URL")


class Node:
    """One level of the segment tree: literal children by name, parameter children in order, the rules that
    end here, and the rules whose rest (from a segment-spanning converter on) is matched in one piece."""

    __slots__ = ("dynamic", "rules", "static", "tails")

    def __init__(self) -> None:
        self.static: dict[str, Node] = {}
        self.dynamic: list[tuple[Matcher, Node]] = []
        self.rules: list[Rule] = []
        self.tails: list[tuple[Matcher, Rule]] = []

    def child(self, segment: str, converters: dict[str, Converter]) -> Node:
        """The child for one segment of a pattern, created on first use and shared by later rules."""
        if "<" not in segment:
            return self.static.setdefault(segment, Node())
        matcher = Matcher(parse_pattern(segment, converters))
        for existing, node in self.dynamic:
            if existing.key == matcher.key:
                return node
        node = Node()
        self.dynamic.append((matcher, node))
        return node


class Router:
    """All the rules of one app, indexed for matching (``match``) and for building URLs (``build``)."""

    def __init__(self) -> None:
        self.converter_types: dict[str, type[Converter]] = dict(DEFAULT_CONVERTERS)
        self._converters: dict[str, Converter] = {}
        self.rules: list[Rule] = []
        self._static: dict[str, dict[str, Rule]] = {}
        self._root = Node()
        self._by_endpoint: dict[str, list[Rule]] = {}

    def add_converter(self, name: str, converter: type[Converter]) -> None:
        """Make ``<name:param>`` available to rules added from now on."""
        self.converter_types[name] = converter
        self._converters.pop(name, None)

    def add(self, pattern: str, view: Callable[..., Any], endpoint: str, methods: Iterable[str]) -> Rule:
        """Compile and register a rule; of two rules as specific as each other, the first added wins."""
        for name, cls in self.converter_types.items():
            if name not in self._converters:
                self._converters[name] = cls()
        rule = Rule(pattern, view, endpoint, methods, self._converters)
        for other in self._by_endpoint.get(endpoint, ()):
            if other.view is not view:
                raise ValueError(f"endpoint {endpoint!r} is already used by another view ({other.pattern!r})")
        if not rule.converters:
            by_method = self._static.setdefault(pattern, {})
            for method in rule.methods:
                by_method.setdefault(method, rule)
        else:
            self._insert(rule)  # first: a pattern refused here must leave no trace (no endpoint, no listing)
        self.rules.append(rule)
        self._by_endpoint.setdefault(endpoint, []).append(rule)
        return rule

    @staticmethod
    def parameters(pattern: str) -> list[str]:
        """The names of a pattern's parameters, in order: ``/u/<int:id>/<slug>`` -> ``["id", "slug"]``."""
        return [match["name"] for match in _PARAM.finditer(pattern)]

    def _insert(self, rule: Rule) -> None:
        node = self._root
        segments = rule.pattern[1:].split("/")
        for index, segment in enumerate(segments):
            parts = parse_pattern(segment, self._converters)
            if any(not isinstance(part, str) and part[1].spans_segments for part in parts):
                rest = "/".join(segments[index:])
                node.tails.append((Matcher(parse_pattern(rest, self._converters), tail=True), rule))
                # More literal text means more specific: /<path:p>/edit is tried before /<path:p>.
                node.tails.sort(key=lambda tail: -tail[0].literal_length)
                return
            node = node.child(segment, self._converters)
        node.rules.append(rule)

    def match(self, method: str, path: str) -> tuple[Rule, dict[str, Any]]:
        """The rule and converted parameters for this request, or ``NotFound`` / ``MethodNotAllowed`` /
        ``RequestRedirect`` (whose location is the path with its trailing slash toggled)."""
        static = self._static.get(path)
        if static is not None:
            rule = static.get(method)
            if rule is not None:
                return rule, {}
        allowed: set[str] = set(static or ())
        found = _walk(self._root, path[1:].split("/"), 0, method, {}, allowed)
        if found is not None:
            return found
        if allowed:
            raise MethodNotAllowed(sorted(allowed))
        if path != "/":
            other = path[:-1] if path.endswith("/") else path + "/"
            if self._path_exists(other):
                raise RequestRedirect(other)
        raise NotFound()

    def _path_exists(self, path: str) -> bool:
        """Does any rule match ``path`` with some method? Used only on the way to a 404."""
        if path in self._static:
            return True
        allowed: set[str] = set()
        return _walk(self._root, path[1:].split("/"), 0, "", {}, allowed) is not None or bool(allowed)

    def build(self, endpoint: str, values: dict[str, Any]) -> str:
        """The path (and query string, for values no parameter takes) that reaches ``endpoint``.

        With several rules for one endpoint, the first whose parameters are all given and accepted is used (so
        ``/search/<q>`` and ``/search/`` for one view build ``/search/`` for an empty ``q``). Extra values that
        are ``None`` are left out of the query string, as if not given. An extra value whose name starts with
        ``_`` is a TypeError: such names are ``url_for``'s own options (``_external``, ``_anchor``,
        ``_scheme``), and a misspelt or unsupported one (``_anchr``, Flask's ``_method``) would otherwise end up
        in the query string unnoticed.
        """
        rules = self._by_endpoint.get(endpoint)
        if not rules:
            raise BuildError(f"no route is named {endpoint!r}")
        refused: Exception | None = None
        for rule in rules:
            if rule.converters.keys() <= values.keys():
                try:
                    path = rule.build(values)
                except (TypeError, ValueError) as error:
                    refused = refused or BuildError(f"cannot build {endpoint!r} ({rule.pattern!r}): {error}")
                    continue
                extra = [
                    (key, value) for key, value in values.items() if key not in rule.converters and value is not None
                ]
                if not extra:
                    return path
                for key, _ in extra:
                    if key.startswith("_"):
                        raise TypeError(
                            f"url_for({endpoint!r}) got the option {key}, which it does not have (it has _external, "
                            "_anchor and _scheme) and no rule of the endpoint takes"
                        )
                return path + "?" + urlencode(extra, doseq=True)
        if refused is not None:
            raise refused
        needed = ", ".join(sorted(rules[0].converters))
        given = ", ".join(sorted(values)) or "nothing"
        raise BuildError(f"cannot build {endpoint!r}: it needs {needed}, got {given}")


def _walk(
    node: Node, segments: list[str], index: int, method: str, params: dict[str, Any], allowed: set[str]
) -> tuple[Rule, dict[str, Any]] | None:
    """Depth-first search for a rule matching ``segments[index:]`` and ``method``: literal child first, then
    parameter children in order, then segment-spanning rules. Rules that match the path but not the method
    add their methods to ``allowed`` (for the 405's ``Allow``)."""
    if index == len(segments):
        for rule in node.rules:
            if method in rule.methods:
                return rule, params
            allowed |= rule.methods
    else:
        segment = segments[index]
        child = node.static.get(segment)
        if child is not None:
            found = _walk(child, segments, index + 1, method, params, allowed)
            if found is not None:
                return found
        for matcher, child in node.dynamic:
            values = matcher.match(segment)
            if values is not None:
                found = _walk(child, segments, index + 1, method, {**params, **values}, allowed)
                if found is not None:
                    return found
    if node.tails and index < len(segments):
        rest = "/".join(segments[index:])
        for matcher, rule in node.tails:
            values = matcher.match(rest)
            if values is not None:
                if method in rule.methods:
                    return rule, {**params, **values}
                allowed |= rule.methods
    return None
