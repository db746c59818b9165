"""``python -m server --reload``: real processes, edited files, restarts on the same socket; and ``--debug``.

Every edit moves the file's modification time on by seconds with ``os.utime`` (no sleeping until the clock
ticks), which also keeps Python from trusting a stale ``.pyc`` for a rewrite of the same size. Every wait is a
poll with a deadline. The polls never tolerate a refused connection: the listening socket stays open across
restarts, so a request made while the server restarts waits in the backlog and is answered.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.server.test_cli import assert_one_line
from tests.support import ROOT, TIMEOUT, ServerProcess, wait_for
from tests.tls_certs import make_certificates

RESTART = 15.0  # deadline for a change to be served: a poll interval, a graceful stop and a fresh start


def write(path: Path, text: str) -> None:
    """Write ``text`` and set the modification time later than it was, as an editor's save would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    later = max(before, path.stat().st_mtime_ns) + 2_000_000_000
    os.utime(path, ns=(later, later))


def plain_app(word: str, imports: str = "") -> str:
    return f"""{imports}
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [{word!r}.encode()]
"""


def reloading(directory: Path, spec: str, *args: str) -> ServerProcess:
    env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return ServerProcess(spec, "--reload", *args, cwd=directory, env=env)


def get(server: ServerProcess) -> requests.Response:
    return requests.get(server.url, timeout=TIMEOUT)


def wait_for_answer(server: ServerProcess, body: str, status: int = 200) -> None:
    def answered() -> bool:
        response = get(server)
        return response.status_code == status and response.text == body

    wait_for(answered, timeout=RESTART, interval=0.05)


def serving_pids(server: ServerProcess) -> list[int]:
    """The processes that said "serving", in order (the log line carries the pid)."""
    return [int(pid) for pid in re.findall(r"\[(\d+)\] \[INFO\] serving ", server.output())]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that init has not reaped yet is gone too
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def test_a_code_change_restarts_and_a_syntax_error_waits_for_the_fix(tmp_path):
    module = tmp_path / "mod.py"
    write(module, plain_app("one"))
    with reloading(tmp_path, "mod:app") as server:
        wait_for_answer(server, "one")
        port = server.port
        write(module, plain_app("two"))
        wait_for_answer(server, "two")

        write(module, plain_app("three").replace("def app(", "def app(:"))
        wait_for(lambda: get(server).status_code == 503, timeout=RESTART)
        wait_for(lambda: "waiting for a file to change" in server.output())
        output = server.output()
        assert "SyntaxError" in output and str(module) in output, output
        assert "--reload: importing 'mod' failed" in output and "python -m server: error:" not in output, output
        assert "SyntaxError" not in get(server).text  # the error is shown to clients only under --debug
        assert server.proc is not None and server.proc.poll() is None  # still there, waiting

        write(module, plain_app("three"))
        wait_for_answer(server, "three")
        assert server.port == port
        assert len(set(serving_pids(server))) == 4  # one, two, the error page, three: a fresh process each time


def test_a_missing_module_is_fixed_by_creating_it(tmp_path):
    write(tmp_path / "mod.py", plain_app("with helper", imports="import helper  # noqa"))
    with reloading(tmp_path, "mod:app") as server:
        wait_for(lambda: get(server).status_code == 503, timeout=RESTART)
        assert "No module named 'helper'" in server.output()
        write(tmp_path / "helper.py", "")  # imported by nothing yet: found by watching the directory's .py files
        wait_for_answer(server, "with helper")


SITE = """from pathlib import Path

PAGE = (Path(__file__).parent / "templates" / "page.html").read_text()  # read once, as a template cache would


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html")])
    return [PAGE.encode()]
"""


def test_a_template_change_restarts(tmp_path):
    template = tmp_path / "templates" / "page.html"
    write(template, "<p>first</p>")
    write(tmp_path / "pages.py", SITE)
    with reloading(tmp_path, "pages:app") as server:
        wait_for_answer(server, "<p>first</p>")
        write(template, "<p>second</p>")
        wait_for_answer(server, "<p>second</p>")


def test_a_factory_in_a_package_restarts_when_a_module_it_imports_changes(tmp_path):
    package = tmp_path / "pkg"
    write(package / "__init__.py", "")
    write(package / "words.py", "WORD = 'alpha'\n")
    write(
        package / "web.py",
        "from pkg.words import WORD\n\n"
        "def create(suffix):\n"
        "    def app(environ, start_response):\n"
        "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "        return [(WORD + suffix).encode()]\n"
        "    return app\n",
    )
    with reloading(tmp_path, "pkg.web:create('!')") as server:
        wait_for_answer(server, "alpha!")
        write(package / "words.py", "WORD = 'beta'\n")
        wait_for_answer(server, "beta!")


def test_reload_with_several_workers_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "server", "mod:app", "--reload", "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert_one_line(result, "--reload", "--workers 2")


