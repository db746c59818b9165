"""``app.config``: the application's settings, one dict filled from code, files, objects or the environment.

Settings live in a plain ``dict`` subclass so that anything that reads a dict can read them, and so that a
factory can build the app first and configure it afterwards::

    app = App(__name__)
    app.config.from_mapping(SECRET_KEY="dev", DATABASE=app.instance_path / "blog.sqlite")
    app.config.from_file("config.toml", silent=True)   # per-deployment overrides, if the file exists
    app.config.from_prefixed_env("BLOG")               # BLOG_SECRET_KEY=... wins over both

The framework reads its own settings (``DEFAULTS`` below) from the dict when a request needs them, not when
the app is built, so changing ``app.config["SECRET_KEY"]`` after ``App()`` takes effect on the next request.
Only upper-case names are settings: ``from_object`` and ``from_file`` skip the rest, so a configuration
module can use lower-case helpers freely.
"""

from __future__ import annotations

import importlib
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

#: The framework's own settings and their defaults. ``App(...)``'s keyword arguments set the same keys.
DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": None,  # Enables sessions and CSRF protection.
    "SECRET_KEY_FALLBACKS": (),  # Older keys still accepted for existing sessions while rotating.
    "DEBUG": False,  # The traceback page for errors, and templates reloaded when their files change.
    "TESTING": False,  # Unhandled exceptions reach the caller (the test client) instead of becoming a 500 page.
    "CSRF_ENABLED": True,  # Checked only when there is a secret key, since the token lives in the session.
    "MAX_BODY_SIZE": 10 * 2**20,  # Larger request bodies answer 413.
    "MAX_FORM_PARTS": 1000,  # Fields and files in one form.
    "MAX_FORM_FIELD_SIZE": 2**20,  # One non-file form field.
    "UPLOAD_SPOOL_SIZE": 2**20,  # Uploads larger than this go to a temporary file.
    "SESSION_COOKIE_NAME": None,  # None: "session" at the site's root, "session_<prefix>" when mounted.
    "SESSION_COOKIE_PATH": None,  # None: the path the app is mounted at ("/" at the root).
    "SESSION_COOKIE_DOMAIN": None,
    "SESSION_COOKIE_SECURE": False,  # Always Secure over HTTPS; set True behind a TLS-terminating proxy.
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_MAX_AGE": 14 * 24 * 3600,  # Seconds a session cookie stays valid.
    "TEMPLATES_AUTO_RELOAD": None,  # None: follow DEBUG.
    # Host names requests may name ("example.com"; ".example.com" for it and its subdomains); any other Host
    # answers 400. None: any Host that is a host name, which external URLs then trust (see Request.host).
    "TRUSTED_HOSTS": None,
    "SERVER_NAME": None,  # The host (with any port) of external URLs (url_for(_external=True)); None: the Host's.
}


