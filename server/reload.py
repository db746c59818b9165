"""The development loop: ``python -m server app:app --reload`` restarts the server when its code changes.

Two processes. The parent (``Reloader``) never imports the application, so no edit can break it: it opens the
listening sockets once, then runs the real server as a child, ``python -m server`` with the same arguments,
handing it the sockets by file descriptor. When a file changes, the child is stopped (SIGTERM, then SIGKILL past a
deadline) and a fresh one is started on the same sockets. The listening sockets never close, so a browser that
refreshes during a restart is not refused: its connection waits in the kernel's backlog and the new child
answers it.

The child says which files matter: after loading the app it writes a report (JSON, replaced atomically, at a
path the parent puts in the environment as ``LADDER_RELOAD``) with every file in ``sys.modules`` and every file
in the app's template folders, each with its modification time and size (the size catches a save that a file
system with coarse timestamps leaves at the same time). A file modified after the child began loading (the
parent says when it started the child) may have been read before or after the save, so the child reports it as
changed rather than making its new time the baseline. A thread of the child writes the report again
when ``sys.modules`` grows (modules imported on a first request). Template folders are the app's own when it
names one (``app.templates.folder`` of our framework, Flask's ``root_path`` + ``template_folder``), and every
``templates/`` folder next to a module of the app or in one of its packages; the parent adds every
``templates/`` folder under the current directory. A restart follows when a file's time differs from the one
it had before the child started (for a file the parent already knew, so a save during a start counts) or from
the child's (for a file new to the parent, unless it is one of the current directory's ``.py`` files, whose
times the parent takes before every start), or when a new file appears in a template folder. The files the
command line names (``--certfile``, ``--keyfile``...) are watched from the start, so a change to one (a renewal
too) restarts the child: a child that could not start on a broken certificate needs the fix to be a change, and
while the certificate is broken only its error is shown, whatever the state of the app. A SIGHUP restarts the
child once: one that arrives while a restart is under way is served by that restart.

An app that fails to load (a syntax error, any exception on import or in its factory) does not end the loop:
the child prints the error and reports the files it knows (those imported so far, the file named in a
SyntaxError, those in the traceback), then serves a 503 page (with the traceback under ``--debug``) until the
parent replaces it. While the app is broken the parent also watches every ``.py`` file under the current
directory, new ones included, so creating a missing module is a fix too. A child that exits on its own is
waited on the same way.

Why polling: ``os.stat`` of a few thousand files every half second costs a few milliseconds, works the same on
every platform and file system (network mounts, containers with bind mounts, editors that save by renaming),
and needs no watch descriptors. inotify (through ctypes) would notice a change sooner but is Linux-only, needs
one watch per directory and limits on how many a user may hold, and misses changes on some mounts. Half a second
is shorter than it takes to switch from the editor to the browser.

The child also stops itself when the parent disappears (killed outright), so it never serves on alone.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType

from server.listeners import Listener, parse_bind
from server.loader import LoadError

log = logging.getLogger("server.reload")

RELOAD_ENV = "LADDER_RELOAD"  # set by the parent for its child: where to report, which descriptors to serve on
POLL_INTERVAL = 0.5  # seconds between two looks at the files
RESTART_DEADLINE = 5.0  # how long a child may take to finish its requests before a restart kills it
REPORT_INTERVAL = 1.0  # how often the child looks for newly imported modules and for its parent
# Files in template folders that count: the template languages and the text formats they render.
TEMPLATE_SUFFIXES = frozenset(
    {".html", ".htm", ".xhtml", ".xml", ".jinja", ".jinja2", ".j2", ".tpl", ".txt", ".md", ".css", ".js", ".json"}
)
# Folders never searched for templates or Python files: caches, virtual environments, version control.
_SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})
MAX_SCAN_ENTRIES = 20000  # a walk of the current directory stops here (someone ran it in their home folder)
MAX_SCAN_DEPTH = 6

Stamp = tuple[int, int]  # (st_mtime_ns, st_size)
Snapshot = dict[str, Stamp | None]  # path -> its stamp (None: missing, or changed while the app was loading)

# When this process, a --reload child, began loading the app (set by child_settings; ns since the epoch).
_loading_since: int | None = None


def stamp(path: str) -> Stamp | None:
    """The file's modification time in nanoseconds and its size, or None if it is not there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


