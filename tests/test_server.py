"""The simulated terminal: Terminal with a fake clock, the protocol, and real sockets."""

from __future__ import annotations

import base64
import json
import socket
import struct

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from caisse_ap import tlv
from caisse_ap.messages import PaymentRequest, TerminalAnswer, has_mandatory_fields
from caisse_ap.terminal.behaviour import Decision, OutcomeSpec, TerminalSettings
from caisse_ap.terminal.server import TerminalFactory, TerminalProtocol
from caisse_ap.terminal.service import Terminal

DEBIT = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
MANDATORY_ONLY = "CZ0040300CJ012247300123456CA00201CB00512345CD0010CE003978"
REFUND = ("CZ0040310CJ012247300123456CA00201CB0040300CD0011CE003978"
          "BH01118295910399BI020your.email@gmail.comCK003120")
CHEQUE = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CC00300CCB0042500"
REQUESTS = [DEBIT, MANDATORY_ONLY, REFUND, CHEQUE]

API_TRANSACTION_KEYS = {
    "id", "received_at", "answered_at", "duration_s", "peer", "action", "amount",
    "amount_minor", "currency", "currency_numeric", "currency_symbol", "request",
    "request_frame", "answer", "answer_frame", "receipt", "status", "reason", "decided_by",
    "labels", "protocol", "exchange", "mode", "deviations",
}


def with_ref(frame: str, ref: str) -> str:
    return frame + f"CF{len(ref):03d}{ref}"


def fields(frame: str) -> list[tuple[str, str]]:
    return tlv.decode(frame)


# --- Terminal with a fake clock and a fake connection ------------------------


class FakeConnection:
    def __init__(self, peer: str = "10.0.0.1:4242"):
        self.peer = peer
        self.sent: list[bytes] = []
        self.hung_up = False
        self.done: list = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def hang_up(self) -> None:
        self.hung_up = True

    def transaction_done(self, transaction) -> None:
        self.done.append(transaction)

    def answers(self) -> list[dict[str, str]]:
        return [dict(tlv.decode(data)) for data in self.sent]


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def request_received(self, txn):
        self.events.append(("request", txn.to_json()))

    def transaction_finished(self, txn):
        self.events.append(("answer", txn.to_json()))

    def settings_changed(self, settings):
        self.events.append(("settings", settings.to_dict()))


def make_terminal(seed=1, **settings):
    clock = Clock()
    terminal = Terminal(TerminalSettings.from_dict(settings), reactor=clock, seed=seed)
    return terminal, clock


def test_answer_waits_for_the_duration_on_the_clock():
    terminal, clock = make_terminal(duration=3)
    connection = FakeConnection()
    txn = terminal.receive(connection, fields(DEBIT))
    assert txn.pending and connection.sent == []
    clock.advance(2.999)
    assert connection.sent == []
    clock.advance(0.001)
    assert [a["AE"] for a in connection.answers()] == ["10"]
    assert connection.done == [txn]
    assert (txn.status, txn.decided_by) == ("approved", "settings")
    assert txn.to_json()["duration_s"] == 3.0
    assert clock.getDelayedCalls() == []


def test_decimal_duration():
    terminal, clock = make_terminal(duration="0.25")
    connection = FakeConnection()
    terminal.receive(connection, fields(DEBIT))
    clock.advance(0.2)
    assert connection.sent == []
    clock.advance(0.05)
    assert len(connection.sent) == 1


def test_many_pos_at_once_are_answered_together():
    terminal, clock = make_terminal(duration=1)
    connections = [FakeConnection(f"10.0.0.1:{port}") for port in range(500)]
    for connection in connections:
        terminal.receive(connection, fields(DEBIT))
    assert terminal.counters()["pending"] == 500
    clock.advance(1)
    assert all(len(c.sent) == 1 for c in connections)
    assert terminal.counters()["approved"] == 500 and terminal.counters()["pending"] == 0


def test_immediate_mode_answers_at_once():
    terminal, clock = make_terminal(duration=3, mode="failure")
    connection = FakeConnection()
    txn = terminal.receive(connection, fields(DEBIT.replace("BA0010", "BA0011")))
    assert [a["AE"] for a in connection.answers()] == ["11"]
    assert txn.status == "accepted" and clock.getDelayedCalls() == []


