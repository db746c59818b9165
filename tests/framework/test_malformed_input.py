"""Whatever a client sends, the answer is never a 500: random and hostile input to every parser.

The inputs come from a seeded generator, so a failure reproduces exactly.
"""

import random

import pytest
from webtest import TestApp

from framework import App


def make_app() -> App:
    app = App(__name__, secret_key="fuzz", csrf=False, max_body_size=64 * 1024)

    @app.route("/", methods=["GET", "POST"])
    def everything(request):
        return {
            "query": len(request.query),
            "cookies": len(request.cookies),
            "form": len(request.form),
            "files": len(request.files),
            "json": request.json is not None,
            "session": len(request.session),
            "headers": len(request.headers),
            "url": request.url,
        }

    @app.route("/p/<int:a>/<path:rest>")
    def params(request, a, rest):
        return {"a": a, "rest": rest}

    return app


def random_bytes(rng: random.Random, alphabet: bytes, size: int) -> bytes:
    return bytes(rng.choice(alphabet) for _ in range(size))


MULTIPART_PIECES = [
    b"--b\r\n",
    b"--b--\r\n",
    b"\r\n",
    b'Content-Disposition: form-data; name="a"\r\n',
    b'Content-Disposition: form-data; name="f"; filename="x.txt"\r\n',
    b"Content-Type: text/plain; charset=utf-8\r\n",
    b"Content-Disposition: attachment\r\n",
    b"Content-Length: 3\r\n",
    b"value",
    b"\xff\xfe",
    b"--",
    b" \t",
]


@pytest.mark.parametrize("seed", range(3))
def test_random_bodies_never_give_a_500(seed):
    rng = random.Random(seed)
    client = TestApp(make_app())
    kinds = [
        "multipart/form-data; boundary=b",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "application/json",
        "application/vnd.api+json; charset=utf-8",
        "text/plain",
    ]
    for _ in range(150):
        kind = rng.choice(kinds)
        if kind.startswith("multipart"):
            body = b"".join(rng.choice(MULTIPART_PIECES) for _ in range(rng.randint(0, 14)))
        elif "json" in kind:
            body = random_bytes(rng, b'{}[]":,0123456789.-eEtruefalsn \\u\xc3\xa9', rng.randint(0, 40))
        else:
            body = random_bytes(rng, b"abc=&%+;0123456789\xff\x00", rng.randint(0, 40))
        response = client.request("/", method="POST", body=body, content_type=kind, expect_errors=True)
        assert response.status_int in (200, 400, 413), (kind, body, response.status)


@pytest.mark.parametrize("seed", range(3))
def test_random_headers_paths_and_queries_never_give_a_500(seed):
    rng = random.Random(seed)
    client = TestApp(make_app())
    for _ in range(150):
        cookie = random_bytes(rng, b'ab=;," %\\session.\xc3\xa9', rng.randint(0, 30)).decode("latin-1")
        query = random_bytes(rng, b"ab=&%+;\xff", rng.randint(0, 20)).decode("latin-1")
        path = random_bytes(rng, b"p/1a%.\xc3\xa9", rng.randint(0, 12)).decode("latin-1")
        environ = {"HTTP_COOKIE": cookie, "QUERY_STRING": query, "PATH_INFO": "/" + path}
        response = client.get("/", extra_environ=environ, expect_errors=True)
        assert response.status_int in (200, 308, 404, 405), (environ, response.status)
