"""Debug lines of the frames, built only when someone will read them.

Every POS connection makes four debug lines (connected, sent, answered,
disconnected). Through `logging` each is a LogRecord passed to every
handler: a sixth of a transaction's time when the console's raw log makes
the `caisse_ap` logger take debug records. So the edges ask `wanted()` once
per connection (or take a `writer()` for it) and write with `debug()`:
through `logging` when a handler prints debug lines (`-l debug`), else
straight to the `readers` (the console's raw log, web/rawlog.py), which
keep the format and its arguments and format them when read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# Called with (epoch seconds, format, arguments) for each debug line that logging does not print.
Reader = Callable[[float, str, tuple[object, ...]], None]
readers: list[Reader] = []
# What writes one debug line: a format and its arguments.
Writer = Callable[..., None]


def wanted(logger: logging.Logger) -> bool:
    """Whether debug lines of `logger` are printed or read by anyone."""
    return bool(readers) or logger.isEnabledFor(logging.DEBUG)


def debug(logger: logging.Logger, fmt: str, *args: object) -> None:
    """A debug line: printed as logging's, or handed to the readers as it is."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(fmt, *args)
        return
    now = time.time()
    for reader in readers:
        reader(now, fmt, args)


def writer(logger: logging.Logger) -> Writer | None:
    """What writes `logger`'s debug lines now, decided once (per connection): None if
    nobody wants them; logging's if it prints them; else the one reader, directly."""
    if logger.isEnabledFor(logging.DEBUG):
        return logger.debug
    if not readers:
        return None
    if len(readers) > 1:
        return lambda fmt, *args: debug(logger, fmt, *args)
    reader = readers[0]
    return lambda fmt, *args: reader(time.time(), fmt, args)
