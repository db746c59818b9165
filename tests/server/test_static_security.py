"""No way out of the root: every escape attempt from issue 3, each one a test, and the options that relax
them.

The tree: ``outside/secret.txt`` next to ``outside/site/``, which is the mount's root. A request that reaches
the secret, or any dotfile, or a symlink leading out, is a failure; all of them must answer a plain 404.
"""

import os
import stat
from pathlib import Path

import pytest

from server.static import FileReply, StaticMount, StaticOptions, serve_path
from server.static import paths as static_paths
from server.static.paths import KERNEL_CHECK, split_request_path
from tests.support import read_reply

SECRET = b"top secret"


@pytest.fixture(
    autouse=True,
    params=[
        pytest.param(True, id="kernel-check", marks=pytest.mark.skipif(not KERNEL_CHECK, reason="Linux only")),
        pytest.param(False, id="realpath-check"),
    ],
)
def strategy(request, monkeypatch) -> bool:
    """Run every test with both ways of checking where a path leads (see server.static.paths)."""
    monkeypatch.setattr(static_paths, "KERNEL_CHECK", request.param)
    return request.param


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp_path/outside/{secret.txt, .env, site/...}``; returns the site (the root)."""
    outside = tmp_path / "outside"
    site = outside / "site"
    (site / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (site / "a.txt").write_bytes(b"public")
    (site / "sub" / "b.txt").write_bytes(b"public b")
    (site / ".env").write_bytes(b"PASSWORD=1")
    (site / ".git").mkdir()
    (site / ".git" / "config").write_bytes(b"[core]")
    (site / "sub" / ".hidden").write_bytes(b"hidden")
    (site / "hello world.txt").write_bytes(b"spaces")
    (site / "café.txt").write_bytes(b"accent")
    (site / "日本.txt").write_bytes(b"kanji")
    (site / "link-out.txt").symlink_to(outside / "secret.txt")
    (site / "dir-out").symlink_to(outside)
    (site / "link-in.txt").symlink_to(site / "a.txt")
    (site / "link-relative.txt").symlink_to(Path("sub") / "b.txt")
    (site / "link-to-dotfile.txt").symlink_to(site / ".env")
    return site


DEFAULTS = StaticOptions()


def fetch(root: Path, raw_path: str, options: StaticOptions = DEFAULTS, prefix: str = "/") -> FileReply:
    return serve_path(StaticMount(prefix, root, options), "GET", raw_path, {})


def assert_refused(reply: FileReply) -> None:
    body = read_reply(reply)
    assert reply.status == 404, (reply.status, body)
    assert SECRET not in body


def test_the_tree_itself_is_served(tree):
    assert read_reply(fetch(tree, "/a.txt")) == b"public"
    assert read_reply(fetch(tree, "/sub/b.txt")) == b"public b"


ESCAPES = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/sub/../a.txt",  # even when it would land inside: ".." is never resolved
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/%2f..%2fsecret.txt",
    "/sub%2Fb.txt",  # an encoded slash is refused, not turned into a separator
    "/..%5csecret.txt",
    "/sub%5cb.txt",
    "/..\\secret.txt",
    "/sub\\b.txt",
    "/\\..\\secret.txt",
    "/a.txt%00",
    "/a.txt%00.png",
    "/%00/secret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/%2Fetc/passwd",
    "//a.txt",
    "/sub//b.txt",
    "/./a.txt",
    "/%2e/a.txt",
    "/sub/./b.txt",
    "/etc/passwd",  # an absolute path is just a name under the root, and there is none
    str(Path(__file__).resolve()),
    "/%ff.txt",  # invalid UTF-8
    "/caf%e9.txt",  # latin-1, not UTF-8
    "/%c3%28.txt",
    "/a.txt\u0100",  # not a byte: cannot have come from the wire
    "a.txt",  # not a path at all
    "*",
]


@pytest.mark.parametrize("raw_path", ESCAPES)
def test_escape_attempts_are_refused(tree, raw_path):
    assert_refused(fetch(tree, raw_path))


@pytest.mark.parametrize(
    "raw_path", ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static%2f..%2fsecret.txt"]
)
def test_escape_attempts_under_a_prefix_are_refused(tree, raw_path):
    assert_refused(fetch(tree, raw_path, prefix="/static"))


@pytest.mark.parametrize("raw_path", ["/../secret.txt", "/%2e%2e/secret.txt", "/dir-out/secret.txt/..", "/.%2e"])
def test_dot_dot_stays_refused_when_dotfiles_are_allowed(tree, raw_path):
    assert_refused(fetch(tree, raw_path, StaticOptions(dotfiles=True)))


@pytest.mark.parametrize("raw_path", ["/link-out.txt", "/dir-out/secret.txt", "/dir-out/site/../secret.txt"])
def test_symlinks_leading_out_are_refused(tree, raw_path):
    assert_refused(fetch(tree, raw_path))


def test_symlinks_leading_out_are_served_with_follow_symlinks(tree):
    options = StaticOptions(follow_symlinks=True)
    assert read_reply(fetch(tree, "/link-out.txt", options)) == SECRET
    assert read_reply(fetch(tree, "/dir-out/secret.txt", options)) == SECRET


def test_symlinks_inside_the_root_are_served(tree):
    assert read_reply(fetch(tree, "/link-in.txt")) == b"public"
    assert read_reply(fetch(tree, "/link-relative.txt")) == b"public b"
    # Judged by where the path really ends: out through one link and back into the root is inside.
    assert read_reply(fetch(tree, "/dir-out/site/a.txt")) == b"public"


@pytest.mark.parametrize(
    "raw_path", ["/.env", "/.git/config", "/.git/", "/sub/.hidden", "/%2eenv", "/link-to-dotfile.txt"]
)
def test_dotfiles_are_refused(tree, raw_path):
    assert_refused(fetch(tree, raw_path))


def test_dotfiles_are_served_when_allowed(tree):
    options = StaticOptions(dotfiles=True)
    assert read_reply(fetch(tree, "/.env", options)) == b"PASSWORD=1"
    assert read_reply(fetch(tree, "/.git/config", options)) == b"[core]"
    assert read_reply(fetch(tree, "/link-to-dotfile.txt", options)) == b"PASSWORD=1"


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        ("/hello%20world.txt", b"spaces"),
        ("/caf%C3%A9.txt", b"accent"),
        ("/caf%c3%a9.txt", b"accent"),
        ("/caf\xc3\xa9.txt", b"accent"),  # raw UTF-8 on the wire, read as latin-1 by the HTTP parser
        ("/%E6%97%A5%E6%9C%AC.txt", b"kanji"),
        ("/%61.txt", b"public"),  # any character may be encoded
    ],
)
def test_spaces_and_non_ascii_names_work_when_encoded_as_utf8(tree, raw_path, expected):
    assert read_reply(fetch(tree, raw_path)) == expected


def test_a_precompressed_sibling_that_leads_out_is_not_served(tree):
    (tree / "style.css").write_bytes(b"plain css")
    (tree.parent / "evil.gz").write_bytes(SECRET)
    (tree / "style.css.gz").symlink_to(tree.parent / "evil.gz")
    reply = serve_path(StaticMount("/", tree), "GET", "/style.css", {"accept-encoding": "gzip"})
    assert reply.header("Content-Encoding") is None
    assert read_reply(reply) == b"plain css"


def test_a_listing_does_not_show_what_it_would_not_serve(tree):
    page = read_reply(fetch(tree, "/", StaticOptions(listing=True))).decode()
    assert "a.txt" in page and "link-in.txt" in page
    for hidden in (".env", ".git", "link-out.txt", "dir-out", "link-to-dotfile.txt"):
        assert hidden not in page
    assert 'href="../"' not in page  # no way up from the root


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tree):
    os.mkfifo(tree / "pipe")
    assert stat.S_ISFIFO(os.stat(tree / "pipe").st_mode)
    assert_refused(fetch(tree, "/pipe"))  # a blocking open() would hang this test until its timeout


def test_a_directory_swapped_for_a_symlink_before_the_open_is_caught(tree, monkeypatch, strategy):
    """The race realpath cannot close: "sub" becomes a symlink to outside between the check and the open."""
    if not strategy:
        pytest.skip("the documented residual risk of the portable realpath check")
    decoy = tree.parent / "decoy"
    decoy.mkdir()
    (decoy / "b.txt").write_bytes(SECRET)
    real_open = os.open

    def open_after_swap(path, flags, *args):
        if str(path).endswith("b.txt") and not (tree / "sub").is_symlink():
            (tree / "sub").rename(tree / "sub-moved")
            (tree / "sub").symlink_to(decoy)
        return real_open(path, flags, *args)

    monkeypatch.setattr(static_paths.os, "open", open_after_swap)
    assert_refused(fetch(tree, "/sub/b.txt"))


@pytest.mark.parametrize(
    ("rest", "segments", "trailing_slash"),
    [
        ("", (), False),
        ("/", (), True),
        ("/a/b.txt", ("a", "b.txt"), False),
        ("/a/", ("a",), True),
        ("/a%20b/c%2Bd", ("a b", "c+d"), False),
    ],
)
def test_split_request_path(rest, segments, trailing_slash):
    target = split_request_path(rest)
    assert target is not None
    assert (target.segments, target.trailing_slash) == (segments, trailing_slash)
