"""The interop routes (see ``tests.interop.common``) as an ordinary Bottle app: ``tests.interop.bottle_app:app``.

Bottle is the oldest of the three and leans hardest on the WSGI environ itself (it parses bodies, chunked
framing and multipart on its own), which makes it a sharp test of what our server puts there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import bottle
from bottle import request, response

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

app = bottle.Bottle()


@app.get("/hello")
def hello() -> str:
    response.content_type = "text/plain; charset=utf-8"
    return "Hello from Bottle!"


@app.get("/greet/<name>")
def greet(name: str) -> dict:
    return {"name": name}


@app.get("/query")
def query() -> dict:
    return {"args": multi_dict(request.query.decode().allitems())}


@app.post("/form")
def form() -> dict:
    return {"form": multi_dict(request.forms.decode().allitems())}


@app.post("/json")
def json_echo() -> dict:
    return json_answer(request.json)


@app.post("/upload")
def upload() -> dict:
    files = {}
    for field, upload in request.files.allitems():
        size, sha256 = digest_stream(upload.file.read)
        files[field] = {"filename": upload.raw_filename, "size": size, "sha256": sha256}
    return {"fields": multi_dict(request.forms.decode().allitems()), "files": files}


@app.post("/echo")
def echo() -> dict:
    size, sha256 = digest_stream(request.body.read)
    return {"size": size, "sha256": sha256}


@app.get("/cookies/set")
def set_cookies() -> dict:
    response.set_cookie("flavour", "oatmeal", httponly=True)
    response.set_cookie("count", "1")
    return {"set": True}


@app.get("/cookies")
def cookies() -> dict:
    return {"cookies": dict(request.cookies.decode())}


@app.get("/redirect")
def go_elsewhere() -> None:
    bottle.redirect("/query?from=redirect", code=302)


@app.get("/stream")
def stream() -> Iterator[bytes]:
    response.content_type = "text/plain; charset=utf-8"
    return stream_chunks(int(request.query.get("n", STREAM_DEFAULT_CHUNKS)), request.query.get("tag"))


@app.get("/download")
def download() -> bottle.HTTPResponse:
    path = download_file()
    return bottle.static_file(path.name, root=str(path.parent), mimetype="application/octet-stream", download=True)


@app.get("/headers")
def headers() -> str:
    response.content_type = "text/plain; charset=utf-8"
    for name, value in custom_headers(int(request.query.get("n", 0))):
        response.set_header(name, value)
    return "headers"


@app.get("/unicode-header")
def unicode_header() -> str:
    response.content_type = "text/plain; charset=utf-8"
    response.set_header("Content-Disposition", UNICODE_DISPOSITION)
    return "tea"


@app.get("/wait")
def wait() -> Iterator[bytes]:
    response.content_type = "text/plain; charset=utf-8"
    return gated_chunks(request.query["tag"])


@app.get("/whoami")
def whoami() -> dict:
    return {
        "framework": "bottle",
        "pid": os.getpid(),
        # Bottle's own remote_addr and urlparts believe X-Forwarded-* from anyone; report what the server decided.
        "remote_addr": request.environ["REMOTE_ADDR"],
        "scheme": request.environ["wsgi.url_scheme"],
        "host": request.urlparts.netloc,
        "url": request.url,
    }