@pytest.mark.parametrize("frame, reason, status", [
    ("CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010", "09", "error"),
    (DEBIT.replace("CD0010", "CD0017"), "12", "declined"),
    (DEBIT.replace("CE003978", "CE003840"), "13", "declined"),
    (DEBIT.replace("CB00511245", "CB0051124x"), "09", "error"),
])
def test_request_errors_are_answered_at_once(frame, reason, status):
    terminal, clock = make_terminal(duration=3, currencies=["978"])
    connection = FakeConnection()
    txn = terminal.receive(connection, fields(frame))
    [answer] = connection.answers()
    assert (answer["AE"], answer["AF"]) == ("01", reason)
    assert (txn.status, txn.reason, txn.decided_by) == (status, reason, "request-error")
    assert answer["CA"] == "01" and answer["CZ"] == "0300"


def test_no_answer_and_hang_up():
    terminal, clock = make_terminal(duration=1, mode="no-answer")
    quiet = FakeConnection()
    txn = terminal.receive(quiet, fields(DEBIT))
    clock.advance(1)
    assert quiet.sent == [] and not quiet.hung_up and txn.status == "no-answer"
    assert quiet.done == [txn]
    terminal.update_settings({"mode": "hang-up"})
    rude = FakeConnection()
    txn = terminal.receive(rude, fields(DEBIT))
    clock.advance(1)
    assert rude.sent == [] and rude.hung_up and txn.status == "hang-up"


def test_outcome_sources_come_before_the_settings():
    terminal, clock = make_terminal(duration=3)
    queue = [Decision(OutcomeSpec.parse("refused", delay=0.5), "queue")]
    seen = []

    def passing(txn, request):
        seen.append((txn.id, request.amount))
        return None

    terminal.outcome_sources += [passing, lambda txn, request: queue.pop() if queue else None]
    connection = FakeConnection()
    first = terminal.receive(connection, fields(DEBIT))
    clock.advance(0.5)
    assert connection.answers()[0]["AF"] == "04"
    assert (first.decided_by, first.status) == ("queue", "declined")
    second = terminal.receive(connection, fields(DEBIT))
    clock.advance(3)
    assert connection.answers()[1]["AE"] == "10" and second.decided_by == "settings"
    assert seen == [(1, 11245), (2, 11245)]


def test_deferred_decision_is_answered_when_it_fires():
    terminal, clock = make_terminal(duration=3)
    waiting: list[defer.Deferred] = []

    def manual(txn, request):
        waiting.append(defer.Deferred())
        return waiting[-1]

    terminal.outcome_sources.append(manual)
    connection = FakeConnection()
    txn = terminal.receive(connection, fields(DEBIT))
    clock.advance(100)
    assert connection.sent == [] and txn.pending
    assert terminal.find(txn.id) is txn
    waiting[0].callback(Decision(OutcomeSpec.parse("approved", payment_type_name="amexcontact"),
                                 "manual"))
    clock.advance(0)
    [answer] = connection.answers()
    assert answer["CC"] == "002" and txn.decided_by == "manual"
    assert terminal.find(txn.id) is None


def test_broken_sources_fall_back_to_the_settings():
    terminal, clock = make_terminal(duration=0, mode="failure", failure_type="timeout")

    def broken(txn, request):
        raise RuntimeError("boom")

    terminal.outcome_sources += [broken, lambda txn, request: "refused"]
    connection = FakeConnection()
    terminal.receive(connection, fields(DEBIT))
    clock.advance(0)
    assert connection.answers()[0]["AF"] == "08"

    failing = FakeConnection()
    terminal.outcome_sources[:] = [lambda txn, request: defer.fail(ValueError("no"))]
    terminal.receive(failing, fields(DEBIT))
    clock.advance(0)
    assert failing.answers()[0]["AF"] == "08"


def test_drop_cancels_the_timer_and_the_decision():
    terminal, clock = make_terminal(duration=3)
    recorder = Recorder()
    terminal.observers.append(recorder)
    connection = FakeConnection()
    txn = terminal.receive(connection, fields(DEBIT))
    terminal.drop(txn)
    assert clock.getDelayedCalls() == [] and txn.status == "dropped"
    assert [e for e, _ in recorder.events] == ["request", "answer"]
    assert recorder.events[-1][1]["status"] == "dropped"

    cancelled = []
    terminal.outcome_sources.append(
        lambda txn, request: defer.Deferred(lambda d: cancelled.append(txn.id)))
    waiting = terminal.receive(connection, fields(DEBIT))
    terminal.drop(waiting)
    assert cancelled == [waiting.id] and waiting.status == "dropped"
    assert connection.sent == [] and terminal.counters()["dropped"] == 2


