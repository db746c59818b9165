"""The guestbook: CSRF, validation errors next to their fields, escaping, pagination, and data that lasts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from webtest import TestApp

from apps import guestbook
from apps.common import AttemptLimiter


@pytest.fixture
def book(data_dir: Path) -> TestApp:
    """The guestbook on its own, three entries to a page so that pagination shows quickly."""
    return TestApp(guestbook.create_app(data_dir, per_page=3))


def sign(client: TestApp, name: str, message: str, status: int | str = 303):
    """Fill in and submit the form, as a browser would (the CSRF token comes along as a hidden field)."""
    form = client.get("/").forms[0]
    form["name"] = name
    form["message"] = message
    return form.submit(status=status)


def stored_entries(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "guestbook.sqlite3") as db:
        return db.execute("SELECT name, message FROM entries ORDER BY id").fetchall()


def test_an_empty_guestbook_shows_the_form(book):
    page = book.get("/")
    assert page.html.select_one("p.empty").text == "No entries yet: be the first."
    form = page.forms[0]
    assert form.method.lower() == "post" and form["csrf_token"].value
    assert {"name", "message", "csrf_token"} <= set(form.fields)


def test_signing_redirects_and_shows_the_entry_with_a_thank_you(book, data_dir):
    response = sign(book, "Ada", "Hello from the analytical engine.")
    assert response.headers["Location"].endswith("/")
    page = response.follow()
    assert page.html.select_one(".entry-name").text == "Ada"
    assert page.html.select_one(".entry-message").text == "Hello from the analytical engine."
    assert "Thank you, Ada" in page.html.select_one("p.flash").text
    assert "Thank you" not in book.get("/").text, "the flash message is shown once"
    assert stored_entries(data_dir) == [("Ada", "Hello from the analytical engine.")]


def test_every_entry_is_escaped(book):
    page = sign(book, "<b>Mallory</b>", "<script>alert('owned')</script> & <img src=x onerror=alert(1)>").follow()
    assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>Mallory" not in page.text
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in page.text
    assert page.html.select_one(".entry-name").text == "<b>Mallory</b>"


def errors_by_field(page) -> dict[str, str]:
    """Each error message keyed by the field it sits next to (in the same .field block as the input)."""
    found = {}
    for field in page.html.select(".field.invalid"):
        control = field.select_one("input, textarea")
        error = field.select_one(".error")
        assert control["aria-describedby"] == error["id"], "the error is tied to its field for screen readers"
        found[control["name"]] = error.text
    return found


def test_an_empty_form_is_400_with_both_errors_next_to_their_fields(book, data_dir):
    page = sign(book, "  ", "", status=400)
    assert errors_by_field(page) == {"name": "Please tell us your name.", "message": "Please write a message."}
    assert page.forms[0]["csrf_token"].value, "the re-rendered form can be submitted again"
    assert stored_entries(data_dir) == []


def test_an_invalid_form_keeps_what_the_visitor_typed(book, data_dir):
    sign(book, "Grace", "Already here.")
    too_long = "x" * (guestbook.MESSAGE_LIMIT + 1)
    page = sign(book, "Grace <Hopper>", too_long, status=400)
    assert list(errors_by_field(page)) == ["message"]
    assert "at most 1000 characters" in errors_by_field(page)["message"]
    form = page.forms[0]
    assert form["name"].value == "Grace <Hopper>" and form["message"].value == too_long
    assert 'value="Grace &lt;Hopper&gt;"' in page.text
    assert page.html.select_one(".entry-message").text == "Already here.", "the list is still shown"
    assert stored_entries(data_dir) == [("Grace", "Already here.")]

    long_name = "n" * (guestbook.NAME_LIMIT + 1)
    page = sign(book, long_name, "fine", status=400)
    assert list(errors_by_field(page)) == ["name"]
    assert page.forms[0]["message"].value == "fine"


def test_a_post_without_the_csrf_token_is_refused(book, data_dir):
    book.get("/")  # The visitor has a session, so only the token is missing.
    response = book.post("/", {"name": "Eve", "message": "forged"}, status=403)
    assert "CSRF" in response.text
    book.post("/", {"name": "Eve", "message": "forged", "csrf_token": "guess"}, status=403)
    assert stored_entries(data_dir) == []


def test_a_post_with_missing_fields_is_400_not_500(book):
    token = book.get("/").forms[0]["csrf_token"].value
    page = book.post("/", {"csrf_token": token}, status=400)
    assert set(errors_by_field(page)) == {"name", "message"}


def names(page) -> list[str]:
    return [entry.text for entry in page.html.select(".entry-name")]


def test_entries_are_paginated_newest_first(data_dir):
    book = TestApp(guestbook.create_app(data_dir, per_page=3, limiter=AttemptLimiter(10, 60)))  # 7 entries at once
    for number in range(1, 8):
        sign(book, f"Visitor {number}", f"Message {number}")
    first = book.get("/")
    assert names(first) == ["Visitor 7", "Visitor 6", "Visitor 5"]
    assert first.html.select_one("main h2").text == "7 entries"
    assert "Page 1 of 3" in first.html.select_one("nav.pagination").text
    assert not first.html.select('a[rel="prev"]')
    second = first.click(linkid=None, href=r"page=2")
    assert names(second) == ["Visitor 4", "Visitor 3", "Visitor 2"]
    assert second.html.select_one('a[rel="prev"]')["href"].endswith("page=1")
    last = book.get("/?page=3")
    assert names(last) == ["Visitor 1"]
    assert not last.html.select('a[rel="next"]')


@pytest.mark.parametrize(
    "page, status",
    [
        ("4", 404),
        ("0", 400),
        ("000", 400),
        ("-1", 400),
        ("two", 400),
        ("²", 400),
        (str(2**62), 404),  # (page - 1) * per_page overflows SQLite's OFFSET
        (str(2**63), 404),  # past SQLite's integers
        pytest.param("9" * 5000, 404, id="5000 digits"),  # past the 4,300 digits int() converts
    ],
)
def test_a_page_that_does_not_exist_is_an_error_page(book, page, status):
    sign(book, "Only", "one entry")
    response = book.get("/", {"page": page}, status=status)
    assert response.html.select_one("header.site-header"), "in the site's layout"


def test_entries_survive_a_restart(data_dir):
    sign(TestApp(guestbook.create_app(data_dir)), "Before", "the restart")
    restarted = TestApp(guestbook.create_app(data_dir))
    assert restarted.get("/").html.select_one(".entry-name").text == "Before"


def test_the_session_survives_a_restart_because_the_key_is_kept(data_dir):
    """A form loaded before a restart can still be submitted after it: the secret key is in the data dir."""
    before = TestApp(guestbook.create_app(data_dir))
    form = before.get("/").forms[0]
    after = TestApp(guestbook.create_app(data_dir), cookiejar=before.cookiejar)
    form.app = after  # Submit the old page's form to the new process.
    form["name"], form["message"] = "Patient", "I waited"
    form.submit(status=303)
    assert (data_dir / "secret_key").stat().st_mode & 0o077 == 0, "the key is private to its owner"


def test_the_guestbook_is_mounted_in_the_site(site):
    form = site.get("/guestbook/").forms[0]
    assert form.action == "/guestbook/"
    form["name"], form["message"] = "Linus", "Mounted"
    assert urlsplit(form.submit(status=303).headers["Location"]).path == "/guestbook/"


@pytest.mark.parametrize(
    ("name", "message", "field"),
    [
        ("nul\x00", "hello", "name"),
        ("\u202eyromaM", "hello", "name"),  # a right-to-left override: it would read "Mamory" backwards
        ("zero\u200bwidth", "hello", "name"),
        ("two\nlines", "hello", "name"),
        ("Ada", "nul\x00", "message"),
        ("Ada", "evil\u202etxt.exe", "message"),
        ("Ada", "escape\x1b[2J", "message"),
        ("\u2067isolated", "hello", "name"),  # a right-to-left isolate reorders what follows it too
        ("tag\U000e0041\U000e0042", "hello", "name"),  # tag characters: invisible text
    ],
)
def test_control_and_invisible_characters_are_refused(book, data_dir, name, message, field):
    """NUL and U+202E were stored as they were, and shown to every later visitor."""
    page = sign(book, name, message, status=400)
    assert "control, invisible or direction-changing" in page.html.select_one(f"#{field}-error").text
    assert stored_entries(data_dir) == []


def test_a_message_keeps_its_line_breaks_and_tabs_and_a_name_its_emoji(book, data_dir):
    family = "\U0001f469\u200d\U0001f467"  # two emoji joined by a zero-width joiner: one picture
    sign(book, f"Ada {family}", "first line\r\nsecond\tline")
    assert stored_entries(data_dir) == [(f"Ada {family}", "first line\r\nsecond\tline")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("\u05d3\u05e0\u05d4", "\u05de\u05d7\u05d9\u05e8 100\u200f%"),  # Hebrew, with a right-to-left mark
        ("\u0639\u0644\u064a", "\u0627\u0644\u0633\u0639\u0631 \u061c123"),  # Arabic, with the Arabic letter mark
        ("Ada", "co\u00adoperate"),  # a soft hyphen, as pasted from a web page
        ("Ada\u2060Lovelace", "hello"),  # a word joiner
    ],
)
def test_the_marks_of_ordinary_text_are_kept(book, data_dir, name, message):
    """Found in review: refusing every format character (Cf) refused Hebrew and Arabic text with its direction
    marks, and text with a soft hyphen. Only what reorders or hides text is refused."""
    sign(book, name, message)
    assert stored_entries(data_dir) == [(name, message)]


class Clock:
    """A clock the test moves by hand, for the signing limit's window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_signing_too_often_is_429_with_retry_after(data_dir):
    """One session posted 500 entries in 1.4 s, all kept. Each client may sign SIGNING_LIMIT times a minute."""
    clock = Clock()
    app = guestbook.create_app(data_dir, limiter=AttemptLimiter(guestbook.SIGNING_LIMIT, 60, clock=clock))
    flooder = TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})
    for number in range(guestbook.SIGNING_LIMIT):
        sign(flooder, "Flood", f"Message {number}")
    page = sign(flooder, "Flood", "one too many", status=429)
    assert page.headers["Retry-After"] == "60"
    assert "try again in 60 seconds" in page.html.select_one("#message-error").text
    assert page.html.select_one("textarea").text == "one too many", "what was typed is kept"
    sign(TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.2"}), "Someone else", "still welcome")
    clock.now += 60
    sign(flooder, "Flood", "a minute later")
    assert len(stored_entries(data_dir)) == guestbook.SIGNING_LIMIT + 2


def test_the_guestbook_keeps_the_newest_entries(data_dir):
    """With no bound, entries took the disk (over 1 GB an hour from one client) and every page counted them all."""
    app = guestbook.create_app(data_dir, max_entries=3, limiter=AttemptLimiter(10, 60))
    book = TestApp(app)
    for number in range(1, 6):
        sign(book, f"Visitor {number}", f"Message {number}")
    assert [name for name, _ in stored_entries(data_dir)] == ["Visitor 3", "Visitor 4", "Visitor 5"]
    page = book.get("/")
    assert page.html.select_one("main h2").text == "3 entries"
    assert "keeps the newest 3 entries" in " ".join(page.html.select_one("p.lead").text.split())
