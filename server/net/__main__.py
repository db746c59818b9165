"""``python -m server.net``: the networking layer's command line (UDP tools, TFTP, authenticated messages).

Every command is a thin shell over a function or class of the package, so what the CLI does, a program (or a
test) can do too. A failure ends with one line on stderr that says what failed, on which address or file, and
what to try (never an errno in brackets or a temporary file's name), and an exit status that tells a script
which kind of failure it was:

- 2: the command cannot run as invoked (a bad option, a missing file or folder, an address in use);
- 1: it ran and the other side did not do its part (refused, timed out, no reply, a transfer that failed);
- 130: interrupted (Ctrl-C or SIGTERM) during a transfer; a server's normal end is Ctrl-C, status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from server.oserrors import describe

from . import udp
from .addr import parse_address
from .auth import AuthenticationFailed, load_key
from .display import peer_text, show
from .msg import IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_HANDSHAKES, MessageServer, send_messages
from .tftp import options as opts
from .tftp.client import TftpClient, TransferFailed, TransferResult
from .tftp.files import STREAM_WAIT, NothingToRead, NotRegularFile
from .tftp.packets import ErrorCode
from .tftp.progress import ProgressBar, format_size
from .tftp.server import TftpServer

EXIT_ERROR = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_STATUSES = "exit status: 0 done, 1 the other side failed (refused, timed out, no reply), 2 bad invocation"


class CommandError(Exception):
    """The command cannot run as invoked: ``error: message`` and exit status 2."""


class OperationFailed(Exception):
    """The command ran but did not succeed (refused, timed out, no reply): ``error: message``, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not a usage block) and exit status 2, and every command's help
    ends with what its exit statuses mean."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EXIT_STATUSES)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_ERROR)


@contextlib.contextmanager
def _network(action: str, address: tuple[str, int]) -> Iterator[None]:
    """Turn an ``OSError`` raised while ``action`` (``"listen on"``, ``"reach"``) ``address`` into one sentence:
    a failure to start (bind) is a bad invocation, one of the other side an operational failure."""
    try:
        yield
    except TimeoutError:
        raise OperationFailed(f"{peer_text(address)} did not answer in time") from None
    except OSError as exc:
        message = f"cannot {action} {peer_text(address)}: {describe(exc)}"
        raise (CommandError if action == "listen on" else OperationFailed)(message) from None


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r}: expected a number from 0 to 65535")
    return int(text)


def _in_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a number from {low} to {high}, got {text!r}")
        return int(text)

    return parse


# The longest wait any option may ask for. Infinity or 1e300 seconds is a typo, not a plan, and the system calls
# that wait refuse them (poll() takes at most 2**31 - 1 milliseconds, about 24 days): a day is plenty.
MAX_SECONDS = 86400.0


