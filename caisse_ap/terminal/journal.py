"""The transaction journal: every transaction of the terminal, in memory or in SQLite.

In memory by default; in a file with `--journal PATH`, so that it survives a
restart. The journal is an observer of the Terminal: it hears of a
transaction when its request arrives and when it is finished. In memory it
keeps the transaction objects themselves and builds their records (the
facts: `Transaction.record()`) only when someone reads them: nothing is
serialised that nobody reads. In a file, the table holds each transaction's
latest state as JSON, its record. The API completes a record on reading
with what derives from it (web/transactions.py: labels, amounts, frames).
Rows written by earlier versions hold the complete form, which completes the
same.

Writes are grouped (group commit): a transaction that changes is only noted
(`keep()`), and WRITE_DELAY later one SQLite transaction writes the latest
state of every transaction noted meanwhile (`flush()`). So a transaction
answered at once is written once, in its final state, off the path of its
answer; one still waiting after WRITE_DELAY (a delay, manual mode) is
written `pending` first, so that the rows of a server that crashed show
what was in flight. Reads flush first: they always see every transaction
the terminal has heard of. Listeners in `after_write` are called after each
group (the event stream sends its events then).

The durability promise: a transaction is in the journal WRITE_DELAY (10 ms)
after its answer; on a clean stop (SIGTERM, SIGINT) every transaction
answered is written before the process exits; a crash of the process may
lose the transactions of its last WRITE_DELAY, and an OS crash or a power
loss a few more (`synchronous=NORMAL`, below).

Why writes run on the reactor thread: in WAL mode with `synchronous=NORMAL`
a commit only appends to the write-ahead log, with no fsync, which costs
tens of microseconds for a whole group (bench/server.py measures the
terminal with it). The one slow step is the checkpoint, which copies the log
into the database and fsyncs: SQLite would
run it inside whichever commit crosses the threshold, so a file journal turns
automatic checkpoints off and runs them from a thread of its own instead
(`checkpoint()`, called every few seconds by the server), then
`restart_log()` on the reactor thread copies the last few pages, so that the
next write starts the log again from its beginning: under a steady load a
checkpoint from another thread never catches up with the writer, and the log
would grow for ever. `journal_size_limit` then cuts the file back. Reads
answer the API on the reactor thread too.

A journal that cannot write (disk full, file gone read-only) never stops the
terminal: `_store()` logs one line, keeps the transactions in a memory
journal from then on (reads merge both), tries the file again at most once a
minute (logging at most one line each time) and writes what it kept once the
file takes writes again. `health()` says which, for /api/status.

A clean stop while the file still fails (a full disk): the transactions
kept in memory go to an overflow file of JSON Lines, one row a line, as the
table holds it (`close()`): `--journal-overflow PATH` if given, else
`JOURNAL.unwritten.jsonl` beside the journal; if neither can be written, to
stderr. One log line says where. The next open of the journal takes such a
file back in (both places), then deletes it, before anything is numbered:
no id is given twice.

At open, rows a crash left `pending` become `interrupted`: no server will
ever answer them. A memory journal keeps the last `max_rows` transactions.

One journal holds the transactions of every terminal of the process: the
command line's (its rows' `terminal` is null, "main" in a filter) and the
farm's (web/farm.py: each row names its terminal, in a column of its own
so that a filter by terminal reads an index). Their ids are unique across
it: the terminals share one numbering (service.Numbering). A farm
terminal reads and writes it through a `TerminalRows`, which sees that
terminal's rows only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, TypedDict, cast

if TYPE_CHECKING:
    from collections.abc import Iterator

    from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..errors import CaisseApError

log = logging.getLogger("caisse_ap.terminal.journal")

SCHEMA_VERSION = 2  # 2: the terminal column (a file of version 1 gets it at open)
MAIN_TERMINAL = "main"  # the command line's terminal in a filter (its rows hold null)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DEFAULT_MAX_ROWS = 100_000  # kept by a memory journal: the oldest go first
MEMORY = ":memory:"
RETRY_EVERY = 60.0  # seconds between two tries of a failing file (and two log lines)
# The write-ahead log file is cut back to this once a checkpoint has emptied it.
WAL_SIZE_LIMIT = 16 * 1024 * 1024
INTERRUPTED = "interrupted"
WRITE_DELAY = 0.01  # seconds a change waits for others to be written with it
OVERFLOW_SUFFIX = ".unwritten.jsonl"  # beside the journal: rows it could not take at stop

Row = tuple[int, str | None, str, str, str | None]  # id, received_at, status, JSON, terminal
Field = tuple[str, str]  # a Caisse-AP field, tag and value (tlv.Field)


class _Facts(TypedDict):
    """The keys every record has (Record)."""

    id: int
    received_at: str | None
    answered_at: str | None
    duration_s: float | None
    peer: str
    protocol: str
    request: list[Field]
    answer: tuple[Field, ...] | None
    status: str
    reason: dict[str, str] | None
    decided_by: str | None
    exchange: dict[str, object] | None
    mode: str
    deviations: list[dict[str, str]]
    terminal: str | None  # the farm terminal's id (rows of earlier versions have none)


class Record(_Facts, total=False):
    """What the journal keeps of a transaction: the facts (service.Transaction.record()).

    Read back from a file, its field lists are JSON arrays; rows written by
    earlier versions hold more keys (the complete form of docs/api.md).
    `scenario` is only in the transactions a conformance session answered.
    """

    scenario: str  # the conformance kit's scenario that answered (--conformance)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY,
    received_at TEXT,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    terminal TEXT
);
CREATE INDEX IF NOT EXISTS transactions_by_status ON transactions (status, id);
CREATE INDEX IF NOT EXISTS transactions_by_terminal ON transactions (terminal, id);
"""


