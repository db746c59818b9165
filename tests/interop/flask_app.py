"""The interop routes (see ``tests.interop.common``) as an ordinary Flask app: ``tests.interop.flask_app:app``.

Written the way a Flask user would write it, with no concession to our server, so that anything that works
under gunicorn must work under ours too.
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, redirect, request, send_file

from tests.interop.common import (
    STREAM_DEFAULT_CHUNKS,
    UNICODE_DISPOSITION,
    custom_headers,
    digest_stream,
    download_file,
    gated_chunks,
    json_answer,
    multi_dict,
    stream_chunks,
)

app = Flask(__name__)


@app.get("/hello")
def hello() -> Response:
    return Response("Hello from Flask!", mimetype="text/plain")


@app.get("/greet/<name>")
def greet(name: str) -> Response:
    return jsonify(name=name)


@app.get("/query")
def query() -> Response:
    return jsonify(args=multi_dict(request.args.items(multi=True)))


@app.post("/form")
def form() -> Response:
    return jsonify(form=multi_dict(request.form.items(multi=True)))


@app.post("/json")
def json_echo() -> Response:
    return jsonify(json_answer(request.get_json()))


@app.post("/upload")
def upload() -> Response:
    files = {}
    for field, storage in request.files.items(multi=True):
        size, sha256 = digest_stream(storage.stream.read)
        files[field] = {"filename": storage.filename, "size": size, "sha256": sha256}
    return jsonify(fields=multi_dict(request.form.items(multi=True)), files=files)


@app.post("/echo")
def echo() -> Response:
    size, sha256 = digest_stream(request.stream.read)
    return jsonify(size=size, sha256=sha256)


@app.get("/cookies/set")
def set_cookies() -> Response:
    response = jsonify(set=True)
    response.set_cookie("flavour", "oatmeal", httponly=True)
    response.set_cookie("count", "1")
    return response


@app.get("/cookies")
def cookies() -> Response:
    return jsonify(cookies=dict(request.cookies))


@app.get("/redirect")
def go_elsewhere() -> Response:
    return redirect("/query?from=redirect", code=302)


@app.get("/stream")
def stream() -> Response:
    count = request.args.get("n", STREAM_DEFAULT_CHUNKS, type=int)
    return Response(stream_chunks(count, request.args.get("tag")), mimetype="text/plain")


@app.get("/download")
def download() -> Response:
    return send_file(download_file(), mimetype="application/octet-stream", as_attachment=True)


@app.get("/headers")
def headers() -> Response:
    response = Response("headers", mimetype="text/plain")
    for name, value in custom_headers(request.args.get("n", 0, type=int)):
        response.headers[name] = value
    return response


@app.get("/unicode-header")
def unicode_header() -> Response:
    return Response("tea", mimetype="text/plain", headers={"Content-Disposition": UNICODE_DISPOSITION})


@app.get("/wait")
def wait() -> Response:
    return Response(gated_chunks(request.args["tag"]), mimetype="text/plain")


@app.get("/whoami")
def whoami() -> Response:
    return jsonify(
        framework="flask",
        pid=os.getpid(),
        remote_addr=request.remote_addr,
        scheme=request.scheme,
        host=request.host,
        url=request.url,
    )
