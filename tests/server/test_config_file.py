"""``--config FILE``: settings from a TOML file, under the environment and the command line.

Each rule of docs/deploy.md has its test: the names (dashes or underscores), the types, the precedence (flags >
SERVER_* > file > defaults, lists replaced rather than merged), the one-line errors, ``--reload``, and the
example file the page shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from server.__main__ import assign_schemes, check_settings, parse_config
from server.config import Config
from server.listeners import Listener, parse_bind
from tests.server.test_cli import assert_one_line, run_cli
from tests.support import ROOT, TIMEOUT, ServerProcess

SITE = """\
app = "tests.server.factory_app:create_app('from the file')"
workers = 3
threads = 2
bind = ["127.0.0.1:8101", "[::1]:8102"]
max-body-bytes = "1M"
max_buffered_bytes = 8388608
keepalive-timeout = 2.5
timeout = 0
debug = true
loop = "poll"
forwarded-allow-ips = ["10.0.0.1", "unix"]
static-max-age = 60
max-requests = 100
max_requests_jitter = 10
"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config_error(capsys, argv: list[str], environ: dict[str, str] | None = None) -> str:
    """The one line a bad invocation ends with, from parse_config in this process."""
    with pytest.raises(SystemExit) as exited:
        parse_config(argv, environ=environ or {})
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_every_kind_of_setting_from_the_file(tmp_path):
    config = parse_config(["--config", write(tmp_path, SITE)], environ={})
    assert config.app == "tests.server.factory_app:create_app('from the file')"
    assert (config.workers, config.threads, config.loop, config.debug) == (3, 2, "poll", True)
    assert config.binds == ("127.0.0.1:8101", "[::1]:8102")
    assert (config.max_body_bytes, config.max_buffered_bytes) == (1024**2, 8 * 1024**2)
    assert (config.keepalive_timeout, config.timeout) == (2.5, 0)
    assert config.forwarded_allow_ips == ("10.0.0.1", "unix")
    assert (config.static_max_age, config.max_requests, config.max_requests_jitter) == (60, 100, 10)
    untouched = Config()
    assert (config.header_timeout, config.max_connections) == (untouched.header_timeout, untouched.max_connections)


def test_a_single_string_is_a_list_of_one(tmp_path):
    config = parse_config(["--config", write(tmp_path, 'bind = "127.0.0.1:8103"\nforwarded-allow-ips = "*"\n')], {})
    assert (config.binds, config.forwarded_allow_ips) == (("127.0.0.1:8103",), ("*",))


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path):
    path = write(tmp_path, SITE)
    environ = {"SERVER_WORKERS": "5", "SERVER_THREADS": "6", "SERVER_BIND": "127.0.0.1:8201", "SERVER_DEBUG": "0"}
    config = parse_config(["--config", path, "--threads", "7", "apps.hello:app"], environ=environ)
    assert config.app == "apps.hello:app"  # the command line's app over the file's
    assert config.threads == 7  # flag > environment > file
    assert config.workers == 5  # environment > file
    assert config.binds == ("127.0.0.1:8201",)  # the environment's list replaces the file's
    assert config.debug is False  # SERVER_DEBUG=0 turns off what the file turned on
    assert config.max_body_bytes == 1024**2  # the file > the default
    # A list on the command line replaces the others too: argparse appends to a list default, so this is a test.
    config = parse_config(["--config", path, "--bind", "127.0.0.1:8301"], environ={"SERVER_BIND": "127.0.0.1:8201"})
    assert config.binds == ("127.0.0.1:8301",)
    assert parse_config(["--bind", "127.0.0.1:8301"], environ={"SERVER_BIND": "127.0.0.1:8201"}).binds == (
        "127.0.0.1:8301",
    )


