"""The blog of docs/framework.md (apps/blog/): the factory, the database, accounts, and posts with authors,
tested with the framework's test client as the guide shows."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from apps.blog import create_app, db
from apps.blog.db import get_db
from framework import App
from framework.security import generate_password_hash
from framework.testing import TestClient

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "long enough"  # For new accounts: at least PASSWORD_MIN_LENGTH characters.
CHEAP = "pbkdf2:sha256:1000"  # Stored hashes for the fixtures: the tests are about the blog, not about scrypt.


# --- fixtures: one app, one database, one client per test ------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> App:
    """A blog with two users (test/test and other/other) and one post by test, in a database of its own."""
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "blog.sqlite")}, instance_path=tmp_path)
    with sqlite3.connect(app.config["DATABASE"]) as db:
        db.executemany(
            "INSERT INTO user (username, password) VALUES (?, ?)",
            [("test", generate_password_hash("test", CHEAP)), ("other", generate_password_hash("other", CHEAP))],
        )
        db.execute(
            "INSERT INTO post (title, body, author_id, created)"
            " VALUES ('test title', 'test\nbody', 1, '2026-01-01T00:00:00Z')"
        )
    return app


@pytest.fixture
def client(app: App) -> TestClient:
    return app.test_client()


class Accounts:
    """Log in and out the way a visitor does, through the forms."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def login(self, username: str = "test", password: str = "test"):
        return self.client.post("/auth/login", data={"username": username, "password": password})

    def logout(self):
        return self.client.post("/auth/logout")


@pytest.fixture
def accounts(client: TestClient) -> Accounts:
    return Accounts(client)


def count(app: App, sql: str, *parameters: object) -> int:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        return int(db.execute(sql, parameters).fetchone()[0])


# --- the factory and the database ----------------------------------------------------------------------------


def test_the_factory_takes_settings_and_reads_the_environment(tmp_path: Path, monkeypatch) -> None:
    assert not create_app(instance_path=tmp_path).config["TESTING"]
    assert create_app({"TESTING": True}, instance_path=tmp_path).config["TESTING"]
    monkeypatch.setenv("BLOG_SECRET_KEY", "from the environment")
    (tmp_path / "config.toml").write_text('SECRET_KEY = "from the file"\nTITLE_NOTE = "kept"\n')
    config = create_app(instance_path=tmp_path).config
    assert config["SECRET_KEY"] == "from the environment" and config["TITLE_NOTE"] == "kept"
    assert config["DATABASE"] == str(tmp_path / "blog.sqlite") and (tmp_path / "blog.sqlite").exists()


def test_without_a_configured_key_the_blog_generates_one_and_keeps_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BLOG_SECRET_KEY", raising=False)
    key = create_app(instance_path=tmp_path).config["SECRET_KEY"]
    assert key != "dev" and len(key) >= 32
    assert (tmp_path / "secret_key").read_text().strip() == key
    assert create_app(instance_path=tmp_path).config["SECRET_KEY"] == key  # The same key after a restart.


def forged_session(app: App, key: str) -> str:
    """A complete session of the user test (its id and session generation), signed with ``key``: the cookie a
    forger who knew that key would send."""
    forger = create_app({"SECRET_KEY": key, "DATABASE": app.config["DATABASE"]}, instance_path=app.instance_path)
    forging = forger.test_client()
    with forging.session_transaction() as session:
        session["user_id"] = 1
        session["generation"] = 0
    cookie = forging.get_cookie("session")
    assert cookie is not None
    return cookie.value


@pytest.mark.parametrize(("key", "logged_in"), [("dev", False), ("the app's own", True)])
def test_a_session_signed_with_the_old_default_key_is_refused(app: App, key: str, logged_in: bool) -> None:
    """Only the key tells the forgery from the real thing: the same session signed with the app's own key (the
    control) logs in."""
    client = app.test_client()
    client.set_cookie("session", forged_session(app, app.config["SECRET_KEY"] if key == "the app's own" else key))
    assert ("<span>test</span>" in client.get("/").text) is logged_in


