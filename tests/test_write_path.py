"""The write path of the journal and the event stream (issue 16).

Grouped writes (one SQLite transaction per WRITE_DELAY), a transaction
answered at once written once, reads that see what waits to be written,
nothing lost when the server stops, journal rows = transactions answered
under a burst, event JSON built only when sent, no journal when nothing can
read it.
"""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest
from server_process import ServerProcess
from twisted.internet.task import Clock

from caisse_ap import tlv
from caisse_ap.terminal import app
from caisse_ap.terminal.journal import WRITE_DELAY, Journal
from caisse_ap.terminal.outcomes import ManualDecisions
from caisse_ap.terminal.service import Transaction
from caisse_ap.terminal.web.control import EventHub, TransactionFeed
from caisse_ap.terminal.web.transactions import complete, transaction_json

REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
ANSWER = (("CZ", "0300"), ("CJ", "012345678901"), ("AE", "10"), ("CA", "01"), ("CB", "11245"),
          ("CD", "0"), ("CE", "978"))


def received(txn_id: int) -> Transaction:
    return Transaction(txn_id, "127.0.0.1:4000", 1764619200.0 + txn_id, tlv.decode(REQUEST))


def answer(txn: Transaction) -> Transaction:
    txn.status, txn.decided_by, txn.answer = "approved", "settings", ANSWER
    txn.answered_at = txn.finished_at = txn.received_at + 0.25
    return txn


def grouped(path: object = None) -> tuple[Journal, Clock]:
    clock = Clock()
    journal = Journal(path)
    journal.write_in_groups(clock)
    return journal, clock


def statuses(path: object) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, status FROM transactions ORDER BY id").fetchall()
    finally:
        db.close()


# --- Group commit ---------------------------------------------------------------------


def test_a_transaction_answered_within_the_delay_is_written_once_final():
    journal, clock = grouped()
    txn = received(1)
    journal.request_received(txn)
    journal.transaction_finished(answer(txn))
    assert journal.writes == 0 and len(clock.getDelayedCalls()) == 1
    clock.advance(WRITE_DELAY)
    assert journal.writes == 1 and not clock.getDelayedCalls()
    assert journal.get(1)["status"] == "approved"


def test_a_transaction_still_waiting_is_written_pending_then_final():
    journal, clock = grouped()
    txn = received(1)
    journal.request_received(txn)
    clock.advance(WRITE_DELAY)
    assert journal.writes == 1
    # A crash now leaves it pending in the file: it becomes interrupted at the next start.
    assert journal.transactions(status="pending")[0]["id"] == 1
    journal.transaction_finished(answer(txn))
    clock.advance(WRITE_DELAY)
    assert journal.writes == 2 and journal.get(1)["status"] == "approved"


def test_one_sqlite_transaction_for_the_whole_group(tmp_path):
    journal, clock = grouped(tmp_path / "journal.sqlite")  # in memory, no SQLite at all
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    for txn_id in range(1, 51):
        journal.transaction_finished(answer(received(txn_id)))
    assert statements == []  # nothing written before the delay
    clock.advance(WRITE_DELAY)
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1
    assert journal.writes == 50 and journal.count("approved") == 50


def test_a_memory_journal_builds_records_only_when_read():
    """It keeps the transactions themselves: nothing is serialised that nobody reads."""
    built = []

    class Counted(Transaction):
        def record(self):
            built.append(self.id)
            return super().record()

    journal, clock = grouped()
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    for txn_id in range(1, 11):
        txn = Counted(txn_id, "192.0.2.1:4000", 1_700_000_000.0 + txn_id, tlv.decode(REQUEST))
        journal.request_received(txn)
        journal.transaction_finished(answer(txn))
    clock.advance(WRITE_DELAY)
    assert journal.writes == 10 and built == [] and statements == []
    assert journal.get(4)["status"] == "approved" and built == [4]
    assert [t["id"] for t in journal.transactions(limit=2)] == [10, 9] and built == [4, 10, 9]
    assert journal.count("approved") == 10 and built == [4, 10, 9]


def test_reads_see_what_waits_to_be_written():
    journal, clock = grouped()
    journal.transaction_finished(answer(received(7)))
    assert journal.get(7)["status"] == "approved"  # written by the read itself
    assert not clock.getDelayedCalls()  # and no write left to do
    journal.transaction_finished(answer(received(8)))
    assert [t["id"] for t in journal.transactions()] == [8, 7]
    assert journal.count() == 2 and journal.last_id() == 8
    assert journal.writes == 2


def test_closing_writes_what_waits(tmp_path):
    path = tmp_path / "journal.sqlite"
    journal, clock = grouped(path)
    for txn_id in range(1, 11):
        journal.transaction_finished(answer(received(txn_id)))
    pending = received(11)
    journal.request_received(pending)
    journal.close()  # the clock never ran: all of it waited
    assert statuses(path) == [(n, "approved") for n in range(1, 11)] + [(11, "pending")]


