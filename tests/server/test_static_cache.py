"""The open-file cache behind ``serve_path``: hits, and every way a hit must turn back into the full check.

Each test gets a fresh cache with a clock it moves by hand (no sleeps), and counts how often the full check
(``open_under_root``) runs, so "served from the cache" and "checked again" are facts, not guesses. The tree is
the security tests' one: ``outside/secret.txt`` beside ``outside/site/``, the root.
"""

import os
import stat
import threading
from pathlib import Path

import pytest

from server.static import FileReply, StaticMount, StaticOptions, serve_path
from server.static import cache as cache_module
from server.static import reply as static_reply
from server.static.cache import CachedPath, FileView, OpenFileCache, SharedFile
from server.static.paths import KERNEL_CHECK
from tests.support import read_reply

SECRET = b"top secret"

needs_proc = pytest.mark.skipif(not KERNEL_CHECK, reason="the cache needs O_PATH and /proc/self/fd (Linux)")


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(monkeypatch, clock) -> OpenFileCache:
    fresh = OpenFileCache(clock=clock, max_descriptors=64)
    monkeypatch.setattr(static_reply, "OPEN_FILES", fresh)
    yield fresh
    fresh.clear()


@pytest.fixture
def full_checks(monkeypatch) -> list[tuple[str, ...]]:
    """The segments of every full check (``open_under_root``) made while answering requests."""
    calls: list[tuple[str, ...]] = []
    real = static_reply.open_under_root

    def counting(root, segments, options):
        calls.append(segments)
        return real(root, segments, options)

    monkeypatch.setattr(static_reply, "open_under_root", counting)
    return calls


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    site = outside / "site"
    (site / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (site / "a.txt").write_bytes(b"public a")
    (site / "sub" / "b.txt").write_bytes(b"public b")
    (site / "docs").mkdir()
    (site / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (site / "app.css").write_bytes(b"body { color: red }\n")
    (site / "app.css.gz").write_bytes(b"GZIP-BYTES")
    return site


@pytest.fixture
def mount(tree: Path) -> StaticMount:
    return StaticMount("/", tree)


def get(mount: StaticMount, path: str, method: str = "GET", **headers: str) -> FileReply:
    return serve_path(mount, method, path, {name.replace("_", "-"): value for name, value in headers.items()})


def assert_refused(reply: FileReply) -> None:
    body = read_reply(reply)
    assert reply.status == 404, (reply.status, body)
    assert SECRET not in body


pytestmark = pytest.mark.usefixtures("cache")


# -- hits ----------------------------------------------------------------------------------------------------


@needs_proc
def test_a_second_request_is_served_without_the_full_check(mount, cache, full_checks):
    first = get(mount, "/a.txt")
    first_headers, first_body = first.headers, read_reply(first)
    assert full_checks == [("a.txt",)]
    assert len(cache) == 1
    second = get(mount, "/a.txt")
    assert full_checks == [("a.txt",)]  # no second check: the cache answered
    assert second.status == 200
    assert second.headers == first_headers
    assert read_reply(second) == first_body == b"public a"


@needs_proc
def test_a_hit_answers_head_conditions_and_ranges_per_request(mount, full_checks):
    etag = get(mount, "/a.txt", "HEAD").header("ETag")
    head = get(mount, "/a.txt", "HEAD")
    assert head.status == 200 and head.file is None and head.header("Content-Length") == "8"
    assert get(mount, "/a.txt", if_none_match=etag).status == 304
    assert get(mount, "/a.txt", if_match='"other"').status == 412
    ranged = get(mount, "/a.txt", range="bytes=-1")
    assert ranged.status == 206 and ranged.header("Content-Range") == "bytes 7-7/8"
    assert read_reply(ranged) == b"a"
    assert get(mount, "/a.txt", range="bytes=9-").status == 416
    assert len(full_checks) == 1


def test_head_lines_are_the_replys_own_headers_whenever_given(mount, tree):
    """The server sends ``head_lines`` instead of serialising ``headers`` when a reply has them: they must say
    exactly the same, for every kind of answer (a miss and a hit, GET and HEAD, 304, 206, 404, an empty file)."""
    (tree / "empty.txt").write_bytes(b"")
    etag = get(mount, "/a.txt").header("ETag")
    replies = [get(mount, "/a.txt"), get(mount, "/a.txt"), get(mount, "/a.txt", "HEAD"), get(mount, "/empty.txt"),
               get(mount, "/a.txt", if_none_match=etag), get(mount, "/a.txt", range="bytes=0-1"),
               get(mount, "/missing.txt"), get(mount, "/app.css", accept_encoding="gzip")]  # fmt: skip
    with_lines = [reply for reply in replies if reply.head_lines]
    assert len(with_lines) >= 3  # the usual answers have them
    for reply in with_lines:
        assert reply.head_lines == "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
    for reply in replies:
        reply.close()


@needs_proc
def test_replies_from_the_cache_have_their_own_read_positions(mount):
    get(mount, "/a.txt").close()
    one, two = get(mount, "/a.txt"), get(mount, "/a.txt")
    assert isinstance(one.file, FileView) and one.file.fileno() == two.file.fileno()  # one shared descriptor
    assert one.file.read(3) == b"pub"
    assert two.file.read() == b"public a"  # unaffected by the other's reads
    assert one.file.read() == b"lic a"
    one.file.seek(-1, os.SEEK_END)
    assert one.file.tell() == 7 and one.file.read() == b"a"
    one.close()
    assert one.file.closed and two.file.read() == b""
    two.close()


@needs_proc
def test_a_small_hit_comes_read_and_keeps_no_reference(mount, cache, full_checks):
    """With ``read_up_to`` (the server's loop), a hit's body of at most that size comes in ``body``, read from the
    re-proven descriptor, and the reply holds no reference to it: clearing the cache closes the descriptor."""
    first = get(mount, "/a.txt")
    fd = first.file.fileno()
    first.close()
    small = serve_path(mount, "GET", "/a.txt", {}, read_up_to=8)
    assert (small.status, small.file, small.body, small.header("Content-Length")) == (200, None, b"public a", "8")
    ranged = serve_path(mount, "GET", "/a.txt", {"range": "bytes=1-3"}, read_up_to=8)
    assert (ranged.status, ranged.file, ranged.body) == (206, None, b"ubl")
    head = serve_path(mount, "HEAD", "/a.txt", {}, read_up_to=8)
    assert (head.status, head.file, head.body) == (200, None, b"")
    bigger = serve_path(mount, "GET", "/a.txt", {}, read_up_to=7)  # over the limit: a file, as without it
    assert isinstance(bigger.file, FileView) and read_reply(bigger) == b"public a"
    assert full_checks == [("a.txt",)]  # every one a hit
    cache.clear()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: no reply read into memory kept a reference


@needs_proc
def test_a_small_hit_that_shrank_after_its_stat_takes_the_full_check(mount, tree, full_checks, monkeypatch):
    """The file is truncated between the stat that proves it and the read: the short read is not sent under the
    old Content-Length; the full check answers with what the file is now."""
    get(mount, "/a.txt").close()
    real_pread = os.pread
    truncated = []

    def pread_after_truncation(fd, length, offset):
        if not truncated:
            truncated.append(fd)
            os.truncate(tree / "a.txt", 3)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", pread_after_truncation)
    reply = serve_path(mount, "GET", "/a.txt", {}, read_up_to=1024)
    assert truncated and len(full_checks) == 2
    assert reply.header("Content-Length") == "3" and read_reply(reply) == b"pub"


@needs_proc
def test_a_small_hit_whose_read_fails_takes_the_full_check(mount, full_checks, monkeypatch):
    """A read error (EIO, say) on the cached descriptor is not an answer: the reference goes back and the full
    check, with its own descriptor, decides."""
    first = get(mount, "/a.txt")
    fd = first.file.fileno()
    first.close()
    real_pread = os.pread

    def failing_on_the_cached_descriptor(file_fd, length, offset):
        if file_fd == fd:
            raise OSError(5, "Input/output error")
        return real_pread(file_fd, length, offset)

    monkeypatch.setattr(os, "pread", failing_on_the_cached_descriptor)
    reply = serve_path(mount, "GET", "/a.txt", {}, read_up_to=1024)
    assert len(full_checks) == 2
    assert reply.status == 200 and read_reply(reply) == b"public a"


@needs_proc
def test_other_methods_are_never_answered_from_the_cache(mount, full_checks):
    get(mount, "/a.txt").close()
    reply = get(mount, "/a.txt", "POST")
    assert reply.status == 405 and reply.header("Allow") == "GET, HEAD"
    assert len(full_checks) == 2


@needs_proc
def test_each_mount_has_its_own_entries(tree, full_checks):
    get(StaticMount("/", tree), "/a.txt").close()
    reply = get(StaticMount("/", tree, StaticOptions(max_age=60)), "/a.txt")
    assert reply.header("Cache-Control") == "public, max-age=60"  # not the other mount's headers
    reply.close()
    assert len(full_checks) == 2


def test_without_the_kernel_check_nothing_is_cached(mount, cache, full_checks, monkeypatch):
    monkeypatch.setattr(static_reply.paths, "KERNEL_CHECK", False)
    for _ in range(2):
        assert read_reply(get(mount, "/a.txt")) == b"public a"
    assert len(full_checks) == 2 and len(cache) == 0


# -- invalidation: the file changed ------------------------------------------------------------------------


@needs_proc
def test_a_rewritten_file_is_checked_again_and_served_new(mount, tree, full_checks):
    assert read_reply(get(mount, "/a.txt")) == b"public a"
    (tree / "a.txt").write_bytes(b"new contents")
    reply = get(mount, "/a.txt")
    assert reply.header("Content-Length") == "12"
    assert read_reply(reply) == b"new contents"
    assert len(full_checks) == 2


@needs_proc
def test_a_touched_file_gets_its_new_etag_at_once(mount, tree):
    before = get(mount, "/a.txt", "HEAD").header("ETag")
    st = os.stat(tree / "a.txt")
    os.utime(tree / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    after = get(mount, "/a.txt", "HEAD").header("ETag")
    assert after != before
    assert get(mount, "/a.txt", if_none_match=before).status == 200


@needs_proc
def test_a_file_replaced_by_rename_is_served_new_even_with_the_same_size_and_mtime(mount, tree):
    path = tree / "a.txt"
    first = get(mount, "/a.txt", "HEAD").header("ETag")
    st = os.stat(path)
    replacement = tree / "a.txt.new"
    replacement.write_bytes(b"PUBLIC A")  # same size
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))  # and same mtime: only the inode differs
    os.replace(replacement, path)
    reply = get(mount, "/a.txt")
    assert reply.header("ETag") != first
    assert read_reply(reply) == b"PUBLIC A"


@needs_proc
def test_a_deleted_file_is_404_at_once(mount, tree):
    get(mount, "/a.txt").close()
    (tree / "a.txt").unlink()
    assert get(mount, "/a.txt").status == 404


@needs_proc
def test_a_chmod_is_enough_to_take_the_full_check_again(mount, tree, full_checks):
    get(mount, "/a.txt").close()
    os.chmod(tree / "a.txt", 0o640)  # changes st_ctime only: the cached decision is no longer trusted
    get(mount, "/a.txt").close()
    assert len(full_checks) == 2


@needs_proc
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_file_replaced_by_a_fifo_is_refused_without_blocking(mount, tree):
    get(mount, "/a.txt").close()
    (tree / "a.txt").unlink()
    os.mkfifo(tree / "a.txt")
    assert stat.S_ISFIFO(os.stat(tree / "a.txt").st_mode)
    assert_refused(get(mount, "/a.txt"))


@needs_proc
def test_a_retargeted_symlink_serves_its_new_target(mount, tree):
    (tree / "link.txt").symlink_to("a.txt")
    assert read_reply(get(mount, "/link.txt")) == b"public a"
    (tree / "link.txt").unlink()
    (tree / "link.txt").symlink_to(Path("sub") / "b.txt")
    assert read_reply(get(mount, "/link.txt")) == b"public b"


# -- invalidation: the way to the file changed (the security cases) ---------------------------------------------


@needs_proc
def test_a_directory_swapped_for_a_symlink_between_two_requests_is_refused(mount, tree):
    assert read_reply(get(mount, "/sub/b.txt")) == b"public b"
    decoy = tree.parent / "decoy"
    decoy.mkdir()
    (decoy / "b.txt").write_bytes(SECRET)
    (tree / "sub").rename(tree / "sub-moved")
    (tree / "sub").symlink_to(decoy)
    assert_refused(get(mount, "/sub/b.txt"))


@needs_proc
def test_a_directory_moved_out_of_the_root_is_refused_though_the_file_is_unchanged(mount, tree, full_checks):
    """``stat`` still finds the very file that was checked; only its real path says it left the root."""
    assert read_reply(get(mount, "/sub/b.txt")) == b"public b"
    moved = tree.parent / "moved-out"
    (tree / "sub").rename(moved)  # b.txt keeps its inode, size, mtime and ctime
    (tree / "sub").symlink_to(moved)
    assert_refused(get(mount, "/sub/b.txt"))
    assert full_checks == [("sub", "b.txt"), ("sub", "b.txt")]  # the second request was checked in full


@needs_proc
def test_a_directory_renamed_to_a_dotfile_is_refused(mount, tree):
    assert read_reply(get(mount, "/sub/b.txt")) == b"public b"
    (tree / "sub").rename(tree / ".private")
    (tree / "sub").symlink_to(".private")
    assert_refused(get(mount, "/sub/b.txt"))


@needs_proc
def test_with_follow_symlinks_a_moved_directory_is_still_served(tree):
    """The mount's full check ignores real paths, so the cache does not compare them either."""
    mount = StaticMount("/", tree, StaticOptions(follow_symlinks=True))
    assert read_reply(get(mount, "/sub/b.txt")) == b"public b"
    moved = tree.parent / "moved-out"
    (tree / "sub").rename(moved)
    (tree / "sub").symlink_to(moved)
    assert read_reply(get(mount, "/sub/b.txt")) == b"public b"


@needs_proc
def test_the_root_moved_away_refuses_what_was_cached_below_it(mount, tree):
    assert read_reply(get(mount, "/sub/b.txt")) == b"public b"
    assert read_reply(get(mount, "/a.txt")) == b"public a"
    tree.rename(tree.parent / "site-old")
    tree.symlink_to(tree.parent / "site-old")  # the old path still leads to the same files, from elsewhere
    assert_refused(get(mount, "/sub/b.txt"))
    # A file directly in the root is re-proved by its stat alone (its ctime moves with any rename, link or
    # unlink of its own): the very same unchanged file may still be answered until its entry expires...
    assert read_reply(get(mount, "/a.txt")) == b"public a"
    static_reply.OPEN_FILES.clear()
    # ...and once the entry is gone, the full check refuses it like everything else.
    assert_refused(get(mount, "/a.txt"))


@needs_proc
def test_a_file_directly_in_the_root_is_re_proved_by_its_stat(mount, tree, full_checks):
    assert read_reply(get(mount, "/a.txt")) == b"public a"
    checks = len(full_checks)
    os.rename(tree / "a.txt", tree / "moved.txt")
    os.symlink("moved.txt", tree / "a.txt")  # same inode, new name: the rename moved its ctime
    assert read_reply(get(mount, "/a.txt")) == b"public a"  # a symlink inside the root is allowed...
    assert len(full_checks) == checks + 1  # ...but it was the full check that said so, not the cache
    os.unlink(tree / "a.txt")
    (tree / "a.txt").symlink_to(tree.parent / "secret.txt")
    assert_refused(get(mount, "/a.txt"))


# -- directories and precompressed siblings ----------------------------------------------------------------


@needs_proc
def test_a_directory_index_is_cached_and_follows_its_directory(mount, tree, full_checks):
    assert read_reply(get(mount, "/docs/")) == b"<h1>docs</h1>"
    checks = len(full_checks)
    assert read_reply(get(mount, "/docs/")) == b"<h1>docs</h1>"
    assert len(full_checks) == checks  # a hit
    assert get(mount, "/docs").status == 301  # redirects are never cached
    assert len(full_checks) == checks + 1
    (tree / "docs").rename(tree / ".docs")
    (tree / "docs").symlink_to(".docs")
    assert_refused(get(mount, "/docs/"))


@needs_proc
def test_an_index_reached_through_a_symlinked_directory_is_not_cached(mount, tree, full_checks):
    (tree / "docs-link").symlink_to("docs")
    for _ in range(2):
        assert read_reply(get(mount, "/docs-link/")) == b"<h1>docs</h1>"
    assert full_checks.count(("docs-link",)) == 2


@needs_proc
def test_siblings_are_chosen_per_request_from_the_cache(mount, full_checks):
    plain = get(mount, "/app.css")
    assert plain.header("Vary") == "Accept-Encoding" and plain.header("Content-Encoding") is None
    plain.close()
    checks = len(full_checks)
    gzipped = get(mount, "/app.css", accept_encoding="gzip, br")
    assert gzipped.header("Content-Encoding") == "gzip" and gzipped.header("Vary") == "Accept-Encoding"
    assert read_reply(gzipped) == b"GZIP-BYTES"
    assert read_reply(get(mount, "/app.css", accept_encoding="identity")) == b"body { color: red }\n"
    assert len(full_checks) == checks


@needs_proc
def test_a_deleted_sibling_falls_back_to_the_file(mount, tree):
    get(mount, "/app.css", accept_encoding="gzip").close()
    (tree / "app.css.gz").unlink()
    reply = get(mount, "/app.css", accept_encoding="gzip")
    assert reply.header("Content-Encoding") is None
    assert read_reply(reply) == b"body { color: red }\n"


@needs_proc
def test_a_new_sibling_is_offered_once_the_entry_expires(mount, tree, cache, clock):
    get(mount, "/app.css", accept_encoding="br").close()
    (tree / "app.css.br").write_bytes(b"BROTLI")
    clock.now += cache.ttl / 2
    reply = get(mount, "/app.css", accept_encoding="br")
    assert reply.header("Content-Encoding") is None  # the documented delay: siblings are known per entry
    reply.close()
    clock.now += cache.ttl
    reply = get(mount, "/app.css", accept_encoding="br")
    assert reply.header("Content-Encoding") == "br"
    assert read_reply(reply) == b"BROTLI"


@needs_proc
def test_a_sibling_that_leads_out_is_not_served_from_the_cache_either(mount, tree):
    (tree / "style.css").write_bytes(b"plain css")
    (tree.parent / "evil.gz").write_bytes(SECRET)
    (tree / "style.css.gz").symlink_to(tree.parent / "evil.gz")
    for _ in range(2):
        reply = get(mount, "/style.css", accept_encoding="gzip")
        assert reply.header("Content-Encoding") is None
        assert read_reply(reply) == b"plain css"


# -- expiry and bounds ---------------------------------------------------------------------------------------


@needs_proc
def test_an_expired_entry_takes_the_full_check_again(mount, cache, clock, full_checks):
    get(mount, "/a.txt").close()
    clock.now += cache.ttl
    get(mount, "/a.txt").close()
    assert len(full_checks) == 2 and len(cache) == 1


@needs_proc
def test_the_cache_holds_at_most_its_descriptor_budget(tree, monkeypatch, clock):
    small = OpenFileCache(clock=clock, max_descriptors=3)
    monkeypatch.setattr(static_reply, "OPEN_FILES", small)
    mount = StaticMount("/", tree)
    names = [f"f{index}.txt" for index in range(10)]
    for name in names:
        (tree / name).write_bytes(name.encode())
    for name in names:
        assert read_reply(get(mount, f"/{name}")) == name.encode()
        assert small.descriptors <= 3 and len(small) <= 3
    # The newest entries stay; the oldest went first.
    assert [key[1] for key in small._entries] == ["/f7.txt", "/f8.txt", "/f9.txt"]
    small.clear()
    assert small.descriptors == 0 and len(small) == 0


@needs_proc
def test_an_entry_with_more_files_than_the_budget_is_served_but_not_kept(mount, monkeypatch, clock):
    tiny = OpenFileCache(clock=clock, max_descriptors=1)
    monkeypatch.setattr(static_reply, "OPEN_FILES", tiny)
    reply = get(mount, "/app.css", accept_encoding="gzip")  # the file and its sibling: two descriptors
    assert read_reply(reply) == b"GZIP-BYTES"
    assert len(tiny) == 0


@needs_proc
def test_an_evicted_file_stays_open_until_its_last_reply_closes(mount, cache):
    get(mount, "/a.txt").close()
    reply = get(mount, "/a.txt")
    fd = reply.file.fileno()
    cache.clear()  # evicted while the reply is still sending
    os.fstat(fd)  # still open
    reply.file.seek(0)
    assert reply.file.read() == b"public a"
    reply.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with its last reference (nothing else opened a file since)


def test_expired_entries_are_evicted_as_new_ones_arrive(tmp_path, clock):
    cache = OpenFileCache(clock=clock, ttl=1.0, max_descriptors=10)
    entries = []
    for index in range(3):
        path = tmp_path / f"{index}.txt"
        path.write_bytes(b"x")
        entries.append(_entry_for(path))
        cache.put(("test", index), entries[-1])
    clock.now += 1.0
    fresh = _entry_for(tmp_path / "0.txt")
    cache.put(("test", "fresh"), fresh)
    assert len(cache) == 1 and cache.descriptors == 1
    assert all(entry.plain.shared._references == 0 for entry in entries)  # their descriptors are closed
    assert cache.get(("test", 0)) is None
    assert cache.get(("test", "fresh")) is fresh
    cache.clear()


def _entry_for(path: Path) -> CachedPath:
    from server.static.cache import CachedFile
    from server.static.reply import Prepared

    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    prepared = Prepared(st, "text/plain", None, [])
    return CachedPath(CachedFile(SharedFile(fd), str(path), st, str(path), False, prepared), (), {})


# -- the shared descriptor -----------------------------------------------------------------------------------


def test_a_shared_file_closes_with_its_last_reference_and_cannot_be_revived(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"0123456789")
    shared = SharedFile(os.open(path, os.O_RDONLY))
    assert shared.acquire()
    view = FileView(shared)
    shared.release()  # the creator's reference
    with view:
        assert view.read(4) == b"0123"
        assert view.readable() and view.seekable() and "b" in view.mode
    assert view.closed
    assert not shared.acquire()  # refused: its descriptor number may already belong to another file
    with pytest.raises(ValueError):
        view.fileno()


def test_views_on_one_descriptor_from_many_threads_read_their_own_bytes(tmp_path):
    data = bytes(range(256)) * 64
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    shared = SharedFile(os.open(path, os.O_RDONLY))
    results: list[bytes] = []
    lock = threading.Lock()

    def read_all() -> None:
        assert shared.acquire()
        with FileView(shared) as view:
            chunks = []
            while chunk := view.read(1000):
                chunks.append(chunk)
        with lock:
            results.append(b"".join(chunks))

    threads = [threading.Thread(target=read_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [data] * 8
    shared.release()


@needs_proc
@pytest.mark.parametrize("change", ["deleted", "made a directory", "a symlink out of the root", "renamed to a dotfile"])
def test_a_sibling_is_served_only_while_its_file_is(mount, tree, full_checks, change):
    """The full check starts from the file's own path: once that is refused, so is its cached sibling, at once
    rather than when the entry expires."""
    assert read_reply(get(mount, "/app.css", accept_encoding="gzip")) == b"GZIP-BYTES"
    original = tree / "app.css"
    if change == "renamed to a dotfile":
        original.rename(tree / ".app.css")
    else:
        original.unlink()
        if change == "made a directory":
            original.mkdir()
        elif change == "a symlink out of the root":
            original.symlink_to(tree.parent / "secret.txt")
    reply = get(mount, "/app.css", accept_encoding="gzip")
    body = read_reply(reply)
    assert reply.status == (301 if change == "made a directory" else 404), (reply.status, body)
    assert b"GZIP-BYTES" not in body and SECRET not in body


@needs_proc
def test_expired_entries_are_closed_without_waiting_for_a_new_file(mount, tree, cache, clock):
    """A quiet server must not keep a deleted file's blocks: the engine's sweep calls evict_expired."""
    read_reply(get(mount, "/a.txt"))
    read_reply(get(mount, "/app.css", accept_encoding="gzip"))
    assert len(open_files_under(tree)) == 3  # a.txt, app.css and its .gz, held by the cache alone
    clock.now += cache.ttl / 2
    cache.evict_expired()
    assert len(open_files_under(tree)) == 3  # not expired yet: kept
    clock.now += cache.ttl
    cache.evict_expired()
    assert open_files_under(tree) == [] and cache.descriptors == 0 and len(cache) == 0


@needs_proc
def test_a_sibling_hit_leaves_no_reference_behind(mount, tree, cache, clock):
    # The file is re-proved (a reference taken and given back) before its sibling is served from the cache.
    for _ in range(3):
        assert read_reply(get(mount, "/app.css", accept_encoding="gzip")) == b"GZIP-BYTES"
    clock.now += cache.ttl * 2
    cache.evict_expired()
    assert open_files_under(tree) == []


def open_files_under(directory: Path) -> list[str]:
    """What this process has open below ``directory``, by the kernel's account."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, say)
        if target.startswith(f"{directory}/"):
            found.append(target)
    return found


def test_a_close_that_fails_is_logged_and_does_not_stop_the_release(tmp_path, monkeypatch, caplog):
    # An eviction releases several entries in a row: one failing close (EIO on a network file system) must not
    # leave the others' references held, nor raise into the loop's sweep.
    path = tmp_path / "f"
    path.write_bytes(b"x")
    descriptor = os.open(path, os.O_RDONLY)
    real_close = os.close

    def failing_close(fd: int) -> None:
        real_close(fd)  # Linux lets go of the descriptor even when close reports an error
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cache_module.os, "close", failing_close)
    shared = SharedFile(descriptor)
    shared.release()
    assert "Input/output error" in caplog.text
    with pytest.raises(OSError):
        os.fstat(descriptor)  # closed all the same
