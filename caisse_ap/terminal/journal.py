"""The transaction journal: every transaction of the terminal, in SQLite.

In memory by default; in a file with `--journal PATH`, so that it survives a
restart. The journal is an observer of the Terminal: it records a transaction
when its request arrives (status `pending`) and again when it is finished, so
the table always holds each transaction's latest state.

Why writes are synchronous, on the reactor thread: a write is one small
INSERT in autocommit mode. In WAL mode with `synchronous=NORMAL` a commit only
appends to the write-ahead log, with no fsync, which costs tens of
microseconds (bench/server.py measures it). The one slow step is the
checkpoint, which copies the log into the database and fsyncs: SQLite would
run it inside whichever commit crosses the threshold, so a file journal turns
automatic checkpoints off and runs them from a thread of its own instead
(`checkpoint()`, called every few seconds by the server). Reads answer the
API on the reactor thread too, and always see the last write.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from typing import Any, Protocol

SCHEMA_VERSION = 1
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY,
    received_at TEXT,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_status ON transactions (status, id);
"""


# One encoder for every write: json.dumps() with options builds one per call.
# The data is plain JSON from to_json(), without cycles to look for.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def to_text(data: Mapping[str, Any]) -> str:
    """A transaction's JSON text, as stored and as the event stream sends it."""
    return _ENCODER.encode(data)


class JournalError(Exception):
    """A journal file that cannot be opened or is not ours; the message is for a user."""


class Recordable(Protocol):
    """What the journal needs of a transaction: its JSON form (docs/api.md)."""

    def to_json(self) -> Mapping[str, Any]: ...


class Journal:
    """The transactions, newest first; an observer of the Terminal.

    `path` None (or ":memory:") keeps the journal in memory for the life of
    the process.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = MEMORY if path is None else os.fspath(path)
        self.in_memory = self.path == MEMORY
        self._db = self._open()
        self._checkpointing = threading.Lock()
        self.writes = 0

    def _open(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: autocommit, each write is its own transaction.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise JournalError(f"cannot open the journal {self.path}: {error}") from None
        try:
            self._prepare(db)
        except sqlite3.DatabaseError as error:
            db.close()
            raise JournalError(f"{self.path} is not a usable journal: {error}") from None
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and (version != SCHEMA_VERSION or "transactions" not in tables):
            raise sqlite3.DatabaseError(
                f"it holds other data (schema version {version}, tables {sorted(tables)})"
            )
        if not self.in_memory:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.DatabaseError(f"WAL mode refused (journal mode {mode})")
            # NORMAL: a commit survives a crash of this process, and only an
            # OS crash or power loss could lose the last few transactions.
            db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints run off the reactor, in checkpoint().
            db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # Observer of the Terminal -------------------------------------------------

    def request_received(self, transaction: Recordable) -> None:
        self.record(transaction.to_json())

    def transaction_finished(self, transaction: Recordable) -> None:
        self.record(transaction.to_json())

    # Writing and reading ------------------------------------------------------

    def record(self, data: Mapping[str, Any], text: str | None = None) -> None:
        """Store a transaction's latest state (its docs/api.md JSON form).

        `text` is `data` already serialised by `to_text()`, when the caller
        has it (the event stream sends the same text).
        """
        self._db.execute(
            "INSERT OR REPLACE INTO transactions (id, received_at, status, data) "
            "VALUES (?, ?, ?, ?)",
            (int(data["id"]), data.get("received_at"), data["status"],
             to_text(data) if text is None else text),
        )
        self.writes += 1

    def transactions(self, limit: int = DEFAULT_LIMIT, after: int | None = None,
                     status: str | None = None) -> list[dict[str, Any]]:
        """The transactions newest first; `after` keeps ids greater than it."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LIMIT}")
        clauses: list[str] = []
        values: list[int | str] = []
        if after is not None:
            clauses.append("id > ?")
            values.append(after)
        if status is not None:
            clauses.append("status = ?")
            values.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT data FROM transactions {where} ORDER BY id DESC LIMIT ?",
            (*values, limit),
        )
        return [json.loads(data) for (data,) in rows]

    def get(self, transaction_id: int) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM transactions WHERE id = ?", (transaction_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def last_id(self) -> int:
        """The highest id recorded (0 when empty): a restarted terminal numbers after it."""
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM transactions").fetchone()[0])

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])
        return int(self._db.execute(
            "SELECT COUNT(*) FROM transactions WHERE status = ?", (status,)
        ).fetchone()[0])

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file. Blocking: call it from a thread.

        PASSIVE never waits for, nor blocks, the writer on the reactor thread.
        It uses a connection of its own, as SQLite connections must not be
        used by two threads at once.
        """
        if self.in_memory or not self._checkpointing.acquire(blocking=False):
            return
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error:
            pass  # the next checkpoint will try again; the log only grows meanwhile
        finally:
            self._checkpointing.release()

    def close(self) -> None:
        """Checkpoint what is left and close; the file then holds every transaction."""
        if not self.in_memory:
            # On failure the log stays beside the file and SQLite replays it on the next open.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
