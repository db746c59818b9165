"""The command line: ``python -m server [module:app] [options]``.

Every option can also come from the environment as ``SERVER_<NAME>`` (``SERVER_WORKERS=4``,
``SERVER_BIND=0.0.0.0:8080``; repeatable options take a comma-separated list); a flag on the command line wins.
Whatever is wrong with an invocation (an app that cannot be imported, a port in use, a malformed option) ends
with one line on stderr and exit status 2, before anything is served. Under ``--reload`` (``server.reload``), an
app that cannot be imported is reported and loaded again after the next change to a file instead. Started by
systemd with sockets (socket activation), it serves on those instead of ``--bind``
(``server.listeners.systemd_listeners``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from server import SERVER_SOFTWARE
from server.accesslog import access_handler
from server.config import Config
from server.listeners import BindError, Listener, open_listeners, parse_bind, resolve_schemes, systemd_listeners
from server.loader import LoadError, load_app
from server.loop import loop_name
from server.oserrors import describe
from server.proxy import HEADER_FAMILIES, TrustedProxies
from server.reload import ChildSettings, Reloader, Reporter, child_settings, describe_load_error, failure_app
from server.reload import inherit_listeners as inherit_reload_listeners
from server.tls import CertificateStore, TLSFiles, build_context, validity_warning
from server.workers import RETIRE_SIGNAL, Supervisor, pin_to_cpu

log = logging.getLogger("server")
DEMO_APP = "apps.demo:app"


def _fail(message: str) -> int:
    """Write the one line every failed invocation ends with, and give the exit status that goes with it."""
    # Messages built from exceptions may span lines (an OSError's path, an app's own error text).
    sys.stderr.write(f"python -m server: error: {' '.join(message.split())}\n")
    return 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.exit(_fail(message))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append "(default: X)" to an option's help only where it says something.

    The stock formatter appends it to every option, so a help text that states its own default got a second
    one, and options whose default means "not set" read "(default: None)", "(default: False)" or
    "(default: )". Those say nothing the help text does not; a help text that names its default keeps it.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or "%(default)" in text or not action.option_strings:
            return text
        if action.default in (None, False, "", [], argparse.SUPPRESS):
            return text
        if action.metavar == "SIZE" and isinstance(action.default, int):
            return f"{text} (default: {_human_size(action.default)})"  # 16M, not 16777216
        return f"{text} (default: %(default)s)"


def _human_size(value: int) -> str:
    """A byte count in the largest of _size's units that divides it exactly, so that _size reads it back."""
    for suffix, scale in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= scale and value % scale == 0:
            return f"{value // scale}{suffix}"
    return str(value)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be {'at least 1' if minimum == 1 else '0 or more'}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


# What a --config file may write for an option, by the option's converter: (TOML types accepted, what to say is
# expected). TOML has types where the command line and the environment have only text, so they are held to them:
# workers = "4" is a mistake to point out, not a number to guess. An option with a converter not listed here (a
# future one) takes a string or a number and leaves the checking to its converter.
_TOML_WHOLE = ((int,), "a whole number, as in {key} = 4")
_FILE_TYPES: dict[object, tuple[tuple[type, ...], str]] = {}


# Processes and threads are created up front, all of them: a number past these is a typo (an extra digit or
# three), and taken literally it would fork or spawn until the machine gave out, long after "serving" was said.
MAX_WORKERS = 1024
MAX_THREADS = 4096


def _count_up_to(maximum: int, minimum: int = 1) -> Callable[[str], int]:
    def count(text: str) -> int:
        value = _whole_number(text, minimum)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is more than {maximum}")
        return value

    _FILE_TYPES[count] = _TOML_WHOLE
    return count


# Built once: each converter is also a key of _FILE_TYPES, which must not grow with every build_parser().
_worker_count = _count_up_to(MAX_WORKERS)
_thread_count = _count_up_to(MAX_THREADS, minimum=0)  # 0: the application runs on the event loop (see ThreadPool)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _parse_seconds(text: str, zero_allowed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    # "inf" and "nan" parse as floats, but no timer can wait for them: a deadline of inf never fires and
    # nan compares false with everything.
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if zero_allowed and value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (never) or more seconds")
    if not zero_allowed and not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _seconds(text: str) -> float:
    """A timeout that must run out: more than 0 seconds."""
    return _parse_seconds(text, zero_allowed=False)


def _seconds_or_never(text: str) -> float:
    """A timeout where 0 means never (``--timeout``)."""
    return _parse_seconds(text, zero_allowed=True)


def _parse_size(text: str, minimum: int) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(float(number) * scale)
    except (ValueError, OverflowError):  # OverflowError: "inf", "1e400"
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 65536, 64K, 10M)") from None
    if value < minimum:
        unit = "byte" if minimum == 1 else "bytes"
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum} {unit}")
    return value


