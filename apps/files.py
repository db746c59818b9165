"""Uploads and downloads: a multipart form in, a listing, and files out with ranges and caching.

- ``POST /files/`` takes a ``multipart/form-data`` upload. The framework streams it into a temporary file (in
  memory while small, on disk beyond that), so a large upload never sits in memory. Two limits guard the disk:
  the app's ``max_body_size`` refuses a body whose declared length is too large before reading a byte of it,
  and ``upload`` checks the file's own size. Either way the answer is 413 with the page and its explanation,
  and nothing is left behind: a file reaches the upload folder only once it is complete (see ``store``).
- The upload folder as a whole is bounded too, sized for a demo: at most ``max_total`` bytes (100 MiB) in at
  most ``max_files`` files (1000), and one client (its address, as ``address_key`` reads it) at most a share of
  that (``CLIENT_TOTAL``, ``CLIENT_FILES``). Full, the folder makes room rather than refusing: past its share, a
  client's own oldest uploads are deleted for its new one, then, past the folder's bound, the oldest uploads of
  anyone (``make_room``; the page says so). Refusing instead let one client lock everyone out for good: 1000
  one-byte uploads in 4 s, and every later upload was a 507, since nothing is ever deleted otherwise. Now a
  client that uploads without end only replaces its own files, beyond pushing out the oldest of others' up to
  its share. The bound holds however many uploads arrive at once, in threads or worker processes: each one makes
  room and stores its file under one lock (``folder_lock``). Who sent each file is kept in ``files.sqlite3`` in
  the data directory. A client is its address as the app sees it: behind a proxy, or on a Unix socket, the
  server must be told to trust the proxy's headers (``--forwarded-allow-ips``), or every visitor is one client
  and the whole folder shrinks to one client's share.
- A file in the making is hidden (``in_the_making``) and takes its room; one left behind by a worker that died
  mid-upload is removed by the next upload once ``STALE_AFTER`` old (``clear_leftovers``).
- ``GET /files/`` lists the newest ``LISTED`` uploads, and says how many more there are.
- ``GET /files/<name>`` sends a file with ``FileResponse``, which follows the same rules as the server's
  static files: ``Range`` requests (206, so a download can resume), ``ETag`` and ``Last-Modified`` (304).

Uploaded files are someone else's content served from this site's origin, so they are always sent as
attachments (``Content-Disposition: attachment``), with ``X-Content-Type-Options: nosniff`` and a sandboxing
``Content-Security-Policy``: an uploaded ``.html`` file is downloaded, never run as a page of this site.

Serve it alone with ``python -m server apps.files:app``, or as part of the demo site at ``/files/``.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TypedDict

from framework import App, FileResponse, HTTPError, Request, Response, UploadedFile, abort, redirect, safe_join

from .common import Database, address_key, default_data_dir, make_app

MAX_UPLOAD = 8 * 2**20
MAX_TOTAL = 100 * 2**20
MAX_FILES = 1000
# One client's share of the folder: a fifth of its bytes, a tenth of its files (see make_room).
CLIENT_TOTAL = MAX_TOTAL // 5
CLIENT_FILES = MAX_FILES // 10
# How old a file in the making must be to be taken for a dead worker's leftover and removed (see clear_leftovers).
STALE_AFTER = 10 * 60
LISTED = 100  # files shown in the listing, newest first
# The multipart framing around the file (boundaries, part headers, the CSRF field) is small, but not zero.
FORM_OVERHEAD = 64 * 2**10
STAGING = ".incoming-"  # a file being written, before it gets its name (see ``store`` and ``in_the_making``)
LOCK = ".lock"  # the lock file of ``folder_lock``
# Who sent each upload (its client's ``address_key``), for the clients' shares. A file with no row (put there
# by hand, or stored before shares existed) counts for the folder only.
OWNERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (
    name    TEXT PRIMARY KEY,
    client  TEXT NOT NULL
);
"""


