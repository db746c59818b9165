"""Regressions from an audit of static serving: what a mount answers when the machine, the disk or the request is
unusual. Out of descriptors (503, not 404), an unreadable directory listing (404 and one line, not 500 and a
traceback), a redirect that keeps the query, modification times beyond the year 9999 or in the future, a link
to a dotfile under --follow-symlinks, ``OPTIONS *`` beside a "/" mount, and ``nosniff`` on every file.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from server.static import StaticFiles, StaticMount, StaticOptions, serve_file, serve_path
from server.static import cache as static_cache
from server.static import listing as static_listing
from server.static import paths as static_paths
from server.static import reply as static_reply
from server.static.reply import Prepared, serve_under_root
from server.static.validators import http_date
from tests.support import ROOT, ServerThread, read_reply, read_response

TIMEOUT = 10


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"0123456789")
    (root / "app.css").write_bytes(b"body{}")
    (root / "app.css.gz").write_bytes(b"GZ")
    (root / ".env").write_bytes(b"SECRET=1")
    (root / "notdot.txt").symlink_to(root / ".env")
    return root


@pytest.fixture(autouse=True)
def fresh_cache_and_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty open-file cache and warnings that have not been said yet."""
    static_reply.OPEN_FILES.clear()
    for name in ("_out_of_resources_warning", "_unreadable_directory_warning"):
        if hasattr(static_reply, name):  # (so that this file also runs against the code before these existed)
            warning = getattr(static_reply, name)
            monkeypatch.setattr(static_reply, name, type(warning)(warning.logger))


def static_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "server.static"]


# -- 1. out of descriptors: 503 with Retry-After, not 404 -----------------------------------------------------------


def failing_open(error_number: int):
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if str(path).startswith("/proc/self/fd/") or "site" in str(path):
            raise OSError(error_number, os.strerror(error_number))
        return real_open(path, flags, *args, **kwargs)

    return open_


@pytest.mark.parametrize("error_number", [errno.EMFILE, errno.ENFILE, errno.ENOMEM])
def test_a_file_that_cannot_be_opened_for_want_of_descriptors_is_503_not_404(site, monkeypatch, caplog, error_number):
    monkeypatch.setattr(static_paths.os, "open", failing_open(error_number))
    caplog.set_level(logging.WARNING, "server.static")
    for _ in range(3):
        reply = serve_path(StaticMount("/", site), "GET", "/a.txt", {})
        assert reply.status == 503
        assert reply.header("Retry-After") == "1"
    assert len(static_warnings(caplog)) == 1  # once, then at most once a minute
    assert "answering 503" in static_warnings(caplog)[0]


def test_a_missing_file_is_still_404_and_an_unreadable_one_too(site, monkeypatch):
    monkeypatch.setattr(static_paths.os, "open", failing_open(errno.EACCES))
    assert serve_path(StaticMount("/", site), "GET", "/a.txt", {}).status == 404


@pytest.mark.parametrize("cached", [True, False])
def test_out_of_descriptors_for_a_sibling_closes_what_was_opened(site, monkeypatch, cached):
    """The file is opened, its .gz sibling is not (EMFILE): the answer is 503, and every descriptor opened for
    it is given back, whether the answer was being remembered (serve_path's cache) or not (the full path)."""
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if str(path).endswith(".css.gz"):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(static_paths.os, "open", open_)
    mount = StaticMount("/", site)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        if cached:
            reply = serve_path(mount, "GET", "/app.css", {"accept-encoding": "gzip"})
        else:
            reply = serve_under_root(mount, "GET", "/app.css", "/app.css", {"accept-encoding": "gzip"},
                                     display_prefix="/")  # fmt: skip
        assert reply.status == 503
        reply.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_serve_file_and_the_wsgi_app_answer_503_too(site, monkeypatch):
    monkeypatch.setattr(static_paths.os, "open", failing_open(errno.EMFILE))
    monkeypatch.setattr(static_reply.os, "open", failing_open(errno.EMFILE))
    assert serve_file(site / "a.txt", "GET", {}).status == 503
    replies: list[str] = []
    body = StaticFiles(site)({"REQUEST_METHOD": "GET", "PATH_INFO": "/a.txt"}, lambda s, h: replies.append(s))
    assert replies == ["503 Service Unavailable"] and b"".join(body).startswith(b"503")


