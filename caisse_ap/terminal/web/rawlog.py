"""The raw log kept for the console: what `-l debug` would have printed, at any level.

A POS developer who sees a strange payment wants the frames as they came,
after the fact, without restarting the server with `-l debug`. The server
keeps the last BUDGET bytes of messages of the `caisse_ap` loggers in
memory, each record as one line of bytes ("created level message"): a
LogRecord weighs about 1 KiB, a tuple of three objects some 150 bytes more
than its message. GET /api/log writes those of a
time range as the log lines `-l debug` prints.
"""

from __future__ import annotations

import logging
import time
from collections import deque

# Bytes kept, the oldest lines dropped first: some 200 payments (about 600 bytes of
# lines each), in as little memory as possible: bench/reliability.py counts it.
BUDGET = 128 * 1024
LOGGER = "caisse_ap"


class RecentLog(logging.Handler):
    """Keeps the last `budget` bytes of messages; `text()` writes those of a time range."""

    def __init__(self, budget: int = BUDGET):
        super().__init__(logging.DEBUG)
        self.budget = budget
        self.size = 0  # of the messages kept
        self.records: deque[bytes] = deque()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging's own way of saying so
            self.handleError(record)
            return
        line = f"{record.created:.3f} {record.levelname} {message}".encode("utf-8", "replace")
        self.records.append(line)
        self.size += len(line)
        while self.size > self.budget and len(self.records) > 1:
            self.size -= len(self.records.popleft())

    def text(self, since: float | None = None, until: float | None = None) -> str:
        """The records from `since` to `until` (epoch seconds, both included), one a line
        as cli.configure_logging writes them: "2026-12-01 20:30:00,123 DEBUG message"."""
        self.acquire()  # the lock emit() runs under: any thread may log
        try:
            records = list(self.records)
        finally:
            self.release()
        lines = []
        for line in records:
            created_text, level, message = line.decode("utf-8").split(" ", 2)
            created = float(created_text)
            if (since is None or created >= since) and (until is None or created <= until):
                lines.append(f"{_clock(created)} {level} {message}\n")
        return "".join(lines)


def _clock(created: float) -> str:
    """logging's default asctime: local time, milliseconds after a comma."""
    return (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
            + f",{int(created * 1000) % 1000:03d}")


def install() -> RecentLog:
    """Keep the caisse_ap loggers' records at every level, printing only what -l asks.

    The handlers already there (stderr) get the level the root logger had, so
    that what is printed does not change; the caisse_ap logger then lets debug
    records through, for the RecentLog only.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(max(handler.level, root.level))
    recent = RecentLog()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(recent)
    logger.setLevel(logging.DEBUG)
    return recent


def uninstall(recent: RecentLog) -> None:
    logger = logging.getLogger(LOGGER)
    logger.removeHandler(recent)
    logger.setLevel(logging.NOTSET)
