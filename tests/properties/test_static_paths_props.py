"""Properties of static path resolution: whatever URL path a client sends, nothing outside the root comes back.

A real tree is built once (module-scoped): files, dotfiles, and symlinks that stay inside the root or lead out
of it, to a file, a directory, a dotfile, themselves, or nowhere. Request paths are assembled from the pieces
attackers use (``..``, ``.``, empty segments, encoded and raw slashes and backslashes, NUL, overlong UTF-8,
double encoding, invalid UTF-8) and from real names, each byte percent-encoded or not at random. Then, for both
ways of checking where a path leads (the kernel's ``O_PATH`` answer and ``realpath``) and every mount option:

- :func:`split_request_path` never raises, and the segments it lets through are plain names;
- :func:`open_under_root` never raises, and what it opens is under the root (real path, ``commonpath``) and is
  no dotfile, unless the options say otherwise;
- :func:`serve_path` through a mount answers 200, 301 or 404 only; a 200 carries the bytes of a file the mount
  may serve, and a 301 points to a local path, never to another host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from server.static import StaticMount, StaticOptions, serve_path
from server.static import paths as static_paths
from server.static.paths import open_under_root, split_request_path
from tests.support import read_reply

STRATEGIES = [False, True] if static_paths.KERNEL_CHECK else [False]  # the kernel check needs Linux


@dataclass(frozen=True)
class Tree:
    root: str  # real path of the mount's root
    outside: str  # real path of the directory around it
    contents: dict[bytes, str]  # each file's unique content -> its real path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    outside = tmp_path_factory.mktemp("paths-props") / "outside"
    site = outside / "site"
    (site / "sub").mkdir(parents=True)
    (site / ".git").mkdir()
    files = {
        outside / "secret.txt": b"SECRET outside",
        outside / ".outside-dot": b"SECRET outside dotfile",
        site / "a.txt": b"public a",
        site / "sub" / "b.txt": b"public b",
        site / "sub" / "index.html": b"public index",
        site / "sub" / ".hidden": b"dot hidden",
        site / ".env": b"dot env",
        site / ".git" / "config": b"dot git config",
        site / "日本.txt": b"public kanji",
        site / "café.txt": b"public cafe",
        site / "%2e%2e": b"public literal percent name",
        site / "back\\slash.txt": b"public backslash name",
    }
    for path, content in files.items():
        path.write_bytes(content)
    links = {
        "link-out.txt": outside / "secret.txt",
        "dir-out": outside,
        "link-relative-up": Path("..") / "secret.txt",
        "link-in.txt": site / "a.txt",
        "dir-in": Path("sub"),
        "link-to-dotfile.txt": site / ".env",
        "link-out-to-dotfile.txt": outside / ".outside-dot",
        ".link-hidden": site / "a.txt",
        "loop": Path("loop"),
        "dangling": Path("nowhere"),
        "sub/up": Path(".."),
        "sub/up-up": Path("..") / "..",
    }
    for name, target in links.items():
        (site / name).symlink_to(target)
    return Tree(
        root=os.path.realpath(site),
        outside=os.path.realpath(outside),
        contents={content: os.path.realpath(path) for path, content in files.items()},
    )


# -- raw request paths ---------------------------------------------------------------------------------------

NAMES = [
    *["a.txt", "sub", "b.txt", "index.html", "secret.txt", "config", "日本.txt", "café.txt", "%2e%2e"],
    *["link-out.txt", "dir-out", "link-relative-up", "link-in.txt", "dir-in", "link-to-dotfile.txt"],
    "link-out-to-dotfile.txt",
    *["loop", "dangling", "up", "up-up", "site", "outside"],
    *[".env", ".git", ".hidden", ".link-hidden", ".outside-dot", "back\\slash.txt"],
]
# Written as raw URL text already: the way out, spelled every way we know.
ATTACKS = [
    *["..", ".", "", "%2e%2e", "%2E%2e", "%2e", ".%2e", "%2e.", "...", "%252e%252e", "%c0%ae%c0%ae", "%e0%80%ae"],
    *["%2f", "%2F", "..%2f..", "%5c", "%5C", "\\", "..\\..", "%00", "\x00", "a.txt%00.png", "%", "%2", "%zz"],
    *["%ff", "caf%E9.txt", "cafÃ©.txt", "\u00e9", "日本.txt", "%ef%bc%8f", "sub%2fb.txt", "sub%5cb.txt", "~"],
]


@st.composite
def encoded_names(draw: st.DrawFn) -> str:
    """A real name with each UTF-8 byte either sent as it is (a latin-1 character) or percent-encoded."""
    name = draw(st.sampled_from([*NAMES, ".", ".."]))
    pieces = []
    for byte in name.encode():
        how = draw(st.sampled_from(["raw", "raw", "upper", "lower"]))
        if how == "raw":
            pieces.append(chr(byte))
        else:
            pieces.append(f"%{byte:02X}" if how == "upper" else f"%{byte:02x}")
    return "".join(pieces)


def segments_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NAMES),
        st.sampled_from(NAMES),  # twice: real names are what turn an attack into a hit
        st.sampled_from(ATTACKS),
        encoded_names(),
        st.text(st.characters(max_codepoint=0xFF), max_size=6),  # anything the wire can carry
    )


@st.composite
def rests(draw: st.DrawFn) -> str:
    """The raw path below a mount: "" or "/" followed by segments, maybe with a trailing slash."""
    segments = draw(st.lists(segments_text(), max_size=draw(st.sampled_from([1, 2, 3, 6]))))
    if not segments and draw(st.booleans()):
        return ""
    return "/" + "/".join(segments) + ("/" if draw(st.booleans()) else "")


OPTIONS = [
    StaticOptions(),
    StaticOptions(dotfiles=True),
    StaticOptions(follow_symlinks=True),
    StaticOptions(dotfiles=True, follow_symlinks=True),
]


# -- the properties ------------------------------------------------------------------------------------------


def within(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def has_dotfile(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts if part != ".")


def leads_to_a_dotfile(real: str, root: str) -> bool:
    """Is the real path a dotfile by the mount's rule? Below the root, its names below the root; outside (where
    only following symlinks leads), its own name: the folders on the way are the link author's choice."""
    if within(real, root):
        return has_dotfile(real, root)
    return Path(real).name.startswith(".")