def test_a_new_blog_creates_its_database(tmp_path: Path) -> None:
    app = create_app({"TESTING": True}, instance_path=tmp_path / "fresh")
    assert count(app, "SELECT COUNT(*) FROM user") == 0 and app.test_client().get("/").status_code == 200


def test_the_instance_folder_is_not_in_version_control() -> None:
    """It holds a deployment's database and secret key: a tracked copy would ship them to everyone who clones."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "apps/blog/instance"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert listed.stdout == ""


def test_one_connection_per_request_closed_when_it_ends(app: App) -> None:
    with app.test_request_context() as request:
        db = get_db(request)
        assert get_db(request) is db
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")


def test_a_connection_opened_by_a_view_is_closed_after_the_response(app: App, client: TestClient) -> None:
    opened: list[sqlite3.Connection] = []

    @app.after_request
    def remember(request, response):
        opened.append(request.g.db)
        return response

    client.get("/")
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")


def test_init_db_command_empties_the_database(app: App) -> None:
    # A key of its own, so that the command does not keep a generated one in the repository's apps/blog/instance.
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "BLOG_DATABASE": app.config["DATABASE"], "BLOG_SECRET_KEY": "t"}
    result = subprocess.run(
        [sys.executable, "-m", "framework", "--app", "apps.blog:create_app()", "init-db"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Initialized the database." in result.stdout
    assert count(app, "SELECT COUNT(*) FROM user") == 0


# --- accounts --------------------------------------------------------------------------------------------------


def test_register_creates_an_account_with_a_hashed_password(app: App, client: TestClient) -> None:
    assert client.get("/auth/register").status_code == 200
    response = client.post("/auth/register", data={"username": "a", "password": PASSWORD})
    assert response.status_code == 303 and response.location == "/auth/login"
    with sqlite3.connect(app.config["DATABASE"]) as db:
        (stored,) = db.execute("SELECT password FROM user WHERE username = 'a'").fetchone()
    assert stored.startswith("scrypt:32768:8:1$") and "secret" not in stored
    assert "Your account is ready" in client.get("/auth/login").text


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("", "", "Username is required."),
        ("a", "", "Password is required."),
        ("a", "x", "Passwords must be at least 8 characters long."),
        ("a", "seven77", "Passwords must be at least 8 characters long."),
        ("test", PASSWORD, "User test is already registered."),
    ],
)
def test_register_refuses_bad_input(client: TestClient, username: str, password: str, message: str) -> None:
    response = client.post("/auth/register", data={"username": username, "password": password})
    assert response.status_code == 400 and message in response.text


def test_login_remembers_the_user(client: TestClient, accounts: Accounts) -> None:
    assert client.get("/auth/login").status_code == 200
    response = accounts.login()
    assert response.status_code == 303 and response.location == "/"
    assert client.session["user_id"] == 1
    page = client.get("/")
    assert "<span>test</span>" in page.text


@pytest.mark.parametrize(("username", "password"), [("a", "test"), ("test", "a")])
def test_login_refuses_wrong_credentials_with_one_message(accounts: Accounts, username: str, password: str) -> None:
    response = accounts.login(username, password)
    assert response.status_code == 400 and "Incorrect username or password." in response.text


def test_logout_forgets_the_user(client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    assert accounts.logout().status_code == 303
    assert "user_id" not in client.session


def test_logout_needs_the_csrf_token(client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    assert client.post("/auth/logout", csrf=False).status_code == 403
    assert client.session["user_id"] == 1


# --- posts -----------------------------------------------------------------------------------------------------


def test_index_shows_posts_and_links_for_whoever_is_there(client: TestClient, accounts: Accounts) -> None:
    page = client.get("/").text
    assert "Log in" in page and "Register" in page
    accounts.login()
    page = client.get("/").text
    assert "Log out" in page and "test title" in page and "by test on 1 January 2026" in page
    assert 'href="/1/update"' in page


@pytest.mark.parametrize("path", ["/create", "/1/update", "/1/delete"])
def test_writing_needs_a_login_and_an_anonymous_post_is_sent_to_log_in(client: TestClient, path: str) -> None:
    # Without a session, and so without a CSRF token: the login check runs before the CSRF check.
    response = client.post(path, csrf=False)
    assert response.status_code == 302 and response.location == "/auth/login"


def test_only_the_author_may_change_a_post(app: App, client: TestClient, accounts: Accounts) -> None:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        db.execute("UPDATE post SET author_id = 2 WHERE id = 1")
    accounts.login()
    assert client.post("/1/update", data={"title": "mine now", "body": ""}).status_code == 403
    assert client.post("/1/delete").status_code == 403
    assert 'href="/1/update"' not in client.get("/").text


@pytest.mark.parametrize("path", ["/2/update", "/2/delete"])
def test_a_missing_post_is_404(client: TestClient, accounts: Accounts, path: str) -> None:
    accounts.login()
    response = client.post(path, data={"title": "t"})
    assert response.status_code == 404 and "Post id 2 doesn&#39;t exist." in response.text


@pytest.mark.parametrize("path", [f"/{2**63}/update", f"/{2**63}/delete", f"/{'9' * 25}/delete"])
def test_an_id_beyond_sqlites_integers_is_404_not_500(client: TestClient, accounts: Accounts, path: str) -> None:
    accounts.login()
    assert client.get(path).status_code in (404, 405)
    assert client.post(path, data={"title": "t"}).status_code == 404


def test_create(app: App, client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    assert client.get("/create").status_code == 200
    response = client.post("/create", data={"title": "created", "body": ""}, follow_redirects=True)
    assert response.request_path == "/" and "Your post is published." in response.text
    assert count(app, "SELECT COUNT(*) FROM post") == 2


def test_update(app: App, client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    assert client.get("/1/update").status_code == 200
    client.post("/1/update", data={"title": "updated", "body": ""})
    assert count(app, "SELECT COUNT(*) FROM post WHERE title = 'updated'") == 1


@pytest.mark.parametrize("path", ["/create", "/1/update"])
def test_a_post_needs_a_title_and_keeps_what_was_typed(client: TestClient, accounts: Accounts, path: str) -> None:
    accounts.login()
    response = client.post(path, data={"title": "", "body": "my <long> text"})
    assert response.status_code == 400 and "Title is required." in response.text
    assert "my &lt;long&gt; text" in response.text


def test_delete(app: App, client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    response = client.post("/1/delete")
    assert response.status_code == 303 and response.location == "/"
    assert count(app, "SELECT COUNT(*) FROM post") == 0


def test_a_title_is_escaped_wherever_it_appears(client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    client.post("/create", data={"title": "<script>alert(1)</script>", "body": ""})
    page = client.get("/").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


# --- the blog in the demo site ---------------------------------------------------------------------------------


@pytest.fixture
def site_client(data_dir: Path) -> Iterator[TestClient]:
    from apps.demo import create_app as create_site

    yield create_site(data_dir).test_client()


def test_the_demo_site_mounts_the_blog_with_its_own_session(site_client: TestClient, data_dir: Path) -> None:
    assert 'href="/blog/"' in site_client.get("/").text
    page = site_client.get("/blog/")
    assert page.status_code == 200 and 'href="/blog/auth/login"' in page.text
    assert 'href="/blog/static/blog.css"' in page.text and site_client.get("/blog/static/blog.css").status_code == 200
    response = site_client.post("/blog/auth/register", data={"username": "ada", "password": PASSWORD})
    assert response.status_code == 303 and response.location == "/blog/auth/login"
    assert site_client.get_cookie("session_blog") is not None
    assert (data_dir / "blog" / "blog.sqlite").exists()


def test_the_blog_links_home_to_the_site(site_client: TestClient) -> None:
    """The blog had no way back to the site it is part of: no link to "/" on any of its pages."""
    for path in ("/blog/", "/blog/auth/login", "/blog/no-such-page"):
        assert '<a class="site" href="/">' in site_client.get(path).text, path


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/blog/999/update", 404, "Post id 999 doesn&#39;t exist."),
        ("/blog/1/update", 403, "Only its author may change a post."),
        ("/blog/auth/logout", 403, "CSRF"),  # a POST without the session's token
    ],
)
def test_the_blogs_errors_are_pages_of_the_site(
    site_client: TestClient, data_dir: Path, path: str, status: int, text: str
) -> None:
    """404, 403 and the CSRF refusal were the framework's bare pages: no layout, no way back."""
    site_client.post("/blog/auth/register", data={"username": "ada", "password": PASSWORD})
    site_client.post("/blog/auth/login", data={"username": "ada", "password": PASSWORD})
    with sqlite3.connect(data_dir / "blog" / "blog.sqlite") as db:
        db.execute("INSERT INTO user (username, password) VALUES ('eve', 'x')")
        db.execute("INSERT INTO post (title, body, author_id) VALUES ('by eve', '', 2)")
    response = site_client.post(path, csrf=False) if path.endswith("logout") else site_client.get(path)
    assert response.status_code == status
    assert text in response.text
    assert 'class="top"' in response.text and '<a class="site" href="/">' in response.text


