"""app.config: the loaders, and the framework's own settings read at request time."""

import json
import tomllib
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webtest import TestApp

from framework import App, Config


def test_from_mapping_keeps_only_upper_case_keys(tmp_path):
    config = Config(tmp_path)
    config.from_mapping({"DATABASE": "a.sqlite", "helper": 1}, SECRET_KEY="k", other=2)
    assert config == {"DATABASE": "a.sqlite", "SECRET_KEY": "k"}


def test_from_object_module_class_and_import_path(tmp_path, monkeypatch):
    class Production:
        DEBUG = False
        DATABASE = "prod.sqlite"
        _private = 1
        lower = 2

    config = Config(tmp_path)
    config.from_object(Production)
    assert config == {"DEBUG": False, "DATABASE": "prod.sqlite"}

    module = tmp_path / "settings_for_test.py"
    module.write_text("SECRET_KEY = 'from module'\nclass Staging:\n    DEBUG = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = Config(tmp_path)
    config.from_object("settings_for_test")
    config.from_object("settings_for_test:Staging")
    assert config == {"SECRET_KEY": "from module", "DEBUG": True}
    config.from_object(types.SimpleNamespace(MAX_BODY_SIZE=5))
    assert config["MAX_BODY_SIZE"] == 5


def test_from_file_toml_and_json_by_suffix_and_an_explicit_loader(tmp_path):
    (tmp_path / "settings.toml").write_text('SECRET_KEY = "toml"\n[DATABASE]\nPATH = "x.sqlite"\n')
    (tmp_path / "settings.json").write_text('{"DEBUG": true, "ignored": 1}')
    (tmp_path / "settings.conf").write_text("TESTING = true\n")
    config = Config(tmp_path)
    assert config.from_file("settings.toml")
    assert config.from_file(tmp_path / "settings.json")
    assert config.from_file("settings.conf", load=tomllib.load)
    assert config.from_file("settings.json", load=json.load, text=True)
    assert config == {"SECRET_KEY": "toml", "DATABASE": {"PATH": "x.sqlite"}, "DEBUG": True, "TESTING": True}


def test_from_file_errors_name_the_file(tmp_path):
    config = Config(tmp_path)
    assert config.from_file("missing.toml", silent=True) is False
    with pytest.raises(FileNotFoundError, match=r"missing\.toml does not exist"):
        config.from_file("missing.toml")
    (tmp_path / "broken.toml").write_text("SECRET_KEY = \n")
    with pytest.raises(ValueError, match=r"broken\.toml is malformed"):
        config.from_file("broken.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a list"):
        config.from_file("list.json")
    (tmp_path / "settings.ini").write_text("")
    with pytest.raises(ValueError, match="pass load="):
        config.from_file("settings.ini")


def test_from_prefixed_env_reads_json_values_and_nested_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOG_SECRET_KEY", "plain text")
    monkeypatch.setenv("BLOG_DEBUG", "true")
    monkeypatch.setenv("BLOG_MAX_BODY_SIZE", "1024")
    monkeypatch.setenv("BLOG_HOSTS", '["a", "b"]')
    monkeypatch.setenv("BLOG_DATABASE__HOST", "db")
    monkeypatch.setenv("BLOG_DATABASE__PORT", "5432")
    monkeypatch.setenv("OTHER_SECRET_KEY", "not ours")
    config = Config(tmp_path)
    config.from_prefixed_env("BLOG")
    assert config == {
        "SECRET_KEY": "plain text",
        "DEBUG": True,
        "MAX_BODY_SIZE": 1024,
        "HOSTS": ["a", "b"],
        "DATABASE": {"HOST": "db", "PORT": 5432},
    }


@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_any_environment_value_is_kept_as_json_or_as_text(value):
    import os

    config = Config(".")
    os.environ["PROPTEST_VALUE"] = value
    try:
        config.from_prefixed_env("PROPTEST")
    finally:
        del os.environ["PROPTEST_VALUE"]
    try:
        expected = json.loads(value)
    except ValueError:
        expected = value
    assert config["VALUE"] == expected


def test_get_namespace(tmp_path):
    config = Config(tmp_path, {"DATABASE_HOST": "h", "DATABASE_PORT": 1, "OTHER": 2})
    assert config.get_namespace("DATABASE_") == {"host": "h", "port": 1}
    assert config.get_namespace("DATABASE_", lowercase=False, trim_namespace=False) == {
        "DATABASE_HOST": "h",
        "DATABASE_PORT": 1,
    }


def test_a_factory_can_set_the_secret_key_and_limits_after_the_app_is_built():
    app = App(__name__)

    @app.post("/echo")
    def echo(request):
        request.session["seen"] = True
        return request.body

    @app.get("/token")
    def token(request):
        return request.csrf_token()

    client = TestApp(app)
    client.get("/token", status=500)  # RuntimeError: sessions need a secret key
    app.config.from_mapping(SECRET_KEY="set later", MAX_BODY_SIZE=10, CSRF_ENABLED=False)
    response = client.post("/echo", b"short", content_type="application/octet-stream")
    assert response.body == b"short" and "session=" in response.headers["Set-Cookie"]
    client.post("/echo", b"far too long for ten bytes", content_type="application/octet-stream", status=413)
    app.config["CSRF_ENABLED"] = True
    client.post("/echo", b"x", content_type="application/octet-stream", status=403)


def test_session_cookie_settings_and_key_rotation_follow_the_config():
    app = App(__name__, secret_key="old")

    @app.get("/set")
    def set_value(request):
        request.session["n"] = 1
        return "ok"

    @app.get("/get")
    def get_value(request):
        return {"n": request.session.get("n")}

    client = TestApp(app)
    client.get("/set")
    app.config.update(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"])
    assert client.get("/get").json == {"n": 1}  # Signed with the old key, still accepted.
    app.config.update(SESSION_COOKIE_NAME="blog_session", SESSION_COOKIE_SECURE=True, SESSION_COOKIE_PATH="/x")
    header = client.get("/set").headers["Set-Cookie"]
    assert header.startswith("blog_session=") and "Secure" in header and "Path=/x" in header


def test_debug_is_read_at_request_time():
    app = App(__name__)

    @app.get("/")
    def fail(request):
        raise LookupError("the detail only debug shows")

    client = TestApp(app)
    assert "the detail only debug shows" not in client.get("/", status=500).text
    app.config["DEBUG"] = True
    assert "the detail only debug shows" in client.get("/", status=500).text
    assert app.debug is True


def test_templates_reload_when_debug_is_on(tmp_path):
    (tmp_path / "t.html").write_text("one")
    app = App(__name__, templates=tmp_path)

    @app.get("/")
    def page(request):
        return request.render("t.html")

    client = TestApp(app)
    assert client.get("/").text == "one"
    (tmp_path / "t.html").write_text("two")
    assert client.get("/").text == "one"  # Cached: no stat per render in production.
    app.config["DEBUG"] = True
    assert client.get("/").text == "two"


def test_instance_path_is_created_on_first_use(tmp_path):
    app = App(__name__, instance_path=tmp_path / "instance")
    assert not (tmp_path / "instance").exists()
    assert app.instance_path == tmp_path / "instance" and app.instance_path.is_dir()
    assert App(__name__)._instance_path == app.root / "instance"


@pytest.mark.parametrize(("text", "expected"), [("False", False), ("off", False), (" NO ", False), ("0", False),
                                                ("", False), ("True", True), ("yes", True), ("On", True),
                                                ("1", True)])  # fmt: skip
def test_an_on_off_setting_from_the_environment_takes_the_usual_words(text, expected, monkeypatch):
    """``APP_DEBUG=False`` is not JSON, so it was kept as the text "False", which is true: the traceback page,
    with every frame's local variables and the request's cookies, switched on by the line meant to turn it off."""
    app = App(__name__)

    @app.get("/")
    def fail(request):
        raise LookupError("the detail only debug shows")

    monkeypatch.setenv("APP_DEBUG", text)
    monkeypatch.setenv("APP_CSRF_ENABLED", text)
    monkeypatch.setenv("APP_TEMPLATES_AUTO_RELOAD", text)  # None by default ("follow DEBUG"): a switch all the same
    app.config.from_prefixed_env("APP")
    assert app.config["DEBUG"] is expected and app.config["CSRF_ENABLED"] is expected
    assert app.config["TEMPLATES_AUTO_RELOAD"] is expected
    assert ("the detail only debug shows" in TestApp(app).get("/", status=500).text) is expected


@pytest.mark.parametrize("text", ["nah", "2", "False!", '"false"'])
def test_an_on_off_setting_refuses_other_text(text, monkeypatch):
    monkeypatch.setenv("APP_DEBUG", text)
    with pytest.raises(ValueError, match="APP_DEBUG"):
        App(__name__).config.from_prefixed_env("APP")
