"""The raw log kept for the console: what `-l debug` would have printed, at any level.

A POS developer who sees a strange payment wants the frames as they came,
after the fact, without restarting the server with `-l debug`. The server
keeps the last CAPACITY records of the `caisse_ap` loggers in memory, unformatted
(formatting costs more than keeping), and GET /api/log formats those of a time
range as the log lines `-l debug` prints.
"""

from __future__ import annotations

import logging
from collections import deque

CAPACITY = 20_000  # records: hours of a busy test session, a few MB at most
LOGGER = "caisse_ap"
FORMAT = "%(asctime)s %(levelname)s %(message)s"  # cli.configure_logging's


class RecentLog(logging.Handler):
    """Keeps the last `capacity` records; `text()` formats those of a time range."""

    def __init__(self, capacity: int = CAPACITY):
        super().__init__(logging.DEBUG)
        self.records: deque[logging.LogRecord] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, since: float | None = None, until: float | None = None) -> str:
        """The records from `since` to `until` (epoch seconds, both included), one a line."""
        with self.lock:  # the test payment's thread logs too
            records = list(self.records)
        return "".join(self.format(record) + "\n" for record in records
                       if (since is None or record.created >= since)
                       and (until is None or record.created <= until))


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
