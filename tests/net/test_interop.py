"""Interoperability with real TFTP peers from Debian, all on 127.0.0.1.

curl (``tftp://``) and tftp-hpa's ``tftp`` download from and upload to our server; our client talks to
tftp-hpa's ``in.tftpd``, run in the foreground on a free port with a temporary root (never a system daemon).
Each peer also moves a 40 MiB file at blksize 512, which takes the block number through its wrap at 65535.
A missing peer skips its tests, saying which Debian package provides it.
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from server.net.tftp.client import TftpClient, TransferFailed, wait_until_answering
from server.net.tftp.packets import ErrorCode

BIG = 40 * 1024 * 1024 + 123  # 81920 blocks of 512 bytes, then a short one: the block number wraps once
IN_TFTPD = shutil.which("in.tftpd") or next(
    (p for p in ("/usr/sbin/in.tftpd", "/sbin/in.tftpd") if os.access(p, os.X_OK)), None
)

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (Debian: curl)")
needs_tftp = pytest.mark.skipif(shutil.which("tftp") is None, reason="tftp is not installed (Debian: tftp-hpa)")
needs_tftpd = pytest.mark.skipif(IN_TFTPD is None, reason="in.tftpd is not installed (Debian: tftpd-hpa)")
needs_atftp = pytest.mark.skipif(shutil.which("atftp") is None, reason="atftp is not installed (Debian: atftp)")


def run(*argv, timeout=60, **kwargs):
    return subprocess.run(list(map(str, argv)), capture_output=True, timeout=timeout, **kwargs)


@pytest.fixture
def served(tftp_root, start_tftp_server):
    """Our server on the temporary root, uploads allowed; returns its port."""
    return start_tftp_server(tftp_root, allow_upload=True).address[1]


def write(path, size, seed=0):
    data = os.urandom(size) if size > 1_000_000 else bytes((i * 7 + seed) % 251 for i in range(size))
    path.write_bytes(data)
    return data


# -- curl against our server


@needs_curl
@pytest.mark.parametrize("blksize", [None, 1468])
@pytest.mark.parametrize("size", [0, 1, 1024, 5000])
def test_curl_downloads(served, tftp_root, tmp_path, size, blksize):
    """An empty file included: curl 7.88 refuses an OACK with tsize 0, so our server leaves tsize out."""
    data = write(tftp_root / "f.bin", size)
    extra = ["--tftp-blksize", blksize] if blksize else []
    result = run("curl", "-sS", "--max-time", 30, *extra, "-o", tmp_path / "out", f"tftp://127.0.0.1:{served}/f.bin")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == data


@needs_curl
def test_curl_upload(served, tftp_root, tmp_path):
    data = write(tmp_path / "up.bin", 3000)
    result = run("curl", "-sS", "--max-time", 30, "-T", tmp_path / "up.bin", f"tftp://127.0.0.1:{served}/up.bin")
    assert result.returncode == 0, result.stderr
    assert (tftp_root / "up.bin").read_bytes() == data


@needs_curl
def test_curl_uploads_a_stream(served, tftp_root):
    """``curl -T -`` does not know the size of what it reads, and announces ``tsize 0``: that means unknown."""
    data = os.urandom(3000)
    result = run("curl", "-sS", "--max-time", 30, "-T", "-", f"tftp://127.0.0.1:{served}/x.bin", input=data)
    assert result.returncode == 0, result.stderr
    assert (tftp_root / "x.bin").read_bytes() == data


@needs_curl
def test_curl_sees_our_errors(served, tmp_path):
    result = run("curl", "-sS", "--max-time", 30, "-o", tmp_path / "out", f"tftp://127.0.0.1:{served}/nope")
    assert result.returncode == 68  # CURLE_TFTP_NOTFOUND: curl understood our ERROR 1


@needs_curl
def test_curl_40_mib_rollover(served, tftp_root, tmp_path):
    data = write(tftp_root / "big.bin", BIG)
    url = f"tftp://127.0.0.1:{served}/big.bin"
    result = run("curl", "-sS", "--max-time", 60, "--tftp-blksize", 512, "-o", tmp_path / "big.bin", url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "big.bin").read_bytes() == data


# -- tftp-hpa's client against our server


def hpa(port, command, cwd):
    return run("tftp", "-m", "binary", "127.0.0.1", port, "-c", *command, cwd=cwd)


@needs_tftp
@pytest.mark.parametrize("size", [0, 512, 2000])
def test_tftp_hpa_get_and_put(served, tftp_root, tmp_path, size):
    data = write(tftp_root / "f.bin", size)
    result = hpa(served, ["get", "f.bin", "copy.bin"], tmp_path)
    assert result.returncode == 0 and (tmp_path / "copy.bin").read_bytes() == data, result.stdout
    result = hpa(served, ["put", "copy.bin", "back.bin"], tmp_path)
    assert result.returncode == 0 and (tftp_root / "back.bin").read_bytes() == data, result.stdout


@needs_tftp
def test_tftp_hpa_netascii(served, tftp_root, tmp_path):
    text = b"line one\nline two\r\nbare\rcr\n" * 200
    (tftp_root / "t.txt").write_bytes(text)
    get = run("tftp", "-m", "netascii", "127.0.0.1", served, "-c", "get", "t.txt", "t.txt", cwd=tmp_path)
    assert get.returncode == 0 and (tmp_path / "t.txt").read_bytes() == text
    put = run("tftp", "-m", "netascii", "127.0.0.1", served, "-c", "put", "t.txt", "back.txt", cwd=tmp_path)
    assert put.returncode == 0 and (tftp_root / "back.txt").read_bytes() == text


@needs_tftp
def test_tftp_hpa_sees_our_errors(served, tmp_path):
    result = hpa(served, ["get", "../etc/passwd", "x"], tmp_path)
    assert b"Error code 2" in result.stdout + result.stderr


@needs_tftp
def test_tftp_hpa_40_mib_rollover(served, tftp_root, tmp_path):
    data = write(tftp_root / "big.bin", BIG)
    result = hpa(served, ["get", "big.bin", "big.bin"], tmp_path)
    assert result.returncode == 0 and (tmp_path / "big.bin").read_bytes() == data


# -- atftp's client against our server: windowsize (RFC 7440) with a peer that implements it


@needs_atftp
@pytest.mark.parametrize("windowsize", [1, 8])
def test_atftp_windowed_download_and_upload(served, tftp_root, tmp_path, windowsize):
    data = write(tftp_root / "f.bin", 300_000 + windowsize)
    options = ["--option", "blksize 1468", "--option", f"windowsize {windowsize}"]
    get = run("atftp", "-g", "-r", "f.bin", "-l", tmp_path / "got.bin", *options, "127.0.0.1", served)
    assert get.returncode == 0, get.stderr
    assert (tmp_path / "got.bin").read_bytes() == data
    put = run("atftp", "-p", "-l", tmp_path / "got.bin", "-r", "up.bin", *options, "127.0.0.1", served)
    assert put.returncode == 0, put.stderr
    assert (tftp_root / "up.bin").read_bytes() == data


@needs_atftp
def test_atftp_netascii_upload_announcing_its_size_on_disk(served, tftp_root, tmp_path):
    """atftp announces the file's size on disk as tsize; in netascii the wire carries more (LF is CR LF)."""
    text = b"a\nb\n" * 300  # 1200 bytes on disk, 1800 on the wire
    (tmp_path / "t.txt").write_bytes(text)
    options = ["--option", "mode netascii", "--option", "tsize"]
    put = run("atftp", "-p", "-l", tmp_path / "t.txt", "-r", "t.txt", *options, "127.0.0.1", served)
    assert put.returncode == 0, put.stderr
    assert (tftp_root / "t.txt").read_bytes() == text