def human_size(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes as people read them."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024**2:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024**2:.1f} MiB"


def store(upload: UploadedFile, folder: Path) -> str:
    """Save ``upload`` in ``folder`` under its (cleaned) name, never replacing an existing file; return the name.

    ``UploadedFile.save`` writes a temporary file and renames it into place only when complete, so no reader
    ever sees half a file. The temporary name here starts with a dot, which the listing and ``safe_join`` both
    ignore. The final step is ``os.link``, which, unlike a rename, fails when the name is taken: two uploads of
    ``notes.txt`` racing each other end up as ``notes.txt`` and ``notes (2).txt``, and neither is lost.
    """
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f"{STAGING}{secrets.token_hex(8)}"
    upload.save(staging)
    try:
        stem, dot, suffix = upload.safe_filename.rpartition(".")
        if not stem:  # "README" or ".bashrc" (already stripped to "bashrc"): no extension to keep
            stem, dot, suffix = suffix, "", ""
        for attempt in range(1, 1000):
            name = upload.safe_filename if attempt == 1 else f"{stem} ({attempt}){dot}{suffix}"
            try:
                os.link(staging, folder / name)
                return name
            except FileExistsError:
                continue
        abort(409, f"There are too many files called {upload.safe_filename!r} already.")
    finally:
        staging.unlink()


class ListedFile(TypedDict):
    """One uploaded file in the listing: what the template shows, and ``mtime`` (seconds) to sort by."""

    name: str
    size: str
    modified: str
    mtime: float
    bytes: int


def listing(folder: Path) -> list[ListedFile]:
    """The uploaded files, newest first, as the template shows them."""
    if not folder.is_dir():
        return []
    entries: list[ListedFile] = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            info = entry.stat()
        except FileNotFoundError:  # Deleted since the folder was read: an upload made room (make_room).
            continue
        modified = datetime.fromtimestamp(info.st_mtime, UTC)
        entries.append(
            {
                "name": entry.name,
                "size": human_size(info.st_size),
                "modified": modified.strftime("%Y-%m-%d %H:%M UTC"),
                "mtime": info.st_mtime,
                "bytes": info.st_size,
            }
        )
    return sorted(entries, key=lambda item: (-item["mtime"], item["name"]))


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the upload folder's lock: one upload at a time checks the room left and stores its file.

    Without it, uploads arriving together each see room for themselves and all store (eight 3 MiB uploads under
    a 4 MiB quota stored 24 MiB). The lock is ``flock`` on a file in the folder, so it holds between the worker
    processes of ``--workers N`` as well as between threads: a ``flock`` lock belongs to an open file, and each
    upload opens the lock file itself, so two threads of one process wait for each other as two processes do.
    (``flock`` is POSIX; the server it runs under is too.) Uploads are written one at a time under it, but the
    slow part, receiving the body from the network, is done by the framework before the view runs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "ab") as lock:  # closing it releases the lock, whatever happened
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Quota(NamedTuple):
    """What the upload folder may hold: ``total`` bytes in ``files`` files, and from one client at most
    ``client_total`` bytes in ``client_files`` files."""

    total: int
    files: int
    client_total: int
    client_files: int


class Held(NamedTuple):
    """A file in the upload folder, as the quota sees it."""

    name: str
    size: int
    mtime: float


def in_the_making(name: str) -> bool:
    """Whether ``name``, in the upload folder, is a file in the making: any hidden name but the lock's.

    ``store`` stages an upload as ``.incoming-<hex>``, and ``UploadedFile.save`` writes that through a temporary
    ``..incoming-<hex>.<random>.part`` of its own. Counting names that start with ``.incoming-`` missed the
    second, so the part files of a worker that died mid-upload took the disk uncounted; every temporary name is
    hidden, so one rule finds them all. (Hidden names are never listed, nor served by ``safe_join``.)"""
    return name.startswith(".") and name != LOCK


def folder_contents(folder: Path) -> tuple[list[Held], list[Held]]:
    """The uploaded files, oldest first, and the files in the making (the lock file is neither)."""
    done: list[Held] = []
    making: list[Held] = []
    for entry in os.scandir(folder) if folder.is_dir() else []:
        if entry.name != LOCK and entry.is_file(follow_symlinks=False):
            info = entry.stat(follow_symlinks=False)
            (making if in_the_making(entry.name) else done).append(Held(entry.name, info.st_size, info.st_mtime))
    return sorted(done, key=lambda held: (held.mtime, held.name)), making


def clear_leftovers(folder: Path, making: list[Held], now: float) -> list[Held]:
    """Remove the files in the making older than ``STALE_AFTER`` seconds; answer the others, which keep their room.

    Called under the folder's lock, where no upload of this app is being written, so any such file is a dead
    worker's leftover. The younger ones are left all the same, and counted: removing a file another process may
    still be writing (an older copy of the app during a restart, one that takes no lock) would cost its upload,
    while waiting costs only a few minutes of room."""
    kept = []
    for held in making:
        if now - held.mtime > STALE_AFTER:
            (folder / held.name).unlink(missing_ok=True)
        else:
            kept.append(held)
    return kept


def oldest_to_drop(held: list[Held], max_count: int, max_bytes: int) -> list[Held] | None:
    """The oldest of ``held`` (which is oldest first) to delete so that at most ``max_count`` files of at most
    ``max_bytes`` in all are left; ``None`` when deleting them all would not do (a budget below zero)."""
    if max_count < 0 or max_bytes < 0:
        return None
    count, size = len(held), sum(item.size for item in held)
    dropped = []
    for item in held:
        if count <= max_count and size <= max_bytes:
            break
        dropped.append(item)
        count, size = count - 1, size - item.size
    return dropped