def test_reload_with_a_bad_certificate_is_one_line(tmp_path):
    """The parent checks the certificate before it opens the sockets: it used to open them and run children that
    each failed on the certificate, the error printed three times and the port open but never answered."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    tls_args = ["--certfile", str(junk), "--keyfile", str(junk)]
    result = subprocess.run(
        [sys.executable, "-m", "server", "mod:app", "--reload", "--bind", "127.0.0.1:0", *tls_args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert_one_line(result, f"--certfile {junk}: no PEM certificate in it")


def test_reload_with_a_redirect_to_https_and_no_plain_listener_is_one_line(tmp_path):
    """What the listeners are for is checked by the parent too: the children failed on it, one after the other,
    behind a port that was open and never answered."""
    certs = make_certificates(tmp_path / "site")
    args = ["--bind", "https://127.0.0.1:0", "--redirect-to-https", "--certfile", str(certs.cert)]
    result = subprocess.run(
        [sys.executable, "-m", "server", "mod:app", "--reload", *args, "--keyfile", str(certs.key)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert_one_line(result, "--redirect-to-https needs an HTTPS listener to send to and a plain one")


def test_an_expired_certificate_is_reported_once_under_reload(tmp_path):
    certs = make_certificates(tmp_path / "site", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    write(tmp_path / "mod.py", plain_app("up"))
    with reloading(tmp_path, "mod:app", "--certfile", str(certs.cert), "--keyfile", str(certs.key)) as server:
        wait_for(lambda: len(serving_pids(server)) == 1)
        assert server.output().count("expired on") == 1, server.output()


def test_a_certificate_broken_then_fixed_while_reloading_restarts_the_server(tmp_path):
    """The certificate files are watched like the code: a child that cannot start on a broken certificate waits
    for a change, and the fixed certificate is that change."""
    certs = make_certificates(tmp_path / "site")
    good = certs.cert.read_bytes()
    write(tmp_path / "mod.py", plain_app("up"))
    with reloading(tmp_path, "mod:app", "--certfile", str(certs.cert), "--keyfile", str(certs.key)) as server:
        assert server.url.startswith("https://")
        wait_for(lambda: len(serving_pids(server)) == 1)
        assert requests.get(server.url, timeout=TIMEOUT, verify=str(certs.ca_pem)).text == "up"
        write(certs.cert, "not a certificate\n")
        wait_for(lambda: "waiting for a file to change" in server.output(), timeout=RESTART)
        write(certs.cert, good.decode())
        wait_for(lambda: len(serving_pids(server)) == 2, timeout=RESTART)
        assert requests.get(server.url, timeout=TIMEOUT, verify=str(certs.ca_pem)).text == "up"
        assert server.output().count("no PEM certificate in it") == 1, server.output()


def test_sigterm_stops_the_parent_and_its_child(tmp_path):
    write(tmp_path / "mod.py", plain_app("up"))
    with reloading(tmp_path, "mod:app") as server:
        wait_for_answer(server, "up")
        assert server.proc is not None
        [child] = serving_pids(server)
        assert child != server.proc.pid and alive(child)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        wait_for(lambda: not alive(child))


def test_the_child_stops_when_the_parent_is_killed(tmp_path):
    write(tmp_path / "mod.py", plain_app("up"))
    with reloading(tmp_path, "mod:app") as server:
        wait_for_answer(server, "up")
        [child] = serving_pids(server)
        server.signal(signal.SIGKILL)
        server.wait()
        wait_for(lambda: not alive(child))


DEBUG_APP = """
class App:
    def __init__(self):
        self.config = {"DEBUG": False}

    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(self.config["DEBUG"]).encode()]

app = App()
"""


def test_debug_sets_the_apps_config_debug(tmp_path):
    write(tmp_path / "debugged.py", DEBUG_APP)
    env = {"PYTHONPATH": str(ROOT)}
    with ServerProcess("debugged:app", cwd=tmp_path, env=env) as server:
        assert get(server).text == "False"  # untouched without --debug
    with ServerProcess("debugged:app", "--debug", cwd=tmp_path, env=env) as server:
        assert get(server).text == "True"
    with reloading(tmp_path, "debugged:app", "--debug") as server:
        assert get(server).text == "True"


def test_a_malformed_reload_variable_is_one_line_not_a_traceback():
    """Found in review: LADDER_RELOAD set by hand (or left over) ended every start with a JSONDecodeError."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "server", "apps.hello:app", "--bind", "127.0.0.1:0"],
        env={**os.environ, "LADDER_RELOAD": "x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m server: error: LADDER_RELOAD is set but is not what a --reload parent writes; unset it"
    ]


# -- saves that race a start, and a SIGHUP during a restart -----------------------------------------------------------

SLOW_LOADING_APP = """import os
import time

import helper

open("loaded", "w").close()  # the test's cue: helper.py has been read
deadline = time.monotonic() + 10
while not os.path.exists("go") and time.monotonic() < deadline:  # the rest of a slow start, until the test says
    time.sleep(0.01)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [helper.WORD.encode()]
"""