# One encoder for every write: json.dumps() with options builds one per call.
# The data is plain JSON, without cycles to look for.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def to_text(data: Mapping[str, object]) -> str:
    """A transaction's JSON text, as stored and as the event stream sends it."""
    return _ENCODER.encode(data)


_INSERT = ("INSERT OR REPLACE INTO transactions (id, received_at, status, data, terminal) "
           "VALUES (?, ?, ?, ?, ?)")


def _row(data: Record, text: str | None = None) -> Row:
    terminal = data.get("terminal")
    return (int(data["id"]), data.get("received_at"), data["status"],
            to_text(data) if text is None else text,
            terminal if isinstance(terminal, str) else None)


def _overflow_row(path: str, number: int, line: str) -> Row:
    """A row of an overflow file (a transaction's JSON text), checked as the table needs it."""
    try:
        data = json.loads(line)
        if not (isinstance(data, dict) and type(data.get("id")) is int
                and isinstance(data.get("status"), str)):
            raise ValueError("not a transaction (an object with an id and a status)")
        # Checked as far as the table needs (id, status); the rest is read as written.
        return _row(cast(Record, data), line.rstrip("\n"))
    except (ValueError, RecursionError) as error:
        raise JournalError(f"{path}:{number}: not a journal row: {error}") from None


def _write_lines(path: str, rows: list[Row]) -> None:
    """Rows as JSON Lines at `path`, added to the rows already there (the latest state of
    each id wins); whole or not at all (a temporary file, then renamed)."""
    kept: dict[int, str] = {}
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                row = _overflow_row(path, number, line)
                kept[row[0]] = row[3]
    kept.update((row[0], row[3]) for row in rows)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.writelines(kept[txn_id] + "\n" for txn_id in sorted(kept))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


class JournalError(CaisseApError):
    """A journal file that cannot be opened or is not ours; the message is for a user."""


