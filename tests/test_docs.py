"""The docs cannot rot: every file, function and command they name must exist.

What counts as a reference, in ``docs/*.md`` and the top-level ``README.md``:

1. An inline code span (outside fenced blocks) whose whole text is a repository path, optionally followed by a
   colon and a dotted name::

       `server/loop.py`                    a file
       `server/static/`                    a directory (the trailing slash is optional)
       `server/loop.py:Reactor`            a top-level function, class or assigned name in that file
       `server/loop.py:Reactor.run`        a method (or class attribute, or nested class) of that class

   A path is a reference when it starts with one of the repository's top-level folders (``server/``,
   ``framework/``, ``apps/``, ``templates/``, ``static/``, ``tests/``, ``bench/``, ``docs/``) or is one of the
   top-level files (``README.md``, ``pyproject.toml``). Names are looked up by parsing the file with ``ast``,
   never by importing it. Spans that start with ``/`` (URLs such as ``/static/style.css``) are not paths.
2. Inside fenced blocks without a language or marked ``text`` (the diagrams), every ``something.py`` path under
   one of those folders, with or without ``:name``, is checked the same way.
3. Relative Markdown links (``[nginx](nginx.md)``) must point at a file or folder that exists, and a
   ``#fragment`` on a link to a Markdown file must be one of its headings, as GitHub makes anchors of them.
4. In fenced ``bash`` blocks, every ``python -m MODULE`` (or ``python3 -m``) must name a module that exists:
   a module of this repository, or an installed one (``pytest``, ``pip``, ``http.server``). The arguments of
   ``python -m server`` and ``python -m server.net`` are also run through those commands' own argument parsers
   (nothing is started), so a renamed or misspelt flag fails here; and an application named as
   ``apps.something:name`` must be a module of this repository that defines ``name``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
TOP_FOLDERS = ("server", "framework", "apps", "templates", "static", "tests", "bench", "docs")
TOP_FILES = ("README.md", "pyproject.toml")

_FOLDERS = "|".join(TOP_FOLDERS)
# A whole inline code span that is a path, with an optional :dotted.name.
SPAN_REFERENCE = re.compile(
    rf"(?P<path>(?:(?:{_FOLDERS})(?:/[\w.\-]+)*/?|{'|'.join(map(re.escape, TOP_FILES))}))"
    r"(?::(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))?"
)
# A .py path anywhere in a diagram.
DIAGRAM_REFERENCE = re.compile(
    rf"(?<![\w/.])(?P<path>(?:{_FOLDERS})(?:/[\w\-]+)*/[\w\-]+\.py)(?::(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))?"
)
INLINE_CODE = re.compile(r"(`+)(?P<code>[^`]+?)\1(?!`)")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Reference:
    doc: str
    line: int
    path: str
    name: str | None

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.path}" + (f":{self.name}" if self.name else "")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # the line of the opening fence
    lang: str
    text: str


def split_markdown(doc: Path) -> tuple[list[tuple[int, str]], list[Block]]:
    """The document's prose lines (numbered) and its fenced blocks."""
    prose: list[tuple[int, str]] = []
    blocks: list[Block] = []
    fence: str | None = None
    lang = ""
    start = 0
    body: list[str] = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, lang, start, body = match["fence"], match["lang"].lower(), number, []
            else:
                prose.append((number, line))
        elif match and match["fence"].startswith(fence) and not match["lang"]:
            blocks.append(Block(doc.name, start, lang, "\n".join(body)))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{doc.name}:{start}: unclosed fenced block"
    return prose, blocks


def references(doc: Path) -> list[Reference]:
    prose, blocks = split_markdown(doc)
    found = []
    for number, line in prose:
        for span in INLINE_CODE.finditer(line):
            code = span["code"].strip()
            match = SPAN_REFERENCE.fullmatch(code)
            if match:
                found.append(Reference(doc.name, number, match["path"], match["name"]))
    for block in blocks:
        if block.lang in ("", "text"):
            for offset, line in enumerate(block.text.splitlines(), 1):
                for match in DIAGRAM_REFERENCE.finditer(line):
                    found.append(Reference(doc.name, block.line + offset, match["path"], match["name"]))
    return found


