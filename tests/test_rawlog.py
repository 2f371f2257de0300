"""The console's raw log: frames kept as they came, formatted only when read, within a budget."""

from __future__ import annotations

import logging

from caisse_ap.terminal import debuglines
from caisse_ap.terminal.web import rawlog

FRAME = b"CZ0040300CJ012012345678901"


def test_a_debug_line_is_kept_unformatted_and_written_when_read():
    recent = rawlog.RecentLog()
    recent.read_debug(1000.0, "%s sent %r", ("127.0.0.1:4000", FRAME))
    assert recent.records[0][2:] == ("%s sent %r", ("127.0.0.1:4000", FRAME))
    text = recent.text()
    assert text.endswith(f" DEBUG 127.0.0.1:4000 sent {FRAME!r}\n")
    assert recent.text(since=1000.5) == "" and recent.text(until=999.0) == ""


def test_the_oldest_lines_go_first_once_the_budget_is_spent():
    recent = rawlog.RecentLog(budget=4096)
    for second in range(100):
        recent.read_debug(1000.0 + second, "%s sent %r", ("peer", b"x" * 100))
    assert recent.size <= 4096
    kept = len(recent.records)
    assert 1 < kept < 100
    assert recent.records[-1][0] == 1099.0  # the newest stay
    assert recent.text().count("\n") == kept


def test_installed_it_gets_the_edges_debug_lines_without_logging_records():
    root = logging.getLogger()
    level, handler_levels = root.level, [(h, h.level) for h in root.handlers]
    root.setLevel(logging.INFO)
    recent = rawlog.install()
    records: list[logging.LogRecord] = []
    counter = logging.Handler()
    counter.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("caisse_ap.terminal")
    logger.addHandler(counter)
    try:
        assert debuglines.wanted(logger)
        assert not logger.isEnabledFor(logging.DEBUG)  # no record is built for them
        debuglines.debug(logger, "%s answered %r", "peer", FRAME)
        write = debuglines.writer(logger)  # what an edge takes once per connection
        assert write is not None
        write("%s closed its side", "peer")
        logger.info("an info line")
        assert [record.getMessage() for record in records] == ["an info line"]
        assert f"DEBUG peer answered {FRAME!r}" in recent.text()
        assert " INFO an info line" in recent.text()
        assert " DEBUG peer closed its side\n" in recent.text()
    finally:
        logger.removeHandler(counter)
        rawlog.uninstall(recent)
        root.setLevel(level)
        for handler, handler_level in handler_levels:  # install() raised them
            handler.setLevel(handler_level)
    assert recent.read_debug not in debuglines.readers
