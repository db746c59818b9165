"""TFTP download benchmark on loopback: our server and client beside tftpd-hpa, tftpy and atftp.

Every contender moves the same file (40 MiB by default) over 127.0.0.1 and is timed from the outside, as a whole
process, so the numbers include what a user waits for. The rounds interleave the contenders, so that a noisy
neighbour on a shared machine slows all of them alike; the report gives the median and best of each and the
ratios the project targets:

- the same real client (tftp-hpa's ``tftp`` at blksize 512, curl at 512 and 1468) against our server, tftpd-hpa
  and tftpy's server: ours should reach at least 1.5x tftpy's throughput and 0.8x tftpd-hpa's; ours is also
  run with ``--no-busy-poll`` (tftp-hpa's client only), to show what busy-polling for the reply buys;
- our client with our server at blksize 1468, windowsize 1 and 16, beside atftp with atftpd at windowsize 8:
  windowsize 16 should be at least 4x windowsize 1, and at least 0.5x atftp.

Peers: ``apt-get install tftp-hpa tftpd-hpa curl``, ``pip install tftpy`` (the "bench" extra), and atftp with
atftpd, unpacked rather than installed because atftpd conflicts with tftpd-hpa as a package::

    cd /tmp/atftp && apt-get download atftp atftpd && for f in *.deb; do dpkg -x "$f" root; done

Run: ``python bench/bench_tftp.py [--rounds 5] [--size-mib 40] [--atftp-root /tmp/atftp/root]``, about three
minutes. Missing peers are reported and their rows left out. Each run takes the repository's benchmark lock
(``bench.harness.measurement_lock``), so benchmarks started together take turns; the table is printed and
written to ``bench/results/tftp.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import measurement_lock, write_results  # noqa: E402
from server.net.tftp.client import wait_until_answering  # noqa: E402

FILE = "big.bin"
TIMEOUT = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        wait_until_answering("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Contender:
    label: str
    argv: list[str]
    output: Path
    times: list[float] = field(default_factory=list)
    # Our client reports the transfer's own duration, without the ~0.1 s of interpreter start-up in the wall
    # time; the window ratios are given both ways.
    transfer_times: list[float] = field(default_factory=list)

    def run_once(self, expected_digest: str) -> None:
        self.output.unlink(missing_ok=True)
        started = time.perf_counter()
        result = subprocess.run(self.argv, capture_output=True, timeout=TIMEOUT, cwd=ROOT)
        elapsed = time.perf_counter() - started
        if result.returncode != 0 or not self.output.exists() or digest(self.output) != expected_digest:
            raise RuntimeError(f"{self.label} failed: {result.returncode} {result.stdout!r} {result.stderr!r}")
        self.times.append(elapsed)
        reported = re.search(rb" in ([\d.]+) s ", result.stdout)
        self.transfer_times.append(float(reported.group(1)) if reported else elapsed)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find(name: str, extra_dirs: list[Path]) -> str | None:
    for directory in extra_dirs:
        candidate = directory / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=40)
    parser.add_argument("--atftp-root", type=Path, default=Path("/tmp/atftp/root"), help="where atftp is unpacked")
    parser.add_argument(
        "--only", metavar="REGEX", help="run only the contenders whose label matches, e.g. 'tftp-hpa' (for quick runs)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-tftp-"))
    served = work / "served"
    served.mkdir()
    (served / FILE).write_bytes(os.urandom(args.size_mib * 1024 * 1024))
    expected = digest(served / FILE)
    atftp_dirs = [args.atftp_root / "usr/bin", args.atftp_root / "usr/sbin"]
    in_tftpd, tftp, curl = find("in.tftpd", []), find("tftp", []), find("curl", [])
    atftp, atftpd = find("atftp", atftp_dirs), find("atftpd", atftp_dirs)
    try:
        import tftpy  # noqa: F401

        have_tftpy = True
    except ImportError:
        have_tftpy = False

    servers: dict[str, Server] = {}
    port = free_port()
    servers["ours"] = Server(
        "ours", [sys.executable, "-m", "server.net", "tftp", "serve", "--root", str(served), "--port", str(port)], port
    )
    # The same server without busy-polling, to show what the spin buys (tftp-hpa's client only).
    port = free_port()
    servers["ours --no-busy-poll"] = Server(
        "ours --no-busy-poll", [*servers["ours"].argv[:-1], str(port), "--no-busy-poll"], port
    )
    if in_tftpd and os.geteuid() == 0:
        port = free_port()
        argv = [in_tftpd, "-L", "-a", f"127.0.0.1:{port}", "-s", str(served), "-u", "root"]
        servers["tftpd-hpa"] = Server("tftpd-hpa", argv, port)
    else:
        print("tftpd-hpa: skipped (needs in.tftpd from tftpd-hpa, and root for its chroot)")
    if have_tftpy:
        port = free_port()
        code = (
            "import logging, sys, tftpy; logging.getLogger('tftpy').setLevel(logging.WARNING); "
            "tftpy.TftpServer(sys.argv[1]).listen('127.0.0.1', int(sys.argv[2]))"
        )
        servers["tftpy"] = Server("tftpy", [sys.executable, "-c", code, str(served), str(port)], port)
    else:
        print("tftpy: skipped (pip install tftpy)")
    if atftpd and atftp:
        port = free_port()
        argv = [atftpd, "--daemon", "--no-fork", "--port", str(port), "--bind-address", "127.0.0.1",
                "--user", "root", "--group", "root", "--logfile", "/dev/null", str(served)]  # fmt: skip
        servers["atftpd"] = Server("atftpd", argv, port)
    else:
        print(f"atftp: skipped (unpack atftp and atftpd into {args.atftp_root}, see this script's docstring)")

    contenders: list[Contender] = []

    def out(label: str) -> Path:
        return work / (label.replace(" ", "_").replace("/", "_") + ".out")

    for name in ("ours", "ours --no-busy-poll", "tftpd-hpa", "tftpy"):
        if name not in servers:
            continue
        p = str(servers[name].port)
        if tftp:
            label = f"tftp-hpa -> {name} @512"
            argv = [tftp, "-m", "binary", "127.0.0.1", p, "-c", "get", FILE, str(out(label))]
            contenders.append(Contender(label, argv, out(label)))
        if curl and name != "ours --no-busy-poll":
            for blksize in (512, 1468):
                label = f"curl -> {name} @{blksize}"
                url = f"tftp://127.0.0.1:{p}/{FILE}"
                argv = [curl, "-sS", "--tftp-blksize", str(blksize), "-o", str(out(label)), url]
                contenders.append(Contender(label, argv, out(label)))
    ours_port = str(servers["ours"].port)
    for window in (1, 16):
        label = f"ours -> ours @1468 w{window}"
        argv = [sys.executable, "-m", "server.net", "tftp", "get", "127.0.0.1", FILE, str(out(label)),
                "--port", ours_port, "--blksize", "1468", "--windowsize", str(window)]  # fmt: skip
        contenders.append(Contender(label, argv, out(label)))
    if "atftpd" in servers:
        label = "atftp -> atftpd @1468 w8"
        argv = [atftp, "-g", "-r", FILE, "-l", str(out(label)), "--option", "blksize 1468",
                "--option", "windowsize 8", "127.0.0.1", str(servers["atftpd"].port)]  # fmt: skip
        contenders.append(Contender(label, argv, out(label)))

    if args.only:
        contenders = [c for c in contenders if re.search(args.only, c.label)]

    try:
        for server in servers.values():
            server.start()
        for round_number in range(args.rounds):
            for contender in contenders:
                # The benchmarks of this repository take turns through one lock, run by run.
                with measurement_lock():
                    contender.run_once(expected)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    table = report(contenders, args)
    print(table)
    print(f"written to {write_results('tftp.md', table)}")
    return 0


def report(contenders: list[Contender], args: argparse.Namespace) -> str:
    """The results as markdown: one table of times, one of the ratios the project targets."""
    lines: list[str] = []
    out = lines.append
    size = args.size_mib * 1024 * 1024
    median = {c.label: statistics.median(c.times) for c in contenders}
    transfer = {c.label: statistics.median(c.transfer_times) for c in contenders}
    load = os.getloadavg()[0]
    out(f"{args.size_mib} MiB download over 127.0.0.1, {args.rounds} interleaved rounds, wall time per process")
    out(f"(load average {load:.2f} at the end; 2 shared cores)\n")
    out("| contender | median s | best s | MiB/s (median) | transfer s (median) |")
    out("|---|---:|---:|---:|---:|")
    for c in contenders:
        label = c.label
        out(
            f"| {label} | {median[label]:.2f} | {min(c.times):.2f} | {size / median[label] / 2**20:.1f} "
            f"| {transfer[label]:.2f} |"
        )

    def ratio(times: dict[str, float], numerator: str, denominator: str) -> float | None:
        if numerator in times and denominator in times:
            return times[numerator] / times[denominator]
        return None

    out("")
    out("| throughput ratio (medians) | measured | target |")
    out("|---|---:|---:|")
    for client, blksize in (("tftp-hpa", 512), ("curl", 512), ("curl", 1468)):
        ours = f"{client} -> ours @{blksize}"
        for peer, target in (("tftpy", 1.5), ("tftpd-hpa", 0.8)):
            value = ratio(median, f"{client} -> {peer} @{blksize}", ours)
            if value is not None:
                out(f"| ours / {peer}, {client} client, blksize {blksize} | {value:.2f}x | >= {target}x |")
    value = ratio(median, "tftp-hpa -> ours --no-busy-poll @512", "tftp-hpa -> ours @512")
    if value is not None:
        out(f"| ours with / without busy-polling, tftp-hpa client, blksize 512 | {value:.2f}x | |")
    w1, w16, atftp = "ours -> ours @1468 w1", "ours -> ours @1468 w16", "atftp -> atftpd @1468 w8"
    for times, basis in ((median, "wall"), (transfer, "transfer")):
        value = ratio(times, w1, w16)
        if value is not None:
            out(f"| ours windowsize 16 / windowsize 1, blksize 1468 ({basis}) | {value:.2f}x | >= 4x |")
        value = ratio(times, atftp, w16)
        if value is not None:
            out(f"| ours windowsize 16 / atftp windowsize 8, blksize 1468 ({basis}) | {value:.2f}x | >= 0.5x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
