"""Uploads and downloads: a multipart form in, a listing, and files out with ranges and caching.

- ``POST /files/`` takes a ``multipart/form-data`` upload. The framework streams it into a temporary file (in
  memory while small, on disk beyond that), so a large upload never sits in memory. Two limits guard the disk:
  the app's ``max_body_size`` refuses a body whose declared length is too large before reading a byte of it,
  and ``upload`` checks the file's own size. Either way the answer is 413 with the page and its explanation,
  and nothing is left behind: a file reaches the upload folder only once it is complete (see ``store``).
- The upload folder as a whole is bounded too, sized for a demo: at most ``max_total`` bytes (100 MiB) in at
  most ``max_files`` files (1000). An upload beyond either is refused with 507 Insufficient Storage and the page
  saying why. The bound holds however many uploads arrive at once, in threads or worker processes: each one
  checks the room and stores its file under one lock (``folder_lock``), and files still being staged count as
  taken.
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from framework import App, FileResponse, HTTPError, Request, Response, UploadedFile, abort, redirect, safe_join

from .common import default_data_dir, make_app

MAX_UPLOAD = 8 * 2**20
MAX_TOTAL = 100 * 2**20
MAX_FILES = 1000
LISTED = 100  # files shown in the listing, newest first
# The multipart framing around the file (boundaries, part headers, the CSRF field) is small, but not zero.
FORM_OVERHEAD = 64 * 2**10
STAGING = ".incoming-"  # a file being written, before it gets its name (see ``store``)
LOCK = ".lock"  # the lock file of ``folder_lock``


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
        info = entry.stat()
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


def room_problem(folder: Path, size: int, max_total: int, max_files: int) -> str | None:
    """Why one more file of ``size`` bytes does not fit in ``folder`` (``None`` if it does).

    Files still being staged (``.incoming-*``) take the disk and will take a name: they count. Outside the lock
    there are none unless a worker died in the middle of an upload, and then they count until removed."""
    sizes = [
        entry.stat().st_size
        for entry in (os.scandir(folder) if folder.is_dir() else [])
        if entry.is_file(follow_symlinks=False) and (not entry.name.startswith(".") or entry.name.startswith(STAGING))
    ]
    if len(sizes) >= max_files:
        return f"The upload folder is full: it holds at most {max_files} files."
    if sum(sizes) + size > max_total:
        return f"The upload folder is full: uploads may take {human_size(max_total)} in all."
    return None


def create_app(
    data_dir: Path | None = None,
    *,
    max_upload: int = MAX_UPLOAD,
    max_total: int = MAX_TOTAL,
    max_files: int = MAX_FILES,
) -> App:
    """The upload folder at ``data_dir/files``; files larger than ``max_upload`` bytes are refused with 413, and
    any upload once the folder holds ``max_total`` bytes or ``max_files`` files with 507."""
    data_dir = data_dir or default_data_dir()
    folder = data_dir / "files"
    app = make_app(__name__, data_dir, max_body_size=max_upload + FORM_OVERHEAD)

    def render(request: Request, error: str | None = None) -> Response:
        files = listing(folder)
        return app.render(
            request,
            "files.html",
            files=files[:LISTED],
            unlisted=len(files[LISTED:]),
            error=error,
            max_upload=human_size(max_upload),
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
        with folder_lock(folder):  # No other upload checks or stores between our check and our store.
            full = room_problem(folder, chosen.size, max_total, max_files)
            name = None if full else store(chosen, folder)
        if name is None:
            return render(request, full), 507
        request.flash(f"Uploaded {name} ({human_size(chosen.size)}).")
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

    return app


app = create_app()
