"""``python -m framework``: the command line, as real processes on an app module written by each test, and the
argument derivation in process (including a property: whatever a signature says, the values typed on the command
line reach the function as the same Python values).

The module uses ``from __future__ import annotations`` on purpose: the functions defined here have string
annotations, as most typed code has, and the derivation must evaluate them.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

import framework.cli as cli
from framework import App
from framework.cli import Argument, Option, UsageError, routes_table, server_argv, server_knows
from tests.support import ROOT, TIMEOUT, ServerProcess, wait_for

if TYPE_CHECKING:
    from framework.nowhere import NotImportable  # type: ignore[import-not-found]  # never evaluated at run time

BLOG = '''
"""A small blog for the command line's tests."""
import sqlite3
import sys

from framework import App
from framework.cli import Argument, Option

app = App(__name__)


@app.get("/")
def index(request):
    return "home"


@app.get("/about", name="page_about")
def about(request):
    return "about"


@app.get("/debug")
def debug(request):
    return "debug" if app.debug else "no debug"


@app.route("/posts/<int:post_id>", methods=["GET", "POST"])
def post(request, post_id):
    return f"post {post_id}"


@app.post("/login")
def login(request):
    return "in"


@app.command("init-db")
def init_db(app, name: str = "blog.sqlite", *, posts: int = 0, force: bool = False):
    """Create the blog's database in the instance folder.

    With --force, an existing database is replaced."""
    path = app.instance_path / name
    if path.exists() and not force:
        raise FileExistsError(f"{path.name} exists (--force replaces it)")
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE post (id INTEGER PRIMARY KEY, title TEXT)")
        db.executemany("INSERT INTO post (title) VALUES (?)", [(f"post {n}",) for n in range(posts)])
    db.close()
    return f"created {path.name}"


@app.command("add-user", arguments=[Argument("name"), Option("--admin", action="store_true"),
                                    Option("--age", type=int, default=18)])
def add_user(name, admin, age):
    """Add a user."""
    print(f"user {name} admin={admin} age={age}")


@app.command()
def status(code: int):
    """Exit with CODE."""
    return code


@app.command
def fail(message: str = "it broke"):
    raise RuntimeError(message)


@app.command()
def total(*numbers: float):
    """Print the sum of the numbers."""
    return sum(numbers)


@app.command()
def wait():
    print("waiting", flush=True)
    sys.stdin.readline()
