"""The framework's command line: ``python -m framework --app MODULE:APP COMMAND [args]``, like ``flask --app``.

Why an app needs a command line: the chores around it (create its database, list its routes, serve it while it
is being written) need the app itself, configured as it will run, and a script beside it would import it another
way each time. Here the app is named once, the way the server names it: ``--app`` or the ``FRAMEWORK_APP``
environment variable, as ``module:app``, ``module:create_app()`` or ``module`` alone (meaning
``module:application``), with the current directory importable. It is loaded by the server's own loader
(``server.loader.load_app``), so both accept the same names and fail with the same messages.

Two commands are built in. ``routes`` prints the route table (endpoint, methods, rule). ``run`` serves the app
with our server, ``python -m server SPEC --bind HOST:PORT --reload --debug``, which replaces this process (so
Ctrl-C and signals reach the server itself); it is a development command, so reloading and debug pages are on
unless ``--no-reload``/``--no-debug`` say otherwise, and it does not import the app itself (the server does, and
under ``--reload`` a broken app is reported and retried after the next edit instead of ending the command).
Other options of the server (``--workers``, ``--static URL=DIR``...) are passed on to it.

An app adds its own commands with ``@app.command()``; the registry is ``app.commands`` (name -> ``Command``), on
the app so that anything that registers on it (a blueprint, an extension) can add commands too::

    @app.command("init-db")
    def init_db(app, schema: str = "schema.sql", *, force: bool = False):
        \"\"\"Create the database in the instance folder.\"\"\"
        ...

    @app.command("add-user", arguments=[Argument("name"), Option("--admin", action="store_true")])
    def add_user(app, name, admin):
        ...

The name defaults to the function's, with ``_`` written ``-``; the help is the docstring's first line (``help=``
overrides it). A command's arguments are either declared with ``arguments=[...]``, each ``Argument`` (a
positional) or ``Option`` (``--flag``) being one call of argparse's ``add_argument`` with the same parameters,
and the function called with each one's ``dest`` by name; or, when none are declared, derived from the signature:

- a parameter without a default is a positional argument (a keyword-only one, a required ``--option``);
- a parameter with a default is an ``--option`` (``max_age`` -> ``--max-age``); a ``bool`` default makes a flag:
  ``--force`` for ``False``, ``--no-color`` for ``True``;
- the annotation converts the text: ``int``, ``float``, ``str``, ``Path``, ``bool`` (yes/no, true/false, 1/0),
  ``Literal["a", "b"]`` (choices), ``X | None``; ``list[X]`` (and ``*args``) takes any number of values. Without
  an annotation, the default's type is used; without either, the text as it is. An annotation that cannot be
  converted is refused when the command is registered, as are ``**kwargs`` and a second positional list.

**The app is passed explicitly**, as views get the request: a command whose first parameter is named ``app``
receives the app there (it is not a command-line argument), so ``app.instance_path`` and ``app.config`` are at
hand; a command that needs nothing from it does not declare it. There is no global "current app" to set up.

What the function returns becomes the exit status, as for ``sys.exit``: ``None`` is 0, an int is that status; a
string (or any other value) is printed and the status is 0.

Failures end with one line on stderr: a usage error (unknown command, bad arguments, an app that cannot be
loaded, ``routes`` on an app that is not a framework App) with exit status 2; an exception raised by an app's
command with ``error: ...`` and status 1 (``--traceback``, or ``FRAMEWORK_DEBUG=1``, prints the traceback).
Ctrl-C ends any command quietly with status 130, as a shell reports it.

Only ``main`` and ``run`` touch the server package, and only when they run: ``@app.command`` imports this module
while the app is being imported, and an app served by gunicorn need not import our server.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import os
import sys
import textwrap
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from .app import App
from .scaffold import check_signature

PROG = "python -m framework"
BUILTIN_COMMANDS = ("routes", "run")
APP_VARIABLE = "FRAMEWORK_APP"
DEBUG_VARIABLE = "FRAMEWORK_DEBUG"
_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n"})

# --- declaring a command ------------------------------------------------------------------------------------


class Argument:
    """A positional argument of a command: ``Argument("name")``, ``Argument("paths", nargs="+", type=Path)``.

    The parameters are those of argparse's ``add_argument``, kept until the command's parser is built."""

    __slots__ = ("flags", "options")

    def __init__(self, *flags: str, **options: Any) -> None:
        if not flags:
            raise TypeError(f"{type(self).__name__}() needs a name, as in Argument('name') or Option('--count')")
        self._check(flags)
        self.flags = flags
        self.options = options

    def _check(self, flags: tuple[str, ...]) -> None:
        if len(flags) != 1 or flags[0].startswith("-"):
            raise TypeError(f"Argument{flags!r}: a positional argument has one name without '-'; use Option for --x")

    def add_to(self, parser: argparse.ArgumentParser) -> argparse.Action:
        return parser.add_argument(*self.flags, **self.options)

    def __repr__(self) -> str:
        parts = [repr(flag) for flag in self.flags] + [f"{key}={value!r}" for key, value in self.options.items()]
        return f"{type(self).__name__}({', '.join(parts)})"


class Option(Argument):
    """An option of a command: ``Option("--admin", action="store_true")``, ``Option("-n", "--count", type=int)``."""

    __slots__ = ()

    def _check(self, flags: tuple[str, ...]) -> None:
        if not all(flag.startswith("-") for flag in flags):
            raise TypeError(f"Option{flags!r}: every name of an option starts with '-'; use Argument for positionals")


CallKind = Literal["position", "spread", "keyword"]  # how a parsed value is passed: f(v), f(*v), f(name=v)


@dataclass(frozen=True)
class Command:
    """One command of an app: the function, its help, and the arguments its parser has.

    ``call_plan`` is how the parsed values reach the function for arguments derived from its signature (each
    parameter's name and kind, in order); ``None`` for declared arguments, which are all passed by name."""

    name: str
    function: Callable[..., Any]
    help: str
    description: str
    arguments: tuple[Argument, ...]
    takes_app: bool
    call_plan: tuple[tuple[str, CallKind], ...] | None

    def parser(self) -> argparse.ArgumentParser:
        """``python -m framework NAME``'s own parser."""
        parser = _Parser(
            prog=f"{PROG} {self.name}",
            description=self.description or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        for argument in self.arguments:
            argument.add_to(parser)
        return parser

    def call(self, app: object, namespace: argparse.Namespace) -> Any:
        """Call the function with the parsed values (and the app first, if it takes it)."""
        values = vars(namespace)
        args: list[Any] = [app] if self.takes_app else []
        if self.call_plan is None:
            return self.function(*args, **values)
        kwargs: dict[str, Any] = {}
        for name, kind in self.call_plan:
            if kind == "position":
                args.append(values[name])
            elif kind == "spread":
                args.extend(values[name])
            else:
                kwargs[name] = values[name]
        return self.function(*args, **kwargs)


def command_decorator(
    app: App,
    name: str | Callable[..., Any] | None = None,
    *,
    arguments: Sequence[Argument] | None = None,
    help: str | None = None,
) -> Any:
    """The body of ``App.command``: register the decorated function as a command in ``app.commands``.

    Works bare (``@app.command``) and called (``@app.command()``, ``@app.command("init-db", arguments=[...])``).
    Returns the function unchanged, so it can still be called (and tested) as a function. Mistakes (a name
    taken, an argument argparse refuses, a function that cannot take the declared arguments) raise ``TypeError``
    or ``ValueError`` now, while the app is imported, rather than when the command is run."""
    if callable(name):
        add_command(app, name, None, arguments, help)
        return name

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        add_command(app, function, name, arguments, help)
        return function

    return decorate


def add_command(
    app: App,
    function: Callable[..., Any],
    name: str | None = None,
    arguments: Sequence[Argument] | None = None,
    help: str | None = None,
) -> Command:
    """Build the ``Command`` for ``function`` and add it to ``app.commands``."""
    name = name or getattr(function, "__name__", "").replace("_", "-").strip("-")
    if not name or name.startswith("-") or any(char.isspace() for char in name):
        raise ValueError(f"{name!r} cannot be a command name: it must be one word, not starting with '-'")
    if name in BUILTIN_COMMANDS:
        raise ValueError(f"{name!r} is a built-in command of {PROG}; give the command another name")
    existing = app.commands.get(name)
    if existing is not None and getattr(existing, "function", None) is not function:
        other = getattr(existing.function, "__qualname__", repr(existing.function))
        raise ValueError(f"command {name!r} is already registered (for {other})")
    command = build_command(function, name, arguments, help)
    app.commands[name] = command
    return command


def build_command(
    function: Callable[..., Any], name: str, arguments: Sequence[Argument] | None = None, help: str | None = None
) -> Command:
    """The ``Command`` for ``function``: its arguments declared, or derived from its signature."""
    try:
        signature: inspect.Signature | None = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins and C functions: called with no app and keywords only
        signature = None
    parameters = list(signature.parameters.values()) if signature else []
    takes_app = bool(parameters) and parameters[0].name == "app" and parameters[0].kind in _POSITIONAL
    if takes_app:
        parameters = parameters[1:]
    doc = inspect.getdoc(function) or ""
    summary = help or doc.partition("\n")[0].strip()
    plan: tuple[tuple[str, CallKind], ...] | None = None
    if arguments is None:
        plan, derived = _derive_arguments(function, name, parameters)
        arguments = derived
    command = Command(name, function, summary, doc or summary, tuple(arguments), takes_app, plan)
    try:  # Build the parser once now: argparse's objections belong to registration time.
        parser = command.parser()
    except (TypeError, ValueError, argparse.ArgumentError) as error:
        raise TypeError(f"command {name!r}: {error}") from None
    if plan is None:
        dests = [action.dest for action in parser._actions if action.dest not in ("help", argparse.SUPPRESS)]
        call = ", ".join(["app"] * takes_app + [f"{dest}=..." for dest in dests])
        check_signature(function, f"function of command {name!r} (called as function({call}))", int(takes_app), dests)
    return command


# --- arguments derived from a signature ---------------------------------------------------------------------

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _derive_arguments(
    function: Callable[..., Any], name: str, parameters: Sequence[inspect.Parameter]
) -> tuple[tuple[tuple[str, CallKind], ...], list[Argument]]:
    plan: list[tuple[str, CallKind]] = []
    arguments: list[Argument] = []
    positional_list: str | None = None
    for parameter in parameters:
        where = f"command {name!r}, parameter {parameter.name!r}"
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{where}: **{parameter.name} cannot come from a command line; declare arguments=[...]")
        annotation = _resolve_annotation(function, parameter, where)
        has_default = parameter.default is not inspect.Parameter.empty
        default = parameter.default if has_default else None
        convert, many, choices = _conversion(annotation, default, where)
        options: dict[str, Any] = {}
        if convert is not str:
            options["type"] = convert
        if choices is not None:
            options["choices"] = choices
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            many = True
        if many:
            options["nargs"] = "*"
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL or (not has_default and parameter.kind in _POSITIONAL):
            if many:
                if positional_list is not None:
                    raise TypeError(
                        f"{where}: only one positional list per command (the first, {positional_list!r}, "
                        "would take every value); give this one a default to make it an --option"
                    )
                positional_list = parameter.name
            arguments.append(Argument(parameter.name, **options))
        else:
            flag = "--" + parameter.name.replace("_", "-")
            options["dest"] = parameter.name
            if not has_default:
                options["required"] = True
            elif convert is _boolean and isinstance(default, bool):
                options = {"dest": parameter.name, "action": "store_false" if default else "store_true"}
                if default:
                    flag = "--no-" + parameter.name.replace("_", "-")
            elif convert is _boolean:
                options = {"dest": parameter.name, "action": argparse.BooleanOptionalAction, "default": default}
            else:
                options["default"] = list(default) if many and isinstance(default, list | tuple) else default
                if default is not None and default != [] and default != ():
                    options["help"] = "(default: %(default)s)"
            arguments.append(Option(flag, **options))
        # By position where the signature allows it, so that a *args after them gets its values and not theirs.
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            plan.append((parameter.name, "spread"))
        elif parameter.kind in _POSITIONAL:
            plan.append((parameter.name, "position"))
        else:
            plan.append((parameter.name, "keyword"))
    return tuple(plan), arguments


def _resolve_annotation(function: Callable[..., Any], parameter: inspect.Parameter, where: str) -> Any:
    """The parameter's annotation as an object; a string one (``from __future__ import annotations``) is
    evaluated in the function's module, as ``typing.get_type_hints`` does, but only for the parameters that
    become arguments (the ``app`` one may name a class imported for type checkers alone)."""
    annotation = parameter.annotation
    if isinstance(annotation, str):
        namespace = getattr(inspect.unwrap(function), "__globals__", {})
        try:
            annotation = eval(annotation, dict(namespace))
        except Exception as error:
            raise TypeError(f"{where}: cannot evaluate its annotation {annotation!r}: {error}") from None
    return annotation


def _boolean(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0 (``bool("no")`` would be True)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not yes or no (nor true/false, 1/0)")


_boolean.__name__ = "bool"
_CONVERTERS: Mapping[Any, Callable[[str], Any]] = {str: str, int: int, float: float, Path: Path, bool: _boolean}


def _conversion(annotation: Any, default: Any, where: str) -> tuple[Callable[[str], Any], bool, list[Any] | None]:
    """How one parameter's text becomes its value: (converter, takes a list, choices)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        if default is None:
            return str, False, None
        annotation = type(default)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return _conversion(rest[0], None if default is None else default, where)
    elif origin in (list, Sequence) or annotation in (list, tuple) or (origin is tuple and args[1:] == (...,)):
        item = args[0] if args else str
        convert, many, choices = _conversion(item, None, where)
        if not many:
            return convert, True, choices
    elif origin is Literal and args and len({type(arg) for arg in args}) == 1 and type(args[0]) in _CONVERTERS:
        return _CONVERTERS[type(args[0])], False, list(args)
    elif annotation in _CONVERTERS:
        return _CONVERTERS[annotation], False, None
    shown = getattr(annotation, "__name__", None) if origin is None else None
    raise TypeError(
        f"{where}: no command-line conversion for {shown or annotation!r}; use str, int, float, bool, Path, "
        "Literal[...], list[...], or declare arguments=[...]"
    )


# --- the built-in commands ----------------------------------------------------------------------------------


def routes_table(app: App, sort: str = "rule", all_methods: bool = False) -> str:
    """The route table: endpoint, methods, rule; HEAD is hidden where GET is there (a GET view answers it).

    Apps mounted with ``app.mount`` are in it too: a framework App's routes under its prefix (its endpoints
    marked with the prefix, since ``url_for`` names them within that app), any other WSGI app as one row."""
    rows = _route_rows(app, "", all_methods)
    column = {"endpoint": 0, "methods": 1, "rule": 2}[sort]
    rows.sort(key=lambda row: (row[column], row[2], row[0]))
    cells = [["Endpoint", "Methods", "Rule"]] + [
        [endpoint, ", ".join(methods), rule] for endpoint, methods, rule in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    cells.insert(1, ["-" * width for width in widths])
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _route_rows(app: App, prefix: str, all_methods: bool) -> list[tuple[str, list[str], str]]:
    rows: list[tuple[str, list[str], str]] = []
    for rule in app.router.rules:
        methods = set(rule.methods)
        if not all_methods and "GET" in methods:
            methods.discard("HEAD")
        endpoint = f"{rule.endpoint} (app at {prefix})" if prefix else rule.endpoint
        rows.append((endpoint, sorted(methods), prefix + rule.pattern))
    for mount_prefix, mounted in app._mounts:
        if isinstance(mounted, App):
            rows += _route_rows(mounted, prefix + mount_prefix, all_methods)
        else:
            rows.append((f"(mounted {_type_name(mounted)})", ["*"], f"{prefix}{mount_prefix}/..."))
    return rows


def passes_bind(extra: Sequence[str]) -> bool:
    """Whether the options passed on to the server say where to listen: ``--bind X``, ``--bind=X``, ``-b X``,
    ``-bX``, or an abbreviation the server's parser takes (``--bi``, ``--bin``; ``--b`` is ambiguous there).
    Nothing after ``--`` is an option."""
    for token in extra:
        if token == "--":
            return False
        if token.startswith("-b"):
            return True
        name = token.partition("=")[0]
        if len(name) >= 4 and "--bind".startswith(name):
            return True
    return False


def bind_configured(extra: Sequence[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether the server will be told where to listen by its environment (``SERVER_BIND``) or by a ``--config``
    file (named in ``extra`` or by ``SERVER_CONFIG``) that has a ``bind``: a flag from ``run`` would override
    either, since the server's flags win over both. A file that cannot be read counts as none: the server says
    what is wrong with it."""
    environ = os.environ if environ is None else environ
    if environ.get("SERVER_BIND"):
        return True
    from server.__main__ import build_parser, read_config_file

    # The server's own parser finds --config however it is spelt (-c FILE, -cFILE, --co=FILE...); options it
    # refuses are for the server to report, so its one-line error is not printed twice.
    parser = build_parser()
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            known, _ = parser.parse_known_args(list(extra))
        except SystemExit:
            known = None
    path = getattr(known, "config", None) or environ.get("SERVER_CONFIG")
    if not path:
        return False
    try:
        return bool(read_config_file(parser, path).get("bind"))
    except ValueError:
        return False


def server_argv(
    spec: str, host: str, port: int, *, reload: bool, debug: bool, extra: Sequence[str] = (), explicit: bool = False
) -> list[str]:
    """The ``python -m server`` command line that ``run`` becomes: ``--bind HOST:PORT`` from ``host`` and
    ``port``, unless ``extra`` has a ``--bind`` of its own, or the server's environment or config file says where
    to listen (``bind_configured``), which then says where to listen instead (the server's ``--bind`` is
    repeatable: added anyway, the default would be a second listener nobody asked for). ``explicit``: the host or
    port was given to ``run``, and wins over the environment and the file as the server's own flags do."""
    argv = [sys.executable, "-m", "server", spec]
    if explicit or (not passes_bind(extra) and not bind_configured(extra)):
        argv += ["--bind", f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"]
    if reload:
        argv.append("--reload")
    if debug:
        argv.append("--debug")
    return [*argv, *extra]


def server_knows(option: str) -> bool:
    """Whether ``python -m server`` has ``option`` (``--reload`` is newer than this command)."""
    from server.__main__ import build_parser

    return any(option in action.option_strings for action in build_parser()._actions)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0: any free port)")
    return int(text)


def _routes_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{PROG} routes", description=_ROUTES_HELP, allow_abbrev=False)
    parser.add_argument("--sort", choices=("endpoint", "methods", "rule"), default="rule", help="(default: rule)")
    parser.add_argument("--all-methods", action="store_true", help="show HEAD too, where GET is there")
    return parser


def _run_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} run",
        description=_RUN_HELP + ": python -m server SPEC --bind HOST:PORT --reload --debug, for development.",
        epilog="Other options of python -m server (--workers, --threads, --static URL=DIR, ...) are passed on to it; "
        "see python -m server --help. A --bind passed on (repeatable; unix:PATH too) listens instead of --host and "
        "--port.",
        allow_abbrev=False,
    )
    # Defaults of None, filled in by run(): a --host or --port given beside a --bind is then told apart.
    parser.add_argument("--host", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="the port (default: 5000; 0: any free port)")
    parser.add_argument("--no-reload", dest="reload", action="store_false", help="do not restart on code changes")
    parser.add_argument("--no-debug", dest="debug", action="store_false", help="no tracebacks on error pages")
    return parser


