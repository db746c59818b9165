"""Framework overhead, side by side: our ``framework`` against Bottle and Flask doing the same work.

No server and no network: each app's WSGI callable is called directly with a fresh environ, and the body is
consumed and closed as a server would. What remains is the framework's own cost per request (routing, request
and response objects, JSON encoding, template rendering), which is what the targets of issue 4 are about:

- at least as fast as Bottle and at least twice as fast as Flask in every scenario (issue 10: at least 4x Flask);
- matching the 200th of 200 routes costs at most twice matching the first.

The "blueprint page" scenario is what a real application's page does besides rendering: a view in a blueprint,
a ``before_request`` hook that puts the user on ``request.g`` (``flask.g``), the flash messages read from the
session, and a template fed by a context processor. Bottle has no blueprints or flash messages, so that row
compares with Flask only.

The routes share a prefix (``/api/r<i>/<int:a>/<int:b>``) on purpose: a router that tries one regex per rule
would make the 200th route far slower than the first, and grouping by first segment alone would not help.

The machine's cores are shared and noisy, so every (framework, scenario) pair is measured in several short
rounds, interleaved, and the median round is reported. Run it with ``python -m bench.bench_framework``
(``--rounds``, ``--seconds`` to trade time for stability); the table also goes to
``bench/results/framework.md``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bottle
import flask

from framework import App, Blueprint

from .harness import write_results

ROUTES = 200
PAYLOAD = {"message": "Hello, World!", "items": [1, 2, 3], "nested": {"ok": True, "ratio": 0.5}}
TEMPLATE = """<!doctype html>
<title>{{ title }}</title>
<h1>{{ title }}</h1>
<ul>{% for item in items %}<li>{{ item.name }}: {{ item.price }}</li>{% endfor %}</ul>
"""
ITEMS = [{"name": f"item <{i}>", "price": i * 1.5} for i in range(10)]
BLUEPRINT_TEMPLATE = """<!doctype html>
<title>{{ site }}</title>
<p>{{ g.user.name }}</p>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<ul>{% for item in items %}<li>{{ item.name }}: {{ item.price }}</li>{% endfor %}</ul>
"""
USER = {"id": 1, "name": "Ada"}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SCENARIOS = {
    "hello": "/",
    "params, route 1": "/api/r0/12/34",
    "params, route 200": f"/api/r{ROUTES - 1}/12/34",
    "json": "/json",
    "template": "/template",
    "blueprint page": "/blog/",
}
# The peers that can express each scenario (Bottle has no blueprints or flash messages).
NOT_APPLICABLE = {("blueprint page", "bottle")}


def build_ours(templates: Path) -> WSGIApp:
    app = App(__name__, templates=templates)

    @app.route("/")
    def hello(request):
        return "Hello, World!"

    for i in range(ROUTES):

        def item(request, a, b, i=i):
            return f"{i}:{a + b}"

        app.add_route(f"/api/r{i}/<int:a>/<int:b>", item, name=f"item{i}")

    @app.route("/json")
    def json_view(request):
        return PAYLOAD

    @app.route("/template")
    def template(request):
        return app.render(request, "page.html", title="Hello", items=ITEMS)

    blog = Blueprint("blog", __name__, url_prefix="/blog")

    @blog.before_request
    def load_user(request):
        request.g.user = USER

    @blog.context_processor
    def site():
        return {"site": "Bench"}

    @blog.get("/")
    def index(request):
        return request.render("blog.html", items=ITEMS)

    app.register_blueprint(blog)
    return app


def build_bottle(templates: Path) -> WSGIApp:
    app = bottle.Bottle()
    # Bottle caches a compiled template under (id(lookup), name): the lookup list must be the same object on
    # every call, or it compiles the template again on every request.
    lookup = [str(templates)]
    settings = {"autoescape": True}

    @app.route("/")
    def hello():
        return "Hello, World!"

    for i in range(ROUTES):

        def item(a, b, i=i):
            return f"{i}:{a + b}"

        app.route(f"/api/r{i}/<a:int>/<b:int>", callback=item, name=f"item{i}")

    @app.route("/json")
    def json_view():
        return PAYLOAD

    @app.route("/template")
    def template():
        # Autoescaping, as the other two do for .html (Bottle's Jinja2 adapter leaves it off by default).
        return bottle.jinja2_template(
            "page.html", template_lookup=lookup, template_settings=settings, title="Hello", items=ITEMS
        )

    return app


def build_flask(templates: Path) -> WSGIApp:
    app = flask.Flask(__name__, template_folder=str(templates))

    @app.route("/")
    def hello():
        return "Hello, World!"

    for i in range(ROUTES):

        def item(a, b, i=i):
            return f"{i}:{a + b}"

        app.add_url_rule(f"/api/r{i}/<int:a>/<int:b>", f"item{i}", item)

    @app.route("/json")
    def json_view():
        return PAYLOAD

    @app.route("/template")
    def template():
        return flask.render_template("page.html", title="Hello", items=ITEMS)

    blog = flask.Blueprint("blog", __name__, url_prefix="/blog")

    @blog.before_request
    def load_user():
        flask.g.user = USER

    @blog.context_processor
    def site():
        return {"site": "Bench"}

    @blog.route("/")
    def index():
        return flask.render_template("blog.html", items=ITEMS)

    app.register_blueprint(blog)
    return app


def base_environ(path: str) -> dict[str, Any]:
    """What a WSGI server would pass for ``GET path`` from a browser-like client."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8",
        "HTTP_USER_AGENT": "bench",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def call(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, bytes]:
    """One request as a server makes it: fresh environ and input, body consumed, ``close()`` called."""
    environ = dict(environ)
    environ["wsgi.input"] = io.BytesIO()
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(line)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return status[0], body