@pytest.mark.parametrize("mode, expected", [("success", "10"), ("manual", "01")])
def test_shutdown_answers_transactions_in_flight_at_once(mode, expected):
    terminal, clock = make_terminal(duration=30, mode=mode)
    decided = FakeConnection()
    txn = terminal.receive(decided, fields(DEBIT))
    terminal.outcome_sources.append(lambda txn, request: defer.Deferred())
    undecided = FakeConnection()
    other = terminal.receive(undecided, fields(DEBIT))
    terminal.stop_transactions()
    assert decided.answers()[0]["AE"] == expected
    assert txn.decided_by == ("settings" if mode == "success" else "manual-timeout")
    assert undecided.answers()[0]["AE"] == expected and other.decided_by == "shutdown"
    if mode == "manual":
        assert undecided.answers()[0]["AF"] == "08"
    assert clock.getDelayedCalls() == []


def test_observers_and_transaction_json():
    terminal, clock = make_terminal(duration=1)
    recorder = Recorder()
    terminal.observers += [object(), recorder]
    connection = FakeConnection()
    clock.advance(1_795_000_000)
    terminal.receive(connection, fields(DEBIT))
    clock.advance(1)
    (kind1, pending), (kind2, done) = recorder.events
    assert (kind1, kind2) == ("request", "answer")
    assert set(pending) == API_TRANSACTION_KEYS == set(done)
    assert pending["status"] == "pending" and pending["answer"] is None
    assert done["status"] == "approved" and done["reason"] is None
    assert (done["amount"], done["amount_minor"], done["currency"], done["currency_numeric"],
            done["currency_symbol"], done["action"]) == ("112.45", 11245, "EUR", "978", "€",
                                                         "debit")
    assert done["request_frame"] == DEBIT and done["answer_frame"].startswith("CZ0040300")
    assert done["received_at"].endswith("+00:00") and done["duration_s"] == 1.0
    assert done["labels"]["AE"] == "opération effectuée" and done["labels"]["CB"] == "montant"
    assert done["peer"] == "10.0.0.1:4242" and done["decided_by"] == "settings"
    json.dumps(done)  # JSON-ready
    terminal.update_settings({"mode": "failure"})
    assert recorder.events[-1] == ("settings", terminal.settings.to_dict())


def test_unreadable_request_json_has_null_amounts():
    terminal, clock = make_terminal()
    connection = FakeConnection()
    txn = terminal.receive_error(connection, tlv.FrameError("bad", 0, []))
    data = txn.to_json()
    assert data["amount"] is None and data["currency"] is None and data["action"] is None
    assert data["reason"] == {"code": "09",
                              "label": "Opération non effectuée, erreur format message"}
    assert data["request_frame"] is None and data["status"] == "error"


def test_observer_failure_does_not_stop_the_terminal():
    class Broken:
        def request_received(self, txn):
            raise RuntimeError("disk full")

    terminal, clock = make_terminal(duration=0)
    terminal.observers.append(Broken())
    connection = FakeConnection()
    terminal.receive(connection, fields(DEBIT))
    clock.advance(0)
    assert connection.answers()[0]["AE"] == "10"


def test_same_seed_same_cards_whatever_the_order():
    cards = []
    for order in ([0, 1], [1, 0]):
        terminal, clock = make_terminal(seed="s", duration=0)
        connections = [FakeConnection(), FakeConnection()]
        for index in order:
            terminal.receive(connections[index], fields(DEBIT))
        clock.advance(0)
        cards.append([connections[order.index(i)].answers()[0]["AA"] for i in (0, 1)])
    terminal, clock = make_terminal(seed="s", duration=0)
    assert cards[0] == [cards[1][1], cards[1][0]] or cards[0] == cards[1]


def test_next_id_can_start_after_a_journal():
    terminal, clock = make_terminal()
    terminal.next_id = 41
    assert terminal.receive(FakeConnection(), fields(DEBIT)).id == 41


# --- The protocol, with a fake transport and clock ---------------------------


