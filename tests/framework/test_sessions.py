"""Signed-cookie sessions: round trips, cookie attributes, tampering, expiry, key rotation, write-on-change."""

import hmac

import pytest
from webtest import TestApp

from framework import App, Session, Signer
from framework.sessions import CookieSessions, session_salt


class Clock:
    """A clock the test moves by hand, so expiry is tested without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(secret_key="s3cret", old_secret_keys=(), clock=None, **options) -> App:
    app = App(__name__, secret_key=secret_key, old_secret_keys=old_secret_keys, **options)
    if clock is not None:
        app.sessions = CookieSessions(secret_key, old_secret_keys, max_age=60, clock=clock)

    @app.route("/set/<key>/<value>")
    def set_value(request, key, value):
        request.session[key] = value
        return "set"

    @app.route("/get")
    def get_values(request):
        return dict(request.session)

    @app.route("/clear")
    def clear(request):
        request.session.clear()
        return "cleared"

    @app.route("/nothing")
    def nothing(request):
        return "no session use"

    return app


def session_cookie(response) -> str:
    (header,) = [value for value in response.headers.getall("Set-Cookie") if value.startswith("session=")]
    return header


def test_session_survives_across_requests():
    client = TestApp(make_app())
    client.get("/set/user/alice")
    client.get("/set/theme/dark")
    assert client.get("/get").json == {"user": "alice", "theme": "dark"}


def test_cookie_attributes():
    header = session_cookie(TestApp(make_app()).get("/set/a/1"))
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Max-Age=1209600" in header and "Secure" not in header
    header = session_cookie(TestApp(make_app(session_secure=True)).get("/set/a/1"))
    assert "Secure" in header
    # A session cookie set over HTTPS is Secure without being asked.
    header = session_cookie(TestApp(make_app()).get("/set/a/1", extra_environ={"wsgi.url_scheme": "https"}))
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


def test_cookie_is_written_only_when_the_session_changes():
    client = TestApp(make_app())
    assert "Set-Cookie" not in client.get("/nothing").headers
    client.get("/set/a/1")
    assert "Set-Cookie" not in client.get("/get").headers  # Read, not changed.
    assert "Set-Cookie" in client.get("/set/a/2").headers


def test_responses_that_use_the_session_vary_by_cookie():
    app = make_app()

    @app.route("/vary")
    def vary(request):
        request.session.get("user")
        return "Hello", 200, {"Vary": "Accept-Encoding"}

    client = TestApp(app)
    assert "Vary" not in client.get("/nothing").headers  # No session used: cacheable for everyone.
    assert client.get("/get").headers["Vary"] == "Cookie"  # Read only: no Set-Cookie, but still personal.
    assert client.get("/set/a/1").headers["Vary"] == "Cookie"
    assert client.get("/vary").headers["Vary"] == "Accept-Encoding, Cookie"


def test_clearing_the_session_deletes_the_cookie():
    client = TestApp(make_app())
    client.get("/set/a/1")
    header = session_cookie(client.get("/clear"))
    assert header.startswith("session=; Max-Age=0")
    assert client.get("/get").json == {}


def test_clearing_a_secure_session_deletes_it_with_the_same_attributes():
    # (Over https in both cases: a client keeps a Secure cookie to itself on plain http.)
    for app in (make_app(session_secure=True), make_app()):
        client = TestApp(app, extra_environ={"wsgi.url_scheme": "https", "HTTP_HOST": "localhost:443"})
        assert "Secure" in session_cookie(client.get("/set/a/1"))
        header = session_cookie(client.get("/clear"))
        assert header.startswith("session=; Max-Age=0")
        assert "Secure" in header and "SameSite=Lax" in header  # else the browser would keep the old cookie


def test_tampered_cookie_gives_an_empty_session():
    client = TestApp(make_app())
    token = session_cookie(client.get("/set/role/user")).split(";")[0].split("=", 1)[1]
    payload, stamp, signature = token.split(".")
    forged_payload = Signer("other key").sign(b'{"role":"admin"}').split(".")[0]
    for forged in [
        f"{forged_payload}.{stamp}.{signature}",
        f"{payload}.{stamp}.{signature[:-2]}AA",
        "garbage",
        "a.b.c",
        "ü.ü.ü",
        "",
    ]:
        fresh = TestApp(make_app())
        fresh.set_cookie("session", forged)
        assert fresh.get("/get").json == {}, forged


def test_cookie_signed_with_an_unknown_key_is_ignored():
    client = TestApp(make_app(secret_key="key one"))
    client.get("/set/a/1")
    other = TestApp(make_app(secret_key="key two"))
    other.cookiejar = client.cookiejar
    assert other.get("/get").json == {}


def test_expired_cookie_gives_an_empty_session():
    clock = Clock()
    client = TestApp(make_app(clock=clock))
    client.get("/set/a/1")
    clock.now += 59
    assert client.get("/get").json == {"a": "1"}
    clock.now += 2
    assert client.get("/get").json == {}


def test_key_rotation_accepts_old_keys_and_signs_with_the_new_one():
    client = TestApp(make_app(secret_key="old"))
    client.get("/set/a/1")
    rotated = TestApp(make_app(secret_key="new", old_secret_keys=["old"]))
    rotated.cookiejar = client.cookiejar
    response = rotated.get("/get")  # Only read, yet rewritten under the new key...
    assert response.json == {"a": "1"} and "session=" in response.headers["Set-Cookie"]
    assert "Set-Cookie" not in rotated.get("/get").headers  # ... once.
    new_only = TestApp(make_app(secret_key="new"))
    new_only.cookiejar = rotated.cookiejar
    assert new_only.get("/get").json == {"a": "1"}  # ... so the old key can now be dropped.


def test_signatures_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    app = make_app(secret_key="new", old_secret_keys=["old"])
    token = session_cookie(TestApp(app).get("/set/a/1")).split(";")[0].split("=", 1)[1]
    forged = token[:-4] + "AAAA"
    client = TestApp(app)
    client.set_cookie("session", forged)
    assert client.get("/get").json == {}
    # The forged signature was compared in constant time, with the current key and then the old one.
    assert [b for _, b in calls] == [forged.rsplit(".", 1)[1]] * 2


def test_signer_unit():
    clock = Clock()
    signer = Signer("key", ["older"], clock=clock)
    token = signer.sign(b"\x00payload\xff")
    assert signer.unsign(token) == b"\x00payload\xff"
    assert signer.unsign(token, max_age=10) == b"\x00payload\xff"
    clock.now += 11
    assert signer.unsign(token, max_age=10) is None
    assert Signer("older").unsign(token) is None
    assert signer.unsign(Signer("older").sign(b"x")) == b"x"
    assert signer.unsign_with_key(Signer("older").sign(b"x")) == (b"x", 1)
    assert signer.unsign_with_key(signer.sign(b"y")) == (b"y", 0)
    with pytest.raises(ValueError):
        Signer("")


def test_session_tracks_changes():
    session = Session({"a": 1}, new=False)
    assert not session.modified and not session.new
    session.get("a")
    assert not session.modified
    for change in (
        lambda s: s.__setitem__("b", 2),
        lambda s: s.pop("a"),
        lambda s: s.update(c=3),
        lambda s: s.setdefault("d", 4),
        lambda s: s.clear(),
        lambda s: s.__ior__({"e": 5}),  # session |= {...}
    ):
        session.modified = False
        change(session)
        assert session.modified


def test_non_dict_payload_gives_an_empty_session():
    app = make_app()
    token = Signer("s3cret", salt=session_salt("session", "")).sign(b"[1, 2]")
    client = TestApp(app)
    client.set_cookie("session", token)
    assert client.get("/get").json == {}


def test_sessions_need_a_secret_key(caplog):
    app = App(__name__)
    app.add_route("/", lambda request: request.session.get("x", "none"), name="index")
    TestApp(app).get("/", status=500)
    assert "secret key" in caplog.text


def test_a_mounted_app_with_its_own_key_keeps_its_own_session_under_another_name():
    parent = make_app(secret_key="parent")
    parent.mount("/admin", make_app(secret_key="admin", session_cookie="admin_session"))
    client = TestApp(parent)
    client.get("/set/user/visitor")
    client.get("/admin/set/user/root")
    assert client.get("/get").json == {"user": "visitor"}
    assert client.get("/admin/get").json == {"user": "root"}


def test_pop_and_setdefault_mark_the_session_changed_only_when_they_change_it():
    session = Session({"kept": 1}, new=False)
    assert session.pop("absent", None) is None and not session.modified
    assert session.setdefault("kept", 2) == 1 and not session.modified
    assert session.setdefault("added", 3) == 3 and session.modified
    session.modified = False
    assert session.pop("kept") == 1 and session.modified


@pytest.mark.parametrize("how", ["argument", "config", "environment"])
def test_an_old_key_given_alone_is_one_key_not_its_characters(how, monkeypatch):
    """``BLOG_SECRET_KEY_FALLBACKS=oldkey`` (not JSON, so kept as text), ``old_secret_keys="old"`` or a TOML
    ``SECRET_KEY_FALLBACKS = "old"`` used to be iterated: every character a signing key, so anyone could forge a
    session by trying a hundred one-letter keys."""
    app = make_app(secret_key="current", old_secret_keys="previous" if how == "argument" else ())
    if how == "config":
        app.config["SECRET_KEY_FALLBACKS"] = "previous"
    elif how == "environment":
        monkeypatch.setenv("APP_SECRET_KEY_FALLBACKS", "previous")
        app.config.from_prefixed_env("APP")
    client = TestApp(app)
    for key in ["p", "r", "e"]:
        client.set_cookie("session", Signer(key, salt=session_salt("session", "")).sign(b'{"user": "admin"}'))
        assert client.get("/get").json == {}
    client.set_cookie("session", Signer("previous", salt=session_salt("session", "")).sign(b'{"user": "admin"}'))
    assert client.get("/get").json == {"user": "admin"}  # the old key itself still works


@pytest.mark.parametrize("fallbacks", [[""], ["ok", b""], [None], ["ok", 5], 12345])
def test_an_empty_or_missing_old_key_is_refused(fallbacks):
    """An empty key is one everybody knows (``[os.environ.get("OLD_KEY", "")]`` made it a signing key); None
    used to pass the check and fail every request that touched the session with a 500."""
    app = make_app(secret_key="current")
    app.config["SECRET_KEY_FALLBACKS"] = fallbacks
    with pytest.raises((TypeError, ValueError), match="SECRET_KEY_FALLBACKS"):
        app.sessions  # noqa: B018 (the property builds the store)
    with pytest.raises((TypeError, ValueError), match="SECRET_KEY_FALLBACKS"):
        Signer("current", fallbacks)


def test_an_old_key_read_from_the_environment_as_a_number_says_to_quote_it(monkeypatch):
    app = make_app(secret_key="current")
    monkeypatch.setenv("APP_SECRET_KEY_FALLBACKS", "12345")
    app.config.from_prefixed_env("APP")
    with pytest.raises(TypeError, match="quote a key that looks like a number"):
        app.sessions  # noqa: B018


def test_a_session_made_not_permanent_ends_with_the_browser():
    """``session.permanent = False`` was accepted and ignored: the cookie kept its 14 days. Now such a session's
    cookie has no Max-Age (the browser drops it when it closes), on every later write too, while a permanent
    session (the default) keeps SESSION_MAX_AGE; the signature's timestamp bounds both on the server."""
    app = make_app()

    @app.route("/remember/<choice>")
    def remember(request, choice):
        request.session["user"] = "alice"
        request.session.permanent = choice == "yes"
        return {"permanent": request.session.permanent}

    client = TestApp(app)
    response = client.get("/remember/no")
    assert response.json == {"permanent": False}
    assert "Max-Age" not in session_cookie(response) and "Expires" not in session_cookie(response)
    later = client.get("/set/theme/dark")  # the choice travels with the session
    assert "Max-Age" not in session_cookie(later)
    assert client.get("/get").json["user"] == "alice"
    assert "Max-Age=1209600" in session_cookie(client.get("/remember/yes"))
    assert "Max-Age=1209600" in session_cookie(client.get("/set/theme/light"))


