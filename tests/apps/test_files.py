"""Uploads and downloads: the listing, the size limit (413, nothing left behind), ranges, and safe names."""

from __future__ import annotations

import fcntl
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from webtest import TestApp, Upload

from apps import files

LIMIT = 4096
CONTENT = bytes(range(256)) * 8  # 2048 bytes


@pytest.fixture
def folder(data_dir: Path) -> Path:
    return data_dir / "files"


@pytest.fixture
def client(data_dir: Path) -> TestApp:
    """The files app alone, with a small limit so the 413 paths are cheap to reach."""
    return TestApp(files.create_app(data_dir, max_upload=LIMIT))


def upload(client: TestApp, name: str, content: bytes, status: int | str = 303):
    """Choose a file in the page's form and submit it, CSRF token included."""
    form = client.get("/").forms[0]
    form["file"] = Upload(name, content, "application/octet-stream")
    return form.submit(status=status)


LOCK = ".lock"  # files.folder_lock's lock file: the one hidden file that belongs in the folder


def everything_in(folder: Path) -> list[str]:
    """Every name in the upload folder, hidden ones too (partial or temporary files would show up here), but
    the lock file."""
    return sorted(path.name for path in folder.iterdir() if path.name != LOCK) if folder.exists() else []


def test_upload_then_list_then_download(client, folder):
    page = upload(client, "data.bin", CONTENT).follow()
    assert "Uploaded data.bin (2.0 KiB)." in page.html.select_one("p.flash").text
    row = page.html.select_one("table.listing tbody tr")
    link = row.select_one("a")
    assert link.text == "data.bin" and link["href"] == "/data.bin"
    assert row.select_one("td.number").text == "2.0 KiB"
    assert (folder / "data.bin").read_bytes() == CONTENT
    assert everything_in(folder) == ["data.bin"], "no temporary file is left behind"

    download = client.get("/data.bin")
    assert download.body == CONTENT
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Security-Policy"] == "sandbox"
    assert download.headers["Accept-Ranges"] == "bytes"


def test_downloads_support_ranges_and_conditional_requests(client):
    upload(client, "data.bin", CONTENT)
    part = client.get("/data.bin", headers={"Range": "bytes=100-199"}, status=206)
    assert part.body == CONTENT[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(CONTENT)}"
    assert client.get("/data.bin", headers={"Range": "bytes=-48"}, status=206).body == CONTENT[-48:]
    client.get("/data.bin", headers={"Range": "bytes=99999-"}, status=416)
    etag = client.get("/data.bin").headers["ETag"]
    client.get("/data.bin", headers={"If-None-Match": etag}, status=304)
    assert client.head("/data.bin").headers["Content-Length"] == str(len(CONTENT))


def test_an_uploaded_html_file_is_downloaded_not_rendered(client):
    upload(client, "page.html", b"<script>alert(document.cookie)</script>")
    response = client.get("/page.html")
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Security-Policy"] == "sandbox"


def test_a_file_over_the_limit_is_413_and_leaves_nothing(client, folder):
    upload(client, "first.txt", b"kept")
    page = upload(client, "big.bin", b"x" * (LIMIT + 1), status=413)
    assert "too large" in page.html.select_one(".field.invalid .error").text
    assert "4.0 KiB" in page.html.select_one(".field.invalid .error").text
    assert page.forms[0]["csrf_token"].value, "the page comes back with a working form"
    assert everything_in(folder) == ["first.txt"]
    assert (folder / "first.txt").read_bytes() == b"kept", "the data already kept is untouched"


def test_a_body_declared_too_large_is_refused_before_it_is_read(client, folder):
    """Content-Length over the app's limit: 413 from the framework, with the same page, before any parsing."""
    token = client.get("/").forms[0]["csrf_token"].value
    body = b"y" * (LIMIT + files.FORM_OVERHEAD + 1)
    page = client.post(
        "/", {"csrf_token": token}, upload_files=[("file", "huge.bin", body)], status=413, expect_errors=True
    )
    assert "too large" in page.text
    assert everything_in(folder) == []


def test_no_file_chosen_is_400_with_the_error_next_to_the_field(client, folder):
    form = client.get("/").forms[0]
    page = form.submit(status=400)  # A browser sends an empty part with an empty file name.
    assert page.html.select_one(".field.invalid .error").text == "Choose a file to upload first."
    token = page.forms[0]["csrf_token"].value
    client.post("/", {"csrf_token": token}, status=400)  # No file part at all.
    assert everything_in(folder) == []


def test_an_upload_without_the_csrf_token_is_refused(client, folder):
    client.get("/")
    client.post("/", upload_files=[("file", "sneaky.txt", b"hi")], status=403)
    assert everything_in(folder) == []