@given(rest=rests(), dotfiles=st.booleans())
@example(rest="/%2e%2e/secret.txt", dotfiles=True)
@example(rest="/sub%2f..%2f..%2fsecret.txt", dotfiles=False)
@example(rest="/..%5c..%5csecret.txt", dotfiles=True)
@example(rest="//etc/passwd", dotfiles=False)
@example(rest="/%c0%ae%c0%ae/secret.txt", dotfiles=True)
def test_split_request_path_lets_through_plain_names_only(rest: str, dotfiles: bool) -> None:
    result = split_request_path(rest, dotfiles=dotfiles)
    if result is None:
        return
    for segment in result.segments:
        assert segment not in ("", ".", "..")
        assert not any(char in segment for char in "/\\\x00")
        assert dotfiles or not segment.startswith(".")
    # So joining them to the root can only go down, whatever the file system holds.
    assert within(os.path.normpath(os.path.join("/root", *result.segments)), "/root")


@given(rest=rests(), options=st.sampled_from(OPTIONS), kernel=st.sampled_from(STRATEGIES))
@example(rest="/link-out.txt", options=StaticOptions(), kernel=STRATEGIES[-1])
@example(rest="/sub/up-up/secret.txt", options=StaticOptions(dotfiles=True), kernel=False)
@example(rest="/link-to-dotfile.txt", options=StaticOptions(), kernel=STRATEGIES[-1])
@example(rest="/dir-out/site/a.txt", options=StaticOptions(), kernel=False)
@example(rest="/link-to-dotfile.txt", options=StaticOptions(follow_symlinks=True), kernel=False)
@example(rest="/link-out-to-dotfile.txt", options=StaticOptions(follow_symlinks=True), kernel=STRATEGIES[-1])
def test_open_under_root_never_leaves_the_root(tree: Tree, rest: str, options: StaticOptions, kernel: bool) -> None:
    target = split_request_path(rest, dotfiles=options.dotfiles)
    if target is None:
        return
    with mock.patch.object(static_paths, "KERNEL_CHECK", kernel):
        opened = open_under_root(tree.root, target.segments, options)
    event("opened" if opened is not None else "refused or missing")
    if opened is None:
        return
    try:
        if options.follow_symlinks:
            # Symlinks may lead anywhere by the operator's choice; the names asked for still stay below the root,
            # and following them never unhides a dotfile: only the dotfiles option does.
            assert within(os.path.normpath(os.path.join(tree.root, *target.segments)), tree.root)
            real = os.path.realpath(opened.path)
            assert options.dotfiles or not leads_to_a_dotfile(real, tree.root), (rest, real)
        else:
            real = os.path.realpath(opened.path)
            assert within(real, tree.root), (rest, real)
            assert options.dotfiles or not has_dotfile(real, tree.root), (rest, real)
        assert opened.is_dir or opened.fd >= 0
    finally:
        opened.close()


