"""The raw log kept for the console: what `-l debug` would have printed, at any level.

A POS developer who sees a strange payment wants the frames as they came,
after the fact, without restarting the server with `-l debug`. The server
keeps the last CAPACITY records of the `caisse_ap` loggers in memory, as
(time, level, message) only: a LogRecord weighs about 1 KiB, a busy server
would keep megabytes of them. GET /api/log writes those of a time range as
the log lines `-l debug` prints.
"""

from __future__ import annotations

import logging
import time
from collections import deque

CAPACITY = 5_000  # records, about 1,000 payments; some 300 bytes each
LOGGER = "caisse_ap"


class RecentLog(logging.Handler):
    """Keeps the last `capacity` records; `text()` writes those of a time range."""

    def __init__(self, capacity: int = CAPACITY):
        super().__init__(logging.DEBUG)
        self.records: deque[tuple[float, str, str]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging's own way of saying so
            self.handleError(record)
            return
        self.records.append((record.created, record.levelname, message))

    def text(self, since: float | None = None, until: float | None = None) -> str:
        """The records from `since` to `until` (epoch seconds, both included), one a line
        as cli.configure_logging writes them: "2026-12-01 20:30:00,123 DEBUG message"."""
        with self.lock:  # the test payment's thread logs too
            records = list(self.records)
        return "".join(f"{_clock(created)} {level} {message}\n"
                       for created, level, message in records
                       if (since is None or created >= since)
                       and (until is None or created <= until))


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