def test_the_environment_can_name_the_file(tmp_path):
    config = parse_config([], environ={"SERVER_CONFIG": write(tmp_path, SITE)})
    assert config.workers == 3
    other = write(tmp_path, "workers = 2\n", "other.toml")
    assert parse_config(["--config", other], environ={"SERVER_CONFIG": write(tmp_path, SITE)}).workers == 2


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("wrokers = 4", ["unknown setting 'wrokers'", "did you mean workers?"]),
        ("colour = 'blue'", ["unknown setting 'colour'"]),
        ("[server]\nworkers = 4", ["unknown setting 'server'"]),
        ("config = 'other.toml'", ["config: a config file cannot name another one"]),
        ("workers = 2\nWORKERS = 2", ["unknown setting 'WORKERS'"]),
        ("max-body-bytes = 1\nmax_body_bytes = 2", ["max-body-bytes and max_body_bytes are the same setting"]),
        ('workers = "4"', ["workers: expected a whole number", 'not a string ("4")']),
        ("workers = true", ["workers: expected a whole number", "not a boolean (true)"]),
        ("workers = 0", ["workers: '0' must be at least 1"]),
        ("workers = 100000", ["workers: '100000' is more than 1024"]),
        ("threads = 1.5", ["threads: expected a whole number, as in threads = 4", "not a float (1.5)"]),
        ('keepalive-timeout = "5"', ["keepalive-timeout: expected a number of seconds"]),
        ("keepalive-timeout = 0", ["keepalive-timeout: '0' must be more than 0 seconds"]),
        ("keepalive-timeout = inf", ["keepalive-timeout: 'inf' is not a finite number of seconds"]),
        ('max-body-bytes = "lots"', ["max-body-bytes: 'lots' is not a size"]),
        ("max-body-bytes = 1.5", ["max-body-bytes: expected a size"]),
        ('debug = "yes"', ["debug: expected true or false", 'not a string ("yes")']),
        ('loop = "kqueue"', ['loop: expected one of "auto", "epoll", "poll", "select"']),
        ("access-log = 5", ["access-log: expected a string, not an integer (5)"]),
        ("app = ['a:b']", ["app: expected a string, not an array"]),
        ("bind = [8000]", ["bind: expected a list of strings", "not an array ([8000])"]),
        ('bind = ["nonsense"]', ["bind: 'nonsense': expected HOST:PORT"]),
        ('forwarded-allow-ips = ["10.0.0.1", "bogus"]', ["forwarded-allow-ips: 'bogus' is not an IP address"]),
        ('static = ["/s=/no/such/dir"]', ["static: /s=/no/such/dir", "is not a directory"]),
        ("workers = ", ["not valid TOML", "line 1"]),
    ],
)
def test_a_wrong_key_type_or_value_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, text, fragments):
    path = write(tmp_path, text + "\n")
    line = config_error(capsys, ["--config", path])
    assert line.startswith(f"python -m server: error: --config {path}: "), line
    for fragment in fragments:
        assert fragment in line, line


def test_a_file_that_cannot_be_read_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.toml"
    assert "cannot read it: no such file or folder" in config_error(capsys, ["--config", str(missing)])
    (tmp_path / "latin1.toml").write_bytes(b"app = '\xe9'\n")
    assert "not valid TOML" in config_error(capsys, ["--config", str(tmp_path / "latin1.toml")])


def test_the_command_line_ends_with_one_line_and_status_2(tmp_path):
    # The same errors as above, through the real command: one line on stderr, no traceback, exit 2.
    assert_one_line(run_cli("--config", write(tmp_path, "wrokers = 4\n")), "unknown setting 'wrokers'")
    assert_one_line(run_cli("--config", str(tmp_path / "none.toml")), "cannot read it")
    # A file that is fine, with a flag that is not: the flag's own error.
    assert_one_line(run_cli("--config", write(tmp_path, "workers = 2\n"), "--workers", "x"), "--workers")


def test_a_server_runs_from_the_file_and_a_flag_overrides_it(tmp_path):
    path = write(tmp_path, 'app = "tests.server.factory_app:create_app(\'from the file\')"\nmax-body-bytes = "1K"\n')
    with ServerProcess("--config", path) as server:
        assert requests.get(server.url + "/", timeout=TIMEOUT).text == "from the file"
        assert requests.post(server.url + "/", data=b"x" * 2048, timeout=TIMEOUT).status_code == 413
    with ServerProcess("--config", path, "--max-body-bytes", "4K") as server:
        assert requests.post(server.url + "/", data=b"x" * 2048, timeout=TIMEOUT).status_code == 200


def test_reload_passes_the_file_on_to_the_server_it_runs(tmp_path):
    # The parent never imports the app: an answer in the file's words, and the file's limit, are the child's.
    path = write(tmp_path, 'app = "tests.server.factory_app:create_app(\'reloaded\')"\nmax-body-bytes = "1K"\n')
    with ServerProcess("--config", path, "--reload", env={"PYTHONDONTWRITEBYTECODE": "1"}) as server:
        assert requests.get(server.url + "/", timeout=TIMEOUT).text == "reloaded"
        assert requests.post(server.url + "/", data=b"x" * 2048, timeout=TIMEOUT).status_code == 413
        assert "--reload:" in server.output()  # it was the reloading parent that started


def test_reload_refuses_what_the_file_asks_and_it_cannot_do(tmp_path):
    path = write(tmp_path, 'app = "apps.hello:app"\nmax-requests = 1000\n')
    assert_one_line(run_cli("--config", path, "--reload", "--bind", "127.0.0.1:0"), "--max-requests 1000")
    path = write(tmp_path, 'app = "apps.hello:app"\nworkers = 2\n')
    assert_one_line(run_cli("--config", path, "--reload", "--bind", "127.0.0.1:0"), "--workers 2")