def connect(terminal: Terminal) -> tuple[TerminalProtocol, StringTransportWithDisconnection]:
    proto = TerminalFactory(terminal).buildProtocol(None)
    transport = StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def written(transport) -> list[dict[str, str]]:
    """Each answer the terminal wrote, in order."""
    decoder = tlv.FrameDecoder()
    decoder.feed(transport.value())
    answers = []
    while (message := decoder.next_message()) is not None:
        answers.append(dict(message))
    return answers


def test_completeness_rule():
    assert has_mandatory_fields(fields(MANDATORY_ONLY))
    assert not has_mandatory_fields(fields(DEBIT)[:-1])


@pytest.mark.parametrize("frame", REQUESTS)
def test_split_anywhere_gives_one_correct_answer(frame):
    whole_terminal, whole_clock = make_terminal(duration=1)
    proto, transport = connect(whole_terminal)
    proto.dataReceived(frame.encode())
    whole_clock.advance(1)
    expected = transport.value()
    assert TerminalAnswer.parse(expected).outcome.value == "approved"
    data = frame.encode()
    for cut in range(1, len(data)):
        terminal, clock = make_terminal(duration=1)
        proto, transport = connect(terminal)
        proto.dataReceived(data[:cut])
        proto.dataReceived(data[cut:])
        clock.advance(1)
        assert transport.value() == expected, cut


def test_split_into_single_bytes_and_three_pieces():
    terminal, clock = make_terminal(duration=1)
    proto, transport = connect(terminal)
    for byte in REFUND.encode():
        proto.dataReceived(bytes([byte]))
    clock.advance(1)
    answer = TerminalAnswer.parse(transport.value())
    answer.check_echoes(PaymentRequest.parse(REFUND))
    assert answer.value("AE") == "10" and "CREDIT" in answer.receipt


def test_crlf_and_several_requests_answered_in_turn():
    terminal, clock = make_terminal(duration=1)
    proto, transport = connect(terminal)
    proto.dataReceived((with_ref(DEBIT, "A") + "\r\n" + with_ref(MANDATORY_ONLY, "B")
                        + "\r\n").encode())
    clock.advance(1)
    assert [a["CF"] for a in written(transport)] == ["A"]
    clock.advance(1)
    assert [a["CF"] for a in written(transport)] == ["A", "B"]
    assert terminal.counters()["approved"] == 2


def test_late_optional_fields_join_the_request_in_flight():
    terminal, clock = make_terminal(duration=1)
    proto, transport = connect(terminal)
    proto.dataReceived(MANDATORY_ONLY.encode())
    clock.advance(0.5)
    proto.dataReceived(b"CF003XYZCK003100")
    clock.advance(0.5)
    [answer] = written(transport)
    assert answer["CF"] == "XYZ" and "ZT" in answer


def test_late_field_cut_by_the_answer_is_dropped_not_answered(caplog):
    terminal, clock = make_terminal(duration=1)
    proto, transport = connect(terminal)
    proto.dataReceived(MANDATORY_ONLY.encode())
    clock.advance(0.8)
    proto.dataReceived(b"CF003X")  # a late optional field, its end still on its way
    clock.advance(0.2)  # the answer goes out without it
    with caplog.at_level("INFO", logger="caisse_ap.terminal"):
        proto.dataReceived(b"YZ")
        clock.advance(5)
    answers = written(transport)
    assert [(a["AE"], a.get("AF"), a.get("CF")) for a in answers] == [("10", None, None)]
    assert terminal.counters()["approved"] == 1 and terminal.counters()["error"] == 0
    assert "8 bytes dropped, not answered (b'CF003XYZ')" in caplog.text


def test_garbage_then_a_normal_transaction():
    terminal, clock = make_terminal(duration=0)
    proto, transport = connect(terminal)
    proto.dataReceived(b"hello\r\n")
    clock.advance(2)  # no request followed within the request time-out: the AF=09 is owed
    proto.dataReceived(DEBIT.encode())
    clock.advance(0)
    answers = written(transport)
    assert [(a["AE"], a.get("AF")) for a in answers] == [("01", "09"), ("10", None)]


def test_idle_connection_is_closed_but_not_while_waiting():
    clock = Clock()
    terminal = Terminal(TerminalSettings(duration=500), reactor=clock, idle_timeout=300)
    proto, transport = connect(terminal)
    clock.advance(299)
    proto.dataReceived(DEBIT.encode())
    clock.advance(499)
    assert transport.connected
    clock.advance(1)
    assert written(transport)[0]["AE"] == "10"
    clock.advance(299)
    assert transport.connected
    clock.advance(1)
    assert not transport.connected and terminal.connections == set()