_ROUTES_HELP = "list the app's routes: endpoint, methods, rule"
_RUN_HELP = "serve the app with python -m server, reloading and in debug mode"


def run(spec: str | None, args: Sequence[str]) -> int:
    """``run``: become ``python -m server`` on the app (it never returns on POSIX)."""
    options, extra = _run_parser().parse_known_args(args)
    spec = _require_spec(spec, "run")
    if spec.startswith("-"):  # it would be read as an option of the server; the loader's words for it
        raise UsageError(f"{spec!r} is not of the form module:attribute (for example myproject.wsgi:app)")
    if passes_bind(extra) and (options.host is not None or options.port is not None):
        raise UsageError(
            f"{PROG} run: error: --host/--port and --bind both say where to listen; give --host and --port, "
            "or --bind (repeatable)"
        )
    host = "127.0.0.1" if options.host is None else options.host
    port = 5000 if options.port is None else options.port
    reload = options.reload
    if reload and not server_knows("--reload"):
        sys.stderr.write(f"{PROG} run: warning: this server has no --reload yet; serving without reloading\n")
        reload = False
    explicit = options.host is not None or options.port is not None
    argv = server_argv(spec, host, port, reload=reload, debug=options.debug, extra=extra, explicit=explicit)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "posix":  # no exec that keeps the process: run it and wait
        import subprocess

        return subprocess.call(argv)
    os.execv(argv[0], argv)