def _size(text: str) -> int:
    """A limit in bytes: at least 1."""
    return _parse_size(text, minimum=1)


def _rate(text: str) -> int:
    """Bytes per second, where 0 turns the check off (``--min-body-rate``)."""
    return _parse_size(text, minimum=0)


_FILE_TYPES.update(
    {
        _positive_int: _TOML_WHOLE,
        _non_negative_int: _TOML_WHOLE,
        _seconds: ((int, float), "a number of seconds, as in {key} = 5 or {key} = 2.5"),
        _seconds_or_never: ((int, float), "a number of seconds (0: never), as in {key} = 30"),
        _size: ((int, str), 'a size: a number of bytes, or a string such as "16M"'),
        _rate: ((int, str), 'a number of bytes per second, or a string such as "1K"'),
        None: ((str,), "a string"),
    }
)


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = _Parser(
        prog="python -m server",
        description="Serve a WSGI application over HTTP/1.1 (with no app: the demo site).",
        epilog="Every option can also be set as an environment variable SERVER_<NAME>, e.g. SERVER_WORKERS=4, or "
        "in a TOML file given to --config, e.g. workers = 4. A flag wins over the environment, which wins over "
        "the file.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "app",
        nargs="?",
        help="the WSGI application as module:attribute or module:factory() (default: demo site)",
    )
    add = parser.add_argument
    # fmt: off
    add("--config", "-c", metavar="FILE",
        help="read settings from this TOML file: the options' names without the dashes in front (workers = 4, "
             'bind = ["0.0.0.0:80"], app = "module:app"); flags and SERVER_* variables win over it')
    add("--bind", "-b", action="append", metavar="ADDR",
        help="HOST:PORT, [IPV6]:PORT or unix:PATH to listen on; repeatable; https://HOST:PORT or http://HOST:PORT "
             "says which protocol (without: HTTPS when --certfile is given); not used when systemd passes the "
             "sockets (socket activation) (default: 127.0.0.1:8000)")
    add("--workers", "-w", type=_worker_count, default=defaults.workers,
        help="processes sharing the listening sockets (use one per core)")
    add("--threads", "-t", type=_thread_count, default=defaults.threads,
        help="application threads per process; 0 runs the application on the event loop itself, the fastest "
             "choice for an application that never waits (no database, no network, no sleep: see docs/concurrency.md)")
    add("--loop", choices=("auto", "epoll", "poll", "select"), default=defaults.loop,
        help="the readiness API the event loop uses")
    add("--cpu-affinity", choices=("off", "auto"), default=defaults.cpu_affinity,
        help="auto: keep each process's threads on one CPU, worker N on the Nth (about 3x the requests of a "
             "small app, whose threads hand the GIL across cores otherwise; but the app's threads that release "
             "the GIL and its subprocesses get that one CPU too); off (the default): the scheduler's choice")
    add("--max-requests", type=_non_negative_int, default=defaults.max_requests, metavar="N",
        help="replace a worker process after it has served N requests, a new one first (for apps that leak; "
             "0: never)")
    add("--max-requests-jitter", type=_non_negative_int, default=defaults.max_requests_jitter, metavar="N",
        help="add a random 0..N to each worker's --max-requests, so workers do not all restart at once")
    add("--keepalive-timeout", type=_seconds, default=defaults.keepalive_timeout, metavar="SECONDS",
        help="close a keep-alive connection idle this long")
    add("--header-timeout", type=_seconds, default=defaults.header_timeout, metavar="SECONDS",
        help="total time allowed to receive a request head (408 after)")
    add("--body-timeout", type=_seconds, default=defaults.body_timeout, metavar="SECONDS",
        help="time allowed between pieces of a request body (408 after)")
    add("--send-timeout", type=_seconds, default=defaults.send_timeout, metavar="SECONDS",
        help="close a connection whose client stops reading for this long (with --threads 0, also the most a "
        "write() response may wait on the loop for its reader, in all)")
    add("--graceful-timeout", type=_seconds, default=defaults.graceful_timeout, metavar="SECONDS",
        help="on SIGTERM, how long in-flight requests may take to finish")
    add("--timeout", type=_seconds_or_never, default=defaults.timeout, metavar="SECONDS",
        help="report an app request running longer than this, with its stack; under --workers, replace a worker "
             "whose every thread is past it (0: never)")
    add("--min-body-rate", type=_rate, default=defaults.min_body_rate, metavar="BYTES_PER_SECOND",
        help="slowest rate a request body may arrive at, owed in every --body-timeout window "
             "(408 below it; 0: no minimum)")
    add("--max-header-bytes", type=_size, default=defaults.max_header_bytes, metavar="SIZE",
        help="largest request head (431 beyond)")
    add("--max-body-bytes", type=_size, default=defaults.max_body_bytes, metavar="SIZE",
        help="largest request body (413 beyond)")
    add("--max-connections", type=_positive_int, default=defaults.max_connections, metavar="N",
        help="open connections per process (503 beyond)")
    add("--max-buffered-bytes", type=_size, default=defaults.max_buffered_bytes, metavar="SIZE",
        help="what all request data held by one process (bodies, in memory and spooled, and unfinished heads "
        "beyond 16 KiB) may add up to (503 beyond); one client may hold an eighth of it, or one largest body")
    add("--access-log", default=defaults.access_log, metavar="-|FILE|off",
        help="where the access log (combined format + response time) goes")
    add("--log-level", choices=("debug", "info", "warning", "error"), default=defaults.log_level,
        help="the error log's level")
    add("--debug", action="store_true",
        help="show tracebacks in 500 responses, and set the app's config['DEBUG'] to True if it has a config "
             "mapping, as framework and Flask apps do (never in production)")
    add("--reload", action="store_true",
        help="development: restart the server when a Python file it imported or a template changes; an app that "
             "fails to load is reported and tried again after the next change (implies --workers 1)")
    add("--forwarded-allow-ips", default="", metavar="LIST",
        help="comma-separated proxies whose forwarding headers are believed: IPs, CIDR networks, or 'unix'. Give "
             "the proxy's own address: '*' believes every address in the chain, so a client behind the proxy "
             "chooses its own REMOTE_ADDR and scheme; use it only where nothing but the proxy reaches the server")
    add("--proxy-headers", choices=HEADER_FAMILIES, default=defaults.proxy_headers,
        help="which headers those proxies write: X-Forwarded-For/-Proto, or RFC 7239 Forwarded (the other "
             "family is ignored)")
    add("--certfile", metavar="FILE",
        help="serve HTTPS with this PEM certificate chain (the server's certificate first, as Let's Encrypt's "
             "fullchain.pem); every --bind without a scheme becomes HTTPS")
    add("--keyfile", metavar="FILE", help="the certificate's PEM private key (default: in --certfile)")
    add("--keyfile-password-file", metavar="FILE", help="a file whose first line is the password of --keyfile")
    add("--ca-certs", metavar="FILE", help="PEM CA certificates that client certificates must chain to")
    add("--client-cert", choices=("none", "optional", "required"), default=defaults.client_cert,
        help="ask clients for a certificate checked against --ca-certs; the app sees its subject as "
             "SSL_CLIENT_S_DN and SSL_CLIENT_VERIFY=SUCCESS")
    add("--tls-handshake-timeout", type=_seconds, default=defaults.tls_handshake_timeout, metavar="SECONDS",
        help="close a connection that has not finished its TLS handshake in this time")
    add("--cert-check-interval", type=_seconds_or_never, default=defaults.cert_check_interval, metavar="SECONDS",
        help="how often to look for renewed certificate files, loaded without dropping connections (0: only on "
             "SIGHUP)")
    add("--redirect-to-https", action="store_true",
        help="answer every request on the plain http:// listeners with 308 to the same URL on the HTTPS one")
    add("--static", action="append", metavar="URL=DIR",
        help="serve DIR's files at URL, from the event loop with sendfile; repeatable")
    add("--static-max-age", type=_non_negative_int, default=defaults.static_max_age, metavar="SECONDS",
        help="send Cache-Control: public, max-age=SECONDS with static files (default: no Cache-Control)")
    add("--static-listing", action="store_true", help="list directories that have no index.html")
    add("--static-dotfiles", action="store_true", help="serve files and directories whose names start with a dot")
    add("--follow-symlinks", action="store_true",
        help="follow symlinks that point outside a static directory (a link to a dotfile is still refused: see "
             "--static-dotfiles)")
    add("--data-dir", default=None, metavar="DIR",
        help="where the demo site keeps its data, exported to the app as SERVER_DATA_DIR (default: ./var)")
    add("--version", action="version", version=SERVER_SOFTWARE)
    # fmt: on
    return parser


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_COMMA_LISTS = {"forwarded_allow_ips"}  # one flag with a comma-separated list; a list in a config file