# --- sessions end at logout, lookalike names, attempt limits, sizes ---------------------------------------------


def test_a_copy_of_the_session_cookie_is_logged_out_too(app: App, client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    copy = client.get_cookie("session")
    assert copy is not None
    accounts.logout()
    thief = app.test_client()
    thief.set_cookie("session", copy.value)
    assert "<span>test</span>" not in thief.get("/").text
    assert thief.post("/create", data={"title": "as test", "body": ""}, csrf=False).status_code == 302
    accounts.login()
    assert "<span>test</span>" in client.get("/").text, "logging in again starts a session that works"


def test_an_older_database_gets_the_generation_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE user (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE NOT NULL,"
            " password TEXT NOT NULL);"
            "CREATE TABLE post (id INTEGER PRIMARY KEY AUTOINCREMENT, author_id INTEGER NOT NULL,"
            " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), title TEXT NOT NULL,"
            " body TEXT NOT NULL);"
        )
        db.execute("INSERT INTO user (username, password) VALUES (?, ?)", ("old", generate_password_hash("pw", CHEAP)))
    app = create_app({"TESTING": True, "DATABASE": str(path)}, instance_path=tmp_path)
    assert count(app, "SELECT generation FROM user WHERE username = 'old'") == 0
    client = app.test_client()
    assert Accounts(client).login("old", "pw").status_code == 303
    assert "<span>old</span>" in client.get("/").text


FULL_WIDTH = ["\uff54\uff45\uff53\uff54", "\uff34\uff25\uff33\uff34"]  # "test" and "TEST" in full-width forms


@pytest.mark.parametrize("lookalike", ["Test", "TEST", " test ", *FULL_WIDTH])
def test_a_lookalike_of_a_username_is_the_same_name(client: TestClient, accounts: Accounts, lookalike: str) -> None:
    response = client.post("/auth/register", data={"username": lookalike, "password": PASSWORD})
    assert response.status_code == 400 and "User test is already registered." in response.text
    assert accounts.login(lookalike, "test").status_code == 303, "and it logs in as that user"


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("test\u200b", "control or invisible characters"),  # zero-width space
        ("\u202etset", "control or invisible characters"),  # right-to-left override
        ("a\x00b", "control or invisible characters"),
        ("te\u2028st", "control or invisible characters"),  # line separator
        ("te\u2029st", "control or invisible characters"),  # paragraph separator
        ("te st", "control or invisible characters"),
        ("te\u00a0st", "control or invisible characters"),  # no-break space
        ("te\u3000st", "control or invisible characters"),  # ideographic space
        ("x" * 31, "at most 30 characters"),
        ("\u200b", "control or invisible characters"),
    ],
)
def test_a_username_with_invisible_characters_or_too_long_is_refused(
    app: App, client: TestClient, username: str, message: str
) -> None:
    response = client.post("/auth/register", data={"username": username, "password": PASSWORD})
    assert response.status_code == 400 and message in response.text
    assert count(app, "SELECT COUNT(*) FROM user") == 2