def make_room(
    files: list[Held], making: list[Held], owners: dict[str, str], client: str, size: int, quota: Quota
) -> list[Held] | str:
    """The files to delete so that one more file of ``size`` bytes from ``client`` fits; or why it cannot.

    First the client's share: past it, the client's own oldest files go, so a client never holds more than its
    share, however much it sends. Then the folder's bound: the oldest files go, whoever sent them, so the folder
    is never full for the next visitor. Files in the making are not files yet and cannot go: they keep their
    room until they are done, or cleared as leftovers."""
    mine = [held for held in files if owners.get(held.name) == client]
    own = oldest_to_drop(mine, quota.client_files - 1, quota.client_total - size)
    if own is None:
        return f"That file is larger than one visitor's share of the folder ({human_size(quota.client_total)})."
    going = {held.name for held in own}
    rest = [held for held in files if held.name not in going]
    pending = sum(held.size for held in making)
    others = oldest_to_drop(rest, quota.files - 1 - len(making), quota.total - size - pending)
    if others is None:
        return (
            f"The upload folder is full: uploads may take {human_size(quota.total)} in all, and uploads still being "
            "written hold the rest. Try again in a few minutes."
        )
    return own + others


def keep(upload: UploadedFile, client: str, folder: Path, db: sqlite3.Connection, quota: Quota) -> tuple[str, int]:
    """Store ``upload`` from ``client``, first deleting what ``make_room`` says: its name, and how many files
    made room for it. 507 with the reason when it cannot fit. Call it under the folder's lock."""
    files, making = folder_contents(folder)
    making = clear_leftovers(folder, making, time.time())
    owners: dict[str, str] = dict(db.execute("SELECT name, client FROM owners").fetchall())
    room = make_room(files, making, owners, client, upload.size, quota)
    if isinstance(room, str):
        abort(507, room)
    for held in room:
        (folder / held.name).unlink(missing_ok=True)
    # The deleted files' rows go, and so do the rows of files deleted by other hands.
    forgotten = {held.name for held in room} | (owners.keys() - {held.name for held in files})
    db.executemany("DELETE FROM owners WHERE name = ?", [(name,) for name in forgotten])
    name = store(upload, folder)
    db.execute("INSERT OR REPLACE INTO owners (name, client) VALUES (?, ?)", (name, client))
    return name, len(room)


def create_app(
    data_dir: Path | None = None,
    *,
    max_upload: int = MAX_UPLOAD,
    max_total: int = MAX_TOTAL,
    max_files: int = MAX_FILES,
    max_client_total: int = CLIENT_TOTAL,
    max_client_files: int = CLIENT_FILES,
) -> App:
    """The upload folder at ``data_dir/files``; files larger than ``max_upload`` bytes are refused with 413. The
    folder keeps at most ``max_total`` bytes in ``max_files`` files, and from one client ``max_client_total`` bytes
    in ``max_client_files`` files: past either, the oldest uploads make room (see ``make_room``)."""
    data_dir = data_dir or default_data_dir()
    folder = data_dir / "files"
    quota = Quota(max_total, max_files, max_client_total, max_client_files)
    owners = Database(data_dir / "files.sqlite3", OWNERS_SCHEMA)
    app = make_app(__name__, data_dir, max_body_size=max_upload + FORM_OVERHEAD)
    app.template_filter(human_size)  # The page states the quota: {{ quota.total | human_size }}

    def render(request: Request, error: str | None = None) -> Response:
        files = listing(folder)
        return app.render(
            request,
            "files.html",
            files=files[:LISTED],
            unlisted=len(files[LISTED:]),
            error=error,
            max_upload=human_size(max_upload),
            quota=quota,
        )

    @app.get("/")
    def index(request: Request) -> Response:
        """The upload form and the listing."""
        return render(request)

    @app.post("/")
    def upload(request: Request) -> Response | tuple[Response, int]:
        """Store the uploaded file and redirect to the listing; 400 without a file, 413 for a large one."""
        chosen = request.files.get("file")
        if chosen is None or not chosen.filename:  # A browser sends an empty, nameless part for "no file".
            return render(request, "Choose a file to upload first."), 400
        if chosen.size > max_upload:
            abort(413)  # The handler below explains; the temporary file goes with the request.
        # No other upload makes room or stores between our look at the folder and our store.
        with folder_lock(folder), owners.transaction() as db:
            name, made_room = keep(chosen, address_key(request), folder, db, quota)
        room = f" {made_room} older file{'s' if made_room > 1 else ''} made room for it." if made_room else ""
        request.flash(f"Uploaded {name} ({human_size(chosen.size)}).{room}")
        return redirect(request.url_for("index"), 303)

    @app.get("/<name>")
    def download(request: Request, name: str) -> Response:
        """One file, as an attachment, with range and conditional requests."""
        path = safe_join(folder, name)
        if path is None:
            abort(404)
        response = FileResponse(path, request, download_name=name)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "sandbox"
        return response

    @app.errorhandler(413)
    def too_large(request: Request, error: HTTPError) -> Response:
        """The page again, saying what the limit is, rather than a bare error."""
        return render(request, f"That file is too large: uploads are limited to {human_size(max_upload)}.")

    @app.errorhandler(507)
    def no_room(request: Request, error: HTTPError) -> Response:
        """The page again, saying why the file found no room."""
        return render(request, error.description)

    return app


app = create_app()