# -- our client against tftp-hpa's server


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tftpd_hpa(tmp_path):
    """Start in.tftpd in the foreground on a free port; returns a function taking extra options."""
    if os.geteuid() != 0:
        pytest.skip("in.tftpd --secure needs root to chroot into its directory")
    started = []

    def start(*options):
        root = tmp_path / f"hpa{len(started)}"
        root.mkdir()
        port = free_udp_port()
        argv = [IN_TFTPD, "-L", "-a", f"127.0.0.1:{port}", "-s", root, "-u", "root", "-c", "-p", *options]
        # No pipes: the children in.tftpd forks per transfer would hold them open after it exits.
        proc = subprocess.Popen(list(map(str, argv)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        wait_until_answering("127.0.0.1", port, 5.0)
        return root, port

    yield start
    for proc in started:
        proc.kill()  # it has nothing to save
        proc.wait(timeout=10)


@needs_tftpd
@pytest.mark.parametrize(("blksize", "windowsize"), [(512, 1), (1468, 8)])
@pytest.mark.parametrize("size", [0, 512, 100_000])
def test_our_client_against_tftpd_hpa(tftpd_hpa, tmp_path, size, blksize, windowsize):
    root, port = tftpd_hpa()
    data = write(root / "f.bin", size)
    client = TftpClient("127.0.0.1", port, blksize=blksize, windowsize=windowsize)
    result = client.download("f.bin", tmp_path / "got.bin")
    assert (tmp_path / "got.bin").read_bytes() == data
    # tftpd-hpa knows blksize but not windowsize: what it leaves out of its OACK falls back to the default.
    assert (result.settings.blksize, result.settings.windowsize) == (blksize, 1)
    client.upload(tmp_path / "got.bin", "up.bin")
    assert (root / "up.bin").read_bytes() == data


@needs_tftpd
def test_our_client_falls_back_when_tftpd_hpa_refuses_options(tftpd_hpa, tmp_path):
    root, port = tftpd_hpa("--refuse", "blksize", "--refuse", "tsize")
    data = write(root / "f.bin", 3000)
    result = TftpClient("127.0.0.1", port, blksize=1468).download("f.bin", tmp_path / "got.bin")
    assert (tmp_path / "got.bin").read_bytes() == data and result.settings.blksize == 512


@needs_tftpd
def test_our_client_reports_tftpd_hpa_errors(tftpd_hpa, tmp_path):
    _, port = tftpd_hpa()
    with pytest.raises(TransferFailed) as caught:
        TftpClient("127.0.0.1", port).download("missing.bin", tmp_path / "missing.bin")
    assert caught.value.code == ErrorCode.FILE_NOT_FOUND and caught.value.remote
    assert not (tmp_path / "missing.bin").exists() and not list(Path(tmp_path).glob(".missing*"))


@needs_tftpd
def test_our_client_40_mib_rollover_from_tftpd_hpa(tftpd_hpa, tmp_path):
    root, port = tftpd_hpa()
    data = write(root / "big.bin", BIG)
    TftpClient("127.0.0.1", port).download("big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == data