def test_a_real_descriptor_shortage_answers_503(site):
    """The audit's case, in a process of its own: every descriptor taken, then a GET of an existing small file."""
    script = f"""
import os, resource
from server.static import StaticMount, serve_path
mount = StaticMount("/", {str(site)!r})
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print(serve_path(mount, "GET", "/a.txt", {{}}).status)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stdout.split() == ["503"], result.stderr


def test_connections_leave_room_for_the_cache_and_not_half_the_limit():
    from server.engine import connections_within  # (imported here: the rest of the file runs without it)

    for limit in (160, 1024, 4096):
        budget = static_cache.descriptor_budget(limit)
        assert connections_within(limit, serves_files=True) == limit - 32 - budget  # a full cache always fits
        assert connections_within(limit, serves_files=False) == limit - 32


# -- 4. a directory's redirect keeps the query ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ("x=1", "/docs/?x=1"),
        ("q=a%20b&y=%2F", "/docs/?q=a%20b&y=%2F"),
        ("next=//evil.example/", "/docs/?next=//evil.example/"),  # after the "?": no host to change
        ("a\r\nSet-Cookie: x=1", "/docs/?a%0D%0ASet-Cookie:%20x=1"),
        ("frag#ment", "/docs/?frag%23ment"),
        ("caf\xe9", "/docs/?caf%E9"),
    ],
)
def test_the_directory_redirect_keeps_the_query(site, query, location):
    reply = serve_path(StaticMount("/", site), "GET", "/docs", {}, query=query)
    assert (reply.status, reply.header("Location")) == (301, location)


def test_the_directory_redirect_keeps_the_query_live_and_under_wsgi(site):
    with ServerThread(lambda e, s: [], static=(f"/static={site}",)) as server:
        sock = server.connect(TIMEOUT)
        with sock:
            sock.sendall(b"GET /static/docs?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n")
            status, headers, _ = read_response(sock)
    assert (status, headers["location"]) == (301, "/static/docs/?x=1&y=2")
    replies: list[tuple[str, list]] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/docs", "QUERY_STRING": "x=1", "SCRIPT_NAME": "/s"}
    StaticFiles(site)(environ, lambda status, headers: replies.append((status, headers)))
    assert ("Location", "/s/docs/?x=1") in replies[0][1]


# -- 5. a directory that cannot be listed -------------------------------------------------------------------------


def test_a_listing_that_cannot_be_read_is_404_with_one_line(site, monkeypatch, caplog):
    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(static_listing.os, "scandir", refuse)
    caplog.set_level(logging.WARNING, "server.static")
    mount = StaticMount("/", site, StaticOptions(listing=True))
    for _ in range(3):
        assert serve_path(mount, "GET", "/empty/", {}).status == 404
    warnings = static_warnings(caplog)
    assert len(warnings) == 1 and "cannot list" in warnings[0], warnings
    assert not any(record.exc_info for record in caplog.records)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
@pytest.mark.parametrize("mode", [0o311, 0o600])
def test_a_listing_of_a_directory_without_read_permission_is_404(site, mode):
    (site / "empty").chmod(mode)
    try:
        reply = serve_path(StaticMount("/", site, StaticOptions(listing=True)), "GET", "/empty/", {})
        assert reply.status == 404
    finally:
        (site / "empty").chmod(0o755)


def test_the_live_server_answers_an_unreadable_listing_without_a_traceback(site, monkeypatch, caplog):
    monkeypatch.setattr(static_listing.os, "scandir", lambda path: (_ for _ in ()).throw(PermissionError(13, "no")))
    caplog.set_level(logging.WARNING)
    with ServerThread(lambda e, s: [], static=(f"/s={site}",), static_listing=True) as server:
        for _ in range(2):
            assert requests.get(f"{server.url}/s/empty/", timeout=TIMEOUT).status_code == 404
    assert not any(record.exc_info for record in caplog.records)
    assert len(static_warnings(caplog)) == 1


# -- 9, 11. modification times beyond 9999, or in the future --------------------------------------------------------


def fake_stat(mtime: float) -> os.stat_result:
    # mode, ino, dev, nlink, uid, gid, size, then the times as ints, as floats, and in nanoseconds
    return os.stat_result((0o100644, 1, 1, 1, 0, 0, 10, 0, int(mtime), 0, 0.0, mtime, 0.0, 0, int(mtime * 1e9), 0))


@pytest.mark.parametrize("mtime", [253402300800.0, 1e15, time.time() + 3600])
def test_a_modification_time_after_now_sends_no_last_modified(mtime):
    """Not "now" either: that date would move with every refresh of the file's answer, and If-Range and
    If-Modified-Since would never match it again (a resumed download restarting from the start)."""
    reply = Prepared(fake_stat(mtime), "text/plain", None, []).answer("GET", {})
    assert reply.status == 200 and reply.header("Last-Modified") is None
    assert reply.header("ETag")  # which validates alone


def test_a_modification_time_before_the_year_1_sends_no_last_modified():
    reply = Prepared(fake_stat(-62135596801.0), "text/plain", None, []).answer("GET", {})
    assert reply.status == 200 and reply.header("Last-Modified") is None
    since = {"if-modified-since": "Sat, 01 Jan 2000 00:00:00 GMT"}
    assert Prepared(fake_stat(-62135596801.0), "text/plain", None, []).answer("GET", since).status == 200


def test_a_file_dated_in_the_future_is_validated_by_its_etag_alone(site):
    future = time.time() + 86400
    os.utime(site / "a.txt", (future, future))
    mount = StaticMount("/", site)
    first = serve_path(mount, "GET", "/a.txt", {})
    etag, now = first.header("ETag") or "", first.header("Date") or "Thu, 03 Dec 2026 00:00:00 GMT"
    assert first.header("Last-Modified") is None
    first.close()
    assert serve_path(mount, "GET", "/a.txt", {"if-none-match": etag}).status == 304
    for dated in ({"if-modified-since": now}, {"if-range": now, "range": "bytes=0-0"}):
        whole = serve_path(mount, "GET", "/a.txt", dated)  # no date to judge by: the whole file
        assert whole.status == 200
        whole.close()
    resumed = serve_path(mount, "GET", "/a.txt", {"if-range": etag, "range": "bytes=0-0"})
    assert resumed.status == 206
    resumed.close()


def test_a_file_dated_after_9999_is_served_live(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm to keep a 64-bit modification time")
    import tempfile

    root = Path(tempfile.mkdtemp(dir=shm))
    try:
        (root / "f.txt").write_bytes(b"far")
        os.utime(root / "f.txt", (253402300800 + 100,) * 2)
        if os.stat(root / "f.txt").st_mtime < 253402300800:
            pytest.skip("the file system clamps modification times")
        with ServerThread(lambda e, s: [], static=(f"/s={root}",)) as server:
            response = requests.get(f"{server.url}/s/f.txt", timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == b"far"
        assert "Last-Modified" not in response.headers  # dated after now
    finally:
        (root / "f.txt").unlink()
        root.rmdir()


# -- 13. symlinks to dotfiles, OPTIONS *, nosniff -------------------------------------------------------------------


@pytest.mark.parametrize("kernel", sorted({False, static_paths.KERNEL_CHECK}))
def test_following_symlinks_does_not_unhide_dotfiles(site, monkeypatch, kernel):
    monkeypatch.setattr(static_paths, "KERNEL_CHECK", kernel)
    follow = StaticMount("/", site, StaticOptions(follow_symlinks=True))
    assert serve_path(follow, "GET", "/notdot.txt", {}).status == 404
    both = StaticMount("/", site, StaticOptions(follow_symlinks=True, dotfiles=True))
    assert read_reply(serve_path(both, "GET", "/notdot.txt", {})) == b"SECRET=1"


@pytest.mark.parametrize("kernel", [True, False])
def test_following_symlinks_serves_sites_linked_from_dotted_folders(tmp_path, monkeypatch, kernel):
    """What --follow-symlinks is for: a public folder whose files are links into a package manager's store or a
    virtualenv, which live in dotted folders (node_modules/.pnpm, .venv, ~/.local). Only the target's own name
    is judged outside the root; a folder on the way is the link author's choice."""
    monkeypatch.setattr(static_paths, "KERNEL_CHECK", kernel)
    store = tmp_path / "node_modules" / ".pnpm" / "bootstrap@5" / "dist"
    store.mkdir(parents=True)
    (store / "b.css").write_bytes(b"body{}")
    (store / ".hidden.css").write_bytes(b"secret")
    public = tmp_path / "public"
    public.mkdir()
    (public / "bootstrap").symlink_to(store)
    follow = StaticMount("/", public, StaticOptions(follow_symlinks=True))
    assert read_reply(serve_path(follow, "GET", "/bootstrap/b.css", {})) == b"body{}"
    (public / "looks-plain.css").symlink_to(store / ".hidden.css")
    assert serve_path(follow, "GET", "/looks-plain.css", {}).status == 404  # the target itself is a dotfile
    assert serve_path(StaticMount("/", public, StaticOptions()), "GET", "/bootstrap/b.css", {}).status == 404