class Recordable(Protocol):
    """What the journal needs of a transaction: its id, its status and its record
    (service.Transaction)."""

    @property
    def id(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def terminal(self) -> str | None: ...

    def record(self) -> Record: ...


class _Record:
    """A record given as data (Journal.record), and its JSON text when the caller has it."""

    __slots__ = ("id", "status", "terminal", "data", "text")

    def __init__(self, data: Record, text: str | None = None):
        self.id = int(data["id"])
        self.status: str = data["status"]
        terminal = data.get("terminal")
        self.terminal = terminal if isinstance(terminal, str) else None
        self.data = data
        self.text = text

    def record(self) -> Record:
        return self.data


def _interrupted(record: Record) -> Record:
    record["status"] = INTERRUPTED
    return record


def _row_of(kept: Recordable) -> Row:
    if isinstance(kept, _Record):
        return _row(kept.data, kept.text)
    return _row(kept.record())


class Journal:
    """The transactions, newest first; an observer of the Terminal.

    `path` None (or ":memory:") keeps the journal in memory for the life of
    the process, its last `max_rows` transactions. `clock` times the retries
    of a failing file.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 max_rows: int = DEFAULT_MAX_ROWS,
                 clock: Callable[[], float] = time.monotonic,
                 overflow: str | os.PathLike[str] | None = None):
        self.path = MEMORY if path is None else os.fspath(path)
        self.in_memory = self.path == MEMORY
        if not self.in_memory and (self.path.endswith(("/", os.sep))
                                   or os.path.isdir(self.path)):
            raise JournalError(f"the journal {self.path} is a directory: give a file path, "
                               "such as /data/journal.sqlite")
        self.max_rows = max_rows
        self._clock = clock
        # In memory: the transactions themselves, by id, oldest first (ids grow by one
        # per transaction, and each is first kept when its request arrives).
        self._kept: OrderedDict[int, Recordable] = OrderedDict()
        self._newest = 0
        # Where rows go that the file cannot take at close, in order of preference.
        self.overflow_paths = [] if self.in_memory else list(dict.fromkeys(
            [*([os.fspath(overflow)] if overflow is not None else []),
             self.path + OVERFLOW_SUFFIX]))
        self._db = self._open()
        self._checkpointing = threading.Lock()
        self.writes = 0  # rows written
        # Transactions changed since the last flush, by id, and the timer of the next.
        self._unwritten: dict[int, Recordable] = {}
        self._reactor: IReactorTime | None = None
        self._flush_call: IDelayedCall | None = None
        # Called after each group is written (the event stream sends its events then).
        self.after_write: list[Callable[[], None]] = []
        try:
            self.taken_back = 0 if self.in_memory else self._take_back()
            self.interrupted = 0 if self.in_memory else self._mark_interrupted()
        except sqlite3.Error as error:
            self._db.close()
            raise JournalError(f"cannot write to the journal {self.path}: {error}") from None
        except JournalError:  # an overflow file that cannot be read: kept, for a person
            self._db.close()
            raise
        # While the file fails: why, since when, and the memory journal that stands in.
        self._failure: str | None = None
        self._failed_at: float | None = None
        self._stand_in: Journal | None = None
        self._next_try = 0.0

    def write_in_groups(self, reactor: IReactorTime) -> None:
        """From now on, write changes WRITE_DELAY later, together (group commit).

        `reactor` provides callLater. Until this is called, every change is written at once.
        """
        self._reactor = reactor

    def _open(self) -> sqlite3.Connection:
        if self.in_memory:  # no table: the transactions are kept as they are (_kept)
            return sqlite3.connect(MEMORY, check_same_thread=False)
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
        if tables and (version not in (1, SCHEMA_VERSION) or "transactions" not in tables):
            raise sqlite3.DatabaseError(
                f"it holds other data (schema version {version}, tables {sorted(tables)})"
            )
        if tables and version == 1:
            # Its rows are all the command line's terminal's: farm terminals kept theirs
            # in memory then.
            db.execute("ALTER TABLE transactions ADD COLUMN terminal TEXT")
        if not self.in_memory:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.DatabaseError(f"WAL mode refused (journal mode {mode})")
            # NORMAL: a commit survives a crash of this process, and only an
            # OS crash or power loss could lose the last few transactions.
            db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints run off the reactor, in checkpoint().
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _mark_interrupted(self) -> int:
        """Rows left pending by a server that stopped without answering become interrupted."""
        rows = self._db.execute("SELECT data FROM transactions WHERE status = 'pending'")
        marked = [_row(_interrupted(json.loads(data))) for (data,) in rows]
        with self._transaction():
            self._db.executemany(_INSERT, marked)
        if marked:
            log.warning("journal %s: %d transactions left pending by the last run are marked "
                        "interrupted", self.path, len(marked))
        return len(marked)

    def _take_back(self) -> int:
        """The rows an earlier stop wrote to an overflow file: into the file, then the
        overflow file deleted. JournalError if one cannot be read."""
        taken = 0
        for path in self.overflow_paths:
            try:
                with open(path, encoding="utf-8") as file:
                    rows = [_overflow_row(path, number, line)
                            for number, line in enumerate(file, 1) if line.strip()]
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as error:
                raise JournalError(f"cannot read {path}, rows the journal {self.path} "
                                   f"could not take at the last stop: {error}") from None
            if rows:
                with self._transaction():
                    self._db.executemany(_INSERT, rows)
            os.remove(path)
            log.warning("journal %s: %d transactions that it could not take at the last stop "
                        "are taken back from %s (deleted)", self.path, len(rows), path)
            taken += len(rows)
        return taken

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
        self.flush()

    def flush(self) -> None:
        """Write the latest state of every transaction noted since the last flush."""
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        if not self._unwritten:
            return
        unwritten, self._unwritten = self._unwritten, {}
        self._store(list(unwritten.values()))
        for listener in self.after_write:
            listener()

    def record(self, data: Record, text: str | None = None) -> None:
        """Store a transaction's latest state (a record, or its docs/api.md JSON form) at once.

        `text` is `data` already serialised by `to_text()`, when the caller has it.
        """
        self._store([_Record(data, text)])

    def _store(self, kept: list[Recordable]) -> None:
        """Keep transactions in memory, or write them in one SQLite transaction. Never
        raises for the file: a failing one is reported, and stood in for (see the module)."""
        self.writes += len(kept)
        if self.in_memory:
            self._hold(kept)
            return
        if self._stand_in is not None:
            self._stand_in._hold(kept)
            self._try_again()
            return
        try:
            self._write([_row_of(transaction) for transaction in kept])
        except sqlite3.Error as error:
            self._fail(error)
            assert self._stand_in is not None
            self._stand_in._hold(kept)

    def _hold(self, kept: Iterable[Recordable]) -> None:
        """In memory: keep each transaction as it is, its latest state read when asked."""
        store = self._kept
        for transaction in kept:
            txn_id = transaction.id
            if txn_id < self._newest and txn_id not in store:
                # Out of order (a record given by hand): keep the store sorted by id.
                store[txn_id] = transaction
                self._kept = store = OrderedDict(sorted(store.items()))
            else:
                store[txn_id] = transaction
            self._newest = max(self._newest, txn_id)
        # Only the newest max_rows: ids grow by one per transaction.
        oldest_kept = self._newest - self.max_rows
        while store and next(iter(store)) <= oldest_kept:
            store.popitem(last=False)

    def _write(self, rows: list[Row]) -> None:
        with self._transaction():
            self._db.executemany(_INSERT, rows)

    # A failing file ------------------------------------------------------------

    def _fail(self, error: sqlite3.Error) -> None:
        """The file refused a read or a write: stand in for it in memory, say so once."""
        if self._stand_in is not None:
            return
        self._failure = f"{error}"
        self._failed_at = time.time()
        self._stand_in = Journal(max_rows=self.max_rows)
        self._next_try = self._clock() + RETRY_EVERY
        log.error("journal %s cannot be written (%s): the transactions are kept in memory "
                  "only (the last %d) until it can; the terminal goes on", self.path,
                  self._failure, self.max_rows)

    def _try_again(self) -> None:
        """At most once a minute: write what the stand-in holds into the file."""
        if self._clock() < self._next_try:
            return
        assert self._stand_in is not None
        self._next_try = self._clock() + RETRY_EVERY
        rows = [_row_of(transaction) for transaction in self._stand_in._kept.values()]
        try:
            with self._transaction():
                self._db.executemany(_INSERT, rows)
        except sqlite3.Error as error:
            self._failure = f"{error}"
            log.error("journal %s still cannot be written (%s): %d transactions in memory "
                      "only", self.path, self._failure, len(rows))
            return
        log.warning("journal %s can be written again: the %d transactions kept in memory "
                    "are in it", self.path, len(rows))
        self._stand_in, self._failure, self._failed_at = None, None, None

    def _overflow(self, rows: list[Row]) -> None:
        """At close, rows the file still refuses: to the first overflow file that takes them
        (added to what it holds), else to stderr; one log line says where."""
        for path in self.overflow_paths:
            try:
                _write_lines(path, rows)
            except (OSError, JournalError) as error:
                reason = error.strerror if isinstance(error, OSError) else None
                log.error("journal %s: cannot write its %d transactions kept in memory to %s "
                          "(%s)", self.path, len(rows), path, reason or error)
                continue
            log.error("journal %s still cannot be written: its %d transactions kept in memory "
                      "are in %s (JSON Lines), taken back at the next start on this journal",
                      self.path, len(rows), path)
            return
        log.error("journal %s: its %d transactions kept in memory follow on stderr, one JSON "
                  "line each; save them as %s to have them taken back at the next start",
                  self.path, len(rows), self.overflow_paths[-1])
        for row in rows:
            sys.stderr.write(row[3] + "\n")
        sys.stderr.flush()

    def _rows(self) -> list[Row]:
        if self.in_memory:  # no table (the stand-in of a failing file is such a journal)
            return [_row_of(transaction) for transaction in self._kept.values()]
        return list(self._db.execute(
            "SELECT id, received_at, status, data, terminal FROM transactions ORDER BY id"))

    def health(self) -> dict[str, object]:
        """For /api/status: "ok", or "failing" with the reason (docs/api.md)."""
        self.flush()  # a write that fails says so now
        return {
            "state": "ok" if self._failure is None else "failing",
            "reason": self._failure,
            "failing_since": None if self._failed_at is None else time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._failed_at)),
            "path": None if self.in_memory else self.path,
            "in_memory_only": (0 if self._stand_in is None
                               else self._stand_in.count()),
            "interrupted_at_start": self.interrupted,
        }

    @property
    def failing(self) -> bool:
        """The file refuses writes (health() says why); read without writing anything."""
        return self._failure is not None

    @property
    def waiting(self) -> int:
        """Transactions not yet in the file: noted for the next group, or held in memory
        while it fails (the metrics' rows waiting)."""
        held = 0 if self._stand_in is None else self._stand_in.count()
        return len(self._unwritten) + held

    def _read(self, sql: str, values: tuple[int | str, ...]) -> list[tuple[int | str, ...]]:
        """Rows from the file; none, once reported, when it cannot be read."""
        try:
            return self._db.execute(sql, values).fetchall()
        except sqlite3.Error as error:
            if self.in_memory:
                raise
            self._fail(error)
            return []

    def transactions(self, limit: int = DEFAULT_LIMIT, after: int | None = None,
                     status: str | None = None, before: int | None = None,
                     terminal: str | None = None) -> list[Record]:
        """The transactions' records newest first; `after` keeps ids greater than it,
        `before` ids smaller (the next page of an export), `terminal` one terminal's
        (MAIN_TERMINAL: the command line's; None: every terminal's)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LIMIT}")
        self.flush()
        if self.in_memory:
            return self._newest_kept(limit, after, status, before, terminal)
        clauses: list[str] = []
        values: list[int | str] = []
        if terminal == MAIN_TERMINAL:
            clauses.append("terminal IS NULL")
        elif terminal is not None:
            clauses.append("terminal = ?")
            values.append(terminal)
        if after is not None:
            clauses.append("id > ?")
            values.append(after)
        if before is not None:
            clauses.append("id < ?")
            values.append(before)
        if status is not None:
            clauses.append("status = ?")
            values.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT data FROM transactions {where} ORDER BY id DESC LIMIT ?",
                          (*values, limit))
        found: list[Record] = [json.loads(str(data)) for (data,) in rows]
        stand_in = self._stand_in
        if stand_in is None:
            return found
        # The stand-in holds the latest state of what it holds.
        merged = {data["id"]: data for data in found if stand_in.get(data["id"]) is None}
        merged.update((data["id"], data) for data in stand_in.transactions(limit, after, status,
                                                                             before, terminal))
        return [merged[txn_id] for txn_id in sorted(merged, reverse=True)[:limit]]

    def _newest_kept(self, limit: int, after: int | None, status: str | None,
                     before: int | None, terminal: str | None) -> list[Record]:
        found = []
        wanted = None if terminal == MAIN_TERMINAL else terminal
        for transaction in reversed(self._kept.values()):
            if after is not None and transaction.id <= after:
                break  # kept in the order of their ids
            if before is not None and transaction.id >= before:
                continue
            if terminal is not None and transaction.terminal != wanted:
                continue
            if status is None or transaction.status == status:
                found.append(transaction.record())
                if len(found) == limit:
                    break
        return found

    def get(self, transaction_id: int) -> Record | None:
        self.flush()
        if self.in_memory:
            kept = self._kept.get(transaction_id)
            return None if kept is None else kept.record()
        if self._stand_in is not None:
            kept_instead = self._stand_in.get(transaction_id)
            if kept_instead is not None:
                return kept_instead
        rows = self._read("SELECT data FROM transactions WHERE id = ?", (transaction_id,))
        found: Record | None = json.loads(str(rows[0][0])) if rows else None
        return found

    def last_id(self) -> int:
        """The highest id recorded (0 when empty): a restarted terminal numbers after it."""
        self.flush()
        if self.in_memory:
            return self._newest
        rows = self._read("SELECT COALESCE(MAX(id), 0) FROM transactions", ())
        last = int(rows[0][0]) if rows else 0
        return last if self._stand_in is None else max(last, self._stand_in.last_id())

    def count(self, status: str | None = None) -> int:
        """Rows in the file (or memory); while the file fails, it is only its own."""
        self.flush()
        if self.in_memory:
            if status is None:
                return len(self._kept)
            return sum(1 for transaction in self._kept.values() if transaction.status == status)
        if status is None:
            rows = self._read("SELECT COUNT(*) FROM transactions", ())
        else:
            rows = self._read("SELECT COUNT(*) FROM transactions WHERE status = ?", (status,))
        return int(rows[0][0]) if rows else 0

    def terminals(self) -> set[str]:
        """The farm terminals that have rows here (their ids, the command line's aside): a
        farm numbers its terminals after them, so that no id names two terminals."""
        self.flush()
        if self.in_memory:
            return {kept.terminal for kept in self._kept.values() if kept.terminal is not None}
        rows = self._read("SELECT DISTINCT terminal FROM transactions "
                          "WHERE terminal IS NOT NULL", ())
        found = {str(terminal) for (terminal,) in rows}
        if self._stand_in is not None:
            found |= self._stand_in.terminals()
        return found

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

    def restart_log(self) -> None:
        """After checkpoint(), on the writer's thread: copy the pages written meanwhile.

        Nothing writes during it, so it finishes; the next write then starts
        the log from its beginning and the file is cut to WAL_SIZE_LIMIT. It
        copies a few seconds' pages at most, checkpoint() having done the rest.
        """
        if self.in_memory or self._stand_in is not None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Write and checkpoint what is left, and close: the file holds every transaction
        (but those kept in memory while it failed, if it still fails)."""
        self.flush()
        if self._stand_in is not None:
            self._next_try = 0.0  # one last try, whatever the time
            self._try_again()
        if self._stand_in is not None:
            self._overflow(self._stand_in._rows())
        if not self.in_memory:
            # On failure the log stays beside the file and SQLite replays it on the next open.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


class TerminalRows:
    """One farm terminal's view of the journal every terminal of the process shares:
    it writes there, and reads that terminal's rows only. Closing it only writes what
    is noted (the journal's owner closes the journal), so that a deleted terminal's
    rows stay readable, here and in the whole journal."""

    def __init__(self, journal: Journal, terminal: str):
        self.journal = journal
        self.terminal = terminal
        self.after_write = journal.after_write
        self.interrupted = 0  # counted once, by the command line's terminal

    @property
    def path(self) -> str:
        return self.journal.path

    @property
    def in_memory(self) -> bool:
        return self.journal.in_memory

    @property
    def failing(self) -> bool:
        return self.journal.failing

    @property
    def waiting(self) -> int:
        return self.journal.waiting

    def request_received(self, transaction: Recordable) -> None:
        self.journal.keep(transaction)

    def transaction_finished(self, transaction: Recordable) -> None:
        self.journal.keep(transaction)

    def keep(self, transaction: Recordable) -> None:
        self.journal.keep(transaction)

    def flush(self) -> None:
        self.journal.flush()

    def health(self) -> dict[str, object]:
        return self.journal.health()

    def transactions(self, limit: int = DEFAULT_LIMIT, after: int | None = None,
                     status: str | None = None, before: int | None = None,
                     terminal: str | None = None) -> list[Record]:
        """This terminal's transactions (`terminal` is for the signature: it is this)."""
        return self.journal.transactions(limit, after, status, before, self.terminal)

    def get(self, transaction_id: int) -> Record | None:
        found = self.journal.get(transaction_id)
        return found if found is not None and found.get("terminal") == self.terminal else None

    def last_id(self) -> int:
        return self.journal.last_id()

    def close(self) -> None:
        self.journal.flush()


# What the control API reads and writes: the whole journal, or one farm terminal's rows.
Rows = Journal | TerminalRows