def links(doc: Path) -> list[tuple[int, str]]:
    prose, _ = split_markdown(doc)
    found = []
    for number, line in prose:
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match["target"]
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http:, mailto:
            found.append((number, target))
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces turned into hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(doc: Path) -> set[str]:
    prose, _ = split_markdown(doc)
    return {github_anchor(match[1]) for _, line in prose if (match := re.match(r"#{1,6} (.+)", line))}


def link_problem(doc: Path, target: str) -> str | None:
    """None if a relative link resolves, else what is wrong with it."""
    path, _, fragment = target.partition("#")
    destination = (doc.parent / path) if path else doc
    if not destination.exists():
        return "no such file"
    if fragment and destination.suffix == ".md" and fragment not in anchors(destination.resolve()):
        return f"no heading makes the anchor #{fragment}"
    return None


@cache
def top_level_names(path: Path) -> dict[str, ast.AST]:
    return _names_in(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body)


def _names_in(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Functions, classes and assigned names defined directly in ``body`` (also under ``if``/``try``)."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(element, ast.Name):
                        names[element.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.If | ast.Try):
            for part in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", ()))):
                names.update(_names_in(part))
    return names


def resolve(reference: Reference) -> str | None:
    """None if the reference holds, else what is wrong with it."""
    path = ROOT / reference.path
    if not path.exists():
        return "no such file or folder"
    if reference.name is None:
        return None
    if path.suffix != ".py" or not path.is_file():
        return "a :name needs a .py file"
    scope = top_level_names(path)
    parts = reference.name.split(".")
    for depth, part in enumerate(parts):
        node = scope.get(part)
        if node is None:
            where = ".".join(parts[:depth]) or "the module"
            return f"{part!r} is not defined in {where}"
        if depth + 1 < len(parts):
            if not isinstance(node, ast.ClassDef):
                return f"{part!r} is not a class, so it has no {parts[depth + 1]!r}"
            scope = _names_in(node.body)
    return None


ALL_REFERENCES = [ref for doc in DOCS for ref in references(doc)]


def test_the_docs_exist():
    names = {doc.name for doc in DOCS}
    for expected in ("README.md", "walkthrough.md", "concurrency.md", "networking.md", "wsgi-apps.md"):
        assert expected in names
    assert len(ALL_REFERENCES) > 100, "the reference pattern stopped matching: check SPAN_REFERENCE"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_named_path_and_function_exists(doc):
    broken = [f"{ref}: {problem}" for ref in references(doc) if (problem := resolve(ref))]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_relative_link_resolves(doc):
    broken = [
        f"{doc.name}:{n}: {target}: {problem}" for n, target in links(doc) if (problem := link_problem(doc, target))
    ]
    assert not broken, "\n".join(broken)


def test_the_checker_catches_rot():
    fine = Reference("t", 1, "server/loop.py", "Reactor.run")
    assert resolve(fine) is None
    assert resolve(Reference("t", 1, "server/loop.py", "Reactor.no_such_method")) is not None
    assert resolve(Reference("t", 1, "server/loop.py", "READ.real")) is not None  # not a class
    assert resolve(Reference("t", 1, "server/no_such_file.py", None)) is not None
    assert SPAN_REFERENCE.fullmatch("server/http.py:RequestParser.next_event")
    assert not SPAN_REFERENCE.fullmatch("/static/style.css")
    assert not SPAN_REFERENCE.fullmatch("python -m server")
    assert github_anchor("6. `epoll`, and why we use one-shot") == "6-epoll-and-why-we-use-one-shot"
    assert github_anchor("7. Event loop + worker threads + processes") == "7-event-loop--worker-threads--processes"
    assert DIAGRAM_REFERENCE.search("  accept  server/engine.py:Acceptor.handle_event  ")["name"] == (
        "Acceptor.handle_event"
    )


# -- commands in bash blocks ------------------------------------------------------------------------------------


def bash_commands(doc: Path) -> list[tuple[int, list[str]]]:
    """Each simple command of the doc's ``bash`` blocks as a token list, with its line number."""
    _, blocks = split_markdown(doc)
    commands = []
    for block in blocks:
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        lines = block.text.splitlines()
        index = 0
        while index < len(lines):
            number = block.line + 1 + index
            line = lines[index]
            line = re.sub(r"^\s*\$ ", "", line)
            while True:
                if line.endswith("\\") and index + 1 < len(lines):  # a continued line
                    index += 1
                    line = line[:-1] + " " + lines[index]
                    continue
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError as error:  # a quoted string that goes on over the next lines
                    if index + 1 >= len(lines):
                        raise AssertionError(f"{doc.name}:{number}: cannot split {line!r}: {error}") from None
                    index += 1
                    line += "\n" + lines[index]
                    continue
                break
            index += 1
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token in ("&&", "||", "|", ";", "&"):
                    if command:
                        commands.append((number, command))
                    command = []
                else:
                    command.append(token)
    return commands


def python_modules(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(module, its arguments) for ``[VAR=x ...] python -m module args``, else None."""
    for index, token in enumerate(tokens):
        is_python = re.fullmatch(r"(?:.*/)?python3?(?:\.\d+)?", token) is not None
        if is_python and tokens[index + 1 : index + 2] == ["-m"] and index + 2 < len(tokens):
            return tokens[index + 2], tokens[index + 3 :]
    return None


def module_exists(module: str) -> bool:
    relative = Path(*module.split("."))
    if (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file():
        return True
    if module.split(".")[0] in TOP_FOLDERS:
        return False
    return importlib.util.find_spec(module) is not None


def check_cli(module: str, arguments: list[str]) -> str | None:
    """Run the arguments through the command's parser; return the error text, or None."""
    if module == "server":
        from server.__main__ import build_parser
    elif module == "server.net":
        from server.net.__main__ import build_parser
    else:
        return None
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            namespace = build_parser().parse_args(arguments)
    except SystemExit as exit_:
        return None if exit_.code == 0 else err.getvalue().strip() or f"exit status {exit_.code}"
    if module == "server" and namespace.app:
        return check_app_spec(namespace.app)
    return None


def check_app_spec(spec: str) -> str | None:
    """``apps.x:name`` (and other repository modules) must exist and define ``name``."""
    module, _, expression = spec.partition(":")
    if module.split(".")[0] not in TOP_FOLDERS:
        return None  # a placeholder for the reader's own project
    path = (ROOT / Path(*module.split("."))).with_suffix(".py")
    if not path.is_file():
        path = ROOT / Path(*module.split(".")) / "__init__.py"  # a package
    if not path.is_file():
        return f"{spec}: no module {module}"
    name = re.match(r"[A-Za-z_]\w*", expression or "application")
    if name is None or name[0] not in top_level_names(path):
        return f"{spec}: {module} does not define {expression or 'application'}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_bash_commands_use_modules_and_flags_that_exist(doc):
    problems = []
    for number, tokens in bash_commands(doc):
        found = python_modules(tokens)
        if found is None:
            continue
        module, arguments = found
        if not module_exists(module):
            problems.append(f"{doc.name}:{number}: python -m {module}: no such module")
        elif (error := check_cli(module, arguments)) is not None:
            problems.append(f"{doc.name}:{number}: python -m {module} {shlex.join(arguments)}: {error}")
    assert not problems, "\n".join(problems)


def test_the_command_checker_catches_rot():
    assert check_cli("server", ["--loop", "select", "--threads", "4"]) is None
    assert check_cli("server", ["--loop", "kqueue"]) is not None
    assert check_cli("server", ["--no-such-flag"]) is not None
    assert check_cli("server", ["apps.hello:app"]) is None
    assert check_cli("server", ["apps.hello:nothing_here"]) is not None
    assert check_cli("server.net", ["tftp", "get", "127.0.0.1", "f", "--windowsize", "16"]) is None
    assert check_cli("server.net", ["tftp", "fetch", "127.0.0.1", "f"]) is not None
    assert module_exists("server.net") and module_exists("pytest") and not module_exists("server.nothing")
