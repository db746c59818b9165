"""The command line: ``python -m server [module:app] [options]``.

Every option can also come from the environment as ``SERVER_<NAME>`` (``SERVER_WORKERS=4``,
``SERVER_BIND=0.0.0.0:8080``; repeatable options take a comma-separated list); a flag on the command line wins.
Whatever is wrong with an invocation (an app that cannot be imported, a port in use, a malformed option) ends
with one line on stderr and exit status 2, before anything is served.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from server import SERVER_SOFTWARE
from server.config import Config
from server.listeners import BindError, Listener, open_listener, parse_bind
from server.loader import LoadError, load_app
from server.loop import loop_name
from server.proxy import TrustedProxies
from server.workers import Supervisor, pin_to_cpu

log = logging.getLogger("server")
DEMO_APP = "apps.demo:app"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"python -m server: error: {message}\n")
        sys.exit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _size(text: str) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 65536, 64K, 10M)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 byte")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = _Parser(
        prog="python -m server",
        description="Serve a WSGI application over HTTP/1.1 (with no app: the demo site).",
        epilog="Every option can also be set as an environment variable SERVER_<NAME>, e.g. SERVER_WORKERS=4.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "app",
        nargs="?",
        help="the WSGI application as module:attribute or module:factory() (default: demo site)",
    )
    add = parser.add_argument
    # fmt: off
    add("--bind", "-b", action="append", metavar="ADDR",
        help="HOST:PORT, [IPV6]:PORT or unix:PATH to listen on; repeatable (default: 127.0.0.1:8000)")
    add("--workers", "-w", type=_positive_int, default=defaults.workers,
        help="processes sharing the listening sockets (use one per core)")
    add("--threads", "-t", type=_positive_int, default=defaults.threads,
        help="application threads per process")
    add("--loop", choices=("auto", "epoll", "poll", "select"), default=defaults.loop,
        help="the readiness API the event loop uses")
    add("--cpu-affinity", choices=("off", "auto"), default=defaults.cpu_affinity,
        help="auto: pin each worker process to its own CPU (about 2x the work per CPU on a dedicated machine)")
    add("--keepalive-timeout", type=_seconds, default=defaults.keepalive_timeout, metavar="SECONDS",
        help="close a keep-alive connection idle this long")
    add("--header-timeout", type=_seconds, default=defaults.header_timeout, metavar="SECONDS",
        help="total time allowed to receive a request head (408 after)")
    add("--body-timeout", type=_seconds, default=defaults.body_timeout, metavar="SECONDS",
        help="time allowed between pieces of a request body (408 after)")
    add("--send-timeout", type=_seconds, default=defaults.send_timeout, metavar="SECONDS",
        help="close a connection whose client stops reading for this long")
    add("--graceful-timeout", type=_seconds, default=defaults.graceful_timeout, metavar="SECONDS",
        help="on SIGTERM, how long in-flight requests may take to finish")
    add("--max-header-bytes", type=_size, default=defaults.max_header_bytes, metavar="SIZE",
        help="largest request head (431 beyond)")
    add("--max-body-bytes", type=_size, default=defaults.max_body_bytes, metavar="SIZE",
        help="largest request body (413 beyond)")
    add("--max-connections", type=_positive_int, default=defaults.max_connections, metavar="N",
        help="open connections per process (503 beyond)")
    add("--access-log", default=defaults.access_log, metavar="-|FILE|off",
        help="where the access log (combined format + response time) goes")
    add("--log-level", choices=("debug", "info", "warning", "error"), default=defaults.log_level,
        help="the error log's level")
    add("--debug", action="store_true", help="show tracebacks in 500 responses (never in production)")
    add("--forwarded-allow-ips", default="", metavar="LIST",
        help="comma-separated proxies (IPs, CIDRs, '*', 'unix') whose X-Forwarded-*/Forwarded headers are trusted")
    add("--static", action="append", metavar="URL=DIR",
        help="serve DIR's files at URL, from the event loop with sendfile; repeatable")
    add("--static-max-age", type=int, default=None, metavar="SECONDS",
        help="Cache-Control max-age for static files")
    add("--static-listing", action="store_true", help="list directories that have no index.html")
    add("--static-dotfiles", action="store_true", help="serve files and directories whose names start with a dot")
    add("--follow-symlinks", action="store_true", help="follow symlinks that point outside a static directory")
    add("--data-dir", default=None, metavar="DIR",
        help="where the demo site keeps its data (exported to the app as SERVER_DATA_DIR; default ./var)")
    add("--version", action="version", version=SERVER_SOFTWARE)
    # fmt: on
    return parser


_REPEATABLE = {"bind", "static"}
_FLAGS = {"debug", "static_listing", "static_dotfiles", "follow_symlinks"}


def _environment_defaults(parser: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    """Let SERVER_<NAME> variables stand in for flags that were not given."""
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        value = environ.get(f"SERVER_{action.dest.upper()}")
        if value is None:
            continue
        if action.dest in _FLAGS:
            parser.set_defaults(**{action.dest: value.strip().lower() in ("1", "true", "yes", "on")})
        elif action.dest in _REPEATABLE:
            parser.set_defaults(**{action.dest: [v.strip() for v in value.split(",") if v.strip()]})
        else:
            try:
                converted = action.type(value) if action.type else value
            except argparse.ArgumentTypeError as error:
                parser.error(f"SERVER_{action.dest.upper()}: {error}")
            if action.choices and converted not in action.choices:
                parser.error(f"SERVER_{action.dest.upper()}: {value!r} is not one of {', '.join(action.choices)}")
            parser.set_defaults(**{action.dest: converted})
    if "SERVER_APP" in environ:
        parser.set_defaults(app=environ["SERVER_APP"])


def parse_config(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Turn the command line (and SERVER_* variables) into a Config."""
    parser = build_parser()
    _environment_defaults(parser, dict(os.environ if environ is None else environ))
    args = parser.parse_args(argv)
    if args.data_dir:
        # Applications read their own settings; this flag only hands the demo site its data directory.
        os.environ["SERVER_DATA_DIR"] = args.data_dir
    return Config(
        app=args.app,
        binds=tuple(args.bind or ("127.0.0.1:8000",)),
        workers=args.workers,
        threads=args.threads,
        loop=args.loop,
        cpu_affinity=args.cpu_affinity,
        keepalive_timeout=args.keepalive_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        send_timeout=args.send_timeout,
        graceful_timeout=args.graceful_timeout,
        max_header_bytes=args.max_header_bytes,
        max_body_bytes=args.max_body_bytes,
        max_connections=args.max_connections,
        access_log=args.access_log,
        log_level=args.log_level,
        debug=args.debug,
        forwarded_allow_ips=tuple(a.strip() for a in args.forwarded_allow_ips.split(",") if a.strip()),
        static=tuple(args.static or ()),
        static_max_age=args.static_max_age,
        static_listing=args.static_listing,
        static_dotfiles=args.static_dotfiles,
        follow_symlinks=args.follow_symlinks,
    )