@pytest.fixture(scope="module")
def mounts(tree: Tree) -> dict[tuple[str, StaticOptions], StaticMount]:
    # One mount per prefix and options for the whole module, so later examples also meet the open-file cache.
    return {
        (prefix, options): StaticMount(prefix, Path(tree.root), options)
        for prefix in ("/", "/static")
        for options in OPTIONS
    }


@given(
    rest=rests(),
    prefix=st.sampled_from(["/", "/static"]),
    before=st.sampled_from(["", "", "", "/static", "/staticx", "/static%2f", "/STATIC", "/static/.."]),
    options=st.sampled_from(OPTIONS),
    kernel=st.sampled_from(STRATEGIES),
    method=st.sampled_from(["GET", "GET", "HEAD"]),
)
@example(rest="/..", prefix="/static", before="/static", options=StaticOptions(), kernel=False, method="GET")
@example(rest="/sub", prefix="/", before="/", options=StaticOptions(), kernel=False, method="GET")
def test_serve_path_only_serves_what_the_mount_allows(
    tree: Tree,
    mounts: dict[tuple[str, StaticOptions], StaticMount],
    rest: str,
    prefix: str,
    before: str,
    options: StaticOptions,
    kernel: bool,
    method: str,
) -> None:
    raw_path = (before + rest) or "/"
    with mock.patch.object(static_paths, "KERNEL_CHECK", kernel):
        reply = serve_path(mounts[prefix, options], method, raw_path, {})
    body = read_reply(reply)
    event(f"status {reply.status}")
    assert reply.status in (200, 301, 404), (raw_path, reply.status)
    if reply.status == 301:
        location = reply.header("Location")
        assert location is not None and location.startswith("/") and not location.startswith("//"), location
        assert "\\" not in location
    if reply.status != 200 or method == "HEAD":
        return
    assert body in tree.contents, (raw_path, body)  # the bytes of one of our files, not of a listing or worse
    real = tree.contents[body]
    if not options.follow_symlinks:
        assert within(real, tree.root), (raw_path, real)
    assert options.dotfiles or not leads_to_a_dotfile(real, tree.root), (raw_path, real)


@given(query=st.text(st.characters(max_codepoint=0xFF)), prefix=st.sampled_from(["/", "/static"]))
@example(query="a\r\nSet-Cookie: x=1", prefix="/")
@example(query="x=1#@evil.example", prefix="/static")
def test_a_redirect_keeps_any_query_safely(
    mounts: dict[tuple[str, StaticOptions], StaticMount], query: str, prefix: str
) -> None:
    """``/sub?query`` redirects to ``/sub/?query``: the same bytes once decoded, and nothing in the header that
    could end it (CR, LF), start a fragment (#) or be anything but printable ASCII."""
    base = prefix.rstrip("/") + "/sub"
    reply = serve_path(mounts[prefix, StaticOptions()], "GET", base, {}, query=query)
    assert reply.status == 301
    location = reply.header("Location") or ""
    assert location.isascii() and location.isprintable() and " " not in location and "#" not in location
    path, mark, kept = location.partition("?")
    assert path == base + "/" and bool(mark) == bool(query)
    assert unquote_to_bytes(kept) == unquote_to_bytes(query.encode("latin-1"))