def test_names_are_cleaned_and_never_overwrite(client, folder):
    upload(client, "../../etc/passwd", b"one")
    upload(client, "passwd", b"two")
    upload(client, "notes.tar.gz", b"a")
    upload(client, "notes.tar.gz", b"b")
    upload(client, "..hidden", b"c")
    assert everything_in(folder) == ["hidden", "notes.tar (2).gz", "notes.tar.gz", "passwd", "passwd (2)"]
    assert (folder / "passwd").read_bytes() == b"one" and (folder / "passwd (2)").read_bytes() == b"two"


def test_names_are_escaped_in_the_listing_and_quoted_in_links(client):
    name = "<img src=x onerror=alert(1)> & co.txt"
    upload(client, name, b"x")
    page = client.get("/")
    link = page.html.select_one("table.listing a")
    assert link.text == name
    assert "<img src=x" not in page.text
    assert " " not in link["href"] and "<" not in link["href"]
    assert client.get(link["href"]).body == b"x"


@pytest.mark.parametrize("path", ["/missing.txt", "/.incoming-0123", "/..%2Fsecret_key", "/%2e%2e/secret_key"])
def test_only_uploaded_files_can_be_downloaded(client, data_dir, path):
    upload(client, "real.txt", b"x")
    (data_dir / "files" / ".incoming-0123").write_bytes(b"half an upload")
    client.get(path, status=404)


def test_uploads_survive_a_restart(data_dir):
    upload(TestApp(files.create_app(data_dir)), "kept.txt", b"still here")
    restarted = TestApp(files.create_app(data_dir))
    assert restarted.get("/kept.txt").body == b"still here"


def test_the_files_app_is_mounted_in_the_site(site):
    form = site.get("/files/").forms[0]
    assert form.action == "/files/"
    form["file"] = Upload("hello.txt", b"hello", "text/plain")
    page = form.submit(status=303).follow()
    assert page.html.select_one("table.listing a")["href"] == "/files/hello.txt"
    assert site.get("/files/hello.txt").body == b"hello"


def test_human_sizes():
    assert [files.human_size(n) for n in (0, 1023, 1536, 8 * 2**20)] == ["0 bytes", "1023 bytes", "1.5 KiB", "8.0 MiB"]


def upload_from(app, address: str, name: str, content: bytes, folder: Path, when: float, status: int = 303):
    """Upload as the client at ``address``, then date the stored file ``when`` (seconds), so that which file is the
    oldest does not depend on the file system's clock."""
    page = upload(TestApp(app, extra_environ={"REMOTE_ADDR": address}), name, content, status)
    if status == 303:
        os.utime(folder / name, (when, when))
    return page


def test_a_full_folder_makes_room_with_its_oldest_files(data_dir, folder):
    """A full folder refused every upload with 507, and nothing is ever deleted: full once, full for good."""
    by_count = files.create_app(data_dir, max_upload=LIMIT, max_files=2, max_total=10 * LIMIT)
    upload_from(by_count, "192.0.2.1", "one.txt", b"1", folder, 1)
    upload_from(by_count, "192.0.2.2", "two.txt", b"2", folder, 2)
    page = upload_from(by_count, "192.0.2.3", "three.txt", b"3", folder, 3).follow()
    assert "1 older file made room for it." in page.html.select_one("p.flash").text
    assert everything_in(folder) == ["three.txt", "two.txt"]

    by_size = files.create_app(data_dir, max_upload=LIMIT, max_files=10, max_total=LIMIT)
    upload_from(by_size, "192.0.2.4", "big.bin", b"x" * LIMIT, folder, 4)
    assert everything_in(folder) == ["big.bin"], "both older files made room"
    assert "in 2 files" in " ".join(TestApp(by_count).get("/").html.select_one("p.quota").text.split())


def test_one_client_cannot_lock_the_others_out(data_dir, folder):
    """1000 one-byte uploads from one client in 4 s made every later upload from anyone a 507, forever. Past its
    share, a client's own oldest files make room for its new ones, so it never holds more than its share."""
    app = files.create_app(data_dir, max_upload=LIMIT, max_files=6, max_client_files=3, max_client_total=4 * LIMIT)
    for number in range(20):
        upload_from(app, "198.51.100.7", f"flood{number}.txt", b"x", folder, number)
    assert everything_in(folder) == ["flood17.txt", "flood18.txt", "flood19.txt"], "the flood keeps its share"
    for number in range(3):
        upload_from(app, f"192.0.2.{number}", f"visitor{number}.txt", b"hello", folder, 100 + number)
    upload_from(app, "198.51.100.7", "flood20.txt", b"x", folder, 200)
    assert everything_in(folder) == [
        *["flood18.txt", "flood19.txt", "flood20.txt"],
        *["visitor0.txt", "visitor1.txt", "visitor2.txt"],
    ], "the flood replaced its own oldest file, not a visitor's"