def configure_logging(config: Config) -> None:
    """The error log to stderr at ``--log-level``; the access log to stdout, a file, or nowhere."""
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
    handler = logging.StreamHandler(sys.stdout) if config.access_log == "-" else logging.FileHandler(config.access_log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)


def _not_found_app(environ: dict, start_response: Callable) -> list[bytes]:
    """The application behind static mounts when no app was named: everything else is 404."""
    body = b"404 Not Found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "14")])
    return [body]


def prepare(config: Config) -> tuple[Config, Callable, list[Listener]]:
    """Check everything that can be wrong before serving: raises LoadError, BindError or ValueError."""
    loop_name(config.loop)
    TrustedProxies(config.forwarded_allow_ips)
    if config.static:
        from server.static import StaticOptions, parse_mount

        for spec in config.static:
            parse_mount(spec, StaticOptions())
    if config.app:
        app = load_app(config.app)
    elif config.static:
        app = _not_found_app
    else:
        app = load_app(DEMO_APP)
        from apps.demo import STATIC_MOUNT

        config = Config(**{**config.__dict__, "static": (STATIC_MOUNT,)})
    addresses = [parse_bind(b) for b in config.binds]
    listeners: list[Listener] = []
    try:
        for address in addresses:
            listeners.append(open_listener(address))
    except BindError:
        for listener in listeners:
            listener.sock.close()
        raise
    return config, app, listeners


def serve(config: Config, app: Callable, listeners: list[Listener]) -> int:
    """Run one engine in this process, or a supervisor with ``config.workers`` forked engines."""
    from server.engine import Engine

    def run_engine(slot: int | None) -> None:
        if config.cpu_affinity == "auto":
            log.info("process %d pinned to CPU %d", os.getpid(), pin_to_cpu(slot))
        engine = Engine(config, app, listeners, multiprocess=config.workers > 1)
        signal.signal(signal.SIGTERM, lambda *_: engine.reactor.call_soon_threadsafe(engine.shutdown, True))
        signal.signal(signal.SIGINT, lambda *_: engine.reactor.call_soon_threadsafe(engine.shutdown, False))
        engine.run()

    if config.workers == 1:
        run_engine(None)
        return 0
    return Supervisor(config.workers, run_engine, config.graceful_timeout).run()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging(config)
    name = config.app or ("static files" if config.static else "the demo site")
    try:
        config, app, listeners = prepare(config)
    except (LoadError, BindError, ValueError, OSError) as error:
        sys.stderr.write(f"python -m server: error: {error}\n")
        return 2
    for listener in listeners:
        log.info(
            "serving %s on %s (workers: %d, threads: %d, loop: %s)",
            *(name, listener.url, config.workers, config.threads, loop_name(config.loop)),
        )
    return serve(config, app, listeners)


if __name__ == "__main__":
    sys.exit(main())