def test_a_session_is_permanent_until_told_otherwise_and_saying_so_changes_nothing():
    session = Session()
    assert session.permanent is True
    session.permanent = True
    assert not session.modified  # nothing to write: the cookie already says so
    session.permanent = False
    assert session.modified and session.permanent is False


def test_a_not_permanent_session_still_expires_on_the_server():
    clock = Clock()
    app = make_app(clock=clock)

    @app.route("/short")
    def short(request):
        request.session["user"] = "alice"
        request.session.permanent = False
        return "ok"

    client = TestApp(app)
    client.get("/short")
    clock.now += 61  # past the store's max_age of 60 s: a browser that never closes gains nothing
    assert client.get("/get").json == {}


def test_samesite_none_without_secure_is_refused_when_the_store_is_built():
    """SESSION_COOKIE_SAMESITE="None" without SESSION_COOKIE_SECURE failed only when a session cookie was written
    over plain HTTP (over HTTPS the cookie is Secure anyway): a 500 that a site tested over HTTPS never saw. Now
    the store refuses to be built, over either scheme, and says which settings go together."""
    with pytest.raises(ValueError, match="secure"):
        CookieSessions("key", samesite="None")
    with pytest.raises(ValueError, match="Lax, Strict or None"):
        CookieSessions("key", samesite="Laxx")
    assert CookieSessions("key", samesite="none", secure=True)
    app = make_app()
    app.config["SESSION_COOKIE_SAMESITE"] = "None"
    with pytest.raises(ValueError, match="SESSION_COOKIE_SECURE"):
        app.sessions  # noqa: B018 (building the store is the point)
    app.config["SESSION_COOKIE_SECURE"] = True
    header = session_cookie(TestApp(app).get("/set/a/1"))
    assert "SameSite=None" in header and "Secure" in header


