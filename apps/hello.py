"""The smallest WSGI application: what PEP 3333 asks of an app, and nothing else.

python -m server apps.hello:app --bind 127.0.0.1:8080
"""


def app(environ, start_response):
    """Answer every request with a greeting, as plain text."""
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