def test_one_idle_check_closes_each_connection_at_its_own_time():
    clock = Clock()
    terminal = Terminal(TerminalSettings(duration=0), reactor=clock, idle_timeout=300)
    factory = TerminalFactory(terminal)

    def open_connection():
        proto = factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        return proto, transport

    _, first = open_connection()
    clock.advance(100)
    second_proto, second = open_connection()
    clock.advance(100)
    second_proto.dataReceived(DEBIT.encode())  # answered at once: idle from t=200
    assert len(clock.getDelayedCalls()) == 1  # one timer for every connection
    clock.advance(99.999)
    assert first.connected and second.connected
    clock.advance(0.001)
    assert not first.connected and second.connected
    clock.advance(199.999)
    assert second.connected
    clock.advance(0.001)
    assert not second.connected and terminal.connections == set()
    assert clock.getDelayedCalls() == []  # nothing left to watch
    _, third = open_connection()  # the next connection starts the watch again
    clock.advance(300)
    assert not third.connected


def test_disconnect_while_pending_cancels_the_answer():
    terminal, clock = make_terminal(duration=3)
    proto, transport = connect(terminal)
    proto.dataReceived(DEBIT.encode())
    transport.loseConnection()
    [idle_check] = clock.getDelayedCalls()  # the answer's timer is gone
    assert idle_check.getTime() == 300
    assert terminal.counters()["dropped"] == 1 and terminal.connections == set()


def test_oversized_frame_is_answered_then_closed():
    terminal, clock = make_terminal(duration=0)
    proto, transport = connect(terminal)
    big = "CZ0040300CJ012012345678901CA00201" + "".join(
        f"{a}{b}999" + "x" * 999 for a in "QRSTUVWXY" for b in "ABCDEFGH")
    proto.dataReceived(big.encode())
    [answer] = written(transport)
    assert (answer["AE"], answer["AF"], answer["CJ"], answer["CA"]) == (
        "01", "09", "012345678901", "01")
    assert proto.closing and transport.disconnecting or not transport.connected


# --- Real sockets, real reactor ---------------------------------------------


def test_done_when_frame_answered_in_one_recv(start_terminal, pos):
    terminal = start_terminal({"duration": 0})
    with socket.create_connection(terminal.address, timeout=10) as sock:
        sock.sendall(DEBIT.encode())
        data = sock.recv(1024)
    answer = TerminalAnswer.parse(data)
    assert answer.outcome.value == "approved" and answer.problem is None
    answer.check_echoes(PaymentRequest.parse(DEBIT))
    assert {"CC", "CI", "AC", "AA", "AB", "AI", "CG"} <= dict(answer.fields).keys()


def normal_transaction(pos, terminal, ref="OK"):
    """A normal payment on a new connection: proves the terminal still serves."""
    answer = dict(pos(terminal).exchange(with_ref(DEBIT, ref)))
    assert (answer["AE"], answer["CF"]) == ("10", ref)


@pytest.mark.parametrize("failure", ["abandon", "timeout", "refused", "forbidden", "02", "13"])
def test_failure_types_over_a_socket(start_terminal, pos, failure):
    terminal = start_terminal({"duration": 0, "mode": "failure", "failure_type": failure})
    answer = TerminalAnswer.parse(tlv.encode(pos(terminal).exchange(with_ref(DEBIT, "F"))))
    code = {"abandon": "11", "timeout": "08", "refused": "04", "forbidden": "05"}.get(
        failure, failure)
    assert answer.value("AE") == "01" and answer.reason.code == code
    answer.check_echoes(PaymentRequest.parse(with_ref(DEBIT, "F")))


