"""Fixtures for the demo site's tests: a fresh data directory per test, and the site around it in webtest.

Importing ``apps.guestbook`` (or any example that keeps data) builds its module-level ``app``, which creates the
default data directory and its secret key. So that a test run leaves nothing in the repository's ``./var``, the
default is pointed at a throwaway directory before any test module imports the examples. Each test then builds
its own apps with ``create_app(data_dir)`` on a directory of its own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from webtest import TestApp

_IMPORT_TIME_DATA = tempfile.mkdtemp(prefix="ladder-apps-import-")
atexit.register(shutil.rmtree, _IMPORT_TIME_DATA, True)
os.environ.setdefault("SERVER_DATA_DIR", _IMPORT_TIME_DATA)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Where the site under test keeps its databases, uploads and secret key."""
    return tmp_path / "data"


@pytest.fixture
def site(data_dir: Path) -> TestApp:
    """The whole demo site, as ``python -m server`` would serve it, but called in-process through webtest."""
    from apps.demo import create_app

    return TestApp(create_app(data_dir))