# -- the child's side -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSettings:
    """What the parent tells its child through ``LADDER_RELOAD``."""

    report: str  # where to write the report
    listeners: tuple[tuple[int, str], ...]  # (inherited descriptor, the --bind it was opened for)
    started: int  # time.time_ns() just before the parent started this child: the app was loaded after it


def child_settings(environ: MutableMapping[str, str] | None = None) -> ChildSettings | None:
    """The settings if this process is a ``--reload`` child, else None.

    The variable is removed, so that a ``python -m server`` the app itself starts is an ordinary server. The
    moment the parent started us is remembered for the ``Reporter``: no app module was read before it."""
    global _loading_since
    env = os.environ if environ is None else environ
    raw = env.pop(RELOAD_ENV, None)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        settings = ChildSettings(
            str(data["report"]),
            tuple((int(fd), str(bind)) for fd, bind in data["listeners"]),
            int(data.get("started", time.time_ns())),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # Set by hand, or left over from another version: say which variable, rather than a traceback.
        raise ValueError(f"{RELOAD_ENV} is set but is not what a --reload parent writes; unset it") from None
    _loading_since = settings.started
    return settings


def inherit_listeners(settings: ChildSettings) -> list[Listener]:
    """The parent's listening sockets, from the descriptors it passed down."""
    listeners = []
    for fd, bind in settings.listeners:
        sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        sock.setblocking(False)
        listeners.append(Listener(sock, parse_bind(bind)))
    return listeners


class Reporter:
    """Writes the child's report, and keeps it current from a thread (``start``)."""

    def __init__(self, path: str, app: object = None, error: BaseException | None = None) -> None:
        self.path = path
        self.app = app
        self.failed = error is not None
        self.files: Snapshot = {}
        # Files of modules first seen by an update were read after this moment (at first, when loading began).
        self._read_since = _loading_since if _loading_since is not None else time.time_ns()
        self.template_dirs: set[str] = set()
        self._extra = _error_files(error) if error is not None else []
        self._modules_seen = -1
        self._parent = os.getppid()
        self._libraries = _library_folders()

    def update(self) -> bool:
        """Add files of modules imported since the last call; True if the report changed."""
        listed = time.time_ns()
        modules = list(sys.modules.values())  # one copy, atomic under the GIL
        if len(modules) == self._modules_seen:
            return False
        self._modules_seen = len(modules)
        paths = {path for path in (_module_file(module) for module in modules) if path}
        paths.update(self._extra)
        new = paths - self.files.keys()
        folders = set(_app_template_folders(self.app)) if not self.template_dirs else set()
        folders.update(_template_folders_near(p for p in new if not self._is_library(p)))
        folders -= self.template_dirs
        for folder in sorted(folders):
            self.template_dirs.add(folder)
            new.update(template_files(folder))
        changed = False
        for path in new:
            current = stamp(path)
            if current is not None:
                # Saved since the module could have been read: whether the app has the old text or the new one,
                # nobody knows, so it counts as changed (None). A time ahead of the clock is no save of now.
                self.files[path] = None if self._read_since <= current[0] <= time.time_ns() else current
                changed = True
        self._read_since = listed
        return changed

    def write(self) -> None:
        data = {"failed": self.failed, "files": self.files, "template_dirs": sorted(self.template_dirs)}
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(data, file)
        os.replace(temporary, self.path)  # the parent never reads half a report

    def start(self) -> None:
        """Write the report now, then watch for new modules and for the parent's death from a daemon thread."""
        self.update()
        self.write()
        threading.Thread(target=self._watch, name="reload-reporter", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(REPORT_INTERVAL)
            if os.getppid() != self._parent:
                log.warning("the --reload process is gone; stopping")
                os.kill(os.getpid(), signal.SIGTERM)  # the engine's own graceful shutdown
                return
            try:
                if self.update():
                    self.write()
            except Exception:  # a report that cannot be written must not kill the server
                log.debug("could not update the reload report", exc_info=True)

    def _is_library(self, path: str) -> bool:
        return path.startswith(self._libraries)


def describe_load_error(error: BaseException) -> str:
    """The original exception behind a load failure, as a traceback of the app's own frames ('' if none).

    ``server.loader`` raises LoadError ``from None``; the exception it replaced is still its ``__context__``.
    Frames of the server and of importlib are left out: they are the same for every app."""
    original = (error.__cause__ or error.__context__) if isinstance(error, LoadError) else error
    if original is None:
        return ""
    ours = (
        os.path.join(os.path.dirname(os.path.abspath(__file__)), ""),
        os.path.join(os.path.dirname(os.path.abspath(importlib.__file__)), ""),
        "<frozen importlib",
    )
    frames = [frame for frame in traceback.extract_tb(original.__traceback__) if not frame.filename.startswith(ours)]
    text = "".join(traceback.format_exception_only(type(original), original))
    if frames:
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + text
    return text


def failure_app(detail: str | None) -> Callable:
    """The WSGI app a child serves while the real one cannot be loaded: 503, with ``detail`` if given."""
    text = "The application could not be loaded; the server starts it again when a file changes.\n"
    if detail:
        text += "\n" + detail
    else:
        text += "The server's log says why (run with --debug to see it here).\n"
    body = text.encode("utf-8")

    def application(environ: dict, start_response: Callable) -> list[bytes]:
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Retry-After", "1"),
            ],
        )
        return [body]

    return application