@pytest.mark.parametrize("samesite", [True, False, 1, ["Lax"]])
def test_a_samesite_setting_that_is_not_text_names_the_setting(samesite):
    """SESSION_COOKIE_SAMESITE=True (from a config file's true) raised AttributeError ('bool' has no lower)."""
    from framework.sessions import CookieSessions

    with pytest.raises(ValueError, match="SESSION_COOKIE_SAMESITE"):
        CookieSessions("key", samesite=samesite)


def test_apps_sharing_a_key_refuse_each_others_cookies():
    """Two apps signed with one key and one salt: a cookie of one, renamed by the client, was a session of the
    other (the demo site's guestbook cookie was accepted by its blog). The cookie's name is in what it signs."""
    site = make_app(secret_key="shared")
    site.mount("/a", make_app(secret_key="shared"))
    site.mount("/b", make_app(secret_key="shared"))
    client = TestApp(site)
    client.get("/a/set/user/admin")
    stolen = client.cookies["session_a"]
    client.set_cookie("session_b", stolen)
    client.set_cookie("session", stolen)
    assert client.get("/b/get").json == {}
    assert client.get("/get").json == {}
    assert client.get("/a/get").json == {"user": "admin"}, "in its own app the cookie still works"


def test_mount_points_that_share_a_cookie_name_refuse_each_others_cookies():
    """Found in review: /a-b and /a_b both name their cookie session_a_b, and with the name alone in the salt each
    accepted the other's. The mount point is in what the cookie signs too."""
    site = make_app(secret_key="shared")
    site.mount("/a-b", make_app(secret_key="shared"))
    site.mount("/a_b", make_app(secret_key="shared"))
    client = TestApp(site)
    client.get("/a-b/set/user/admin")
    stolen = client.cookies["session_a_b"]
    fresh = TestApp(site)
    fresh.set_cookie("session_a_b", stolen)
    assert fresh.get("/a_b/get").json == {}
    assert fresh.get("/a-b/get").json == {"user": "admin"}