def documented_example() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, "docs/deploy.md shows one example config file"
    return blocks[0]


def test_the_example_in_the_docs_is_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its relative static directory is looked for in the working directory
    (tmp_path / "static").mkdir()
    monkeypatch.setenv("SERVER_DATA_DIR", "unchanged")  # restored afterwards, should the example set data-dir
    config = parse_config(["--config", write(tmp_path, documented_example())], environ={})
    check_settings(config)  # what the server checks before serving, short of importing the app and binding
    assert config.app == "mysite.wsgi:application"
    assert (config.workers, config.max_requests, config.max_requests_jitter) == (4, 5000, 500)
    assert config.binds == ("0.0.0.0:443", "[::]:443", "http://0.0.0.0:80", "http://[::]:80")
    # Its HTTPS settings fit together (check_settings reads no certificate, so the paths need not exist): the
    # addresses without a scheme are HTTPS, and --redirect-to-https has a listener of each kind.
    listeners = [Listener(None, parse_bind(bind)) for bind in config.binds]  # type: ignore[arg-type]
    assign_schemes(config, listeners)  # decides from the addresses alone, opens nothing
    assert [listener.scheme for listener in listeners] == ["https", "https", "http", "http"]
    # It writes out every option a site is likely to set: everything of --help but the development ones.
    options = set(re.findall(r"^  (?:-\w, )?--([a-z-]+)", run_cli("--help").stdout, re.MULTILINE))
    keys = set(re.findall(r"^([a-z-]+) =", documented_example(), re.MULTILINE))
    assert options - keys == {"help", "version", "config", "debug", "reload", "data-dir"}, options - keys


def test_building_the_parser_again_does_not_grow_the_table_of_file_types():
    """Found in review: each build_parser() registered two new converters in _FILE_TYPES, forever."""
    from server import __main__ as cli

    cli.build_parser()
    size = len(cli._FILE_TYPES)
    for _ in range(3):
        cli.build_parser()
    assert len(cli._FILE_TYPES) == size


# -- audit regressions: empty values and NUL characters are refused, naming the file and the key -------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('app = ""', "app"),
        ('app = "  "', "app"),
        ("bind = []", "bind"),
        ('bind = [""]', "bind"),
        ('bind = ""', "bind"),
        ("static = []", "static"),
        ('static = ["  "]', "static"),
    ],
)
def test_an_empty_app_or_list_is_refused_not_taken_for_the_default(tmp_path, capsys, text, key):
    path = write(tmp_path, text + "\n")
    line = config_error(capsys, ["--config", path])
    assert line.startswith(f"python -m server: error: --config {path}: {key}: empty"), line


@pytest.mark.parametrize("text", ['data-dir = "var\\u0000x"', 'static = ["/s=a\\u0000b"]', 'access-log = "a\\u0000"'])
def test_a_nul_character_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, text):
    path = write(tmp_path, text + "\n")
    line = config_error(capsys, ["--config", path])
    assert line.startswith(f"python -m server: error: --config {path}: "), line
    assert "contains a NUL character" in line and text.split(" ")[0] in line


def test_a_nul_in_data_dir_through_the_real_command(tmp_path):
    assert_one_line(run_cli("--config", write(tmp_path, 'data-dir = "a\\u0000b"\n')), "data-dir", "NUL")


def test_an_empty_variable_does_not_override_the_file(tmp_path, capsys):
    path = write(tmp_path, 'app = "apps.hello:app"\nbind = ["127.0.0.1:9000"]\n')
    for variable in ("SERVER_APP", "SERVER_BIND", "SERVER_STATIC"):
        assert variable in config_error(capsys, ["--config", path], {variable: ""})


def test_a_home_folder_that_cannot_be_found_in_the_file_is_one_line(tmp_path, capsys):
    path = write(tmp_path, 'static = ["/s=~no_such_user_here/x"]\n')
    line = config_error(capsys, ["--config", path])
    assert f"--config {path}: static:" in line and "~no_such_user_here" in line, line


def test_an_empty_variable_is_no_matter_when_the_command_line_sets_the_option(tmp_path):
    """The command line wins over the environment, so an empty SERVER_BIND (a compose file's ${BIND:-}) beside
    --bind was never going to be used: refusing it stopped a start that had nothing wrong with it."""
    config = parse_config(["apps.hello:app", "--bind", "127.0.0.1:9999", "--static", f"/s={tmp_path}"],
                          {"SERVER_BIND": "", "SERVER_APP": "", "SERVER_STATIC": " , "})  # fmt: skip
    assert config.app == "apps.hello:app" and config.binds == ("127.0.0.1:9999",)
    assert len(config.static) == 1