@pytest.mark.parametrize("frame, checks", [
    (DEBIT, {"AE": "10", "CC": "001", "CI": "1"}),
    (CHEQUE, {"AE": "10", "CC": "00C"}),
    (REFUND, {"AE": "10", "CD": "1"}),
    (DEBIT.replace("CD0010", "CD0012"), {"AE": "10", "CD": "2"}),
    (DEBIT.replace("CD0010", "CD0013"), {"AE": "10", "CD": "3"}),
    (DEBIT.replace("CD0010", "CD0019"), {"AE": "01", "AF": "12"}),
    (DEBIT.replace("BA0010", "BA0011"), {"AE": "11"}),
    (DEBIT + "CK003100", {"AE": "10"}),
    (DEBIT[:-10], {"AE": "01", "AF": "09", "CJ": "012345678901"}),  # missing CB
    (DEBIT.replace("CE003978", "CE003001"), {"AE": "01", "AF": "13"}),
    ("garbage\r\n", {"AE": "01", "AF": "09"}),
    (DEBIT + "\r\n", {"AE": "10", "CB": "11245"}),
])
def test_every_behaviour_row_then_a_normal_transaction(start_terminal, pos, frame, checks):
    terminal = start_terminal({"duration": 0})
    answer = dict(pos(terminal).exchange(frame))
    assert {tag: answer.get(tag) for tag in checks} == checks
    if frame.startswith("CZ") and checks["AE"] == "10":
        TerminalAnswer.parse(tlv.encode(answer.items())).check_echoes(
            PaymentRequest.parse(frame))
    if "CK003100" in frame:
        text = base64.b64decode(dict(tlv.nested(answer["ZT"]))["AK"]).decode()
        assert "TICKET CLIENT A CONSERVER" in text
    normal_transaction(pos, terminal)


def test_cheque_failure_is_refused_over_a_socket(start_terminal, pos):
    terminal = start_terminal({"duration": 0, "mode": "failure"})
    answer = dict(pos(terminal).exchange(CHEQUE))
    assert (answer["AE"], answer["AF"]) == ("01", "04")


def test_bytes_sent_one_by_one(start_terminal, pos):
    terminal = start_terminal({"duration": 0.5})
    connection = pos(terminal)
    for byte in with_ref(REFUND, "SPLIT").encode():
        connection.send(bytes([byte]))
    answer = dict(tlv.decode(connection.read_answer()))
    assert (answer["AE"], answer["CF"], answer["CD"]) == ("10", "SPLIT", "1")
    assert dict(tlv.nested(answer["ZT"]))["CK"] == "120"
    assert len(connection.exchange(with_ref(DEBIT, "NEXT"))) > 5  # same connection serves on


def test_several_requests_on_one_connection(start_terminal, pos):
    terminal = start_terminal({"duration": 0})
    connection = pos(terminal)
    connection.send(with_ref(DEBIT, "1") + with_ref(DEBIT, "2") + "\r\n")
    first = dict(tlv.decode(connection.read_answer()))
    assert first["CF"] == "1"
    second = dict(tlv.decode(connection.read_answer()))
    assert second["CF"] == "2"


def test_oversized_closes_after_answering(start_terminal, pos):
    terminal = start_terminal({"duration": 0})
    connection = pos(terminal)
    big = "CZ0040300CJ012012345678901CA00201" + "".join(
        f"{a}{b}999" + "x" * 999 for a in "QRSTUVWXY" for b in "ABCDEFGH")
    connection.send(big)
    answer = dict(tlv.decode(connection.read_answer()))
    assert (answer["AE"], answer["AF"], answer["CJ"]) == ("01", "09", "012345678901")
    assert connection.closed_by_peer()
    normal_transaction(pos, terminal)


def test_abrupt_disconnect_while_pending(start_terminal, pos, reactor_thread):
    terminal = start_terminal({"duration": 30})
    finished = Finished(reactor_thread, terminal)
    connection = pos(terminal)
    connection.send(DEBIT)
    # SO_LINGER 0: close sends a reset, as a crashing POS does.
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
    assert finished.next() == "dropped"
    reactor_thread.call(terminal.update_settings, {"duration": 0})
    normal_transaction(pos, terminal)
    assert reactor_thread.call(terminal.counters)["dropped"] == 1


class Finished:
    """Observer: the transactions as they finish, to wait on from a test thread."""

    def __init__(self, reactor_thread, terminal):
        self.reactor_thread = reactor_thread
        self.queue = defer.DeferredQueue()
        reactor_thread.call(terminal.observers.append, self)

    def transaction_finished(self, txn):
        self.queue.put(txn.status)

    def next(self) -> str:
        return self.reactor_thread.call(self.queue.get)