def test_a_new_username_is_stored_in_its_canonical_spelling(app: App, client: TestClient) -> None:
    client.post("/auth/register", data={"username": "  \uff27race ", "password": PASSWORD})
    assert count(app, "SELECT COUNT(*) FROM user WHERE username = 'grace'") == 1


def test_too_many_login_attempts_are_429_with_retry_after(tmp_path: Path) -> None:
    from apps.common import AttemptLimiter

    now = [0.0]
    limiter = AttemptLimiter(limit=3, window=60, clock=lambda: now[0])
    app = create_app({"TESTING": True, "LOGIN_LIMITER": limiter}, instance_path=tmp_path)
    accounts = Accounts(app.test_client())
    for _ in range(3):
        assert accounts.login("nobody", "guess").status_code == 400
    refused = accounts.login("nobody", "guess")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert "Too many attempts: try again in 60 seconds." in refused.text
    elsewhere = {"username": "nobody", "password": "guess"}
    other = app.test_client().post("/auth/login", data=elsewhere, remote_addr="192.0.2.9")
    assert other.status_code == 429, "the username is limited from any address"
    assert accounts.client.post("/auth/register", data={"username": "new", "password": PASSWORD}).status_code == 429
    now[0] = 61
    assert accounts.login("nobody", "guess").status_code == 400, "the window moves on"