# --- main ---------------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A mistake in how the command line was used: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a ``UsageError`` (one line, exit status 2), not usage text and a message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def _global_parser() -> argparse.ArgumentParser:
    """Only what comes before the command: the command's own arguments are left for its parser."""
    parser = _Parser(prog=PROG, add_help=False, allow_abbrev=False)
    parser.add_argument("--app")
    parser.add_argument("--traceback", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("command", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def help_text(spec: str | None = None, app: object | None = None) -> str:
    """``python -m framework --help``: the global options, the built-in commands and those of ``app``."""
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [-h] [--app MODULE:APP] [--traceback] COMMAND [ARGS ...]",
        description="The framework's command line: a built-in command, or one the app registered with @app.command().",
    )
    parser.add_argument("--app", metavar="MODULE:APP", help=f"the app to work on (default: ${APP_VARIABLE})")
    parser.add_argument(
        "--traceback", action="store_true", help=f"print the traceback when a command fails (or {DEBUG_VARIABLE}=1)"
    )
    builtin = {"routes": _ROUTES_HELP, "run": _RUN_HELP}
    own = {command.name: command.help or "" for command in _commands_of(app).values()}
    width = max(len(name) for name in [*builtin, *own]) + 2
    sections = [parser.format_help().rstrip(), "", "built-in commands:", *_rows(builtin, width)]
    if not spec:
        notes = [f"An app's own commands are listed when --app or ${APP_VARIABLE} names it."]
    elif not isinstance(app, App):
        notes = [f"{spec} is {_describe(app)}, not a framework App: it has no commands of its own."]
    else:
        sections += ["", f"commands of {spec}:", *(_rows(own, width) if own else ["  (none)"])]
        notes = []
    notes.append(
        f"The app is named as module:app, module:create_app() or module (the current directory is "
        f"importable). {PROG} COMMAND --help shows a command's arguments."
    )
    return "\n".join([*sections, "", *(textwrap.fill(note, 79) for note in notes)]) + "\n"


def _rows(helps: Mapping[str, str], width: int) -> list[str]:
    return [f"  {name.ljust(width)}{text}".rstrip() for name, text in helps.items()]


def _commands_of(app: object | None) -> dict[str, Command]:
    return app.commands if isinstance(app, App) else {}


def _require_spec(spec: str | None, command: str) -> str:
    if not spec:
        raise UsageError(f"{PROG}: error: {command} needs an app: pass --app MODULE:APP or set {APP_VARIABLE}")
    return spec


def _load(spec: str) -> object:
    from server.loader import LoadError, load_app

    try:
        return load_app(spec)
    except LoadError as error:
        raise UsageError(f"{PROG}: error: {error}") from None


def _type_name(value: object) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _describe(value: object) -> str:
    name = _type_name(value)
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _unknown_command(name: str | None, spec: str | None, app: object | None) -> UsageError:
    names = ", ".join([*BUILTIN_COMMANDS, *_commands_of(app)])
    said = f"no command {name!r}" if name is not None else "no command given"
    if not spec:
        note = f" (an app's own commands need --app MODULE:APP or {APP_VARIABLE})"
    elif not isinstance(app, App):
        note = f" ({spec} is {_describe(app)}, not a framework App, so it has no commands of its own)"
    else:
        note = ""
    return UsageError(f"{PROG}: error: {said}; commands: {names}{note}")


def _run_command(command: Command, app: object, args: Sequence[str], show_traceback: bool) -> int:
    namespace = command.parser().parse_args(args)
    try:
        result = command.call(app, namespace)
    except Exception as error:
        if show_traceback:
            frames = error.__traceback__
            while frames is not None and frames.tb_frame.f_code.co_filename == __file__:
                frames = frames.tb_next  # the command's frames only, not this module's
            traceback.print_exception(type(error), error, frames)
        else:
            detail = " ".join(str(error).split())
            what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
            sys.stderr.write(f"error: {command.name} failed: {what} (--traceback shows where)\n")
        return 1
    if result is None:
        return 0
    if isinstance(result, int):  # bool included, as sys.exit takes it
        return int(result)
    print(result)
    return 0


def _main(argv: Sequence[str]) -> int:
    options = _global_parser().parse_args(argv)
    spec: str | None = options.app or os.environ.get(APP_VARIABLE) or None
    show_traceback = options.traceback or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in _TRUE
    name: str | None = options.command
    if options.help:
        print(help_text(spec, _load(spec) if spec else None), end="")
        return 0
    if name == "run":
        return run(spec, options.args)
    if name == "routes":
        routes = _routes_parser().parse_args(options.args)
        app = _load(_require_spec(spec, "routes"))
        if not isinstance(app, App):
            raise UsageError(
                f"{PROG}: error: routes lists a framework App's routes; {spec} is {_describe(app)}, not a framework App"
            )
        listed = app.router.rules or app._mounts
        print(routes_table(app, routes.sort, routes.all_methods) if listed else "No routes were registered.")
        return 0
    app = _load(spec) if spec else None
    command = _commands_of(app).get(name) if name is not None else None
    if command is None:
        raise _unknown_command(name, spec, app)
    return _run_command(command, app, options.args, show_traceback)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m framework``: returns the exit status."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        sys.stderr.write(" ".join(str(error).split()) + "\n")
        return 2
    except KeyboardInterrupt:
        return 130  # the person pressed Ctrl-C and knows why: no traceback, the status a shell gives it