def _module_file(module: object) -> str | None:
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str) or filename.startswith("<"):
        return None
    return os.path.abspath(filename)


def _error_files(error: BaseException) -> list[str]:
    """Files named by a failed load: a SyntaxError's file and every frame of every exception in the chain."""
    files = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SyntaxError) and current.filename:
            files.append(current.filename)
        files.extend(frame.f_code.co_filename for frame in _frames(current.__traceback__))
        current = current.__cause__ or current.__context__
    return [os.path.abspath(f) for f in files if f and not f.startswith("<")]


def _frames(tb: TracebackType | None) -> Iterator[FrameType]:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _library_folders() -> tuple[str, ...]:
    """Where the standard library and installed packages live: no app templates in there."""
    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(os.path.join(os.path.abspath(folder), "") for folder in folders)


def _app_template_folders(app: object) -> list[str]:
    """Template folders the app object names, found by duck typing (the server imports no framework)."""
    folders = []
    try:
        folder = getattr(getattr(app, "templates", None), "folder", None)  # framework.App
        if isinstance(folder, str | os.PathLike):
            folders.append(os.fspath(folder))
        root, name = getattr(app, "root_path", None), getattr(app, "template_folder", None)  # Flask
        if isinstance(root, str) and isinstance(name, str | os.PathLike):
            folders.append(os.path.join(root, os.fspath(name)))
    except Exception:  # an attribute that is a property raising: not our business
        pass
    return [os.path.abspath(folder) for folder in folders if os.path.isdir(folder)]


def _template_folders_near(module_files: Iterable[str]) -> set[str]:
    """``templates/`` next to each module, and next to each package above it up to the top-level one's parent."""
    found: set[str] = set()
    checked: set[str] = set()
    for path in module_files:
        folder = os.path.dirname(path)
        while folder not in checked:
            checked.add(folder)
            candidate = os.path.join(folder, "templates")
            if os.path.isdir(candidate):
                found.add(candidate)
            if not os.path.isfile(os.path.join(folder, "__init__.py")):
                break  # the folder that holds the top-level package (or module): checked, and no higher
            folder = os.path.dirname(folder)
    return found


# -- walking folders (both sides) ------------------------------------------------------------------------------------


def _is_noise(name: str) -> bool:
    """Editor swap, backup and lock files, hidden files."""
    return name.startswith((".", "#")) or name.endswith("~")


def _walk(root: str, max_depth: int = MAX_SCAN_DEPTH) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk without hidden folders, caches and virtual environments, and with a bound on depth and size."""
    entries = 0
    base_depth = root.rstrip(os.sep).count(os.sep)
    for folder, subfolders, files in os.walk(root):
        entries += len(subfolders) + len(files)
        if entries > MAX_SCAN_ENTRIES:
            return
        subfolders[:] = [
            name
            for name in subfolders
            if not _is_noise(name)
            and name not in _SKIPPED_FOLDERS
            and not os.path.exists(os.path.join(folder, name, "pyvenv.cfg"))
        ]
        if folder.count(os.sep) - base_depth >= max_depth:
            subfolders[:] = []
        yield folder, subfolders, files


def template_files(folder: str) -> list[str]:
    """The template-like files under ``folder``."""
    return [
        os.path.join(parent, name)
        for parent, _, files in _walk(folder)
        for name in files
        if not _is_noise(name) and os.path.splitext(name)[1].lower() in TEMPLATE_SUFFIXES
    ]


def template_folders_under(root: str) -> set[str]:
    """Every folder called ``templates`` under ``root``."""
    return {os.path.join(parent, "templates") for parent, subfolders, _ in _walk(root) if "templates" in subfolders}


def python_files_under(root: str) -> list[str]:
    return [
        os.path.join(parent, name)
        for parent, _, files in _walk(root)
        for name in files
        if name.endswith(".py") and not _is_noise(name)
    ]


def snapshot(paths: Iterable[str]) -> Snapshot:
    return {path: stamp(path) for path in paths}


def _stamp_from_json(value: object) -> Stamp | None:
    """A stamp as the child's report holds it ([mtime_ns, size], or null), back as a tuple; junk is None."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(part, int) for part in value):
        return value[0], value[1]
    return None


