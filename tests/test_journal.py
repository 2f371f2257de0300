"""The transaction journal: SQLite in memory or in a file, across restarts."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.request
from pathlib import Path

import pytest
from server_process import ServerProcess, run_server

from caisse_ap import client
from caisse_ap.terminal.journal import Journal, JournalError
from caisse_ap.testing import EventStream, simulated_terminal

pytestmark = pytest.mark.usefixtures("reactor_thread")


def txn(txn_id: int, status: str = "approved", **more) -> dict:
    return {"id": txn_id, "received_at": f"2026-11-27T03:00:{txn_id:02d}.000+00:00",
            "status": status, "amount": "1.00", "labels": {"CB": "montant"}, **more}


class Recorded:
    """What the Terminal hands its observers: something with an id and record()."""

    def __init__(self, data: dict):
        self.id = data["id"]
        self.data = data

    def record(self) -> dict:
        return self.data


def test_memory_journal_lists_newest_first_with_filters():
    journal = Journal()
    assert journal.in_memory and journal.last_id() == 0 and journal.transactions() == []
    for number in range(1, 8):
        journal.record(txn(number, "declined" if number % 3 == 0 else "approved"))
    assert [t["id"] for t in journal.transactions()] == [7, 6, 5, 4, 3, 2, 1]
    assert [t["id"] for t in journal.transactions(limit=2)] == [7, 6]
    assert [t["id"] for t in journal.transactions(after=4)] == [7, 6, 5]
    assert [t["id"] for t in journal.transactions(status="declined")] == [6, 3]
    assert [t["id"] for t in journal.transactions(limit=1, after=2, status="declined")] == [6]
    assert journal.get(3) == txn(3, "declined")
    assert journal.get(99) is None
    assert journal.last_id() == 7 and journal.count() == 7 and journal.count("declined") == 2


@pytest.mark.parametrize("in_file", [False, True])
def test_journal_pages_go_back_with_before(tmp_path, in_file):
    """An export reads the journal page after page: `before` the last id of a page."""
    journal = Journal(tmp_path / "j.sqlite") if in_file else Journal()
    for number in range(1, 8):
        journal.record(txn(number, "declined" if number % 3 == 0 else "approved"))
    assert [t["id"] for t in journal.transactions(limit=3, before=6)] == [5, 4, 3]
    assert [t["id"] for t in journal.transactions(before=7, status="declined")] == [6, 3]
    assert [t["id"] for t in journal.transactions(before=6, after=3)] == [5, 4]
    assert journal.transactions(before=1) == []
    journal.close()


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_limit_is_bounded(limit):
    with pytest.raises(ValueError, match="limit must be 1 to 1000"):
        Journal().transactions(limit=limit)


def test_observer_keeps_the_latest_state_of_each_transaction():
    journal = Journal()
    journal.request_received(Recorded(txn(1, "pending", answer=None)))
    assert journal.get(1)["status"] == "pending"
    journal.transaction_finished(Recorded(txn(1, "approved", answer=[["AE", "10"]])))
    assert journal.count() == 1 and journal.get(1)["answer"] == [["AE", "10"]]
    assert journal.writes == 2


def test_text_survives_the_round_trip():
    journal = Journal()
    journal.record(txn(1, labels={"AF": "Opération non effectuée"}, currency_symbol="€"))
    assert journal.get(1)["labels"]["AF"] == "Opération non effectuée"
    assert journal.get(1)["currency_symbol"] == "€"


def test_file_journal_is_in_wal_mode_and_survives_reopening(tmp_path):
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    assert not journal.in_memory and journal.path == str(path)
    mode = journal._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    for number in (1, 2, 3):
        journal.record(txn(number))
    journal.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    again = Journal(path)
    assert [t["id"] for t in again.transactions()] == [3, 2, 1] and again.last_id() == 3
    again.close()


def test_a_checkpoint_moves_the_log_into_the_file(tmp_path):
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    for number in range(1, 200):
        journal.record(txn(number, request=["x" * 500]))
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    before = os.path.getsize(path)
    checkpointing = threading.Thread(target=journal.checkpoint)  # as the server does: a thread
    checkpointing.start()
    checkpointing.join(10)
    assert os.path.getsize(path) > before
    # Another reader sees everything, from the database file and the log.
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] == 199
    other.close()
    journal.close()


def test_a_memory_journal_has_no_checkpoint():
    journal = Journal()
    journal.checkpoint()  # nothing to do, and no error
    journal.record(txn(1))
    assert journal.count() == 1


def test_a_file_of_something_else_is_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE customers (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="is not a usable journal: it holds other data"):
        Journal(other)
    text = tmp_path / "notes.txt"
    text.write_text("this is not a database at all, just some text " * 100)
    with pytest.raises(JournalError, match="is not a usable journal"):
        Journal(text)


def test_a_journal_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(tmp_path / "missing" / "journal.sqlite")


def test_terminal_journal_numbers_after_a_restart(tmp_path):
    path = tmp_path / "journal.sqlite"
    with simulated_terminal(journal=path) as terminal:
        for amount in ("1.00", "2.00"):
            assert client.pay(client.make_request(amount), *terminal.address).status == "approved"
        first = terminal.transactions()
    assert [t["id"] for t in first] == [2, 1]
    with simulated_terminal(journal=path) as terminal:
        terminal.next("refused")
        assert client.pay(client.make_request("3.00"), *terminal.address).status == "declined"
        after = terminal.transactions()
    assert [(t["id"], t["amount"], t["status"]) for t in after] == [
        (3, "3.00", "declined"), (2, "2.00", "approved"), (1, "1.00", "approved")]
    assert after[1:] == first


@pytest.mark.slow
def test_command_line_journal_survives_a_restart(tmp_path):
    """The real server process, stopped with SIGTERM and started again on the same file."""
    path = tmp_path / "journal.sqlite"
    ids = []
    for amount in ("4.00", "5.00"):
        server = ServerProcess("--web-port", "0", "-d", "0", "--journal", str(path))
        try:
            assert client.pay(client.make_request(amount), "127.0.0.1",
                              server.port).status == "approved"
            listed = api(server, "/api/transactions")["transactions"]
            ids.append([(t["id"], t["amount"]) for t in listed])
        finally:
            code = server.stop()
        assert code == 0, server.output()
        assert "transaction journal in " + str(path) in server.output()
    assert ids == [[(1, "4.00")], [(2, "5.00"), (1, "4.00")]]


def api(server: ServerProcess, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.web_port}{path}", timeout=10) as r:
        return json.loads(r.read())


def test_no_transaction_is_missing_after_concurrent_payments(tmp_path):
    path = tmp_path / "journal.sqlite"
    count = 40
    with simulated_terminal(journal=path, duration=0.05) as terminal:
        results: list = []
        payers = [threading.Thread(target=lambda n=n: results.append(client.pay(
            client.make_request(f"{n + 1}.00"), *terminal.address, timeout=10)))
            for n in range(count)]
        for payer in payers:
            payer.start()
        for payer in payers:
            payer.join(20)
        listed = terminal.transactions(limit=1000)
    assert [r.status for r in results] == ["approved"] * count
    assert sorted(t["amount"] for t in listed) == sorted(f"{n + 1}.00" for n in range(count))
    db = sqlite3.connect(path)
    rows = db.execute("SELECT status, COUNT(*) FROM transactions GROUP BY status").fetchall()
    db.close()
    assert rows == [("approved", count)]


# --- Hardening (issue 12) -----------------------------------------------------------------


def test_a_directory_or_a_path_ending_in_a_slash_is_refused(tmp_path):
    with pytest.raises(JournalError, match="is a directory"):
        Journal(tmp_path)
    with pytest.raises(JournalError, match="is a directory"):
        Journal(f"{tmp_path}/journal/")
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["", "/new/"])
def test_the_server_refuses_a_directory_journal_in_one_line(tmp_path, suffix):
    done = run_server("--journal", f"{tmp_path}{suffix}", "-p", "0", "--web-port", "0",
                      timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is a directory" in done.stderr


def test_a_memory_journal_keeps_the_last_rows():
    journal = Journal(max_rows=5)
    for txn_id in range(1, 13):
        journal.record(txn(txn_id, "pending"))
        journal.record(txn(txn_id))
    assert journal.count() == 5 and journal.get(7) is None
    assert [t["id"] for t in journal.transactions()] == [12, 11, 10, 9, 8]


@pytest.mark.slow
def test_the_max_rows_option():
    from caisse_ap.terminal import cli

    assert cli.build_parser().parse_args([]).journal_max_rows == 100_000
    assert cli.build_parser().parse_args(["--journal-max-rows", "7"]).journal_max_rows == 7
    done = run_server("--journal-max-rows", "0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def crashed_journal(path: Path) -> None:
    """A journal as a killed server leaves it: rows 2 and 3 pending, no checkpoint."""
    journal = Journal(path)
    journal.record(txn(1))
    journal.record(txn(2, "pending"))
    journal.record(txn(3, "pending"))
    journal._db.close()


def test_rows_left_pending_by_a_crash_are_marked_interrupted(tmp_path, caplog):
    crashed_journal(tmp_path / "journal.sqlite")
    again = Journal(tmp_path / "journal.sqlite")
    assert again.interrupted == 2 and again.count("pending") == 0
    assert again.get(2)["status"] == "interrupted" and again.get(1)["status"] == "approved"
    assert [t["id"] for t in again.transactions(status="interrupted")] == [3, 2]
    assert "2 transactions left pending by the last run are marked interrupted" in caplog.text
    again.close()
    assert Journal(tmp_path / "journal.sqlite").interrupted == 0  # marked once


def test_the_terminal_counts_and_lists_the_interrupted(tmp_path):
    crashed_journal(tmp_path / "journal.sqlite")
    with simulated_terminal(journal=tmp_path / "journal.sqlite") as terminal:
        status = terminal.status()
        assert status["counters"]["interrupted"] == 2
        assert status["journal"]["interrupted_at_start"] == 2
        assert [t["id"] for t in terminal.transactions(status="interrupted")] == [3, 2]
        assert client.pay(client.make_request("1.00"), *terminal.address).status == "approved"
        assert terminal.transactions()[0]["id"] == 4


def test_the_write_ahead_log_stays_small_under_steady_writes(tmp_path):
    """Checkpoints in a thread never catch up with a steady writer: restart_log() does."""
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    text = "x" * 1500  # a transaction's JSON is about this long
    checkpointing, biggest = None, 0
    for txn_id in range(1, 3001):
        journal.record(txn(txn_id, "pending"), text)
        journal.record(txn(txn_id), text)
        if txn_id % 300 == 0:  # as the server does every few seconds
            if checkpointing is not None:
                checkpointing.join()
            journal.restart_log()
            checkpointing = threading.Thread(target=journal.checkpoint)
            checkpointing.start()
        biggest = max(biggest, os.path.getsize(f"{path}-wal"))
    checkpointing.join()
    # Without restart_log() the log passes 50 MiB here: every write appends to it.
    assert biggest < 16 * 1024 * 1024, biggest
    journal.close()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fill_the_disk(journal: Journal) -> None:
    """SQLite's own limit on the file's pages: a write needing one more page fails as on
    a full disk ("database or disk is full")."""
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count={pages}")


def test_a_failing_journal_says_so_once_a_minute_and_keeps_the_transactions(tmp_path,
                                                                            caplog):
    clock = Clock()
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, clock=clock)
    journal.record(txn(1))
    fill_the_disk(journal)
    big = "y" * 20000
    for txn_id in range(2, 12):
        journal.record(txn(txn_id, "pending", note=big))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "database or disk is full" in errors[0], errors
    health = journal.health()
    assert health["state"] == "failing" and "disk is full" in health["reason"]
    # Reads merge the file and the memory that stands in for it.
    assert [t["id"] for t in journal.transactions()] == list(range(11, 0, -1))
    assert journal.get(11)["status"] == "pending" and journal.last_id() == 11
    clock.now += 61
    journal.record(txn(11, note=big))  # one more line, a minute later
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and "still cannot be written" in errors[1]
    journal._db.execute("PRAGMA max_page_count=1000000")  # room again
    clock.now += 61
    journal.record(txn(12))
    assert journal.health()["state"] == "ok" and "can be written again" in caplog.text
    journal.close()
    reopened = Journal(path)
    assert reopened.count() == 12 and reopened.get(11)["status"] == "approved"
    assert reopened.interrupted == 9  # 2..10 were left pending
    reopened.close()


def test_the_terminal_goes_on_when_its_journal_fails(tmp_path):
    """POS answered, event stream, manual decisions and /api/status, from memory."""
    path = tmp_path / "journal.sqlite"
    with simulated_terminal(journal=path) as terminal, terminal.events() as events:
        assert client.pay(client.make_request("1.00"), *terminal.address).status == "approved"
        fill_the_disk(terminal._services.journal)
        for _ in range(20):  # a page holds a few transactions
            result = client.pay(client.make_request("2.00"), *terminal.address)
            assert result.status == "approved"
        status = terminal.status()
        assert status["journal"]["state"] == "failing"
        assert "disk is full" in status["journal"]["reason"]
        terminal.settings(mode="manual")
        outcome: dict = {}
        payer = threading.Thread(target=lambda: outcome.setdefault("result", client.pay(
            client.make_request("3.00"), *terminal.address, timeout=10)))
        payer.start()
        waiting = next(e["data"] for e in iter(lambda: events.get("request"), None)
                       if e["data"]["amount"] == "3.00")
        assert terminal.decide(waiting["id"], "approved")["status"] == "approved"
        payer.join(10)
        assert outcome["result"].status == "approved"
        assert [t["amount"] for t in terminal.transactions()][:2] == ["3.00", "2.00"]


# --- A clean stop while the file still fails: the overflow file, taken back at the next start ---


def failing_journal(path: Path, count: int, **options) -> Journal:
    """A journal whose file took transaction 1 and refused 2..count (kept in memory)."""
    journal = Journal(path, **options)
    journal.record(txn(1))
    fill_the_disk(journal)
    for txn_id in range(2, count + 1):
        journal.record(txn(txn_id, note="y" * 20000))
    assert journal.health()["in_memory_only"] == count - 1
    return journal


def test_rows_the_file_refuses_at_stop_go_beside_it_and_come_back(tmp_path, caplog):
    path = tmp_path / "journal.sqlite"
    failing_journal(path, 8).close()
    overflow = tmp_path / "journal.sqlite.unwritten.jsonl"
    lines = overflow.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(2, 9))
    said = [r.getMessage() for r in caplog.records if str(overflow) in r.getMessage()]
    assert len(said) == 1 and "7 transactions kept in memory are in" in said[0]
    reopened = Journal(path)
    assert reopened.taken_back == 7 and reopened.count() == 8 and not overflow.exists()
    assert reopened.get(8)["note"] == "y" * 20000 and reopened.last_id() == 8
    assert "taken back from" in caplog.text
    reopened.close()


def test_the_overflow_option_then_stderr_when_nothing_takes_them(tmp_path, capsys, caplog):
    path = tmp_path / "journal.sqlite"
    elsewhere = tmp_path / "elsewhere.jsonl"
    failing_journal(path, 4, overflow=elsewhere).close()
    assert len(elsewhere.read_text().splitlines()) == 3
    assert not (tmp_path / "journal.sqlite.unwritten.jsonl").exists()
    reopened = Journal(path, overflow=elsewhere)
    assert reopened.taken_back == 3 and reopened.count() == 4 and not elsewhere.exists()
    reopened.close()
    # Neither place can be written: the rows on stderr, after one line saying so.
    other = tmp_path / "other.sqlite"
    beside = tmp_path / "other.sqlite.unwritten.jsonl"
    journal = failing_journal(other, 3, overflow=tmp_path / "missing-directory" / "x.jsonl")
    beside.mkdir()
    journal.close()
    beside.rmdir()
    rows = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [row["id"] for row in rows] == [2, 3]
    assert f"follow on stderr, one JSON line each; save them as {beside}" in caplog.text
    # Saved where the message says, they are taken back.
    beside.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert Journal(other).count() == 3 and not beside.exists()


@pytest.mark.slow
def test_a_broken_overflow_file_stops_the_start_in_one_line(tmp_path):
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    (tmp_path / "journal.sqlite.unwritten.jsonl").write_text('{"id": 1, "status": "approved"}\n'
                                                             "{cut\n")
    with pytest.raises(JournalError, match=r"unwritten.jsonl:2: not a journal row"):
        Journal(path)
    done = run_server("--journal", str(path), "--no-web", "-p", "0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unwritten.jsonl:2: not a journal row" in done.stderr


# --- One journal for every terminal of the process (the farm, docs/api.md) -------------


@pytest.mark.parametrize("in_file", [False, True])
def test_the_journal_filters_by_terminal_and_a_terminal_sees_its_rows_only(tmp_path, in_file):
    from caisse_ap.terminal.journal import MAIN_TERMINAL, TerminalRows

    journal = Journal(tmp_path / "j.sqlite") if in_file else Journal()
    for number, terminal in enumerate([None, "t1", "t2", "t1", None], 1):
        journal.record(txn(number, terminal=terminal))
    assert [t["id"] for t in journal.transactions()] == [5, 4, 3, 2, 1]
    assert [t["id"] for t in journal.transactions(terminal=MAIN_TERMINAL)] == [5, 1]
    assert [t["id"] for t in journal.transactions(terminal="t1")] == [4, 2]
    assert [t["id"] for t in journal.transactions(terminal="t1", before=4)] == [2]
    assert journal.transactions(terminal="t9") == []
    assert journal.terminals() == {"t1", "t2"}
    rows = TerminalRows(journal, "t2")
    assert [t["id"] for t in rows.transactions()] == [3]
    assert rows.get(3)["terminal"] == "t2" and rows.get(2) is None
    assert rows.last_id() == 5  # one numbering: the journal's
    rows.close()  # the journal's owner closes it: it still reads
    assert journal.count() == 5
    journal.close()


def test_a_journal_of_the_first_schema_gets_the_terminal_column_at_open(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE transactions (id INTEGER PRIMARY KEY, received_at TEXT,
                                   status TEXT NOT NULL, data TEXT NOT NULL);
        CREATE INDEX transactions_by_status ON transactions (status, id);
        PRAGMA user_version=1;
    """)
    db.execute("INSERT INTO transactions VALUES (1, NULL, 'approved', ?)",
               (json.dumps(txn(1)),))
    db.commit()
    db.close()
    journal = Journal(path)
    assert [t["id"] for t in journal.transactions(terminal="main")] == [1]
    journal.record(txn(2, terminal="t1"))
    assert [t["id"] for t in journal.transactions(terminal="t1")] == [2]
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT id, terminal FROM transactions ORDER BY id").fetchall() == [
        (1, None), (2, "t1")]
    db.close()