def test_the_attempt_limiter_forgets_the_oldest_key_beyond_its_bound() -> None:
    from apps.common import AttemptLimiter

    limiter = AttemptLimiter(limit=1, window=60, max_keys=2, clock=lambda: 0.0)
    assert limiter.retry_after("a") == 0 and limiter.retry_after("a") == 60
    limiter.retry_after("b")
    limiter.retry_after("c")
    assert len(limiter._attempts) == 2 and limiter.retry_after("a") == 0


def test_a_post_longer_than_the_limit_is_refused(app: App, client: TestClient, accounts: Accounts) -> None:
    accounts.login()
    response = client.post("/create", data={"title": "long", "body": "x" * 20_001})
    assert response.status_code == 400 and "longer than 20000 characters" in response.text
    assert count(app, "SELECT COUNT(*) FROM post") == 1


def test_the_index_shows_twenty_posts_a_page_with_a_link_to_the_next(app: App, client: TestClient) -> None:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        db.executemany(
            "INSERT INTO post (title, body, author_id, created) VALUES (?, '', 1, ?)",
            [(f"post {number}", f"2026-02-01T00:00:{number:02}Z") for number in range(30)],
        )
    first = client.get("/").text
    assert first.count('<article class="post">') == 20 and "post 29" in first and 'href="/?page=2"' in first
    second = client.get("/", query={"page": "2"}).text
    assert second.count('<article class="post">') == 11 and "test title" in second and 'href="/?page=1"' in second
    assert client.get("/", query={"page": "3"}).status_code == 404


# --- start-up on a database that two processes open at once ----------------------------------------------------


OLD_SCHEMA = (  # The blog's tables before the generation column.
    "CREATE TABLE user (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE NOT NULL, password TEXT NOT NULL);"
    "CREATE TABLE post (id INTEGER PRIMARY KEY AUTOINCREMENT, author_id INTEGER NOT NULL,"
    " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), title TEXT NOT NULL, body TEXT NOT NULL);"
)


def with_a_rival(monkeypatch, step: Callable[[Path], None], path: Path, statement: str) -> None:
    """Run ``step(path)`` as the first of two processes starting at the same moment: just as it starts the first
    statement containing ``statement``, the other process runs ``step(path)`` in full; or, if the first holds the
    database's write lock by then, right after the first has finished, as SQLite makes it wait. Connections do not
    wait for a lock here (timeout 0), so the order of events is exactly this one."""
    connect, rival_started, rival_waits, failures = sqlite3.connect, [], [], []

    def rival() -> None:
        try:
            step(path)
        except sqlite3.OperationalError as error:
            (rival_waits if "locked" in str(error) else failures).append(error)

    def trace(sql: str) -> None:
        if statement in sql and not rival_started:
            rival_started.append(sql)
            rival()

    def connect_without_waiting(*args, **kwargs) -> sqlite3.Connection:
        connection = connect(*args, **{**kwargs, "timeout": 0})
        connection.set_trace_callback(trace)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_without_waiting)
    step(path)
    assert rival_started and not failures
    if rival_waits:
        step(path)
    monkeypatch.undo()


