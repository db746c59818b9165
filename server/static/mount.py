"""Where static files live: a URL prefix bound to a directory, and the options that loosen the safe defaults.

A mount is configuration, decided once at start-up (``--static /static=./static``); everything per-request
lives in :mod:`server.static.reply`. The root is resolved to its real path here, once, because every later
containment check compares real paths against it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# Numbers each mount for the open-file cache's keys: an int hashes in nanoseconds, a root and options would not.
_mount_numbers = itertools.count(1)


@dataclass(frozen=True)
class StaticOptions:
    """Per-mount switches. Every default is the safe choice; each one widens what the mount will hand out."""

    max_age: int | None = None  # send "Cache-Control: public, max-age=N" when set
    follow_symlinks: bool = False  # serve symlinks whose target lies outside the root (dotfiles still refused)
    dotfiles: bool = False  # serve names starting with "." (.env, .git/, .well-known/), links to them too
    listing: bool = False  # list a directory that has no index.html


@dataclass(frozen=True)
class StaticMount:
    """A URL prefix served from a directory.

    ``prefix`` is normalised without a trailing slash ("/" becomes "", which matches every path), and ``root``
    is resolved to its real path so that containment checks cannot be fooled by a symlinked root.
    """

    prefix: str
    root: Path
    options: StaticOptions = StaticOptions()
    # The prefix as it appears on the wire (percent-encoded), compared against raw request paths.
    _raw_prefix: str = field(init=False, repr=False, compare=False)
    # This mount's share of the open-file cache (server.static.cache): keys are (cache_id, raw path below).
    cache_id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = self.prefix.rstrip("/")
        if self.prefix and not self.prefix.startswith("/"):
            raise ValueError(f"static mount prefix must start with '/': {self.prefix!r}")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "root", Path(os.path.realpath(self.root)))
        object.__setattr__(self, "_raw_prefix", quote(prefix, safe="/"))
        object.__setattr__(self, "cache_id", next(_mount_numbers))

    def match(self, raw_path: str) -> str | None:
        """The rest of ``raw_path`` after the prefix ("" or starting with "/"); None if not under it.

        A mount at "/" takes every path, but not ``OPTIONS *`` (whose path is "*"): that asks about the server,
        not about a file, and goes to the application like any request no mount serves."""
        prefix = self._raw_prefix
        if not prefix:
            return raw_path if raw_path.startswith("/") else None
        if raw_path == prefix or raw_path.startswith(prefix + "/"):
            return raw_path[len(prefix) :]
        return None


def parse_mount(spec: str, options: StaticOptions = StaticOptions()) -> StaticMount:
    """Parse ``URL=DIR`` as given to ``--static``; raise ValueError with a message for the command line."""
    url, sep, directory = spec.partition("=")
    if not sep or not url or not directory:
        raise ValueError(f"--static expects URL=DIR, for example /static=./static; got {spec!r}")
    if not url.startswith("/"):
        raise ValueError(f"--static {spec}: the URL prefix must start with '/'")
    if any(part in (".", "..") for part in url.split("/")):
        raise ValueError(f"--static {spec}: the URL prefix must not contain '.' or '..' segments")
    try:
        path = Path(directory).expanduser()
    except RuntimeError:  # "~nobody" names no user, or "~" with no HOME and no entry in the password database
        raise ValueError(f"--static {spec}: cannot find the home folder {directory.split('/')[0]!r} names") from None
    if not path.is_dir():
        raise ValueError(f"--static {spec}: {directory} is not a directory")
    return StaticMount(url, path, options)