@pytest.mark.slow
def test_sigterm_writes_the_farm_s_transactions_in_flight_into_the_journal_file(tmp_path):
    """The real server: a farm terminal answering after 1 s when SIGTERM comes; its row is
    in the file, answered, with its terminal, beside the command line's terminal's."""
    path = tmp_path / "journal.sqlite"
    server = ServerProcess("--web-port", "0", "-d", "0", "--journal", str(path))
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.web_port}/api/terminals", method="POST",
            data=json.dumps({"settings": {"duration": 1}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            lane = json.loads(answer.read())
        assert client.pay(client.make_request("2.00"), "127.0.0.1",
                          server.port).status == "approved"
        paid: list = []
        paying = threading.Thread(target=lambda: paid.append(client.pay(
            client.make_request("3.00"), "127.0.0.1", lane["port"], timeout=10)))
        with EventStream(f"http://127.0.0.1:{server.web_port}",
                         path="/api/terminals/t1/events") as events:
            paying.start()
            assert events.get("request")["data"]["amount"] == "3.00"  # in flight now
    finally:
        code = server.stop()
    paying.join(10)
    assert code == 0, server.output()
    assert [result.status for result in paid] == ["approved"]  # answered at the stop
    db = sqlite3.connect(path)
    rows = db.execute("SELECT id, status, terminal FROM transactions ORDER BY id").fetchall()
    db.close()
    assert rows == [(1, "approved", None), (2, "approved", "t1")]
