"""The blog's database: one SQLite connection per request, opened on first use and closed when the request ends.

``get_db(request)`` keeps the connection on ``request.g``, so every helper that needs the database during one
request shares it, and a teardown hook closes it whatever happened (an error page included). ``init-db`` is a
command of the framework's command line that recreates the tables; at start-up, a new database gets them and an
older one the columns added since (``add_missing_columns``).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from importlib import resources
from pathlib import Path

from framework import App, Request


def get_db(request: Request) -> sqlite3.Connection:
    """The request's connection to the database named by ``DATABASE`` in the config."""
    if "db" not in request.g:
        request.g.db = connect(request.app.config["DATABASE"])
    db: sqlite3.Connection = request.g.db
    return db


def close_db(request: Request, error: BaseException | None) -> None:
    """Close the request's connection, if it opened one."""
    db = request.g.pop("db", None)
    if db is not None:
        db.close()


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection whose rows can be read by column name (``post["title"]``)."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    return db


def init_db(path: str | Path) -> None:
    """Drop the tables and create them again, empty."""
    with closing(connect(path)) as db:
        db.executescript("DROP TABLE IF EXISTS post; DROP TABLE IF EXISTS user;")
    create_tables_if_missing(path)


def create_tables_if_missing(path: str | Path) -> None:
    """Create the tables a database does not have yet, so a new deployment works at once.

    Several processes may start at the same moment on a new database (``--workers``, gunicorn without
    ``--preload``, two instances behind a proxy). ``CREATE TABLE IF NOT EXISTS`` decides under SQLite's write
    lock, so every one of them succeeds; looking for the table first and creating it after let the slower one
    fail with "table user already exists"."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    schema = resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
    with closing(connect(path)) as db:
        db.executescript(schema)


# Columns added to the schema since its first version, each with the definition that adds it to an older table.
ADDED_COLUMNS = {("user", "generation"): "INTEGER NOT NULL DEFAULT 0"}


def add_missing_columns(path: str | Path) -> None:
    """Bring a database made by an older ``schema.sql`` up to date, keeping its data: ``init_db`` would empty
    it, and ``CREATE TABLE IF NOT EXISTS`` never changes a table that exists.

    The check and the change are one transaction that takes the write lock before it looks (``BEGIN
    IMMEDIATE``): a second process starting at the same moment waits for the first, then finds the column there.
    Looking first and altering after let both see it missing, and the slower one died on "duplicate column
    name"."""
    with closing(connect(path)) as db:
        db.execute("BEGIN IMMEDIATE")
        for (table, column), definition in ADDED_COLUMNS.items():
            if column not in {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        db.commit()  # Closing without it, after an error, rolls everything back.


def init_db_command(app: App) -> str:
    """Clear the existing data and create new tables."""
    init_db(app.config["DATABASE"])
    return "Initialized the database."


def init_app(app: App) -> None:
    """Wire the database into ``app``: the teardown hook, the ``init-db`` command, the tables."""
    app.teardown(close_db)
    app.command("init-db")(init_db_command)
    create_tables_if_missing(app.config["DATABASE"])
    add_missing_columns(app.config["DATABASE"])
