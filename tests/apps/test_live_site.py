"""The demo site as a new user meets it: ``python -m server`` in a subprocess, exactly as the README says (no
application named), walked with ``requests`` over a real socket, then stopped and started again on the same
data directory to check that everything kept is still there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from apps.files import MAX_UPLOAD
from tests.support import ROOT, TIMEOUT, ServerProcess

CONTENT = bytes(range(256)) * 64  # 16 KiB


def csrf_token(page: requests.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def chunked_multipart(token: str, size: int, boundary: str = "liveboundary") -> Iterator[bytes]:
    """A multipart upload sent without Content-Length (a generator body makes requests use chunked encoding), so
    only the framework's streaming limit, not the declared length, can stop it."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="endless.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = b"z" * 2**20
    for _ in range(size // len(block)):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def test_walk_the_demo_site_and_find_everything_after_a_restart(tmp_path: Path):
    data = tmp_path / "data"
    browser = requests.Session()  # Keeps the session cookie across both runs, as a browser would.

    with ServerProcess("--data-dir", str(data)) as server:
        url = server.url
        assert url.startswith("http://127.0.0.1:"), "the server says where it listens"
        assert f"[INFO] demo site data in {data.resolve()} (set --data-dir" in server.output(), "and its data"

        home = browser.get(url + "/", timeout=TIMEOUT)
        assert home.status_code == 200 and "/static/style.css" in home.text
        for path in ("/guestbook/", "/files/", "/todo/", "/time", "/inspect/", "/flask/"):
            assert f'href="{path}"' in home.text
        css = browser.get(url + "/static/style.css", timeout=TIMEOUT)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert browser.get(url + "/time", timeout=TIMEOUT).text.startswith("The time on this server is")

        # The guestbook: a bad form is 400 and saves nothing; a good one redirects to the list.
        page = browser.get(url + "/guestbook/", timeout=TIMEOUT)
        guestbook_token = csrf_token(page)  # Each mounted app has a session cookie, and so a token, of its own.
        form = {"csrf_token": guestbook_token, "name": "", "message": "no name"}
        invalid = browser.post(url + "/guestbook/", data=form, timeout=TIMEOUT)
        assert invalid.status_code == 400 and "Please tell us your name." in invalid.text
        form["name"] = "Ada <Lovelace>"
        signed = browser.post(url + "/guestbook/", data=form, timeout=TIMEOUT)
        assert signed.status_code == 200 and signed.history[0].status_code == 303
        assert "Ada &lt;Lovelace&gt;" in signed.text

        # Files: upload, list, download whole and in part; too large is 413 and leaves nothing.
        page = browser.get(url + "/files/", timeout=TIMEOUT)
        token = csrf_token(page)
        uploaded = browser.post(
            url + "/files/", data={"csrf_token": token}, files={"file": ("data.bin", CONTENT)}, timeout=TIMEOUT
        )
        assert uploaded.status_code == 200 and 'href="/files/data.bin"' in uploaded.text
        whole = browser.get(url + "/files/data.bin", timeout=TIMEOUT)
        assert whole.content == CONTENT
        part = browser.get(url + "/files/data.bin", headers={"Range": "bytes=1000-1999"}, timeout=TIMEOUT)
        assert part.status_code == 206 and part.content == CONTENT[1000:2000]
        assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(CONTENT)}"

        too_large = browser.post(
            url + "/files/",
            data={"csrf_token": token},
            files={"file": ("big.bin", b"x" * (MAX_UPLOAD + 1))},
            timeout=TIMEOUT,
        )
        assert too_large.status_code == 413 and "too large" in too_large.text
        streamed = browser.post(
            url + "/files/",
            data=chunked_multipart(token, MAX_UPLOAD + 2**20),
            headers={"Content-Type": "multipart/form-data; boundary=liveboundary"},
            timeout=TIMEOUT,
        )
        assert streamed.status_code == 413
        left = sorted(p.name for p in (data / "files").iterdir() if p.name != ".lock")  # the uploads' lock file
        assert left == ["data.bin"], "no partial file is left"

        # The todo API.
        api = url + "/todo/api/todos"
        created = browser.post(api, json={"title": "Write the walkthrough"}, timeout=TIMEOUT)
        assert created.status_code == 201 and created.headers["Location"] == "/todo/api/todos/1"
        todo_url = url + created.headers["Location"]
        assert browser.patch(todo_url, json={"done": True}, timeout=TIMEOUT).json()["done"] is True
        invalid = browser.post(api, json={"title": ""}, timeout=TIMEOUT)
        assert invalid.status_code == 422 and invalid.json()["error"]["fields"] == {
            "title": "The title must be some text."
        }
        extra = browser.post(api, json={"title": "Delete me"}, timeout=TIMEOUT).json()
        assert browser.delete(url + extra["url"], timeout=TIMEOUT).status_code == 204

    # The same data directory, a new process (and a new port): nothing was lost.
    with ServerProcess("--data-dir", str(data)) as server:
        url = server.url
        # A form loaded before the restart still goes through: the secret key that signed the session cookie
        # and its CSRF token lives in the data directory too.
        form = {"csrf_token": guestbook_token, "name": "Back again", "message": "after the restart"}
        assert browser.post(url + "/guestbook/", data=form, timeout=TIMEOUT).status_code == 200

        book = browser.get(url + "/guestbook/", timeout=TIMEOUT)
        assert "Ada &lt;Lovelace&gt;" in book.text and "Back again" in book.text
        assert browser.get(url + "/files/data.bin", timeout=TIMEOUT).content == CONTENT
        todos = browser.get(url + "/todo/api/todos", timeout=TIMEOUT).json()["todos"]
        assert [(t["title"], t["done"]) for t in todos] == [("Write the walkthrough", True)]


def test_started_from_another_folder_it_says_where_its_data_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A new user's first run, from some folder of theirs: the log names the data directory (./var of that
    folder, as an absolute path), the browser's automatic /favicon.ico is an icon, and the todo page's form works
    as a browser without JavaScript sends it."""
    monkeypatch.delenv("SERVER_DATA_DIR")  # ServerProcess passes on this process's environment
    with ServerProcess(cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}) as server:
        var = (tmp_path / "var").resolve()
        said = [line for line in server.log if "demo site data in" in line]
        assert len(said) == 1 and said[0].rstrip().endswith(
            f"[INFO] demo site data in {var} (set --data-dir or SERVER_DATA_DIR to change)"
        ), server.output()

        browser = requests.Session()
        icon = browser.get(server.url + "/favicon.ico", timeout=TIMEOUT)
        assert icon.status_code == 200 and icon.headers["Content-Type"].startswith("image/")
        assert icon.content[:4] == b"\x00\x00\x01\x00", "an ICO file"
        linked = browser.get(server.url + "/static/favicon.ico", timeout=TIMEOUT)  # from the event loop
        assert linked.status_code == 200 and linked.content == icon.content

        page = browser.get(server.url + "/todo/", timeout=TIMEOUT)
        form = {"csrf_token": csrf_token(page), "title": "Buy milk"}
        added = browser.post(server.url + "/todo/", data=form, timeout=TIMEOUT)
        assert added.history[0].status_code == 303 and added.url == server.url + "/todo/"
        assert ">Buy milk</span>" in added.text
        todos = browser.get(server.url + "/todo/api/todos", timeout=TIMEOUT).json()["todos"]
        assert [todo["title"] for todo in todos] == ["Buy milk"]
    assert (var / "todo.sqlite3").is_file()
