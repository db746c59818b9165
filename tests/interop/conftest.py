"""Fixtures for the interop suite: each framework's app, served in-process by our server on a free port."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.interop.common import download_file, sha256_file
from tests.support import ServerThread

# framework -> the module:attribute a user would give to ``python -m server`` (or gunicorn).
APPS = {
    "flask": "tests.interop.flask_app:app",
    "django": "tests.interop.djangosite.wsgi:application",
    "bottle": "tests.interop.bottle_app:app",
}


def load_app(framework: str) -> Callable:
    module, _, attribute = APPS[framework].partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Live:
    """A framework app being served: where to reach it, and which framework it is."""

    framework: str
    url: str
    port: int


@pytest.fixture(scope="module", params=list(APPS))
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One in-process server per framework, shared by the tests of a module (fast: no process to start)."""
    with ServerThread(load_app(request.param)) as server:
        yield Live(request.param, server.url, server.port)


@pytest.fixture(scope="session")
def download_sha256() -> str:
    """The digest every /download must arrive with (the file is created here if need be)."""
    return sha256_file(download_file())
