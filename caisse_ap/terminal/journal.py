"""The transaction journal: every transaction of the terminal, in SQLite.

In memory by default; in a file with `--journal PATH`, so that it survives a
restart. The journal is an observer of the Terminal: it hears of a
transaction when its request arrives and when it is finished, and the table
holds each transaction's latest state as JSON: its record (the facts:
`Transaction.record()`), which the API completes on reading with what derives
from them (`service.complete()`: labels, amounts, frames). Rows written by
earlier versions hold the complete form, which completes the same.

Writes are grouped (group commit): a transaction that changes is only noted
(`keep()`), and WRITE_DELAY later one SQLite transaction writes the latest
state of every transaction noted meanwhile (`flush()`). So a transaction
answered at once is written once, in its final state, off the path of its
answer; one still waiting after WRITE_DELAY (a delay, manual mode) is
written `pending` first, so that the rows of a server that crashed show
what was in flight. Reads flush first: they always see every transaction
the terminal has heard of.

The durability promise: a transaction is in the journal WRITE_DELAY (10 ms)
after its answer; on a clean stop (SIGTERM, SIGINT) every transaction
answered is written before the process exits; a crash of the process may
lose the transactions of its last WRITE_DELAY, and an OS crash or a power
loss a few more (`synchronous=NORMAL`, below).

Why writes run on the reactor thread: in WAL mode with `synchronous=NORMAL`
a commit only appends to the write-ahead log, with no fsync, which costs
tens of microseconds for a whole group (bench/server.py measures the
terminal with it). The one slow step is the checkpoint, which copies the log
into the database and fsyncs: SQLite would run it inside whichever commit
crosses the threshold, so a file journal turns automatic checkpoints off and
runs them from a thread of its own instead (`checkpoint()`, called every few
seconds by the server). Reads answer the API on the reactor thread too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger("caisse_ap.terminal.journal")

SCHEMA_VERSION = 1
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MEMORY = ":memory:"
WRITE_DELAY = 0.01  # seconds a change waits for others to be written with it
_INSERT = ("INSERT OR REPLACE INTO transactions (id, received_at, status, data) "
           "VALUES (?, ?, ?, ?)")

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
# The data is plain JSON, without cycles to look for.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def to_text(data: Mapping[str, Any]) -> str:
    """A transaction's JSON text, as stored and as the event stream sends it."""
    return _ENCODER.encode(data)


class JournalError(Exception):
    """A journal file that cannot be opened or is not ours; the message is for a user."""


class Recordable(Protocol):
    """What the journal needs of a transaction: its id and record (service.Transaction)."""

    id: int

    def record(self) -> Mapping[str, Any]: ...


def _row(data: Mapping[str, Any], text: str | None = None) -> tuple[int, Any, str, str]:
    return (int(data["id"]), data.get("received_at"), data["status"],
            to_text(data) if text is None else text)


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
        self.writes = 0  # rows written
        # Transactions changed since the last flush, by id, and the timer of the next.
        self._unwritten: dict[int, Recordable] = {}
        self._reactor: Any = None
        self._flush_call: Any = None

    def write_in_groups(self, reactor: Any) -> None:
        """From now on, write changes WRITE_DELAY later, together (group commit).

        `reactor` provides callLater. Until this is called, every change is written at once.
        """
        self._reactor = reactor

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
        self.keep(transaction)

    def transaction_finished(self, transaction: Recordable) -> None:
        self.keep(transaction)

    # Writing and reading ------------------------------------------------------

    def keep(self, transaction: Recordable) -> None:
        """Note that a transaction changed: its latest state goes with the next group."""
        self._unwritten[transaction.id] = transaction
        if self._reactor is None:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._reactor.callLater(WRITE_DELAY, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_call = None
        waiting = len(self._unwritten)
        try:
            self.flush()
        except sqlite3.Error as error:
            log.error("journal %s: %d transactions could not be written: %s", self.path,
                      waiting, error)

    def flush(self) -> None:
        """Write the latest state of every transaction noted since the last flush."""
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        if not self._unwritten:
            return
        unwritten, self._unwritten = self._unwritten, {}
        self._write([_row(transaction.record()) for transaction in unwritten.values()])

    def record(self, data: Mapping[str, Any], text: str | None = None) -> None:
        """Store a transaction's latest state (a record, or its docs/api.md JSON form) at once.

        `text` is `data` already serialised by `to_text()`, when the caller has it.
        """
        self._write([_row(data, text)])

    def _write(self, rows: list[tuple[int, Any, str, str]]) -> None:
        """One SQLite transaction for all the rows."""
        with self._db:  # BEGIN, then COMMIT, or ROLLBACK on an error
            self._db.execute("BEGIN")
            self._db.executemany(_INSERT, rows)
        self.writes += len(rows)

    def transactions(self, limit: int = DEFAULT_LIMIT, after: int | None = None,
                     status: str | None = None) -> list[dict[str, Any]]:
        """The transactions newest first; `after` keeps ids greater than it."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LIMIT}")
        self.flush()
        clauses, values = [], []
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
        self.flush()
        row = self._db.execute(
            "SELECT data FROM transactions WHERE id = ?", (transaction_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def last_id(self) -> int:
        """The highest id recorded (0 when empty): a restarted terminal numbers after it."""
        self.flush()
        return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM transactions").fetchone()[0]

    def count(self, status: str | None = None) -> int:
        self.flush()
        if status is None:
            return self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
        return self._db.execute(
            "SELECT COUNT(*) FROM transactions WHERE status = ?", (status,)
        ).fetchone()[0]

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
        """Write and checkpoint what is left, and close: the file holds every transaction."""
        self.flush()
        if not self.in_memory:
            # On failure the log stays beside the file and SQLite replays it on the next open.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