def test_a_group_the_file_refuses_is_kept_in_memory(tmp_path):
    journal, clock = grouped(tmp_path / "journal.sqlite")
    journal.transaction_finished(answer(received(1)))
    clock.advance(WRITE_DELAY)
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count={pages}")  # a full disk
    for txn_id in range(2, 60):
        journal.transaction_finished(answer(received(txn_id)))
    clock.advance(WRITE_DELAY)
    assert journal.health()["state"] == "failing"
    assert [t["id"] for t in journal.transactions(limit=1000)] == list(range(59, 0, -1))


# --- What the journal stores and what the API gives -------------------------------------


def test_the_api_form_is_the_record_completed():
    txn = answer(received(3))
    record = txn.record()
    assert set(record) < set(transaction_json(txn))  # labels, amounts and frames are left out
    stored = json.loads(json.dumps(record))  # as a journal reads it back
    assert complete(stored) == transaction_json(txn)
    assert transaction_json(txn)["amount"] == "112.45" and transaction_json(txn)["labels"]["AE"]
    # A row an earlier version wrote holds the complete form: it completes the same.
    assert complete(json.loads(json.dumps(transaction_json(txn)))) == transaction_json(txn)


# --- Event stream -----------------------------------------------------------------------


class _Terminal:
    reactor = Clock()


def test_events_follow_the_write_and_show_the_transaction_as_it_was():
    journal, clock = grouped()
    hub = EventHub(ManualDecisions(_Terminal()))
    feed = TransactionFeed(journal, hub)
    txn = received(5)
    feed.request_received(txn)
    feed.transaction_finished(answer(txn))
    assert hub.last_id == 0  # nothing sent before the journal has it
    clock.advance(WRITE_DELAY)
    assert hub.last_id == 2 and journal.writes == 1
    sent: list[bytes] = []
    hub.subscribe(sent.append, last_event_id=0)  # a console that reconnects
    request, final = (json.loads(event.decode().split("data: ")[1]) for event in sent)
    assert (request["status"], request["answer"], request["answered_at"]) == (
        "pending", None, None)
    assert (final["status"], final["answer_frame"]) == ("approved", tlv.encode(ANSWER).decode())


def test_a_request_event_names_the_farm_terminal_and_mode_of_its_transaction():
    journal, clock = grouped()
    hub = EventHub(ManualDecisions(_Terminal()))
    feed = TransactionFeed(journal, hub)
    txn = received(6)
    txn.terminal, txn.mode = "t1", "proxied"
    feed.request_received(txn)
    clock.advance(WRITE_DELAY)
    sent: list[bytes] = []
    hub.subscribe(sent.append, last_event_id=0)
    request = json.loads(sent[0].decode().split("data: ")[1])
    assert (request["status"], request["terminal"], request["mode"]) == ("pending", "t1", "proxied")


# --- No journal when nothing can read it -------------------------------------------------


def test_no_web_and_no_journal_file_means_no_journal_nor_observer(reactor_thread):
    running = reactor_thread.call(app.start, reactor_thread.reactor, app.TerminalOptions())
    terminal = running.terminal
    assert running.journal is None and terminal.observers == []
    reactor_thread.call(running.stop)  # nothing to close, no error


@pytest.mark.slow
def test_the_command_line_says_there_is_no_journal():
    server = ServerProcess("--no-web", "-d", "0")
    # Answered: the loop runs, and with it the SIGTERM handler (the start-up line comes
    # just before).
    assert approvals(pay_at_once(server.address, 1)) == 1
    assert server.stop() == 0
    assert "no transaction journal (--no-web without --journal)" in server.output()


# --- The real server: rows = transactions answered, nothing lost on SIGTERM -------------


def pay_at_once(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` POS connected and their requests sent, answers not read yet."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=30)
        sock.sendall(REQUEST)
        sockets.append(sock)
    return sockets


def approvals(sockets: list[socket.socket]) -> int:
    approved = 0
    for sock in sockets:
        with sock:
            approved += b"AE00210" in sock.recv(1024)
    return approved


@pytest.mark.slow
def test_rows_are_the_transactions_answered_under_a_burst(tmp_path):
    path = tmp_path / "journal.sqlite"
    server = ServerProcess("--web-port", "0", "-d", "0", "--journal", str(path))
    answered = 0
    try:
        for _ in range(3):
            answered += approvals(pay_at_once(server.address, 200))
    finally:
        assert server.stop() == 0, server.output()
    assert answered == 600
    rows = statuses(path)
    assert [txn_id for txn_id, _ in rows] == list(range(1, answered + 1))
    assert {status for _, status in rows} == {"approved"}


@pytest.mark.slow
def test_sigterm_writes_the_transactions_it_answers_on_the_way_out(tmp_path):
    path = tmp_path / "journal.sqlite"
    server = ServerProcess("--no-web", "-d", "30", "-l", "debug", "--journal", str(path))
    try:
        sockets = pay_at_once(server.address, 20)
        for _ in sockets:
            server.wait_for("sent b'")  # the terminal has every request
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert approvals(sockets) == 20
    assert statuses(path) == [(n, "approved") for n in range(1, 21)]
