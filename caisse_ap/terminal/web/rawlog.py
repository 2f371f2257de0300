"""The raw log kept for the console: what `-l debug` would have printed, at any level.

A POS developer who sees a strange payment wants the frames as they came,
after the fact, without restarting the server with `-l debug`. The server
keeps the last BUDGET bytes of messages of the `caisse_ap` loggers in
memory. Debug lines of the frames come straight from the edges
(debuglines.py) and are kept as (time, level, format, arguments): no
LogRecord is built and nothing is formatted until GET /api/log writes the
lines of a time range as `-l debug` prints them. Records at info level and
above come through logging and are kept formatted.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from .. import debuglines

# Bytes kept (as estimated by _weight), the oldest lines dropped first: some 200 payments
# (about 1.2 KiB of entries each), in as little memory as possible: bench/reliability.py
# counts it.
BUDGET = 256 * 1024
LOGGER = "caisse_ap"
# What an entry weighs besides the text of its format and arguments: the tuples, the
# time, and an argument neither text nor bytes (a number).
ENTRY_WEIGHT = 160
ARGUMENT_WEIGHT = 32

Entry = tuple[float, int, str, tuple[object, ...]]


def _weight(fmt: str, args: tuple[object, ...]) -> int:
    weight = ENTRY_WEIGHT + len(fmt)
    for arg in args:  # a loop, not sum() over a generator: this runs for every frame
        weight += len(arg) if isinstance(arg, (str, bytes)) else ARGUMENT_WEIGHT
    return weight


class RecentLog(logging.Handler):
    """Keeps the last `budget` bytes of messages; `text()` writes those of a time range."""

    def __init__(self, budget: int = BUDGET):
        super().__init__(logging.DEBUG)
        self.budget = budget
        self.size = 0  # of the entries kept, as _weight estimates them
        self.records: deque[Entry] = deque()
        self._weights: deque[int] = deque()  # each entry's, not estimated again when it goes

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging's own way of saying so
            self.handleError(record)
            return
        # Formatted now: a record's arguments may be objects that change later.
        self._keep((record.created, record.levelno, message, ()), ENTRY_WEIGHT + len(message))

    def read_debug(self, created: float, fmt: str, args: tuple[object, ...]) -> None:
        """A debug line from an edge (debuglines.readers), kept as it is."""
        assert self.lock is not None  # made by Handler.__init__
        with self.lock:  # emit() runs under this lock: any thread may log
            self._keep((created, logging.DEBUG, fmt, args), _weight(fmt, args))

    def _keep(self, entry: Entry, weight: int) -> None:
        records, weights = self.records, self._weights
        records.append(entry)
        weights.append(weight)
        self.size += weight
        while self.size > self.budget and len(records) > 1:
            records.popleft()
            self.size -= weights.popleft()

    def text(self, since: float | None = None, until: float | None = None) -> str:
        """The records from `since` to `until` (epoch seconds, both included), one a line
        as cli.configure_logging writes them: "2026-12-01 20:30:00,123 DEBUG message"."""
        self.acquire()
        try:
            records = list(self.records)
        finally:
            self.release()
        lines = []
        for created, level, fmt, args in records:
            if (since is None or created >= since) and (until is None or created <= until):
                message = fmt % args if args else fmt
                lines.append(f"{_clock(created)} {logging.getLevelName(level)} {message}\n")
        return "".join(lines)


def _clock(created: float) -> str:
    """logging's default asctime: local time, milliseconds after a comma."""
    return (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
            + f",{int(created * 1000) % 1000:03d}")


def install() -> RecentLog:
    """Keep the caisse_ap loggers' lines at every level, printing only what -l asks.

    The handlers already there (stderr) get the level the root logger had, so
    that what is printed does not change; the caisse_ap logger then lets info
    records through for the RecentLog, and the edges' debug lines reach it
    through debuglines without becoming records.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(max(handler.level, root.level))
    recent = RecentLog()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(recent)
    logger.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    debuglines.readers.append(recent.read_debug)
    return recent


def uninstall(recent: RecentLog) -> None:
    logger = logging.getLogger(LOGGER)
    logger.removeHandler(recent)
    logger.setLevel(logging.NOTSET)
    if recent.read_debug in debuglines.readers:
        debuglines.readers.remove(recent.read_debug)