'''

PLAIN = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "blog.py").write_text(BLOG)
    (tmp_path / "plain.py").write_text(PLAIN)
    return tmp_path


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without the CLI's own variables, with the repository importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FRAMEWORK_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def framework(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        cwd=cwd,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> str:
    """A failure's promise: the status, one line on stderr, no traceback; returns the line."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def table(output: str) -> list[list[str]]:
    """The routes table's rows, header first, without the line of dashes."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]
    assert set(output.splitlines()[1]) <= {"-", " "}
    return [rows[0], *rows[2:]]


# --- routes ---------------------------------------------------------------------------------------------------


def test_routes_lists_endpoint_methods_and_rule_sorted_by_rule(site: Path) -> None:
    result = framework(site, "--app", "blog:app", "routes")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [
        ["Endpoint", "Methods", "Rule"],
        ["index", "GET", "/"],
        ["page_about", "GET", "/about"],
        ["debug", "GET", "/debug"],
        ["login", "POST", "/login"],
        ["post", "GET, POST", "/posts/<int:post_id>"],
    ]
    assert "HEAD" not in result.stdout  # hidden where GET is there, as Flask does


@pytest.mark.parametrize(
    ("sort", "endpoints"),
    [
        ("endpoint", ["debug", "index", "login", "page_about", "post"]),
        ("rule", ["index", "page_about", "debug", "login", "post"]),
        ("methods", ["index", "page_about", "debug", "post", "login"]),  # GET < GET, POST < POST
    ],
)
def test_routes_sort(site: Path, sort: str, endpoints: list[str]) -> None:
    result = framework(site, "--app", "blog:app", "routes", "--sort", sort)
    assert result.returncode == 0, result.stderr
    assert [row[0] for row in table(result.stdout)[1:]] == endpoints


def test_routes_all_methods_and_a_bad_sort(site: Path) -> None:
    result = framework(site, "--app", "blog:app", "routes", "--all-methods")
    assert ["post", "GET, HEAD, POST", "/posts/<int:post_id>"] in table(result.stdout)
    one_line(framework(site, "--app", "blog:app", "routes", "--sort", "size"), 2, "invalid choice: 'size'")


def test_routes_needs_a_framework_app(site: Path) -> None:
    line = one_line(framework(site, "--app", "plain", "routes"), 2, "plain is a function, not a framework App")
    assert line.startswith("python -m framework: error: ")
    one_line(framework(site, "routes"), 2, "routes needs an app", "--app", "FRAMEWORK_APP")


def test_routes_of_a_flask_app_says_what_it_is(site: Path) -> None:
    pytest.importorskip("flask")
    (site / "flasky.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    one_line(framework(site, "--app", "flasky:app", "routes"), 2, "flask.app.Flask, not a framework App")


# --- app commands -----------------------------------------------------------------------------------------------


def test_a_command_with_arguments_from_its_signature_creates_a_database(site: Path) -> None:
    import sqlite3

    result = framework(site, "--app", "blog:app", "init-db", "--posts", "3")
    assert (result.returncode, result.stdout, result.stderr) == (0, "created blog.sqlite\n", "")
    database = site / "instance" / "blog.sqlite"  # app.instance_path: instance/ beside the app's module
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM post").fetchone() == (3,)

    # Called again: the command's own exception is one line and status 1; --force replaces the file.
    one_line(framework(site, "--app", "blog:app", "init-db"), 1, "error: init-db failed: FileExistsError:", "--force")
    result = framework(site, "--app", "blog:app", "init-db", "--force", "--name", "other.db")
    assert result.returncode == 0, result.stderr
    assert (site / "instance" / "other.db").is_file()
    one_line(framework(site, "--app", "blog:app", "init-db", "--posts", "many"), 2, "--posts: invalid int value")


def test_a_command_with_declared_arguments(site: Path) -> None:
    result = framework(site, "--app", "blog:app", "add-user", "ada", "--admin")
    assert (result.returncode, result.stdout) == (0, "user ada admin=True age=18\n"), result.stderr
    result = framework(site, "--app", "blog:app", "add-user", "--age", "36", "bob")
    assert result.stdout == "user bob admin=False age=36\n"
    one_line(framework(site, "--app", "blog:app", "add-user"), 2, "the following arguments are required: name")


def test_exit_statuses(site: Path) -> None:
    assert framework(site, "--app", "blog:app", "status", "0").returncode == 0
    assert framework(site, "--app", "blog:app", "status", "3").returncode == 3
    result = framework(site, "--app", "blog:app", "total", "1.5", "2", "3")
    assert (result.returncode, result.stdout) == (0, "6.5\n")

    line = one_line(framework(site, "--app", "blog:app", "fail"), 1)
    assert line == "error: fail failed: RuntimeError: it broke (--traceback shows where)"
    for result in (
        framework(site, "--app", "blog:app", "--traceback", "fail", "--message", "deep"),
        framework(site, "--app", "blog:app", "fail", "--message", "deep", FRAMEWORK_DEBUG="1"),
    ):
        assert result.returncode == 1
        assert result.stderr.startswith("Traceback (most recent call last):"), result.stderr
        assert 'blog.py", line' in result.stderr
        assert "cli.py" not in result.stderr  # the command's frames, not the machinery's
        assert result.stderr.rstrip().endswith("RuntimeError: deep")


def test_unknown_command(site: Path) -> None:
    line = one_line(framework(site, "--app", "blog:app", "publish"), 2)
    assert line == (
        "python -m framework: error: no command 'publish'; commands: routes, run, init-db, add-user, status, fail, "
        "total, wait"
    )
    one_line(framework(site, "publish"), 2, "no command 'publish'; commands: routes, run (an app's own commands need")
    one_line(framework(site, "--app", "plain", "init-db"), 2, "plain is a function, not a framework App")
    one_line(framework(site, "--app", "blog:app"), 2, "no command given; commands: routes, run, init-db")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing", "cannot import 'missing': no module named 'missing'"),
        ("blog:nothing", "module 'blog' has no attribute 'nothing'"),
        ("blog", "module 'blog' has no attribute 'application'"),
        ("blog:nope(", "is not an attribute name or a factory call"),
    ],
)
def test_a_bad_app_is_the_loaders_one_line(site: Path, spec: str, message: str) -> None:
    for command in ("routes", "init-db", "--help"):
        line = one_line(framework(site, "--app", spec, command), 2, message)
        assert line.startswith("python -m framework: error: ")


def test_the_app_from_the_environment(site: Path) -> None:
    result = framework(site, "status", "4", FRAMEWORK_APP="blog:app")
    assert result.returncode == 4, result.stderr
    assert "page_about" in framework(site, "routes", FRAMEWORK_APP="blog:app").stdout
    assert framework(site, "--app", "blog:app", "status", "5", FRAMEWORK_APP="missing").returncode == 5  # --app wins
    one_line(framework(site, "routes", FRAMEWORK_APP="plain"), 2, "not a framework App")


def test_help_lists_the_builtin_commands_and_the_apps(site: Path) -> None:
    bare = framework(site, "--help")
    assert bare.returncode == 0, bare.stderr
    assert re.search(r"^  routes +list the app's routes", bare.stdout, re.MULTILINE)
    assert re.search(r"^  run +serve the app", bare.stdout, re.MULTILINE)
    assert "init-db" not in bare.stdout
    assert "own commands are listed when --app or $FRAMEWORK_APP names it" in bare.stdout

    for result in (framework(site, "--app", "blog:app", "--help"), framework(site, "-h", FRAMEWORK_APP="blog:app")):
        assert result.returncode == 0, result.stderr
        assert "commands of blog:app:" in result.stdout
        assert re.search(r"^  init-db +Create the blog's database in the instance folder\.$", result.stdout, re.M)
        assert re.search(r"^  add-user +Add a user\.$", result.stdout, re.MULTILINE)
        assert re.search(r"^  fail$", result.stdout, re.MULTILINE)  # no docstring, no help

    plain = framework(site, "--app", "plain", "--help")
    assert "plain is a function, not a framework App: it has no commands of its own." in plain.stdout


def test_a_commands_help(site: Path) -> None:
    result = framework(site, "--app", "blog:app", "init-db", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines to the terminal's width
    assert text.startswith("usage: python -m framework init-db [-h] [--name NAME] [--posts POSTS] [--force]")
    assert "With --force, an existing database is replaced." in text
    assert "(default: blog.sqlite)" in result.stdout
    result = framework(site, "--app", "blog:app", "add-user", "-h")
    assert "usage: python -m framework add-user [-h] [--admin] [--age AGE] name" in " ".join(result.stdout.split())
    result = framework(site, "run", "--help")  # no app needed to read about run
    assert result.returncode == 0
    assert "--no-reload" in result.stdout and "--workers" in result.stdout


def test_ctrl_c_ends_a_command_quietly_with_130(site: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "--app", "blog:app", "wait"],
        cwd=site,
        env=environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
            assert ready, "the command did not start"
            assert process.stdout.readline() == "waiting\n"
            process.send_signal(signal.SIGINT)
            assert process.wait(TIMEOUT) == 130
            assert process.stderr.read() == ""
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)


# --- run --------------------------------------------------------------------------------------------------------


def running(site: Path, *args: str, **env: str) -> ServerProcess:
    """``python -m framework ARGS`` under the server tests' helper, which waits for "serving ... on"."""
    server = ServerProcess(bind=False, cwd=site, env=environment(**env))
    server.argv = [sys.executable, "-m", "framework", *args]
    return server


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie not reaped yet is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def test_run_serves_the_app_reloading_and_in_debug_mode(site: Path) -> None:
    with running(site, "--app", "blog:app", "run", "--port", "0") as server:
        assert requests.get(server.url + "/posts/7", timeout=TIMEOUT).text == "post 7"
        assert requests.get(server.url + "/debug", timeout=TIMEOUT).text == "debug"
    assert server.proc is not None
    assert server.proc.returncode == 0, server.output()
    if server_knows("--reload"):  # being added to the server; without it, run serves without reloading
        assert "--reload: restarting the server" in server.output()
    servers = [int(pid) for pid in re.findall(r"\[(\d+)\] \[INFO\] serving ", server.output())]
    assert servers
    for pid in servers:  # the reloader's child too
        wait_for(functools.partial(gone, pid))


def test_run_without_reload_or_debug_passes_server_options_on(site: Path) -> None:
    args = ("run", "--no-reload", "--no-debug", "--port", "0", "--threads", "3")
    with running(site, *args, FRAMEWORK_APP="blog:app") as server:
        assert requests.get(server.url + "/debug", timeout=TIMEOUT).text == "no debug"
    assert server.proc is not None
    assert server.proc.returncode == 0, server.output()
    assert "threads: 3" in server.output()
    assert "--reload" not in server.output()


def test_run_needs_an_app(site: Path) -> None:
    one_line(framework(site, "run"), 2, "run needs an app")
    one_line(framework(site, "run", "--port", "70000"), 2, "'70000' is not a port number")


# --- in process: arguments derived from a signature, declared ones, registration errors -----------------------


def invoke(app: App, name: str, *argv: str) -> Any:
    command = app.commands[name]
    return command.call(app, command.parser().parse_args(argv))


def test_positionals_options_and_their_types() -> None:
    app = App(__name__)
    calls: list[dict[str, Any]] = []

    @app.command()
    def make(
        app: NotImportable,  # only a type checker can resolve it: the app parameter's annotation is never read
        title,
        count: int,
        ratio: float = 0.5,
        *,
        tags: list[str] = ["x"],  # noqa: B006  (never mutated; a list default is what the test is about)
        out: Path | None = None,
        shade: Literal["light", "dark"] = "light",
        level: int,
    ) -> None:
        calls.append(dict(app=app, title=title, count=count, ratio=ratio, tags=tags, out=out, shade=shade, level=level))

    assert app.commands["make"].takes_app
    invoke(
        app, "make", "A title", "3", "--ratio", "2", "--tags", "a", "b", "--out", "x/y", "--shade", "dark", "--level=4"
    )
    invoke(app, "make", "-", "0", "--level=1")
    assert calls == [
        dict(app=app, title="A title", count=3, ratio=2.0, tags=["a", "b"], out=Path("x/y"), shade="dark", level=4),
        dict(app=app, title="-", count=0, ratio=0.5, tags=["x"], out=None, shade="light", level=1),
    ]
    assert calls[1]["tags"] is not make.__kwdefaults__["tags"]  # a copy: a command cannot change its default
    for argv, message in [
        (("t", "3"), "the following arguments are required: --level"),
        (("t", "three", "--level", "1"), "argument count: invalid int value: 'three'"),
        (("t", "3", "--level", "1", "--shade", "pink"), "argument --shade: invalid choice: 'pink'"),
        (
            ("t", "3", "--level", "1", "--lev", "1"),
            "unrecognized arguments: --lev",
        ),  # no abbreviations: every name is spelled out
    ]:
        with pytest.raises(UsageError, match=re.escape(f"python -m framework make: error: {message}")):
            invoke(app, "make", *argv)


def test_boolean_parameters_are_flags() -> None:
    app = App(__name__)

    @app.command()
    def flags(*, force: bool = False, color: bool = True, maybe: bool | None = None, sure: bool) -> Any:
        return force, color, maybe, sure

    assert invoke(app, "flags", "--sure", "yes") == (False, True, None, True)
    assert invoke(app, "flags", "--force", "--no-color", "--maybe", "--sure=off") == (True, False, True, False)
    assert invoke(app, "flags", "--no-maybe", "--sure", "0") == (False, True, False, False)
    with pytest.raises(UsageError, match="'perhaps' is not yes or no"):
        invoke(app, "flags", "--sure", "perhaps")
    with pytest.raises(UsageError, match="unrecognized arguments: --color"):
        invoke(app, "flags", "--color", "--sure", "1")  # True by default: only --no-color exists


def test_star_args_and_positional_only_parameters() -> None:
    app = App(__name__)

    @app.command()
    def add(first: int, /, *rest: int, scale: int = 1) -> int:
        return (first + sum(rest)) * scale

    assert invoke(app, "add", "1", "2", "3", "--scale", "2") == 12
    assert invoke(app, "add", "5") == 5


def test_names_and_help_come_from_the_function() -> None:
    app = App(__name__)

    @app.command  # type: ignore[arg-type]  # App.command is annotated str | None; the bare form works too
    def init_db() -> None:
        """Create the database.

        Run it once."""

    @app.command(help="Say it shorter.")
    def long_winded_name() -> None:
        """A long first line that the help option replaces."""

    assert init_db.__name__ == "init_db"  # the function is returned as it was, still callable
    command = app.commands["init-db"]
    assert (command.help, command.description) == ("Create the database.", "Create the database.\n\nRun it once.")
    assert not command.takes_app
    assert app.commands["long-winded-name"].help == "Say it shorter."
    assert "Run it once." in command.parser().format_help()


def test_declared_arguments_are_passed_by_name() -> None:
    app = App(__name__)

    @app.command("add-user", arguments=[Argument("name"), Option("-a", "--admin", action="store_true")])
    def add_user(app: App, name: str, admin: bool) -> Any:
        return app, name, admin

    assert invoke(app, "add-user", "-a", "ada") == (app, "ada", True)
    assert repr(Option("--admin", action="store_true")) == "Option('--admin', action='store_true')"


def _takes_kwargs(**options: str) -> None: ...
def _takes_a_dict(mapping: dict[str, int]) -> None: ...
def _two_lists(first: list[str], second: list[str]) -> None: ...
def _shadows_help(help: str = "") -> None: ...
def _unresolvable(value: Nowhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821


@pytest.mark.parametrize(
    ("function", "options", "message"),
    [
        (_takes_kwargs, {}, "**options cannot come from a command line"),
        (_takes_a_dict, {}, "parameter 'mapping': no command-line conversion for dict[str, int]"),
        (_two_lists, {}, "only one positional list per command"),
        (_shadows_help, {}, "conflicting option string: --help"),
        (_unresolvable, {}, "cannot evaluate its annotation 'Nowhere'"),
        (_two_lists, {"arguments": [Argument("first"), Argument("other")]}, "cannot be the function of command"),
        (_two_lists, {"arguments": [Option("--first", action="nonsense")]}, "unknown action"),
    ],
)
def test_mistakes_are_refused_at_registration(function: Any, options: dict[str, Any], message: str) -> None:
    app = App(__name__)
    with pytest.raises(TypeError, match=re.escape(message)):
        app.command("thing", **options)(function)
    assert app.commands == {}


def test_argument_and_option_check_their_names() -> None:
    for make, flags in [(Argument, ()), (Argument, ("--x",)), (Argument, ("a", "b")), (Option, ("x",))]:
        with pytest.raises(TypeError):
            make(*flags)


def test_command_names_are_checked() -> None:
    app = App(__name__)
    app.command("one")(lambda: None)
    with pytest.raises(ValueError, match="'one' is already registered"):
        app.command("one")(lambda: None)
    with pytest.raises(ValueError, match="'routes' is a built-in command"):
        app.command("routes")(lambda: None)
    with pytest.raises(ValueError, match="cannot be a command name"):
        app.command("two words")(lambda: None)

    def again() -> None: ...

    app.command("same")(again)
    app.command("same")(again)  # the same function again (a module imported twice): no conflict
    assert list(app.commands) == ["one", "same"]


# --- in process: the built-in commands' pieces ---------------------------------------------------------------

EMPTY = App(__name__)
SMALL = App(__name__, static="static")


@SMALL.route("/items/<int:item_id>", methods=["GET", "DELETE"])
def item(request: Any, item_id: int) -> str:
    return str(item_id)


def test_routes_table_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert routes_table(SMALL).splitlines() == [  # the static route is a route like any other
        "Endpoint  Methods      Rule",
        "--------  -----------  -----------------------",
        "item      DELETE, GET  /items/<int:item_id>",
        "static    GET          /static/<path:filename>",
    ]
    assert "DELETE, GET, HEAD" in routes_table(SMALL, all_methods=True)
    assert cli.main(["--app", f"{__name__}:EMPTY", "routes"]) == 0
    assert capsys.readouterr().out == "No routes were registered.\n"


def test_routes_table_lists_mounted_apps() -> None:
    site = App(__name__)

    @site.route("/")
    def home(request: Any) -> str:
        return "home"

    blog = App(__name__)

    @blog.route("/posts/<int:post_id>")
    def post(request: Any, post_id: int) -> str:
        return str(post_id)

    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"old"]

    site.mount("/blog", blog)
    site.mount("/legacy", legacy)
    lines = routes_table(site).splitlines()
    assert any(line.split() == ["post", "(app", "at", "/blog)", "GET", "/blog/posts/<int:post_id>"] for line in lines)
    assert any(line.split() == ["(mounted", "function)", "*", "/legacy/..."] for line in lines), lines
    assert any(line.split() == ["home", "GET", "/"] for line in lines)


def test_server_argv() -> None:
    argv = server_argv("blog:create_app()", "127.0.0.1", 5000, reload=True, debug=True, extra=["-w", "1"])
    assert argv[:3] == [sys.executable, "-m", "server"]
    assert argv[3:] == ["blog:create_app()", "--bind", "127.0.0.1:5000", "--reload", "--debug", "-w", "1"]
    assert server_argv("blog", "::1", 0, reload=False, debug=False)[3:] == ["blog", "--bind", "[::1]:0"]


class _Exec(Exception):
    """What the test's os.execv raises instead of replacing the test's process."""


@pytest.mark.parametrize("has_reload", [True, False])
def test_run_becomes_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], has_reload: bool
) -> None:
    def execv(path: str, argv: list[str]) -> None:
        raise _Exec(path, argv)

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(cli, "server_knows", lambda option: has_reload)
    with pytest.raises(_Exec) as caught:
        cli.main(["--app", "blog:create_app()", "run", "--port", "8001", "--workers", "2", "--no-debug"])
    path, argv = caught.value.args
    assert path == sys.executable
    expected = [
        "blog:create_app()",
        "--bind",
        "127.0.0.1:8001",
        *(["--reload"] if has_reload else []),
        "--workers",
        "2",
    ]
    assert argv == [sys.executable, "-m", "server", *expected]
    warning = "python -m framework run: warning: this server has no --reload yet; serving without reloading\n"
    assert capsys.readouterr().err == ("" if has_reload else warning)
    assert cli.main(["--app=-x", "run"]) == 2
    assert "'-x' is not of the form module:attribute" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bind",
    [
        ["--bind", "127.0.0.1:18482"],
        ["--bind=127.0.0.1:18482"],
        ["-b", "127.0.0.1:18482"],
        ["-b127.0.0.1:18482"],
        ["--bi", "127.0.0.1:18482"],  # the server's parser takes an unambiguous abbreviation
        ["--bind", "unix:/tmp/app.sock"],
        ["--bind", "127.0.0.1:18482", "--bind", "[::1]:18482"],
    ],
)
def test_a_bind_passed_on_replaces_the_default_one(monkeypatch: pytest.MonkeyPatch, bind: list[str]) -> None:
    """``run --bind 127.0.0.1:18482`` listened there and on the default 127.0.0.1:5000 as well (the server's --bind
    is repeatable, and run always added its own): a --bind passed on is where to listen, instead of the default."""

    def execv(path: str, argv: list[str]) -> None:
        raise _Exec(path, argv)

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(cli, "server_knows", lambda option: True)
    with pytest.raises(_Exec) as caught:
        cli.main(["--app", "blog:app", "run", "--no-debug", *bind])
    argv = caught.value.args[1]
    assert argv == [sys.executable, "-m", "server", "blog:app", "--reload", *bind]
    assert server_argv("blog:app", "127.0.0.1", 5000, reload=False, debug=False, extra=bind)[3:] == ["blog:app", *bind]


def test_a_bind_in_the_servers_environment_or_config_file_is_not_overridden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SERVER_BIND or a --config file's bind said where to listen, and run's own --bind 127.0.0.1:5000 overrode it
    (a flag wins over both): now run adds its default only when nothing else says where."""
    monkeypatch.delenv("SERVER_BIND", raising=False)
    monkeypatch.delenv("SERVER_CONFIG", raising=False)
    default = ["blog", "--bind", "127.0.0.1:5000"]
    assert server_argv("blog", "127.0.0.1", 5000, reload=False, debug=False)[3:] == default
    monkeypatch.setenv("SERVER_BIND", "127.0.0.1:18483")
    assert server_argv("blog", "127.0.0.1", 5000, reload=False, debug=False)[3:] == ["blog"]
    monkeypatch.delenv("SERVER_BIND")
    with_bind = tmp_path / "site.toml"
    with_bind.write_text('bind = ["127.0.0.1:18484"]\n')
    without = tmp_path / "other.toml"
    without.write_text("workers = 1\n")
    spellings = [["--config", str(with_bind)], [f"--config={with_bind}"], ["--co", str(with_bind)]]
    spellings += [["-c", str(with_bind)], [f"-c{with_bind}"], ["-w", "1", "--config", str(with_bind)]]
    for extra in spellings:
        assert server_argv("blog", "127.0.0.1", 5000, reload=False, debug=False, extra=extra)[3:] == ["blog", *extra]
    extra = ["--config", str(without)]
    assert server_argv("blog", "127.0.0.1", 5000, reload=False, debug=False, extra=extra)[3:] == [*default, *extra]
    monkeypatch.setenv("SERVER_CONFIG", str(with_bind))
    assert server_argv("blog", "127.0.0.1", 5000, reload=False, debug=False)[3:] == ["blog"]
    # A --host or --port given to run is a flag, and wins over the environment and the file as the server's do.
    explicit = server_argv("blog", "127.0.0.1", 8001, reload=False, debug=False, explicit=True)
    assert explicit[3:] == ["blog", "--bind", "127.0.0.1:8001"]


def test_host_or_port_with_a_bind_is_refused(site: Path) -> None:
    """Both say where to listen: rather than guess which one was meant, one line and exit status 2."""
    for where in (["--port", "8001"], ["--host", "0.0.0.0"]):
        one_line(framework(site, "--app", "blog:app", "run", *where, "--bind", "127.0.0.1:18482"), 2, "--bind")
    # Another option's value that only looks like one is not a bind.
    argv = server_argv("blog", "127.0.0.1", 5000, reload=False, debug=False, extra=["--", "--bind"])
    assert argv[3:6] == ["blog", "--bind", "127.0.0.1:5000"]


def test_server_knows_what_its_parser_has() -> None:
    assert server_knows("--debug")
    assert server_knows("--workers")
    assert not server_knows("--no-such-option")


# --- a property: any signature, any values: typed on a command line, they reach the function as they were ---------

_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name) and name not in ("app", "help") and not name.startswith("no")
)
_SAFE_TEXT = st.text(max_size=8).filter(lambda text: not text.startswith("-"))  # else it reads as an option
_BOOL_WORDS = {True: ["yes", "true", "1", "on", "Y"], False: ["no", "false", "0", "off", "N"]}


def _scalar(kind: str, positional: bool) -> st.SearchStrategy[Any]:
    """Values of one type; a positional's text may not start with "-" (options are written --name=VALUE)."""
    if kind == "str":
        return _SAFE_TEXT if positional else st.text(max_size=8).filter(lambda text: text != "--")
    if kind == "int":
        return st.integers(min_value=0 if positional else None)
    if kind == "float":
        return st.floats(min_value=0 if positional else None, allow_nan=False)
    return st.booleans()


_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list[str]": list[str],
    "list[int]": list[int],
}


def _render(kind: str, value: Any, draw: Any) -> str:
    if kind == "bool":
        return str(draw(st.sampled_from(_BOOL_WORDS[value])))
    return repr(value) if kind == "float" else str(value)


@st.composite
def _signatures_and_argvs(draw: Any) -> tuple[inspect.Signature, list[str], dict[str, Any]]:
    """A signature, a command line for it and the values the function must receive."""
    positional: list[inspect.Parameter] = []
    keyword_only: list[inspect.Parameter] = []
    head: list[str] = []
    tail: list[str] = []
    expected: dict[str, Any] = {}
    a_positional_list = False
    for name in draw(st.lists(_NAMES, max_size=6, unique=True)):
        kind = draw(st.sampled_from(list(_TYPES)))
        many = kind.startswith("list")
        item = kind[5:-1] if many else kind
        role = draw(st.sampled_from(["positional", "option", "required"]))
        if role == "positional" and many and a_positional_list:
            role = "option"
        a_positional_list |= role == "positional" and many
        values = st.lists(_scalar(item, True), max_size=3) if many else _scalar(item, role == "positional")
        value = draw(values)
        flag = "--" + name.replace("_", "-")
        if role == "positional":
            positional.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_TYPES[kind]))
            head += [_render(item, v, draw) for v in value] if many else [_render(item, value, draw)]
            expected[name] = value
            continue
        default = draw(values) if role == "option" else inspect.Parameter.empty
        keyword_only.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_TYPES[kind])
        )
        if role == "option" and not draw(st.booleans()):
            expected[name] = default  # not on the command line
        elif role == "option" and kind == "bool":
            expected[name] = value
            if value != default:
                tail.append(flag if value else "--no-" + flag[2:])
        else:
            expected[name] = value
            tail += (
                [flag, *(_render(item, v, draw) for v in value)] if many else [f"{flag}={_render(item, value, draw)}"]
            )
    takes_app = draw(st.booleans())
    app_parameter = [inspect.Parameter("app", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if takes_app else []
    if takes_app:
        expected["app"] = "the app"
    return inspect.Signature(app_parameter + positional + keyword_only), head + tail, expected


@given(_signatures_and_argvs())
def test_values_typed_on_the_command_line_reach_the_function(
    case: tuple[inspect.Signature, list[str], dict[str, Any]],
) -> None:
    signature, argv, expected = case
    received: list[dict[str, Any]] = []

    def function(*args: Any, **kwargs: Any) -> None:
        received.append(dict(signature.bind(*args, **kwargs).arguments))

    function.__signature__ = signature  # type: ignore[attr-defined]
    command = cli.build_command(function, "prop")
    command.call("the app", command.parser().parse_args(argv))
    assert received == [expected]
