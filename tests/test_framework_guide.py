"""docs/framework.md stays true: its code is the code of the blog it builds, and it documents every public name.

Every fenced block that follows a ``<!-- from PATH -->`` line must appear, character for character, in that file
of the repository: the guide quotes ``apps/blog/`` and its tests rather than keeping copies that drift. And every
name in ``framework.__all__`` (plus ``framework.security``) must have its own ``### `Name` `` entry in the
reference part.

And a reader can build the blog from the guide alone: every name the blog's modules define is quoted from its
file, and so is every name they import from the rest of the repository (``apps/common.py``), with the names
those use in turn.
"""

from __future__ import annotations

import ast
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


BLOG = ROOT / "apps" / "blog"


def defined_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """The top-level names a module defines (functions, classes, assignments), each with its statement."""
    names: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names[target.id] = node
    return names


def is_quoted(path: Path, name: str) -> bool:
    """Whether a block quoted from ``path`` defines ``name``."""
    definition = re.compile(rf"^(?:def |class ){re.escape(name)}\b|^{re.escape(name)}(?::[^=]*)? = ", re.M)
    relative = path.relative_to(ROOT).as_posix()
    return any(quoted == relative and definition.search(code) for quoted, code in quotes())


def names_the_blog_needs() -> list[tuple[Path, str]]:
    """Every top-level name of ``apps/blog/*.py``, and every name they import from ``apps/common.py`` with the
    names of ``apps/common.py`` that those use, transitively: what the guide must show for the blog to build."""
    needed: set[tuple[Path, str]] = set()
    common = ROOT / "apps" / "common.py"
    common_names = defined_names(ast.parse(common.read_text(encoding="utf-8")))
    pending: list[str] = []
    for module in sorted(BLOG.glob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        needed.update((module, name) for name in defined_names(tree))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module == "common":
                pending.extend(alias.name for alias in node.names)
    while pending:
        name = pending.pop()
        if (common, name) in needed:
            continue
        needed.add((common, name))
        used = {node.id for node in ast.walk(common_names[name]) if isinstance(node, ast.Name)}
        pending.extend(sorted(used & common_names.keys()))
    return sorted(needed)


@pytest.mark.parametrize(("path", "name"), names_the_blog_needs(), ids=lambda value: getattr(value, "name", value))
def test_the_guide_shows_everything_the_blog_is_made_of(path, name):
    assert is_quoted(path, name), f"docs/framework.md never quotes {name} from {path.relative_to(ROOT)}"