def _number(kind: Callable[[str], float], *, zero: bool = False, most: float = math.inf) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` above zero (or from zero, if ``zero``), at most ``most``.

    Every count, size and duration of the CLI goes through here, so that a bad value is one line and exit
    status 2 at parse time, never a traceback or a failure half-way through the command.
    """
    bound = "0 or above" if zero else "above 0"
    if most < math.inf:
        bound += f", at most {most:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        # NaN fails every comparison, so it is refused along with infinity. An int is always finite (and
        # math.isfinite cannot convert one beyond a float's range: 10**400 retries is a choice, if an odd one).
        finite = isinstance(value, int) or math.isfinite(value)
        if not ((value >= 0 if zero else value > 0) and value <= most and finite):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        return value

    return parse


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` above zero (a rate, a count of things that must exist)."""
    return _number(kind)


_count = _number(int, zero=True)  # retries, sizes: 0 is a real answer ("no retransmission", "empty files only")
_seconds = _number(float, most=MAX_SECONDS)  # a timeout or an interval
_wait = _number(float, zero=True, most=MAX_SECONDS)  # a wait that may be none at all


def _message(text: str) -> bytes:
    return os.fsencode(text)  # command-line text back to the exact bytes that were typed


# -- udp


def _bound(bind: tuple[str, int]) -> socket.socket:
    with _network("listen on", bind):
        return udp.open_socket(bind)


def cmd_udp_echo(args: argparse.Namespace) -> int:
    limits = udp.EchoLimits(
        rate=args.rate,
        byte_rate=args.byte_rate,
        max_peers=args.max_peers,
        allow_well_known_ports=args.allow_well_known_ports,
        log_interval=args.log_interval,
    )
    with _bound(args.bind) as sock:
        return _until_interrupted(lambda: udp.echo(sock, sys.stdout, args.count, limits=limits))


def cmd_udp_send(args: argparse.Namespace) -> int:
    with _network("send to", args.target):
        replies = udp.send(args.target, args.message, sys.stdout, args.wait)
    if args.wait > 0 and not replies:
        raise OperationFailed(f"no reply from {peer_text(args.target)} within {args.wait:g} s")
    return 0


def cmd_udp_listen(args: argparse.Namespace) -> int:
    with _bound(args.bind) as sock:
        return _until_interrupted(lambda: udp.listen(sock, sys.stdout, args.count))


def cmd_udp_chat(args: argparse.Namespace) -> int:
    with _bound(args.bind) as sock:
        return _until_interrupted(lambda: udp.chat(sock, args.peer, sys.stdin.fileno(), sys.stdout))


def cmd_udp_broadcast(args: argparse.Namespace) -> int:
    with _network("broadcast to", (args.address, args.port)):
        replies = udp.broadcast(args.port, args.message, sys.stdout, args.wait, args.address)
    if args.wait > 0 and not replies:
        raise OperationFailed(f"no reply to the broadcast on port {args.port} within {args.wait:g} s")
    return 0


def _until_interrupted(job: Callable[[], object]) -> int:
    """Servers and listeners run until Ctrl-C (or SIGTERM), which is their normal way to stop."""
    try:
        job()
    except KeyboardInterrupt:
        print("stopped", file=sys.stdout, flush=True)
    return 0


# -- tftp


def cmd_tftp_serve(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.exists():
        raise CommandError(f"the TFTP root {args.root} does not exist (create it, or choose another --root)")
    if not root.is_dir():
        raise CommandError(f"the TFTP root {args.root} is not a folder (--root names the folder to serve)")
    limits = opts.ServerLimits(
        max_blksize=args.max_blksize,
        max_windowsize=args.max_windowsize,
        max_upload=args.max_upload,
        max_timeout=args.max_timeout,
    )
    with _network("listen on", (args.host, args.port)):
        server = _tftp_server(args, limits)
    return _until_interrupted(server.serve_forever)


def _tftp_server(args: argparse.Namespace, limits: opts.ServerLimits) -> TftpServer:
    return TftpServer(
        args.root,
        args.host,
        args.port,
        allow_upload=args.allow_upload,
        overwrite=args.overwrite,
        limits=limits,
        timeout=args.timeout,
        retries=args.retries,
        max_transfers=args.max_transfers,
        max_transfers_per_source=args.max_transfers_per_source,
        stall_limit=args.stall_limit,
        busy_poll=args.busy_poll,
    )


def _client(args: argparse.Namespace, total_hint: int | None = None) -> tuple[TftpClient, ProgressBar]:
    bar = ProgressBar(sys.stderr, total_hint)

    def progress(done: int, total: int | None) -> None:
        bar.total = total or bar.total
        bar.update(done)

    client = TftpClient(
        args.host,
        args.port,
        blksize=args.blksize,
        windowsize=args.windowsize,
        timeout=args.timeout,
        retries=args.retries,
        progress=progress if bar.enabled else None,
    )
    return client, bar


def cmd_tftp_get(args: argparse.Namespace) -> int:
    local = _download_target(args.remote, args.local)
    folder = Path(local).parent
    if not folder.is_dir():
        # Checked here: the download goes to a temporary file beside the target, whose name would be the error's.
        raise CommandError(f"cannot save {local}: the folder {folder} does not exist")
    client, bar = _client(args)
    result = _transfer(lambda: client.download(args.remote, local, mode=args.mode), bar, args)
    _report("got", args.remote, local, result)
    return 0


def _download_target(remote: str, local: str | None) -> str:
    """Where ``tftp get`` saves ``remote``: LOCAL, or the remote base name inside LOCAL if that is a folder (as
    ``cp`` does), or the remote base name in the current folder. Decided before the request is sent: a folder
    is found out only when the finished download cannot be renamed onto it, after the whole transfer."""
    if local is not None and not Path(local).is_dir():
        return local
    name = PurePosixPath(remote.replace("\\", "/")).name  # TFTP servers take either separator
    if name in ("", ".", ".."):
        where = f"into the folder {local}" if local else "without a local name"
        raise CommandError(f"cannot save {remote!r} {where}: it has no file name of its own (give LOCAL)")
    return os.path.join(local, name) if local else name


def cmd_tftp_put(args: argparse.Namespace) -> int:
    stdin = args.local == "-"
    if stdin and not args.remote:
        raise CommandError("give REMOTE, the name on the server, to send the standard input")
    remote = args.remote or Path(args.local).name
    try:
        info = os.fstat(0) if stdin else os.stat(args.local)
    except OSError as exc:
        raise CommandError(f"cannot read {args.local}: {describe(exc)}") from None
    stream = not stat.S_ISREG(info.st_mode)
    client, bar = _client(args, None if stream else info.st_size)  # a stream: size unknown
    source = "the standard input" if stdin else args.local

    def waiting() -> None:  # a pipe whose writer is slow to start: say what we wait for (files.open_local)
        print(f"waiting for {source}: nothing yet after {STREAM_WAIT:g} s (Ctrl-C stops)", file=sys.stderr)

    try:
        result = _transfer(lambda: client.upload(args.local, remote, mode=args.mode, on_wait=waiting), bar, args)
    except (NotRegularFile, NothingToRead) as exc:  # a directory or a socket; a FIFO nobody writes to
        raise CommandError(f"cannot send {args.local}: {exc}") from None
    if stream and result.bytes == 0:
        # Not an error (an empty file is a file), but rarely meant: a writer that failed, a wrong descriptor.
        print(f"warning: {source} was empty: {remote} on the server is now an empty file", file=sys.stderr)
    _report("put", args.local, remote, result)
    return 0


def _transfer(run: Callable[[], TransferResult], bar: ProgressBar, args: argparse.Namespace) -> TransferResult:
    try:
        result = run()
    except TransferFailed as exc:
        bar.end_line()
        # The server's words (no escape reaches the terminal), and what to try where it is known.
        raise OperationFailed(show(str(exc)) + _hint(exc, args)) from None
    bar.finish(result.bytes)
    return result


def _hint(failure: TransferFailed, args: argparse.Namespace) -> str:
    """What to try after ``failure``, as the one line of a failed command promises; "" when nothing is known."""
    if not failure.remote and failure.message.startswith("no answer from the server"):
        where = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
        return f"; is a TFTP server listening on {where}? (--port, --timeout and --retries change where and how long)"
    if failure.remote and failure.code == ErrorCode.FILE_EXISTS:
        return (
            "; the server keeps existing files (if it is this project's, its operator can let uploads replace them:"
            " tftp serve --overwrite)"
        )
    return ""


def _report(verb: str, source: str, dest: str, result: TransferResult) -> None:
    print(
        f"{verb} {source} -> {dest}: {result.bytes} bytes in {result.seconds:.3f} s "
        f"({format_size(result.rate)}/s, blksize {result.settings.blksize}, "
        f"windowsize {result.settings.windowsize})"
    )


# -- msg


def cmd_msg_serve(args: argparse.Namespace) -> int:
    key = _key(args.secret_file)
    with _network("listen on", args.bind):
        server = MessageServer(
            args.bind,
            key,
            sys.stdout,
            handshake_timeout=args.timeout,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
            max_handshakes=args.max_handshakes,
        )
    if server.max_connections < args.max_connections:
        print(
            f"note: at most {server.max_connections} connections, what the descriptor limit leaves (ulimit -n)",
            file=sys.stderr,
        )
    return _until_interrupted(server.serve_forever)


def cmd_msg_send(args: argparse.Namespace) -> int:
    key = _key(args.secret_file)
    try:
        with _network("reach", args.target):
            send_messages(args.target, key, args.messages, timeout=args.timeout)
    except AuthenticationFailed as exc:
        message = f"{peer_text(args.target)} refused the handshake: {exc}; do both use the same key?"
        raise OperationFailed(message) from None
    print(f"sent {len(args.messages)} message(s) to {args.target[0]}:{args.target[1]}")
    return 0


def _key(path: str) -> bytes:
    try:
        return load_key(path)
    except OSError as exc:
        raise CommandError(f"cannot read the secret file {path}: {describe(exc)}") from None


# -- the parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m server.net",
        description="The networking layer: UDP tools, TFTP, authenticated messages.",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{udp,tftp,msg}")

    udp_parser = groups.add_parser("udp", help="UDP tools: echo, send, listen, chat, broadcast")
    tools = udp_parser.add_subparsers(dest="command", required=True)
    p = tools.add_parser("echo", help="echo server: send each datagram back, log it with a count")
    p.add_argument("--bind", type=_address, default=("127.0.0.1", 9999), help="HOST:PORT (127.0.0.1:9999)")
    p.add_argument("--count", type=_positive(int), help="stop after this many datagrams (default: run until Ctrl-C)")
    echo_defaults = udp.EchoLimits()
    p.add_argument(
        "--rate",
        type=_positive(float),
        default=echo_defaults.rate,
        help="datagrams per second answered to one peer address, also the burst (%(default)g)",
    )
    p.add_argument(
        "--byte-rate",
        type=_positive(float),
        default=echo_defaults.byte_rate,
        help="bytes per second answered to one peer address (%(default)g)",
    )
    p.add_argument(
        "--max-peers",
        type=_positive(int),
        default=echo_defaults.max_peers,
        help="peer addresses remembered at once; new ones wait while all are active (%(default)s)",
    )
    p.add_argument(
        "--allow-well-known-ports",
        action="store_true",
        help="answer datagrams from source ports below 1024 (other services: an echo or chargen loop)",
    )
    p.add_argument(
        "--log-interval",
        type=_seconds,
        default=echo_defaults.log_interval,
        help="seconds between two reports of the same kind of dropped datagram (%(default)g)",
    )
    p.set_defaults(run=cmd_udp_echo)
    p = tools.add_parser("send", help="send one datagram, optionally print the replies")
    p.add_argument("target", type=_address, help="HOST:PORT to send to")
    p.add_argument("message", type=_message, help="the datagram's content")
    p.add_argument("--wait", type=_wait, default=0.0, help="seconds to wait for replies (default: none)")
    p.set_defaults(run=cmd_udp_send)
    p = tools.add_parser("listen", help="print each datagram that arrives, with sender and time")
    p.add_argument("--bind", type=_address, default=("127.0.0.1", 7788), help="HOST:PORT (127.0.0.1:7788)")
    p.add_argument("--count", type=_positive(int), help="stop after this many datagrams (default: run until Ctrl-C)")
    p.set_defaults(run=cmd_udp_listen)
    p = tools.add_parser("chat", help="full-duplex chat: stdin lines out, datagrams in, at the same time")
    p.add_argument("--bind", type=_address, default=("127.0.0.1", 8081), help="HOST:PORT (127.0.0.1:8081)")
    p.add_argument("--peer", type=_address, required=True, help="HOST:PORT of the other side")
    p.set_defaults(run=cmd_udp_chat)
    p = tools.add_parser("broadcast", help="send one datagram with SO_BROADCAST")
    p.add_argument("port", type=_port, help="destination port")
    p.add_argument("message", type=_message, help="the datagram's content")
    p.add_argument("--wait", type=_wait, default=0.0, help="seconds to wait for replies (default: none)")
    p.add_argument("--address", default="<broadcast>", help="broadcast address (default: 255.255.255.255)")
    p.set_defaults(run=cmd_udp_broadcast)

    tftp_parser = groups.add_parser("tftp", help="TFTP server and client (RFC 1350, 2347-2349, 7440)")
    tools = tftp_parser.add_subparsers(dest="command", required=True)
    p = tools.add_parser("serve", help="serve the files of a directory")
    p.add_argument("--root", required=True, help="the directory to serve; nothing outside it is reachable")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=69, help="port to listen on (default: 69)")
    p.add_argument("--allow-upload", action="store_true", help="accept write requests (default: refuse)")
    p.add_argument("--overwrite", action="store_true", help="let uploads replace existing files")
    blksize_range = _in_range(opts.MIN_BLKSIZE, opts.MAX_BLKSIZE)
    p.add_argument(
        "--max-blksize", type=blksize_range, default=opts.MAX_BLKSIZE, help="largest blksize granted (65464)"
    )
    p.add_argument(
        "--max-windowsize", type=_in_range(1, opts.MAX_WINDOWSIZE), default=64, help="largest windowsize granted (64)"
    )
    p.add_argument(
        "--max-upload", type=_count, help="largest upload in bytes, checked on tsize and as data comes (no limit)"
    )
    p.add_argument(
        "--max-transfers",
        type=_positive(int),
        default=256,
        help="transfers at once; when full the longest idle gives way, then newcomers are refused (%(default)s)",
    )
    p.add_argument(
        "--max-transfers-per-source",
        type=_positive(int),
        default=8,
        help="transfers one IPv4 address (or IPv6 /64) may hold at once (%(default)s)",
    )
    p.add_argument(
        "--stall-limit",
        type=_seconds,
        default=30.0,
        help="seconds without progress after which a transfer is dropped, whatever its retries (%(default)g)",
    )
    p.add_argument(
        "--max-timeout",
        type=_in_range(opts.MIN_TIMEOUT, opts.MAX_TIMEOUT),
        default=opts.DEFAULT_MAX_TIMEOUT,
        help="largest timeout option granted to a client; longer ones are ignored (%(default)s)",
    )
    p.add_argument(
        "--no-busy-poll",
        dest="busy_poll",
        action="store_false",
        help="never spin for a lone fast client's reply: less CPU, a slower lock-step transfer",
    )
    _timing_options(p)
    p.set_defaults(run=cmd_tftp_serve)
    for name, helptext in (("get", "download a file"), ("put", "upload a file")):
        p = tools.add_parser(name, help=helptext)
        p.add_argument("host", help="server host name or address")
        if name == "get":
            p.add_argument("remote", help="file name on the server")
            p.add_argument(
                "local",
                nargs="?",
                help="where to save it; a folder gets the remote base name inside it (default: that name, here)",
            )
        else:
            p.add_argument(
                "local",
                help="the file to send, or a stream sent without announcing a size: a FIFO, /dev/stdin, <(cmd), "
                f"- for the standard input (a named FIFO's first byte must come within {STREAM_WAIT:g} s)",
            )
            p.add_argument("remote", nargs="?", help="name on the server (default: the local base name)")
        p.add_argument("--port", type=_port, default=69, help="server port (default: 69)")
        p.add_argument("--blksize", type=blksize_range, default=opts.DEFAULT_BLKSIZE, help="block size to ask for")
        p.add_argument("--windowsize", type=_in_range(1, opts.MAX_WINDOWSIZE), default=1, help="blocks per ACK")
        p.add_argument("--mode", choices=("octet", "netascii"), default="octet", help="transfer mode (octet)")
        _timing_options(p)
        p.set_defaults(run=cmd_tftp_get if name == "get" else cmd_tftp_put)

    msg_parser = groups.add_parser("msg", help="length-framed TCP messages behind an HMAC handshake")
    tools = msg_parser.add_subparsers(dest="command", required=True)
    p = tools.add_parser("serve", help="print each message of authenticated clients")
    p.add_argument("--bind", type=_address, default=("127.0.0.1", 9000), help="HOST:PORT (127.0.0.1:9000)")
    p.add_argument("--secret-file", required=True, help="file holding the shared key")
    p.add_argument(
        "--timeout", type=_seconds, default=5.0, help="seconds for the whole handshake, however the bytes arrive (5)"
    )
    p.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=IDLE_TIMEOUT,
        help="seconds an authenticated connection may stay silent (%(default)g)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive(int),
        default=MAX_CONNECTIONS,
        help="connections at once, authenticated or not; lowered to what ulimit -n leaves (%(default)s)",
    )
    p.add_argument(
        "--max-handshakes",
        type=_positive(int),
        default=MAX_HANDSHAKES,
        help="connections still in their handshake; a newcomer replaces the oldest (%(default)s)",
    )
    p.set_defaults(run=cmd_msg_serve)
    p = tools.add_parser("send", help="authenticate, then send messages; exit status 1 if refused")
    p.add_argument("target", type=_address, help="HOST:PORT of the server")
    p.add_argument("messages", type=_message, nargs="+", help="one or more messages")
    p.add_argument("--secret-file", required=True, help="file holding the shared key")
    p.add_argument("--timeout", type=_seconds, default=5.0, help="seconds allowed to connect and authenticate (5)")
    p.set_defaults(run=cmd_msg_send)
    return parser


def _timing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=_seconds, default=1.0, help="seconds before a retransmission (1)")
    parser.add_argument("--retries", type=_count, default=5, help="retransmissions before giving up (5)")


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # SIGTERM stops a server the way Ctrl-C does: in-flight transfers are told and temporary files removed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OperationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (CommandError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # One that no command above put in context: still one line, without the errno.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {describe(exc)}{where}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