class Config(dict[str, Any]):
    """The settings dict, with loaders for the usual places settings come from.

    ``root_path`` is the folder that relative file names in ``from_file`` are read from (the app's folder).
    Every loader returns ``True`` when it loaded something, so ``silent=True`` callers can tell.
    """

    def __init__(self, root_path: str | Path, defaults: Mapping[str, Any] | None = None) -> None:
        super().__init__(defaults or {})
        self.root_path = Path(root_path)

    def from_mapping(self, mapping: Mapping[str, Any] | None = None, /, **settings: Any) -> bool:
        """Set the upper-case keys of ``mapping`` and of the keyword arguments."""
        for source in (mapping or {}, settings):
            for key, value in source.items():
                if key.isupper():
                    self[key] = value
        return True

    def from_object(self, obj: object | str) -> bool:
        """Set the upper-case attributes of ``obj``: a module, a class, or an import path such as
        ``"myapp.settings"`` or ``"myapp.settings:Production"``."""
        if isinstance(obj, str):
            obj = _import_string(obj)
        for key in dir(obj):
            if key.isupper():
                self[key] = getattr(obj, key)
        return True

    def from_file(
        self,
        filename: str | Path,
        load: Callable[[IO[Any]], Mapping[str, Any]] | None = None,
        *,
        silent: bool = False,
        text: bool = False,
    ) -> bool:
        """Load a file with ``load`` (``tomllib.load``, ``json.load``...) and set its upper-case keys.

        ``load`` defaults by suffix: ``tomllib.load`` for ``.toml``, ``json.load`` for ``.json``. The file is
        opened in binary mode, which both of those read (``tomllib`` insists on it); pass ``text=True`` for a
        loader that wants text. A missing file is an error unless ``silent=True``, for optional
        per-deployment files. Relative names are read from ``root_path``.
        """
        path = self.root_path / filename
        if load is None:
            load = _LOADERS_BY_SUFFIX.get(path.suffix.lower())
            if load is None:
                known = ", ".join(_LOADERS_BY_SUFFIX)
                raise ValueError(f"config file {path}: pass load= for a {path.suffix or 'suffix-less'} file ({known})")
        try:
            with open(path, "r" if text else "rb") as file:
                data = load(file)
        except FileNotFoundError:
            if silent:
                return False
            raise FileNotFoundError(f"config file {path} does not exist") from None
        except (ValueError, tomllib.TOMLDecodeError) as error:  # json and toml syntax errors are ValueErrors
            raise ValueError(f"config file {path} is malformed: {error}") from error
        if not isinstance(data, Mapping):
            raise ValueError(f"config file {path} holds a {type(data).__name__}, not a table of settings")
        return self.from_mapping(data)

    def from_prefixed_env(self, prefix: str = "APP", *, loads: Callable[[str], Any] = json.loads) -> bool:
        """Set keys from environment variables named ``PREFIX_KEY``, in sorted order.

        Values are read as JSON where they parse (``APP_DEBUG=true`` is ``True``, ``APP_PORT=8080`` an int,
        ``APP_HOSTS='["a", "b"]'`` a list) and kept as text where they do not (``APP_SECRET_KEY=abc``). A double
        underscore reaches into a nested dict: ``APP_DATABASE__HOST=db`` sets ``config["DATABASE"]["HOST"]``.

        An on/off setting (the framework's: ``DEBUG``, ``TESTING``, ``CSRF_ENABLED``, ``SESSION_COOKIE_SECURE``,
        ``TEMPLATES_AUTO_RELOAD``; and any that is ``True`` or ``False`` already) also takes the words people
        write for them, in any case: ``true/false``, ``yes/no``, ``on/off``, ``1/0``, and empty for off;
        anything else is a ValueError naming the variable. As text, ``APP_DEBUG=False`` would be a non-empty
        string, which is true: the traceback page, local variables and all, switched on in production by the
        line meant to turn it off.
        """
        start = f"{prefix}_"
        for name in sorted(os.environ):
            if not name.startswith(start):
                continue
            raw = os.environ[name]
            try:
                value = loads(raw)
            except ValueError:
                value = raw
            *parents, leaf = name[len(start) :].split("__")
            target: dict[str, Any] = self
            for key in parents:
                target = target.setdefault(key, {})
                if not isinstance(target, dict):
                    raise ValueError(f"{name}: {key} is already set to a {type(target).__name__}, not a dict")
            if (leaf in SWITCHES or isinstance(target.get(leaf), bool)) and not isinstance(value, bool):
                value = _switch(name, raw)
            target[leaf] = value
        return True

    def get_namespace(self, namespace: str, *, lowercase: bool = True, trim_namespace: bool = True) -> dict[str, Any]:
        """The settings whose names start with ``namespace`` (``"DATABASE_"``), as keyword arguments:
        ``connect(**app.config.get_namespace("DATABASE_"))``."""
        found = {}
        for key, value in self.items():
            if key.startswith(namespace):
                name = key[len(namespace) :] if trim_namespace else key
                found[name.lower() if lowercase else name] = value
        return found

    def __repr__(self) -> str:
        return f"<Config {dict.__repr__(self)}>"


# The framework's on/off settings (TEMPLATES_AUTO_RELOAD's default is None, "follow DEBUG", so its type alone
# would not say so), and the words taken for them; empty is off, as in an .env file's "APP_DEBUG=".
SWITCHES = frozenset({"DEBUG", "TESTING", "CSRF_ENABLED", "SESSION_COOKIE_SECURE", "TEMPLATES_AUTO_RELOAD"})
_SWITCH_WORDS = {"true": True, "yes": True, "on": True, "1": True}
_SWITCH_WORDS.update({"false": False, "no": False, "off": False, "0": False, "": False})


def _switch(name: str, raw: str) -> bool:
    """An environment variable's text for an on/off setting, as a bool (see ``Config.from_prefixed_env``)."""
    word = raw.strip().lower()
    if word not in _SWITCH_WORDS:
        raise ValueError(f"{name}: {raw!r} is not on or off (use true or false)")
    return _SWITCH_WORDS[word]


_LOADERS_BY_SUFFIX: dict[str, Callable[[IO[Any]], Mapping[str, Any]]] = {".toml": tomllib.load, ".json": json.load}


def _import_string(path: str) -> object:
    """``"package.module"`` or ``"package.module:Name"`` (``"package.module.Name"`` too), imported."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if attribute or "." not in module_name:
            raise
        module_name, _, attribute = module_name.rpartition(".")
        module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