def test_two_processes_create_the_tables_of_a_new_database_at_once(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "new.sqlite"
    with_a_rival(monkeypatch, db.create_tables_if_missing, path, "CREATE TABLE")
    assert count_in(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('user', 'post')") == 2


def test_two_processes_upgrade_an_older_database_at_once(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(OLD_SCHEMA)
    with_a_rival(monkeypatch, db.add_missing_columns, path, "ALTER TABLE")
    assert count_in(path, "SELECT count(*) FROM pragma_table_info('user') WHERE name = 'generation'") == 1


def count_in(path: Path, sql: str) -> int:
    with closing(sqlite3.connect(path)) as connection:
        return int(connection.execute(sql).fetchone()[0])


# --- accounts registered before usernames were canonical -------------------------------------------------------


def test_names_from_before_canonical_usernames_still_log_in_and_are_not_taken_again(tmp_path: Path, caplog) -> None:
    """``Bob`` can become ``bob``; ``Alice`` and ``ALICE``, or ``Eve`` beside a newer ``eve``, cannot all become
    one name, so they stay, and each logs in by typing the name as stored."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(OLD_SCHEMA)
        connection.executemany(
            "INSERT INTO user (username, password) VALUES (?, ?)",
            [
                (name, generate_password_hash(f"pw of {name}", CHEAP))
                for name in ["Bob", "Alice", "ALICE", "Eve", "eve"]
            ],
        )
    app = create_app({"TESTING": True, "DATABASE": str(path)}, instance_path=tmp_path)
    stored = {row[0] for row in sqlite3.connect(path).execute("SELECT username FROM user")}
    assert stored == {"bob", "Alice", "ALICE", "Eve", "eve"}
    assert "['ALICE', 'Alice'] all read as 'alice'" in caplog.text and "['Eve', 'eve']" in caplog.text

    def logs_in_as(typed: str, password: str) -> str | None:
        """The name the page shows once logged in with ``typed`` and ``password`` (``None``: not logged in)."""
        client = app.test_client()
        Accounts(client).login(typed, password)
        shown = re.search(r"<span>(.*?)</span>", client.get("/").text)
        return shown[1] if shown else None

    assert logs_in_as("Bob", "pw of Bob") == "bob" and logs_in_as("bob", "pw of Bob") == "bob"
    assert logs_in_as("Alice", "pw of Alice") == "Alice" and logs_in_as("ALICE", "pw of ALICE") == "ALICE"
    assert logs_in_as("Eve", "pw of Eve") == "Eve" and logs_in_as("eve", "pw of eve") == "eve"
    for taken in ["alice", "Alice", "bob"]:
        response = app.test_client().post("/auth/register", data={"username": taken, "password": PASSWORD})
        assert response.status_code == 400 and "already registered" in response.text, taken
    assert count(app, "SELECT COUNT(*) FROM user") == 5


# --- the attempt limiter: what a flood of refused attempts, a frequent user and IPv6 do to it ------------------


def test_refused_attempts_are_not_remembered_and_limited_keys_are_forgotten_last() -> None:
    from apps.common import AttemptLimiter

    now = [0.0]
    limiter = AttemptLimiter(limit=2, window=60, max_keys=3, clock=lambda: now[0])
    for key in ["user:victim", "user:victim", "address:attacker", "address:attacker"]:
        assert limiter.retry_after(key) == 0
    for number in range(10_000):  # Cheap: each is refused by the attacker's address before any password.
        assert limiter.retry_after("address:attacker", f"user:{number}") == 60
    assert limiter.retry_after("user:victim") == 60 and limiter.retry_after("address:attacker") == 60
    now[0] = 1
    assert limiter.retry_after("user:tried once") == 0
    assert limiter.retry_after("user:newcomer") == 0, "room is made by forgetting a key below the limit"
    assert limiter.retry_after("user:victim") == 59 and limiter.retry_after("address:attacker") == 59
    now[0] = 61
    assert limiter.retry_after("user:after the window") == 0, "expired keys go first"
    assert limiter.peek("user:newcomer") == 0 and limiter.retry_after("user:newcomer") == 0


def test_logging_in_often_never_locks_a_user_out(tmp_path: Path) -> None:
    from apps.common import AttemptLimiter

    limiter = AttemptLimiter(limit=3, window=60, clock=lambda: 0.0)
    app = create_app({"TESTING": True, "LOGIN_LIMITER": limiter}, instance_path=tmp_path)
    with sqlite3.connect(app.config["DATABASE"]) as connection:
        connection.execute(
            "INSERT INTO user (username, password) VALUES ('ada', ?)", (generate_password_hash("pw", CHEAP),)
        )
    for device in range(5):  # Five devices, each with its own address, log in within the minute.
        response = app.test_client().post(
            "/auth/login", data={"username": "ada", "password": "pw"}, remote_addr=f"192.0.2.{device}"
        )
        assert response.status_code == 303, device


def test_an_ipv6_client_is_limited_by_its_64(tmp_path: Path) -> None:
    """One client holds a whole /64, and a new address in it must not be a fresh allowance."""
    from apps.common import AttemptLimiter

    limiter = AttemptLimiter(limit=3, window=60, clock=lambda: 0.0)
    app = create_app({"TESTING": True, "LOGIN_LIMITER": limiter}, instance_path=tmp_path)

    def guess(address: str, username: str) -> int:
        data = {"username": username, "password": "guess"}
        return app.test_client().post("/auth/login", data=data, remote_addr=address).status_code

    assert [guess(f"2001:db8:1:2::{number}", f"name{number}") for number in range(1, 4)] == [400, 400, 400]
    assert guess("2001:db8:1:2:ffff:ffff:ffff:ffff", "name4") == 429
    assert guess("2001:db8:1:3::1", "name5") == 400, "the next /64 is another client"


def test_an_author_publishing_too_often_is_429_with_retry_after(
    app: App, client: TestClient, accounts: Accounts
) -> None:
    """One account published 200 posts of 20 KB in a second, all kept."""
    from apps.common import AttemptLimiter

    now = [0.0]
    app.config["POST_LIMITER"] = AttemptLimiter(limit=2, window=60, clock=lambda: now[0])
    accounts.login()
    for number in range(2):
        assert client.post("/create", data={"title": f"post {number}", "body": ""}).status_code == 303
    refused = client.post("/create", data={"title": "one too many", "body": "kept"})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert "Too many new posts: try again in 60 seconds." in refused.text
    assert 'value="one too many"' in refused.text, "what was typed is still in the form"
    assert Accounts(other := app.test_client()).login("other", "other").status_code == 303
    mine = {"title": "another author, same address", "body": ""}
    assert other.post("/create", data=mine).status_code == 429, "one visitor, a second account"
    elsewhere = {"title": "another author", "body": ""}
    assert other.post("/create", data=elsewhere, remote_addr="192.0.2.7").status_code == 303
    now[0] += 60
    assert client.post("/create", data={"title": "a minute later", "body": ""}).status_code == 303
    assert count(app, "SELECT COUNT(*) FROM post") == 1 + 2 + 1 + 1


def test_the_blog_keeps_the_newest_posts(app: App, client: TestClient, accounts: Accounts) -> None:
    app.config["MAX_POSTS"] = 2
    accounts.login()
    for title in ("second", "third"):
        client.post("/create", data={"title": title, "body": ""})
    with sqlite3.connect(app.config["DATABASE"]) as db:
        assert [title for (title,) in db.execute("SELECT title FROM post ORDER BY id")] == ["second", "third"]


@pytest.mark.parametrize(
    ("remote_addr", "key"),
    [
        ("192.0.2.7", "address:192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "address:2001:db8:1:2::/64"),
        # Found in review: under a dual-stack server every IPv4 client was "address:::/64", one key for all of them.
        ("::ffff:192.0.2.7", "address:192.0.2.7"),
        ("::ffff:198.51.100.9", "address:198.51.100.9"),
    ],
)
def test_address_key_names_a_client_and_an_ipv6_network(remote_addr: str, key: str) -> None:
    from apps.common import address_key

    class Seen:
        pass

    request = Seen()
    request.remote_addr = remote_addr  # type: ignore[attr-defined]
    assert address_key(request) == key  # type: ignore[arg-type]