def _settings(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions that are settings (not --help or --version): what SERVER_* and a config file can set."""
    return [action for action in parser._actions if action.dest not in ("help", "version")]


def _is_flag(action: argparse.Action) -> bool:
    return action.option_strings != [] and action.nargs == 0  # store_true: --debug, --reload, ...


def _is_repeatable(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)  # --bind, --static


def _environment_values(
    parser: argparse.ArgumentParser, environ: dict[str, str]
) -> tuple[dict[str, object], dict[str, str]]:
    """The settings SERVER_<NAME> variables give, checked and converted, by destination; and the variables set
    but empty for the app and the repeatable options, by destination (see parse_config)."""
    values: dict[str, object] = {}
    empty: dict[str, str] = {}
    for action in _settings(parser):
        name = f"SERVER_{action.dest.upper()}"
        value = environ.get(name)
        if value is None:
            continue
        if (not action.option_strings or _is_repeatable(action)) and not value.replace(",", "").strip():
            empty[action.dest] = name
            continue
        if not action.option_strings:  # SERVER_APP, for the positional app
            values[action.dest] = value
        elif _is_flag(action):
            # A typo such as SERVER_DEBUG=ture must not quietly mean "off".
            word = value.strip().lower()
            if word not in _TRUE + _FALSE:
                parser.error(f"{name}: {value!r} is not one of {', '.join(_TRUE)} or {', '.join(_FALSE[:-1])}")
            values[action.dest] = word in _TRUE
        elif _is_repeatable(action):
            values[action.dest] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            try:
                converted = action.type(value) if callable(action.type) else value
            except (argparse.ArgumentTypeError, ValueError) as error:
                parser.error(f"{name}: {error}")
            if action.choices and converted not in action.choices:
                parser.error(f"{name}: {value!r} is not one of {', '.join(action.choices)}")
            values[action.dest] = converted
    return values, empty


def read_config_file(parser: argparse.ArgumentParser, path: str) -> dict[str, object]:
    """The settings a ``--config`` TOML file gives, checked and converted, by destination; ValueError if wrong.

    A key is an option's long name without its dashes (``max-body-bytes``; ``max_body_bytes`` too, since TOML
    users expect underscores as often as dashes), or ``app``. The keys come from the parser itself, so an option
    added later (TLS certificates, say) is a key of the file with no change here. Relative paths in values mean
    what they mean on the command line: relative to the directory the server starts in, not to the file."""
    where = f"--config {path}"
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ValueError(f"{where}: cannot read it: {describe(error)}") from None
    except ValueError as error:  # TOMLDecodeError, or bytes that are not UTF-8
        raise ValueError(f"{where}: not valid TOML: {error}") from None
    keys: dict[str, argparse.Action] = {}
    for setting in _settings(parser):
        long = next((option[2:] for option in setting.option_strings if option.startswith("--")), setting.dest)
        keys[long] = setting
    values: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name == "config":
            raise ValueError(f"{where}: {key}: a config file cannot name another one")
        action = keys.get(name)
        if action is None:
            near = difflib.get_close_matches(name, list(keys), n=1)
            hint = f" (did you mean {near[0]}?)" if near else " (the settings are the options of --help, no dashes)"
            raise ValueError(f"{where}: unknown setting {key!r}{hint}")
        if action.dest in spelled:
            raise ValueError(f"{where}: {spelled[action.dest]} and {key} are the same setting; give it once")
        spelled[action.dest] = key
        values[action.dest] = _file_value(action, f"{where}: {key}", key, value)
        check = _VALUE_CHECKS.get(action.dest)
        if check is not None:
            # Checked now, not when the server opens its sockets: then the error could not name the file.
            try:
                check(values[action.dest])
            except (BindError, ValueError) as error:
                # "--bind 'x': expected HOST:PORT": the flag's name would only confuse in a file's key.
                reason = str(error).removeprefix(f"--{name}").lstrip(": ")
                raise ValueError(f"{where}: {key}: {reason}") from None
    return values


def _file_value(action: argparse.Action, where: str, key: str, value: object) -> object:
    """One value of a config file, held to its option's type and checked by the option's own converter."""

    def expected(what: str) -> ValueError:
        return ValueError(f"{where}: expected {what}, not {_describe_toml(value)}")

    if _is_flag(action):
        if not isinstance(value, bool):
            raise expected("true or false")
        return value
    if isinstance(value, str) and "\x00" in value:  # no path, address or name can hold one; os.environ refuses it
        raise ValueError(f"{where}: contains a NUL character")
    if _is_repeatable(action) or action.dest in _COMMA_LISTS:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise expected(f'a list of strings, as in {key} = ["..."]')
        if any("\x00" in item for item in items):
            raise ValueError(f"{where}: contains a NUL character")
        if _is_repeatable(action) and (not items or not all(item.strip() for item in items)):
            # An empty list or string would mean "not set", and the defaults would quietly take its place.
            raise ValueError(f"{where}: empty; leave the key out to use the default")
        return items if _is_repeatable(action) else ",".join(items)
    if not action.option_strings and isinstance(value, str) and not value.strip():  # app = ""
        raise ValueError(f"{where}: empty; leave the key out to serve the demo site")
    accepted, what = _FILE_TYPES.get(action.type, ((str, int, float), "a string or a number"))
    what = what.format(key=key)
    if action.choices:
        what = "one of " + ", ".join(json.dumps(choice) for choice in action.choices)
    if isinstance(value, bool) or not isinstance(value, accepted):  # bool is an int to Python, never to TOML
        raise expected(what)
    text = value if isinstance(value, str) else str(value)
    try:
        converted = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None
    if action.choices and converted not in action.choices:
        raise expected(what)
    return converted


# Values that are checked after parsing when they come from flags (as the sockets are opened, or by
# check_settings), checked in the file itself when they come from one; each check raises BindError or ValueError.
_VALUE_CHECKS: dict[str, Callable[[Any], object]] = {
    "bind": lambda binds: [parse_bind(bind) for bind in binds],
    "static": lambda specs: _check_static(specs),
    "forwarded_allow_ips": lambda text: TrustedProxies(a.strip() for a in text.split(",") if a.strip()),
}


def _describe_toml(value: object) -> str:
    """``a string ("4")``: a value as TOML would call it and write it."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "an array"))
    kind = next((name for cls, name in kinds if isinstance(value, cls)), "a table" if isinstance(value, dict) else "")
    try:
        shown = json.dumps(value)
    except TypeError:  # dates and times
        shown = str(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{kind} ({shown})" if kind else shown


def parse_config(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Turn the command line, SERVER_* variables and a ``--config`` file into a Config.

    Precedence, as most servers and twelve-factor deployments have it: a flag wins over the environment, which
    wins over the file, which wins over the defaults. So a file holds a site's settings, a unit file or a
    container may override some with variables, and a person at a terminal overrides anything for one run.
    The command line is parsed first without the file (to find ``--config``, which can also be SERVER_CONFIG),
    then again with the file's and the environment's values as defaults, so that flags win over both.
    """
    parser = build_parser()
    from_env, empty = _environment_values(parser, dict(os.environ if environ is None else environ))
    if empty:
        # Set but empty (a template's ${APP:-}): taken as "not set", it would quietly fall back past the config
        # file to the defaults (the demo site, 127.0.0.1:8000), which is never what setting it meant. Unless the
        # command line sets the option itself, as it wins over the environment anyway.
        given = build_parser().parse_args(argv)
        for dest, name in empty.items():
            if not getattr(given, dest):
                parser.error(f"{name} is empty; unset it to use the default")
    repeatable = {action.dest for action in _settings(parser) if _is_repeatable(action)}

    def use_as_defaults(values: dict[str, object]) -> None:
        # Not for repeatable options: argparse appends a flag's values to a list default instead of replacing it,
        # so --bind on the command line would add to the file's binds. Those are resolved after parsing.
        parser.set_defaults(**{dest: value for dest, value in values.items() if dest not in repeatable})

    use_as_defaults(from_env)
    args = parser.parse_args(argv)
    from_file: dict[str, object] = {}
    if args.config:
        try:
            from_file = read_config_file(parser, args.config)
        except ValueError as error:
            parser.error(str(error))
        use_as_defaults({**from_file, **from_env})
        args = parser.parse_args(argv)
    for dest in repeatable:
        if getattr(args, dest) is None:
            setattr(args, dest, from_env.get(dest, from_file.get(dest)))
    if args.app is not None and not args.app.strip():  # python -m server "": SERVER_APP and the file say so above
        parser.error("the app is empty; name one as module:attribute, or none for the demo site")
    if args.data_dir:
        # Made and checked here: the demo site would fail to make or write it, and say so as an import failure.
        if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
            parser.error(f"--data-dir {args.data_dir}: not a directory")
        try:
            os.makedirs(args.data_dir, exist_ok=True)
        except OSError as error:
            parser.error(f"--data-dir {args.data_dir}: cannot create it: {error.strerror or error}")
        if not os.access(args.data_dir, os.W_OK | os.X_OK):
            parser.error(f"--data-dir {args.data_dir}: this user cannot write there")
        # Applications read their own settings; this flag only hands the demo site its data directory.
        os.environ["SERVER_DATA_DIR"] = args.data_dir
    return Config(
        app=args.app,
        binds=tuple(args.bind or ("127.0.0.1:8000",)),
        workers=args.workers,
        threads=args.threads,
        loop=args.loop,
        cpu_affinity=args.cpu_affinity,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        keepalive_timeout=args.keepalive_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        send_timeout=args.send_timeout,
        graceful_timeout=args.graceful_timeout,
        timeout=args.timeout,
        min_body_rate=args.min_body_rate,
        max_header_bytes=args.max_header_bytes,
        max_body_bytes=args.max_body_bytes,
        max_connections=args.max_connections,
        max_buffered_bytes=args.max_buffered_bytes,
        access_log=args.access_log,
        log_level=args.log_level,
        debug=args.debug,
        reload=args.reload,
        forwarded_allow_ips=tuple(a.strip() for a in args.forwarded_allow_ips.split(",") if a.strip()),
        proxy_headers=args.proxy_headers,
        certfile=args.certfile,
        keyfile=args.keyfile,
        keyfile_password_file=args.keyfile_password_file,
        ca_certs=args.ca_certs,
        client_cert=args.client_cert,
        tls_handshake_timeout=args.tls_handshake_timeout,
        cert_check_interval=args.cert_check_interval,
        redirect_to_https=args.redirect_to_https,
        static=tuple(args.static or ()),
        static_max_age=args.static_max_age,
        static_listing=args.static_listing,
        static_dotfiles=args.static_dotfiles,
        follow_symlinks=args.follow_symlinks,
    )


def configure_logging(config: Config) -> None:
    """The error log to stderr at ``--log-level``; the access log to stdout, a file, or nowhere.

    The access log file is opened here, in the parent before any worker is forked (they inherit it), so a
    path that cannot be written raises ValueError now instead of failing later. Each process reopens it when
    it is rotated away (``server.accesslog.access_handler``)."""
    logging.basicConfig(
        level=config.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
        stream=sys.stderr,
    )
    access = logging.getLogger("server.access")
    access.propagate = False
    access.handlers.clear()
    if config.access_log == "off":
        access.setLevel(logging.CRITICAL + 1)
        return
    try:
        handler = access_handler(config.access_log)
    except OSError as error:  # no such directory, a directory, no permission, read-only file system
        reason = error.strerror or str(error)
        raise ValueError(f"--access-log {config.access_log}: cannot open it for appending: {reason}") from None
    access.addHandler(handler)
    access.setLevel(logging.INFO)


def _not_found_app(environ: dict, start_response: Callable) -> list[bytes]:
    """The application behind static mounts when no app was named: everything else is 404."""
    body = b"404 Not Found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "14")])
    return [body]


def _check_static(specs: Sequence[str]) -> None:
    """Each ``--static URL=DIR`` well formed, naming a directory this process can list and look into.

    The engine parses the mounts again when it starts; checking here makes a bad one an error at the
    command line instead of a 403 or 500 on every request for it."""
    from server.static import StaticOptions, parse_mount

    for spec in specs:
        directory = parse_mount(spec, StaticOptions()).root
        try:
            with os.scandir(directory) as entries:  # needs read permission
                next(entries, None)
            os.stat(os.path.join(directory, "."))  # needs search (x) permission, like every file in it
        except OSError as error:
            raise ValueError(f"--static {spec}: cannot read {directory}: {error.strerror or error}") from None


def check_settings(config: Config) -> None:
    """The checks that need no app: raises ValueError (or BindError) for a setting that cannot work."""
    loop_name(config.loop)
    TrustedProxies(config.forwarded_allow_ips, config.proxy_headers)
    _check_static(config.static)
    if not config.certfile:
        for name in ("keyfile", "keyfile_password_file", "ca_certs"):
            if getattr(config, name):
                raise ValueError(f"--{name.replace('_', '-')} is for HTTPS: give --certfile too")
        if config.client_cert != "none":
            raise ValueError(f"--client-cert {config.client_cert} is for HTTPS: give --certfile and --ca-certs too")


def tls_files(config: Config) -> TLSFiles | None:
    """The certificate settings of ``config``, or None when it serves plain HTTP only."""
    if not config.certfile:
        return None
    return TLSFiles(
        certfile=config.certfile,
        keyfile=config.keyfile,
        password_file=config.keyfile_password_file,
        ca_certs=config.ca_certs,
        client_cert=config.client_cert,
    )


def load_certificates(config: Config) -> CertificateStore | None:
    """The certificates, loaded and checked now, so that a bad one is one line and exit 2 before serving.

    An expired (or not yet valid) certificate is a warning, not an error: the site is better served with it, and
    the renewal that fixes it is then picked up without a restart. Raises TLSConfigError (a ValueError)."""
    files = tls_files(config)
    if files is None:
        return None
    store = CertificateStore(files)
    warning = validity_warning(files.certfile)
    if warning:
        log.warning("%s", warning)
    return store


def assign_schemes(config: Config, listeners: list[Listener]) -> None:
    """Which listeners speak HTTPS (``resolve_schemes``), and whether --redirect-to-https has somewhere to go."""
    resolve_schemes(listeners, bool(config.certfile))
    if config.redirect_to_https:
        tcp_tls = [li for li in listeners if li.tls and li.address.family != socket.AF_UNIX]
        if not tcp_tls or all(li.tls for li in listeners):
            raise ValueError(
                "--redirect-to-https needs an HTTPS listener to send to and a plain one to answer on, as in "
                "--bind https://0.0.0.0:443 --bind http://0.0.0.0:80"
            )


def enable_app_debug(app: object) -> None:
    """``--debug`` for the app too: ``app.config["DEBUG"] = True`` when ``app.config`` is a mutable mapping.

    Duck typing (the server imports no framework): our framework's App and Flask read ``config["DEBUG"]`` at
    request time and show their own debug pages."""
    try:
        settings = getattr(app, "config", None)
    except Exception:  # a property that raises: the app has no config we can set
        return
    if isinstance(settings, MutableMapping):
        settings["DEBUG"] = True


def prepare(
    config: Config, inherited: ChildSettings | None = None
) -> tuple[Config, Callable, list[Listener], CertificateStore | None]:
    """Check everything that can be wrong before serving: raises LoadError, BindError or ValueError.

    ``inherited``: this is a ``--reload`` child, serving on the sockets its parent opened."""
    check_settings(config)
    certificates = load_certificates(config)  # before the app: a bad certificate is found in a moment
    # systemd's sockets are taken (and LISTEN_* cleared) before the app is imported, so that no process the app
    # starts, even at import, sees variables meant for this one.
    activated = systemd_listeners() if inherited is None else None
    if config.app:
        app = load_app(config.app)
    elif config.static:
        app = _not_found_app
    else:
        app = load_app(DEMO_APP)
        from apps.demo import STATIC_MOUNT

        config = Config(**{**config.__dict__, "static": (STATIC_MOUNT,)})
        _check_static(config.static)  # the site's own files: missing only from a broken installation
    if config.debug:
        enable_app_debug(app)
    if inherited is not None:
        listeners = inherit_reload_listeners(inherited)
    elif activated is not None:
        listeners = activated
    else:
        listeners = open_listeners([parse_bind(b) for b in config.binds])
    try:
        assign_schemes(config, listeners)
    except (BindError, ValueError):
        if inherited is None:
            for listener in listeners:
                listener.sock.close()
        raise
    return config, app, listeners, certificates


def serve(
    config: Config, app: Callable, listeners: list[Listener], name: str, certificates: CertificateStore | None = None
) -> int:
    """Run one engine in this process, or a supervisor with ``config.workers`` forked engines."""
    from server.engine import Engine

    def announce() -> None:
        for listener in listeners:
            log.info(
                "serving %s on %s (workers: %d, threads: %d, loop: %s)",
                *(name, listener.url, config.workers, config.threads, loop_name(config.loop)),
            )

    # --max-requests replaces worker processes, so even one worker needs a supervisor to start its successor.
    supervised = config.workers > 1 or config.max_requests > 0

    def build_engine(slot: int | None) -> Engine:
        if config.cpu_affinity == "auto" and (cpu := pin_to_cpu(slot)) is not None:
            log.debug("process %d pinned to CPU %d", os.getpid(), cpu)  # (a failed start stays one line)
        engine = Engine(config, app, listeners, multiprocess=supervised, certificates=certificates)
        signal.signal(signal.SIGTERM, lambda *_: engine.reactor.call_soon_threadsafe(engine.shutdown, True))
        signal.signal(signal.SIGINT, lambda *_: engine.reactor.call_soon_threadsafe(engine.shutdown, False))
        if supervised:
            signal.signal(RETIRE_SIGNAL, lambda *_: engine.reactor.call_soon_threadsafe(engine.retire))
        else:
            # A supervisor answers SIGHUP with fresh workers (which load renewed certificates as they start); a
            # single process reloads its certificates in place instead of dying of the signal's default action.
            signal.signal(signal.SIGHUP, lambda *_: engine.reactor.call_soon_threadsafe(engine.reload_certificates))
        return engine

    if not supervised:
        # Build the engine (its thread pool, its loop) before saying "serving", so that a failure here is still
        # the one line of a failed start, not a traceback after a promise.
        try:
            engine = build_engine(None)
        except Exception as error:
            log.debug("starting the engine failed", exc_info=True)
            return _fail(f"cannot start serving: {type(error).__name__}: {error}")
        announce()
        engine.run()
        return 0
    # With a timeout, the supervisor also watches each worker's loop heartbeat: a frozen loop is killed and replaced.
    supervisor = Supervisor(
        config.workers,
        lambda slot: build_engine(slot).run(),
        config.graceful_timeout,
        timeout=config.timeout,
        on_reload=certificates.reload if certificates is not None else None,
        on_tick=_certificate_watch(certificates, config.cert_check_interval),
        on_start=announce,  # once its signal handlers are in place
        on_stop=lambda: _close_listeners(listeners),
    )
    return supervisor.run()


def _close_listeners(listeners: list[Listener]) -> None:
    for listener in listeners:
        listener.sock.close()


def _certificate_watch(certificates: CertificateStore | None, interval: float) -> Callable[[], None] | None:
    """For the supervisor: look at the certificate files as each worker does, so that a renewal is reported once,
    by the supervisor (the workers' own checks are quiet), and fresh workers inherit what it loaded."""
    if certificates is None or not interval:
        return None
    next_check = time.monotonic() + interval

    def tick() -> None:
        nonlocal next_check
        now = time.monotonic()
        if now >= next_check:
            next_check = now + interval
            certificates.check()

    return tick


def reload_parent(args: Sequence[str], config: Config) -> int:
    """``--reload``: open the listening sockets, then run and restart the server as a child (server.reload)."""
    if config.workers > 1:
        return _fail(f"--reload runs one server process; it cannot be combined with --workers {config.workers}")
    if config.max_requests:
        # Recycling needs a supervisor of worker processes under the reload child; a development server that
        # restarts on every change has no use for it, so say so rather than add a layer nobody needs.
        return _fail(
            f"--reload runs one server process, which it restarts on changes; it cannot be combined with "
            f"--max-requests {config.max_requests} (use --max-requests 0 while developing)"
        )
    try:
        configure_logging(config)
        check_settings(config)
        # Before the sockets: a certificate every child would fail on is one line and exit 2, not a port that is
        # open and never answered. Only built, not loaded: the children load it (the parent serves nothing), and
        # each says what there is to say about it (an expired one), once.
        files = tls_files(config)
        if files is not None:
            build_context(files)
        # The parent holds the sockets, systemd's too: it takes them (and clears LISTEN_*), its children inherit
        # them from it as they do bound ones.
        listeners = systemd_listeners() or open_listeners([parse_bind(b) for b in config.binds])
    except (BindError, ValueError, OSError) as error:
        return _fail(str(error))
    try:
        assign_schemes(config, listeners)  # what the children would each fail on, as above
    except (BindError, ValueError) as error:
        for listener in listeners:
            listener.sock.close()
        return _fail(str(error))
    # The certificate files are watched like the code: a child that could not start on a broken certificate
    # starts again once it is fixed.
    return Reloader(args, listeners, config.graceful_timeout, watch=files.paths() if files else ()).run()


def _reload_child_failed(config: Config, child: ChildSettings, name: str, error: BaseException, line: str) -> int:
    """A ``--reload`` child whose app did not load: say why, then serve a 503 page until the parent restarts us."""
    listeners = inherit_reload_listeners(child)
    try:
        certificates = load_certificates(config)
        assign_schemes(config, listeners)
    except (BindError, ValueError) as problem:
        # Not even the error page can be served (a certificate that broke since the parent checked it): one line,
        # and the parent, which watches the certificate files too, waits for a change.
        return _fail(str(problem))
    detail = describe_load_error(error)
    sys.stderr.write(detail)
    # Not the "error:" line a failed start ends with: this server goes on, answering 503 until the parent
    # restarts it on the fix. Written, not logged, so that --log-level error cannot hide why.
    sys.stderr.write(f"--reload: {' '.join(line.split())}; answering 503 until a file changes\n")
    Reporter(child.report, error=error).start()
    return serve(config, failure_app((detail or line) if config.debug else None), listeners, name, certificates)


@contextmanager
def _routine_logs_held() -> Iterator[None]:
    """Hold back the records below WARNING that are logged while the app loads, and show them only once it has
    loaded: a failed invocation stays the one line it promises, a successful one still shows what the app said
    at start-up (the demo site names its data directory). Warnings and errors go out at once."""
    handlers = list(logging.getLogger().handlers)
    held: dict[int, logging.LogRecord] = {}

    def hold(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        held[id(record)] = record  # Each handler sees the record; keep it once.
        return False

    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
    for record in held.values():  # Not reached when loading failed: those records are dropped.
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(args)
    try:
        child = child_settings()  # set when this process is the server a --reload parent runs
    except ValueError as error:
        return _fail(str(error))
    if config.reload and child is None:
        return reload_parent(args, config)
    name = config.app or ("static files" if config.static else "the demo site")
    try:
        configure_logging(config)
        with _routine_logs_held():
            config, app, listeners, certificates = prepare(config, child)
    except (LoadError, BindError, ValueError, OSError) as error:
        if child is not None:
            return _reload_child_failed(config, child, f"an error page for {name}", error, str(error))
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130  # Ctrl-C while the app was loading: the person knows why; no traceback, the shell's status
    except Exception as error:
        # The last resort of the one-line promise: a check above that missed a case. The traceback is still
        # there for whoever asks for it with --log-level debug.
        log.debug("starting failed", exc_info=True)
        line = f"{type(error).__name__}: {error}"
        if child is not None:
            return _reload_child_failed(config, child, f"an error page for {name}", error, line)
        return _fail(line)
    if child is not None:
        Reporter(child.report, app).start()
    return serve(config, app, listeners, name, certificates)


def exit_with(status: int) -> NoReturn:
    """End the process with ``status``; a failed start (any status but 0) ends at once, whatever else runs.

    An app's module may start a thread that is not a daemon as it is imported, then fail to load: a normal exit
    waits for that thread, forever, after the error line was printed. So a failure flushes what was written and
    leaves with ``os._exit``; a server that served and stopped leaves normally, running its exit handlers."""
    if status:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def run() -> NoReturn:
    """The ``ladder`` command (pyproject.toml) and ``python -m server``: ``main`` and its exit, as above."""
    exit_with(main())


if __name__ == "__main__":
    run()