def test_no_answer_then_hang_up_then_success(start_terminal, pos, reactor_thread):
    terminal = start_terminal({"duration": 0, "mode": "no-answer"})
    finished = Finished(reactor_thread, terminal)
    quiet = pos(terminal)
    quiet.send(with_ref(DEBIT, "SILENT"))
    assert finished.next() == "no-answer"
    reactor_thread.call(terminal.update_settings, {"mode": "hang-up"})
    rude = pos(terminal)
    rude.send(DEBIT)
    assert rude.closed_by_peer()
    reactor_thread.call(terminal.update_settings, {"mode": "success"})
    # The first bytes the silent connection ever gets answer its second request.
    answer = dict(quiet.exchange(with_ref(DEBIT, "SECOND")))
    assert answer["CF"] == "SECOND"


def test_max_connections_makes_new_pos_wait_not_reset(start_terminal, pos, caplog):
    """Over the limit the terminal stops accepting: the kernel's backlog holds the new POS,
    served as soon as a connection closes; one warning, not one per POS."""
    with caplog.at_level("WARNING", logger="caisse_ap.terminal"):
        terminal = start_terminal({"duration": 0}, max_connections=2)
        first, second = pos(terminal), pos(terminal)
        assert dict(first.exchange(DEBIT))["AE"] == "10"
        assert dict(second.exchange(DEBIT))["AE"] == "10"
        waiting = [pos(terminal) for _ in range(3)]  # connected by the kernel's backlog
        for connection in waiting:
            connection.send(with_ref(DEBIT, "WAITED"))
        first.close()
        assert dict(tlv.decode(waiting[0].read_answer()))["CF"] == "WAITED"
        second.close()
        assert dict(tlv.decode(waiting[1].read_answer()))["CF"] == "WAITED"
        waiting[0].close()
        assert dict(tlv.decode(waiting[2].read_answer()))["CF"] == "WAITED"
    warnings = [r for r in caplog.records if "--max-connections" in r.getMessage()]
    assert len(warnings) == 1


def test_settings_change_applies_to_the_next_transaction(start_terminal, pos, reactor_thread):
    terminal = start_terminal({"duration": 0})
    assert dict(pos(terminal).exchange(DEBIT))["AE"] == "10"
    reactor_thread.call(terminal.update_settings,
                        {"mode": "failure", "failure_type": "refused", "pad_amount": True})
    answer = dict(pos(terminal).exchange(DEBIT))
    assert (answer["AF"], answer["CB"]) == ("04", "000000011245")


def test_request_missing_a_mandatory_field_is_refused_once_the_pos_is_quiet():
    terminal, clock = make_terminal(duration=0)
    proto, transport = connect(terminal)
    proto.dataReceived(DEBIT[:-10].encode())  # no CB: never whole by the mandatory rule
    clock.advance(1.999)
    assert transport.value() == b""
    clock.advance(0.001)
    [answer] = written(transport)
    assert (answer["AE"], answer["AF"], answer["CJ"]) == ("01", "09", "012345678901")
    proto.dataReceived(DEBIT.encode())
    clock.advance(0)
    assert [a["AE"] for a in written(transport)] == ["01", "10"]


def test_time_waited_counts_from_the_first_byte_of_a_request():
    terminal, clock = make_terminal(duration=1)
    recorder = Recorder()
    terminal.observers.append(recorder)
    proto, _ = connect(terminal)
    clock.advance(10)
    proto.dataReceived(DEBIT[:20].encode())
    clock.advance(0.25)
    proto.dataReceived(DEBIT[20:].encode())  # whole now: answered 1 s later
    clock.advance(1)
    clock.advance(5)
    proto.dataReceived(DEBIT[:-3].encode())  # never whole: refused after the request timeout
    clock.advance(2)
    finished = [data for event, data in recorder.events if event == "answer"]
    assert [(txn["status"], txn["duration_s"]) for txn in finished] == [
        ("approved", 1.25), ("error", 2.0)]
    assert finished[0]["received_at"].endswith("00:00:10.000+00:00")


def test_request_cut_in_a_field_is_refused_once_the_pos_is_quiet():
    terminal, clock = make_terminal(duration=0)
    proto, transport = connect(terminal)
    proto.dataReceived(DEBIT[:-3].encode())
    clock.advance(2)
    [answer] = written(transport)
    assert (answer["AE"], answer["AF"], answer["CA"]) == ("01", "09", "01")
    assert terminal.counters()["error"] == 1
