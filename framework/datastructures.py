"""The containers HTTP needs and Python's dict does not quite provide.

HTTP allows a name to appear more than once (``?tag=a&tag=b``, two ``Set-Cookie`` headers) and compares header
names case-insensitively. ``MultiDict`` keeps every value while behaving like a plain dict of first values,
which is what a view wants nine times out of ten; ``Headers`` is the ordered, case-insensitive list a response
sends; ``EnvironHeaders`` is a read-only view of the request headers that a WSGI server already put in the
environ, so nothing is copied unless it is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import MissingField


class MultiDict(Mapping[str, Any]):
    """A mapping of first values that remembers every value for each key.

    ``d[key]`` and ``d.get(key)`` answer the first value, as a form with one field of each name expects;
    ``d.getall(key)`` answers the list. A missing key raises ``MissingField``, a ``KeyError`` that answers 400
    if the view does not catch it. It is a read-only ``Mapping`` once built (parsed input should not
    change under a view's feet), so ``dict(d)`` and ``json.dumps(dict(d))`` do the obvious thing.
    """

    __slots__ = ("_lists",)

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._lists: dict[str, list[Any]] = {}
        for key, value in pairs:
            self.add(key, value)

    def add(self, key: str, value: Any) -> None:
        """Append a value for ``key`` while building; the first value stays the one ``d[key]`` answers."""
        self._lists.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._lists[key][0]
        except KeyError:
            raise MissingField(key) from None

    def getall(self, key: str) -> list[Any]:
        """Every value sent for ``key``, in order; an empty list when there is none."""
        return list(self._lists.get(key, ()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, key: object) -> bool:
        return key in self._lists

    def items_all(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value) pair, repeated keys included."""
        for key, values in self._lists.items():
            for value in values:
                yield key, value

    def __repr__(self) -> str:
        return f"MultiDict({list(self.items_all())!r})"


class Headers:
    """Response headers: an ordered list of (name, value) pairs with case-insensitive lookups.

    A list, not a dict, because ``Set-Cookie`` must be sent once per cookie and because WSGI's
    ``start_response`` wants exactly this list. ``h[name] = value`` replaces every header of that name;
    ``h.add(name, value)`` appends one more.
    """

    __slots__ = ("_list",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        self._list: list[tuple[str, str]] = []
        if items:
            pairs = items.items() if isinstance(items, Mapping) else items
            for name, value in pairs:
                self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append a header, keeping any others of the same name (needed for ``Set-Cookie``); a value that is
        not a string (``headers["X-Total"] = 5``) is converted with ``str``."""
        if not isinstance(value, str):
            value = str(value)
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            # A newline in a header would let user data forge headers or a whole response (splitting).
            raise ValueError(f"header {name!r} contains a newline")
        self._list.append((name, value))

    def __setitem__(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def __getitem__(self, name: str) -> str:
        lower = name.lower()
        for key, value in self._list:
            if key.lower() == lower:
                return value
        raise KeyError(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        lower = name.lower()
        return [value for key, value in self._list if key.lower() == lower]

    def remove(self, name: str) -> None:
        """Drop every header called ``name``; no error when there is none."""
        lower = name.lower()
        self._list = [(key, value) for key, value in self._list if key.lower() != lower]

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.remove(name)

    def setdefault(self, name: str, value: str) -> str:
        """Set ``name`` only if it is absent; answer the value now in effect."""
        current = self.get(name)
        if current is None:
            self.add(name, value)
            return value
        return current

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lower = name.lower()
        return any(key.lower() == lower for key, _ in self._list)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    def items(self) -> list[tuple[str, str]]:
        """A copy of the (name, value) list, in the form WSGI's ``start_response`` takes."""
        return list(self._list)

    def __repr__(self) -> str:
        return f"Headers({self._list!r})"


class EnvironHeaders(Mapping[str, str]):
    """The request headers, read case-insensitively straight from a WSGI environ.

    WSGI stores ``X-Forwarded-For`` as ``HTTP_X_FORWARDED_FOR`` and the two body headers as ``CONTENT_TYPE``
    and ``CONTENT_LENGTH`` without the prefix; this view hides that spelling so views can say
    ``request.headers["x-forwarded-for"]``.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return key
        return "HTTP_" + key

    def __getitem__(self, name: str) -> str:
        value: str = self._environ[self._key(name)]
        if value == "" and name.lower() in ("content-type", "content-length"):
            # Some servers put empty CONTENT_TYPE/CONTENT_LENGTH keys in the environ of requests without.
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"EnvironHeaders({dict(self)!r})"