@pytest.mark.parametrize("where", ["outside the current directory", "in the current directory"])
def test_a_save_while_the_app_is_loading_restarts_it(tmp_path, where):
    # Found in audit: the child stamped each file after the whole app had loaded, so a save made after the file
    # was read but before the load ended became the baseline, and the old code kept running.
    site = tmp_path / "site"
    lib = tmp_path / "lib" if where.startswith("outside") else site
    write(site / "mod.py", SLOW_LOADING_APP)
    write(lib / "helper.py", 'WORD = "old"\n')
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(lib)]), "PYTHONDONTWRITEBYTECODE": "1"}
    server = ServerProcess("mod:app", "--reload", cwd=site, env=env)
    starting = threading.Thread(target=server.__enter__, name="reload-start")
    starting.start()
    try:
        wait_for(lambda: (site / "loaded").exists())
        # A plain save: its time is the clock's, within the load (the parent cannot know the file beforehand
        # when it lies outside the current directory: only the child's own check can catch this one).
        (lib / "helper.py").write_text('WORD = "new!"\n')
        (site / "go").touch()
        starting.join(TIMEOUT)
        wait_for_answer(server, "new!")
        assert "helper.py changed; restarting" in server.output()
    finally:
        starting.join(TIMEOUT)
        server.stop()


SLOW_REQUEST_APP = """import os
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open("entered", "w").close()
        deadline = time.monotonic() + 10
        while not os.path.exists("release") and time.monotonic() < deadline:
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [WORD.encode()]


WORD = {word!r}
"""


def test_a_sighup_during_a_restart_does_not_restart_twice(tmp_path):
    module = tmp_path / "mod.py"
    write(module, SLOW_REQUEST_APP.format(word="one"))
    with reloading(tmp_path, "mod:app") as server:
        wait_for_answer(server, "one")
        slow: list[int] = []
        request = threading.Thread(
            target=lambda: slow.append(requests.get(server.url + "/slow", timeout=TIMEOUT).status_code)
        )
        request.start()
        try:
            wait_for(lambda: (tmp_path / "entered").exists())
            server.signal(signal.SIGHUP)
            # The parent is now stopping the child, which finishes /slow first: a second SIGHUP lands in the restart.
            wait_for(lambda: "SIGHUP received; restarting" in server.output())
            server.signal(signal.SIGHUP)
        finally:
            (tmp_path / "release").touch()
            request.join(TIMEOUT)
        assert slow == [200]  # answered by the old child: the second SIGHUP came while it was still stopping
        wait_for(lambda: len(serving_pids(server)) == 2, timeout=RESTART)
        # A change after that is the next reason to restart: with the bug, a second "SIGHUP received" came first.
        write(module, SLOW_REQUEST_APP.format(word="two"))
        wait_for_answer(server, "two")
        assert server.output().count("SIGHUP received") == 1, server.output()


GENERATING_APP = """import pathlib

# Generated at import, with the same text every time (as a build step or a settings file written on start does).
pathlib.Path(__file__).with_name("generated.py").write_text("WORD = 'made'\\n")
pathlib.Path(__file__).with_name("templates").mkdir(exist_ok=True)
pathlib.Path(__file__).with_name("templates").joinpath("built.html").write_text("<p>built</p>")
from generated import WORD  # noqa: E402
from words import EXTRA  # noqa: E402


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(WORD + EXTRA).encode()]
"""


def test_files_the_app_writes_as_it_loads_do_not_restart_it_forever(tmp_path):
    """An app that writes a module or a template at import, then reads it: each start wrote it after the child
    began, so each start counted as a change and ended in a restart, forever. After one restart such a file is
    known as the app's own doing (one warning); an edit of another file still restarts."""
    write(tmp_path / "generated.py", "WORD = 'made'\n")  # there before the start, as after an earlier run
    write(tmp_path / "words.py", "EXTRA = '-1'\n")
    write(tmp_path / "mod.py", GENERATING_APP)
    with reloading(tmp_path, "mod:app") as server:
        wait_for(lambda: "is written by the app as it loads" in server.output(), timeout=RESTART)
        wait_for_answer(server, "made-1")
        # The app writes two files, so its first starts may still be settling (a restart for the second file under
        # way): an edit saved before that restart takes its baseline is loaded by it, with no restart of its own.
        # So edit until an edit is what restarts it; with the bug, the app's own files restarted it forever.
        for edit in range(2, 6):
            write(tmp_path / "words.py", f"EXTRA = '-{edit}'\n")
            wait_for_answer(server, f"made-{edit}")
            if "words.py changed; restarting" in server.output():
                break
        wait_for(lambda: "words.py changed; restarting" in server.output())
        output = server.output()
        # A few restarts for each file the app writes, not one per start: a file is known as the app's once one
        # restart was seen to come from its write during a load (on a loaded machine that can take a second).
        for generated in ("generated.py", "templates/built.html"):
            assert output.count(f"{generated} changed; restarting") <= 3, output