def test_one_client_holds_at_most_its_share_of_bytes(data_dir, folder):
    app = files.create_app(data_dir, max_upload=LIMIT, max_total=10 * LIMIT, max_client_total=LIMIT)
    upload_from(app, "2001:db8::1", "first.bin", b"x" * (LIMIT // 2), folder, 1)
    upload_from(app, "2001:db8::2", "second.bin", b"x" * (LIMIT // 2), folder, 2)  # the same /64: one client
    upload_from(app, "2001:db8::3", "third.bin", b"x" * (LIMIT // 2), folder, 3)
    assert everything_in(folder) == ["second.bin", "third.bin"]


def test_concurrent_uploads_keep_the_folder_within_its_bounds(data_dir, folder):
    """Uploads from many clients at once: each makes room and stores under the folder's lock, so the folder never
    ends up over its bounds, and nothing half-written is left."""
    app = files.create_app(data_dir, max_upload=LIMIT, max_files=5, max_total=3 * LIMIT)

    def send(number: int) -> None:
        upload(TestApp(app, extra_environ={"REMOTE_ADDR": f"192.0.2.{number}"}), "same.bin", CONTENT)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(24)))
    stored = everything_in(folder)
    assert 1 <= len(stored) <= 5 and not [name for name in stored if name.startswith(".")]
    assert sum((folder / name).stat().st_size for name in stored) <= 3 * LIMIT


def test_the_listing_shows_the_newest_files_and_counts_the_rest(client, folder, monkeypatch):
    monkeypatch.setattr(files, "LISTED", 2)
    folder.mkdir(parents=True)
    for number in range(5):
        (folder / f"file{number}.txt").write_text("x")
        os.utime(folder / f"file{number}.txt", (number, number))
    page = client.get("/")
    assert [link.text for link in page.html.select("table.listing a")] == ["file4.txt", "file3.txt"]
    assert "And 3 older files, not listed." in page.text


def test_a_file_still_being_staged_takes_its_room(data_dir, folder):
    """Another worker's upload in progress (or one a crash left behind) is on the disk already."""
    folder.mkdir(parents=True)
    (folder / ".incoming-0123456789abcdef").write_bytes(b"x" * (LIMIT - 10))
    app = TestApp(files.create_app(data_dir, max_upload=LIMIT, max_files=10, max_total=LIMIT))
    page = upload(app, "small.txt", b"y" * 20, status=507)
    assert "4.0 KiB in all" in page.html.select_one(".field.invalid .error").text
    assert not (folder / "small.txt").exists()


def test_a_dead_workers_part_file_is_counted_then_cleared(data_dir, folder):
    """``UploadedFile.save`` writes ``..incoming-<hex>.<random>.part``, which the quota (counting names that start
    with ``.incoming-``) ignored, and nothing ever removed: a worker dying mid-upload left it on the disk for good.
    It counts while young, and the next upload removes it once ``STALE_AFTER`` old."""
    folder.mkdir(parents=True)
    part = folder / "..incoming-0123456789abcdef.k3j_x9q2.part"
    part.write_bytes(b"x" * (LIMIT - 10))
    app = TestApp(files.create_app(data_dir, max_upload=LIMIT, max_files=10, max_total=LIMIT))
    upload(app, "small.txt", b"y" * 20, status=507)
    old = time.time() - files.STALE_AFTER - 1
    os.utime(part, (old, old))
    upload(app, "small.txt", b"y" * 20)
    assert everything_in(folder) == ["small.txt"]


def held_elsewhere(folder: Path) -> bool:
    """Whether someone holds the upload folder's lock: what another worker process would wait for."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # closing the file lets go of the lock we just took


def test_the_room_is_checked_and_the_file_stored_under_the_folders_lock(client, folder, monkeypatch):
    """Uploads arriving together each saw room for themselves and all stored: eight 3 MiB uploads under a 4 MiB
    quota stored 24 MiB. Under one lock, from the check to the file's final name, the next upload sees it."""
    seen = []
    for step in ("make_room", "store"):
        original = getattr(files, step)

        def watched(*args, original=original, step=step):
            seen.append((step, held_elsewhere(folder)))
            return original(*args)

        monkeypatch.setattr(files, step, watched)
    upload(client, "data.bin", CONTENT)
    assert seen == [("make_room", True), ("store", True)]
    assert not held_elsewhere(folder), "and let go of once the upload is stored"