def time_per_call(app: WSGIApp, environ: dict[str, Any], seconds: float) -> float:
    """Microseconds per request, over batches until ``seconds`` have passed."""
    batch, calls, started = 200, 0, time.perf_counter()
    while True:
        for _ in range(batch):
            call(app, environ)
        calls += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per measurement")
    parser.add_argument("--seconds", type=float, default=0.4, help="duration of one round")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        templates = Path(folder)
        (templates / "page.html").write_text(TEMPLATE)
        (templates / "blog.html").write_text(BLUEPRINT_TEMPLATE)
        apps = {
            "framework": build_ours(templates),
            "bottle": build_bottle(templates),
            "flask": build_flask(templates),
        }
        # Every app must give the same answer, or the comparison means nothing.
        for scenario, path in SCENARIOS.items():
            answers = {
                name: call(app, base_environ(path))
                for name, app in apps.items()
                if (scenario, name) not in NOT_APPLICABLE
            }
            for name, (status, body) in answers.items():
                if not status.startswith("200") or not body:
                    raise SystemExit(f"{name} answered {status} to {scenario} ({path})")

        samples: dict[tuple[str, str], list[float]] = {}
        for number in range(args.rounds):
            order = list(apps.items())
            order = order[number % len(order) :] + order[: number % len(order)]
            for scenario, path in SCENARIOS.items():
                environ = base_environ(path)
                for name, app in order:
                    if (scenario, name) in NOT_APPLICABLE:
                        continue
                    samples.setdefault((scenario, name), []).append(time_per_call(app, environ, args.seconds))
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)

    median = {key: statistics.median(values) for key, values in samples.items()}
    lines = [
        "| scenario | framework µs | bottle µs | flask µs | bottle / framework | flask / framework |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        ours, theirs_f = median[scenario, "framework"], median[scenario, "flask"]
        theirs_b = median.get((scenario, "bottle"))
        bottle_cells = "n/a | n/a" if theirs_b is None else f"{theirs_b:.1f} | {theirs_b / ours:.2f}x"
        bottle_time, bottle_ratio = bottle_cells.split(" | ")
        lines.append(
            f"| {scenario} | {ours:.1f} | {bottle_time} | {theirs_f:.1f} | {bottle_ratio} | {theirs_f / ours:.2f}x |"
        )
    lines.append("")
    for name in apps:
        last, first = median["params, route 200", name], median["params, route 1", name]
        lines.append(f"- {name}: route 200 costs {last / first:.2f}x route 1")
    lines.append(
        "\nTargets: bottle / framework >= 1.00x and flask / framework >= 4.00x in every row; "
        "route 200 at most 2x route 1."
    )
    table = "\n".join(lines)
    print(table)
    print(f"\n(written to {write_results('framework.md', table + chr(10))})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
