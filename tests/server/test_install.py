"""A plain ``pip install .`` (a wheel, not an editable install) serves the demo site.

The site's ``static/`` and ``templates/`` live at the repository root, outside every package, so a wheel built
from ``packages.find`` left them out: ``python -m server`` said "serving the demo site" and then failed on the
first page. pyproject.toml now maps them into the wheel as ``apps/static`` and ``apps/templates``, and
``apps/common.py`` looks there first. These tests build the wheel from a copy of the source tree (so the build's
``build/`` and ``*.egg-info`` never land in the working tree), install it into a fresh virtual environment that
cannot see the repository, and run the installed ``python -m server``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, ServerProcess

TIMEOUT = 10
BUILD_TIMEOUT = 300  # building in isolation installs setuptools into a temporary environment first
SOURCES = ("pyproject.toml", "README.md", "server", "framework", "apps", "static", "templates")
PACKAGES = ("server", "framework", "apps")


def _environment() -> dict[str, str]:
    """This process's environment without anything that would put the repository on the path."""
    return {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the working tree."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(base / "dist"), str(source)]
    if importlib.util.find_spec("wheel") is not None:
        # Everything the build needs is already here: build offline, and faster, without an isolated environment.
        command.insert(4, "--no-build-isolation")
    built = subprocess.run(command, cwd=base, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = (base / "dist").glob("ladder-*.whl")
    return found


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; jinja2 and multipart come from the system's
    site-packages (offline), but ``server``, ``framework`` and ``apps`` come from the wheel."""
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=_environment(),
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The repository must not be what gets imported (the system site-packages hold its editable install).
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import apps, framework, server; print(apps.__file__, framework.__file__, server.__file__)",
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )
    assert where.returncode == 0, where.stderr
    for module_file in where.stdout.split():
        assert Path(module_file).is_relative_to(venv), where.stdout
    return python


def test_the_wheel_holds_every_package_and_the_sites_files(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    # pyproject.toml lists the packages by hand (see there why): a new subpackage must be added to it.
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            assert init.relative_to(ROOT).as_posix() in names, f"{init.parent} is missing from the wheel"
    for folder in ("static", "templates"):
        for file in (ROOT / folder).rglob("*"):
            if file.is_file():
                assert f"apps/{file.relative_to(ROOT).as_posix()}" in names
    for page in (ROOT / "framework" / "page_templates").glob("*.html"):
        assert page.relative_to(ROOT).as_posix() in names


def installed_server(python: Path, *args: str, cwd: Path) -> ServerProcess:
    """``python -m server ARGS`` from the virtual environment, started outside the repository."""
    server = ServerProcess(*args, cwd=cwd)
    server.argv[0] = str(python)
    server.env = {**_environment(), "PYTHONUNBUFFERED": "1"}
    return server


def test_an_installed_wheel_serves_the_demo_site(venv_python: Path, tmp_path: Path):
    with installed_server(venv_python, "--data-dir", str(tmp_path / "data"), cwd=tmp_path) as server:
        home = requests.get(server.url + "/", timeout=TIMEOUT)
        assert home.status_code == 200 and "/static/style.css" in home.text
        css = requests.get(server.url + "/static/style.css", timeout=TIMEOUT)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert css.content == (ROOT / "static" / "style.css").read_bytes()
        guestbook = requests.get(server.url + "/guestbook/", timeout=TIMEOUT)  # a form, rendered from a template
        assert guestbook.status_code == 200 and "<form" in guestbook.text and "/static/style.css" in guestbook.text
        missing = requests.get(server.url + "/no/such/page", timeout=TIMEOUT)  # the site's error.html
        assert missing.status_code == 404 and "/static/style.css" in missing.text
    assert "Traceback" not in server.output(), server.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module:app"], "cannot import 'no_such_module'"),
        (["apps.hello"], "'application'"),
        (["--access-log", "/no/such/dir/access.log"], "--access-log"),
        (["--static-max-age", "-5"], "--static-max-age"),
        (["--static", "/s=/no/such/dir"], "is not a directory"),
    ],
)
def test_the_installed_cli_fails_in_one_line(venv_python: Path, tmp_path: Path, args: list[str], message: str):
    result = subprocess.run(
        [str(venv_python), "-m", "server", *args, "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env=_environment(),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