def test_a_listing_under_follow_symlinks_does_not_show_a_link_to_a_dotfile(site):
    mount = StaticMount("/", site, StaticOptions(follow_symlinks=True, listing=True))
    (site / "docs" / "index.html").unlink()
    (site / "docs" / "env-link").symlink_to(site / ".env")
    page = read_reply(serve_path(mount, "GET", "/docs/", {}))
    assert b"env-link" not in page


def test_options_asterisk_goes_to_the_app_beside_a_root_mount(site):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [environ["PATH_INFO"].encode()[:1] + b"!"]

    with ServerThread(app, static=(f"/={site}",)) as server:
        sock = server.connect(TIMEOUT)
        with sock:
            sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, body = read_response(sock)
    assert status == 200 and body.endswith(b"!")


def test_every_file_is_sent_with_nosniff(site):
    mount = StaticMount("/", site, StaticOptions(listing=True))
    for path in ("/a.txt", "/docs/", "/empty/"):
        reply = serve_path(mount, "GET", path, {})
        assert reply.header("X-Content-Type-Options") == "nosniff", path
        read_reply(reply)
    assert serve_file(site / "a.txt", "HEAD", {}).header("X-Content-Type-Options") == "nosniff"


def test_the_http_date_of_the_last_second_of_9999_still_formats():
    assert http_date(253402300799) == "Fri, 31 Dec 9999 23:59:59 GMT"
