"""The HTML index of a directory, for mounts that ask for one (``--static-listing``).

Off by default: a listing tells a visitor about files nobody linked to. When on, it shows only what the mount
would serve (no dotfiles unless allowed, no symlinks leading out of the root unless followed), escapes every
name for HTML and percent-encodes every link, so a file called ``<script>.html`` is a name, not markup.
"""

from __future__ import annotations

import html
import os
from urllib.parse import quote

from .mount import StaticOptions
from .paths import allowed_target


def render_listing(directory: str, display_path: str, root: str, options: StaticOptions, *, has_parent: bool) -> bytes:
    """The listing page of ``directory`` (a real path under ``root``) shown at URL path ``display_path``.

    ``has_parent`` is False at the mount's own URL, where a "../" link would lead out of the mount.
    """
    entries = []
    with os.scandir(directory) as scan:
        for entry in scan:
            if _listable(entry, root, options):
                entries.append((entry.name, entry.is_dir()))
    entries.sort()
    title = html.escape(f"Index of {display_path}")
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{title}</title></head>",
        f"<body><h1>{title}</h1><ul>",
    ]
    if has_parent:
        lines.append('<li><a href="../">../</a></li>')
    for name, is_dir in entries:
        suffix = "/" if is_dir else ""
        # Relative links: the listing's own URL ends with "/", so "name" resolves beside it under any prefix.
        href = quote(name, safe="") + suffix
        lines.append(f'<li><a href="{href}">{html.escape(name)}{suffix}</a></li>')
    lines.append("</ul></body></html>\n")
    return "\n".join(lines).encode("utf-8")


def _listable(entry: os.DirEntry, root: str, options: StaticOptions) -> bool:
    name = entry.name
    if name.startswith(".") and not options.dotfiles:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # not valid UTF-8 on disk: no URL can reach it, so do not show it
        return False
    if entry.is_symlink() and not allowed_target(os.path.realpath(entry.path), root, options):
        return False
    try:
        return entry.is_dir() or entry.is_file()  # broken links and sockets are not served, so not listed
    except OSError:
        return False
