"""docs/framework.md stays true: its code is the code of the blog it builds, and it documents every public name.

Every fenced block that follows a ``<!-- from PATH -->`` line must appear, character for character, in that file
of the repository: the guide quotes ``apps/blog/`` and its tests rather than keeping copies that drift. And every
name in ``framework.__all__`` (plus ``framework.security``) must have its own ``### `Name` `` entry in the
reference part.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import framework

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "framework.md"
QUOTE = re.compile(r"^<!-- from (?P<path>\S+) -->\n```[\w+-]*\n(?P<code>.*?)\n```$", re.M | re.S)


def quotes() -> list[tuple[str, str]]:
    return [(match["path"], match["code"]) for match in QUOTE.finditer(GUIDE.read_text(encoding="utf-8"))]


def test_the_guide_quotes_code():
    found = quotes()
    assert len(found) >= 25
    assert {path for path, _ in found} >= {
        "apps/blog/__init__.py",
        "apps/blog/db.py",
        "apps/blog/auth.py",
        "apps/blog/blog.py",
        "apps/blog/schema.sql",
        "apps/blog/templates/base.html",
        "tests/apps/test_blog.py",
    }
    # Every marker is followed by a block the pattern understood.
    assert GUIDE.read_text(encoding="utf-8").count("<!-- from ") == len(found)


@pytest.mark.parametrize(("path", "code"), quotes(), ids=lambda value: value.splitlines()[0][:60])
def test_each_quoted_block_is_in_its_file(path, code):
    source = (ROOT / path).read_text(encoding="utf-8")
    assert code in source, f"docs/framework.md quotes {path}, but that file no longer has this code:\n{code}"


@pytest.mark.parametrize("name", [*framework.__all__, "framework.security", "framework.testing", "framework.cli"])
def test_every_public_name_has_a_reference_entry(name):
    assert re.search(rf"^### `{re.escape(name)}`$", GUIDE.read_text(encoding="utf-8"), re.M), name