# -- the parent's side ------------------------------------------------------------------------------------------------


class Reloader:
    """Runs ``python -m server ARGS`` as a child on ``listeners`` and restarts it when its files change."""

    def __init__(
        self,
        args: Sequence[str],
        listeners: list[Listener],
        graceful_timeout: float,
        interval: float = POLL_INTERVAL,
        watch: Iterable[str] = (),
    ) -> None:
        self.args = list(args)
        self.always_watched = [os.path.abspath(path) for path in watch]  # the files the command line names
        self.listeners = listeners
        self.graceful_timeout = graceful_timeout
        self.interval = interval
        self.root = os.getcwd()
        self.child: subprocess.Popen | None = None
        self.failed = False  # the app did not load, or the child exited: waiting for a change
        self.known: Snapshot = {}  # files whose change means a restart, with their stamp when last seen
        self.template_dirs: set[str] = set()
        self.fallback: Snapshot = {}  # the current directory's .py files, watched only while failed
        self._stop_signal: int | None = None
        self._restart = False  # SIGHUP
        self._runs = 0
        self._report = ""
        self._report_key: tuple[int, int, int] | None = None
        self._started_ns = 0  # when the current child was started
        # A file written while the app loaded that caused the last restart: written again by the next load, it is
        # the app's own doing (a module or template it generates at import), not an edit (see _rewritten_by_app).
        self._rewritten: str | None = None
        self._last_change: tuple[str, Stamp | None] | None = None
        self._app_written: set[str] = set()  # files found to be written by the app itself as it loads
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- the loop ---------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start the child, restart it on every change; return 0 once SIGINT or SIGTERM stopped everything."""
        workdir = tempfile.mkdtemp(prefix="server-reload-")
        previous = self._install_signals()
        try:
            log.info("--reload: restarting the server when a file it imported or a template changes")
            while self._stop_signal is None:
                self._start(workdir)
                changed = self._watch()
                if changed is None:
                    break
                log.info("--reload: %s; restarting", changed)
                self._rewritten = self._written_while_loading()
                self._stop_child(signal.SIGTERM, min(self.graceful_timeout, RESTART_DEADLINE))
            sig = self._stop_signal or signal.SIGTERM
            self._stop_child(sig, self.graceful_timeout + 1.0 if sig == signal.SIGTERM else RESTART_DEADLINE)
            return 0
        finally:
            self._stop_child(signal.SIGKILL, RESTART_DEADLINE)  # only if still running (an exception above)
            self._restore_signals(previous)
            shutil.rmtree(workdir, ignore_errors=True)
            for listener in self.listeners:
                listener.sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _start(self, workdir: str) -> None:
        """Take the baseline of what is watched, then start a child."""
        # A SIGHUP that came while the previous child was stopping asked for what this start does: without this,
        # the new child would be restarted as soon as it started.
        self._restart = False
        self._runs += 1
        self._report = os.path.join(workdir, f"report-{self._runs}.json")
        self._report_key = None
        self.template_dirs |= template_folders_under(self.root)
        watched = set(self.known)
        watched.update(self.always_watched)
        for folder in self.template_dirs:
            watched.update(template_files(folder))
        self.known = snapshot(watched)
        self.fallback = snapshot(python_files_under(self.root))
        self.failed = False
        listeners = [[listener.sock.fileno(), str(listener.address)] for listener in self.listeners]
        self._started_ns = time.time_ns()
        self._last_change = None
        settings = {"report": self._report, "listeners": listeners, "started": self._started_ns}
        self.child = subprocess.Popen(
            [sys.executable, "-m", "server", *self.args],
            env={**os.environ, RELOAD_ENV: json.dumps(settings)},
            pass_fds=[listener.sock.fileno() for listener in self.listeners],
        )

    def _watch(self) -> str | None:
        """Wait for a change and say what it was; None when asked to stop."""
        while True:
            select.select([self._wake_r], [], [], self.interval)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
            if self._stop_signal is not None:
                return None
            if self._restart:
                self._restart = False
                return "SIGHUP received"
            self._read_report()
            assert self.child is not None
            status = self.child.poll()
            if status is not None and not self.failed:
                self.failed = True
                log.warning("--reload: the server exited with status %s; waiting for a file to change", status)
            changed = self._changed()
            if changed:
                return changed

    def _read_report(self) -> None:
        try:
            info = os.stat(self._report)
        except OSError:
            return
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if key == self._report_key:
            return
        self._report_key = key
        try:
            with open(self._report, encoding="utf-8") as file:
                data = json.load(file)
        except (OSError, ValueError):
            return  # replaced between stat and open: read on the next tick
        # A file the parent already watched keeps the stamp it had before the child started, so a save while the
        # child was starting is a change; so does a .py file of the current directory, whose stamp the parent took
        # then too. For the others, the stamp the child reported (None if it was saved while the app loaded).
        for path, reported in data.get("files", {}).items():
            path = str(path)
            if path not in self.known:
                self.known[path] = self.fallback[path] if path in self.fallback else _stamp_from_json(reported)
        self.template_dirs.update(str(folder) for folder in data.get("template_dirs", ()))
        if data.get("failed") and not self.failed:
            self.failed = True
            log.warning("--reload: waiting for a file to change to load the app again")

    def _changed(self) -> str | None:
        """What changed since the baseline, or None."""
        for path, known in self.known.items():
            current = stamp(path)
            if current != known:
                if self._rewritten_by_app(path, current):
                    self.known[path] = current  # (an existing key: the dict's size does not change)
                    continue
                self._last_change = (path, current)
                return f"{os.path.relpath(path, self.root)} changed"
        for folder in self.template_dirs:
            for path in template_files(folder):
                if path not in self.known:
                    return f"{os.path.relpath(path, self.root)} appeared"
        if self.failed:
            for path in python_files_under(self.root):
                if path not in self.fallback:
                    return f"{os.path.relpath(path, self.root)} appeared"
                if stamp(path) != self.fallback[path]:
                    return f"{os.path.relpath(path, self.root)} changed"
        return None

    def _written_while_loading(self) -> str | None:
        """The file of the change that ends this child, if it was written while the app loaded: after the child
        started, and before it wrote the report that says it has loaded (or before any report)."""
        if self._last_change is None:
            return None
        path, current = self._last_change
        loaded = self._report_key[1] if self._report_key is not None else None
        if current is None or current[0] < self._started_ns or (loaded is not None and current[0] > loaded):
            return None
        return path

    def _rewritten_by_app(self, path: str, current: Stamp | None) -> bool:
        """True for a file written since this child started that the app itself writes as it loads: the one
        that ended the last child by being written while its app loaded, and is written again now (a module it
        generates at import, a template it builds at start). A restart for it would be followed by another,
        forever. Said once per file; from then on such writes are the app's, on every start."""
        if current is None or current[0] < self._started_ns:
            return False
        if path in self._app_written:
            return True
        if path != self._rewritten:
            return False
        self._app_written.add(path)
        log.warning("--reload: %s is written by the app as it loads; not a reason to restart",
                    os.path.relpath(path, self.root))  # fmt: skip
        return True

    def _stop_child(self, sig: int, deadline: float) -> None:
        """Send ``sig``; kill the child if it is still there after ``deadline`` seconds."""
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(sig)
        try:
            child.wait(deadline)
        except subprocess.TimeoutExpired:
            log.warning("--reload: the server did not stop within %.1fs; killing it", deadline)
            child.kill()
            child.wait()

    # -- signals ------------------------------------------------------------------------------------------------------

    def _install_signals(self) -> dict[int, object]:
        def stop(sig: int, frame: object) -> None:
            if self._stop_signal is not None and self.child is not None and self.child.poll() is None:
                self.child.kill()  # asked twice: no more waiting
            self._stop_signal = sig

        def restart(sig: int, frame: object) -> None:
            self._restart = True

        def wake(sig: int, frame: object) -> None:
            pass  # a child exited: the wakeup descriptor ends the wait

        handlers = {signal.SIGINT: stop, signal.SIGTERM: stop, signal.SIGHUP: restart, signal.SIGCHLD: wake}
        previous: dict[int, object] = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        previous[-1] = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        fd = previous.pop(-1)
        signal.set_wakeup_fd(fd if isinstance(fd, int) else -1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
