"""The control API (docs/api.md) over real HTTP, against terminals on free ports.

The server runs in the session reactor thread (conftest.py); the tests are
plain blocking code: a real HTTP client (http.client) for the API and the
event stream, the real command-line client's `pay()` or raw sockets for POS.
Nothing waits on a clock: tests wait for an event, an answer or a thread.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from openapi_check import check_response
from server_process import ServerProcess, run_server

from caisse_ap import __version__, client, tlv
from caisse_ap.messages import PaymentRequest
from caisse_ap.terminal import app
from caisse_ap.terminal.journal import Journal
from caisse_ap.terminal.rules import AmountRules
from caisse_ap.terminal.web import WebOptions, _is_loopback
from caisse_ap.terminal.web.api import ERROR_CODES, MAX_BODY
from caisse_ap.terminal.web.site import STATIC
from caisse_ap.testing import SimulatedTerminalError, simulated_terminal

pytestmark = pytest.mark.usefixtures("reactor_thread")

JSON = {"Content-Type": "application/json"}


class Answer:
    def __init__(self, response: http.client.HTTPResponse):
        self.status = response.status
        self.headers = response.headers
        self.raw = response.read()
        self.json = None
        if self.raw and self.headers.get_content_type() == "application/json":
            self.json = json.loads(self.raw)


def call(terminal, method: str, path: str, body=None, headers=None, raw: bytes | None = None,
         port: int | None = None) -> Answer:
    """One HTTP request to the terminal's web port, whatever its outcome."""
    connection = http.client.HTTPConnection("127.0.0.1", port or terminal.web_port, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        all_headers = dict(JSON) if data is not None else {}
        all_headers.update(headers or {})
        connection.request(method, path, body=data, headers=all_headers)
        answer = Answer(connection.getresponse())
        # Every answer as docs/openapi.json describes it (tests/openapi_check.py).
        check_response(method, path, answer.status, answer.headers.get("content-type"),
                       answer.json)
        return answer
    finally:
        connection.close()


def pay(terminal, amount: str = "12.00", **options) -> client.PaymentResult:
    return client.pay(client.make_request(amount, **options), *terminal.address, timeout=10)


def pay_in_thread(terminal, amount: str, **options) -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault(
        "result", pay(terminal, amount, **options)))
    thread.start()
    return thread, outcome


def assert_error(answer: Answer, status: int, field=None, words: str = "") -> None:
    assert answer.status == status, answer.raw
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert set(answer.json) - {"limits"} == {"error", "code", "field"}
    assert answer.json["field"] == field and answer.json["code"] in ERROR_CODES
    assert words in answer.json["error"]
    assert b"Traceback" not in answer.raw


@pytest.fixture(scope="module")
def terminal():
    with simulated_terminal(seed=3) as running:
        yield running


@pytest.fixture(autouse=True)
def default_settings(request):
    """Tests sharing the module's terminal leave it as they found it."""
    yield
    if "terminal" in request.fixturenames:
        shared = request.getfixturevalue("terminal")
        shared.clear_next()
        shared.settings(mode="success", duration=0, failure_type="abandon",
                        payment_type="cbcontact", pad_amount=False, amount_rules=False,
                        manual_timeout=60)


# --- Done when ---------------------------------------------------------------------


def test_one_server_drives_every_outcome_and_reads_each_back():
    """Approved, refused, no-answer and manual outcomes from one server, never restarted."""
    with simulated_terminal() as terminal, terminal.events() as events:
        approved = pay(terminal, "10.00")
        terminal.next("refused")
        refused = pay(terminal, "11.00")
        terminal.settings(mode="no-answer")
        no_answer = client.pay(client.make_request("12.00"), *terminal.address, timeout=0.5)
        terminal.settings(mode="manual")
        thread, outcome = pay_in_thread(terminal, "13.00")
        waiting = next(event["data"] for event in iter(lambda: events.get("request"), None)
                       if event["data"]["amount"] == "13.00")
        decided = terminal.decide(waiting["id"], "approved", payment_type="cbcontactless")
        thread.join(10)
        journal = terminal.transactions()

    assert approved.status == "approved" and refused.status == "declined"
    assert no_answer.status == "unknown" and outcome["result"].status == "approved"
    assert decided["status"] == "approved" and decided["decided_by"] == "manual"
    by_amount = {t["amount"]: t for t in journal}
    assert [t["amount"] for t in journal] == ["13.00", "12.00", "11.00", "10.00"]
    assert (by_amount["10.00"]["status"], by_amount["10.00"]["decided_by"]) == (
        "approved", "settings")
    assert (by_amount["11.00"]["status"], by_amount["11.00"]["decided_by"]) == (
        "declined", "queue")
    assert by_amount["11.00"]["reason"] == {"code": "04", "label": "Refusée"}
    assert (by_amount["12.00"]["status"], by_amount["12.00"]["answer"]) == ("no-answer", None)
    assert (by_amount["13.00"]["status"], by_amount["13.00"]["decided_by"]) == (
        "approved", "manual")
    assert dict(by_amount["13.00"]["answer"])["CC"] == "00B"


# --- Status and settings ------------------------------------------------------------------


def test_status(terminal):
    pay(terminal)
    answer = call(terminal, "GET", "/api/status")
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-cache"
    status = answer.json
    assert status["version"] == __version__
    assert status["terminal"] == {"host": "127.0.0.1", "port": terminal.port}
    assert status["web"] == {"host": "127.0.0.1", "port": terminal.web_port}
    assert status["settings"]["mode"] == "success"
    counters = status["counters"]
    assert counters["approved"] >= 1 and counters["total"] >= counters["approved"]
    assert {"declined", "accepted", "no-answer", "hang-up", "dropped", "error", "pending",
            "open_connections"} <= set(counters)
    assert status["queue"] == []
    choices = status["choices"]
    assert "manual" in choices["modes"] and "partial" in choices["outcomes"]
    assert {"name": "refused", "code": "04", "label": "Refusée"} in choices["failure_types"]
    contactless = next(c for c in choices["payment_types"] if c["name"] == "cbcontactless")
    assert (contactless["code"], contactless["scheme"], contactless["read_mode"]) == (
        "00B", "CB", "2")
    assert choices["actions"] == ["debit", "refund", "cancellation", "duplicate",
                                  "pre_authorisation"]


def test_head_is_get_without_a_body(terminal):
    answer = call(terminal, "HEAD", "/api/status")
    assert answer.status == 200 and answer.raw == b""
    assert int(answer.headers["Content-Length"]) > 100
    stream = call(terminal, "HEAD", "/api/events")  # answered, not held open
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-")


def test_settings_partial_update_takes_effect_on_the_next_transaction(terminal):
    assert call(terminal, "GET", "/api/settings").json["failure_type"] == "abandon"
    answer = call(terminal, "PUT", "/api/settings",
                  {"mode": "failure", "failure_type": "refused"})
    assert answer.status == 200
    assert (answer.json["mode"], answer.json["failure_type"]) == ("failure", "refused")
    assert answer.json["seller_contract"] == "424242"  # untouched
    result = pay(terminal)
    assert result.status == "declined" and result.answer.reason.code == "04"
    call(terminal, "PUT", "/api/settings", {"mode": "success", "pad_amount": True,
                                           "payment_type": "amexcontactless",
                                           "seller_contract": "999"})
    result = pay(terminal, "1.00")
    assert result.answer.value("CB") == "000000000100"
    assert result.answer.application == "00D" and result.answer.seller_contract == "999"


def test_settings_change_is_seen_by_a_raw_pos_on_an_open_connection(terminal, pos):
    connection = pos(terminal.address)
    assert dict(connection.exchange(PaymentRequest(amount=100).encode()))["AE"] == "10"
    terminal.settings(mode="failure", failure_type="timeout")
    answer = dict(connection.exchange(PaymentRequest(amount=100).encode()))
    assert (answer["AE"], answer["AF"]) == ("01", "08")


@pytest.mark.parametrize("body, field, words", [
    ({"duration": -1}, "duration", "between 0 and 3600"),
    ({"mode": "failure", "failure_type": "often"}, "failure_type", "unknown failure type"),
    ({"colour": "red"}, "colour", "unknown setting"),
    ({"seller_contract": "12345678901"}, "seller_contract", "longer than 10"),
    ({"amount_rules": "yes"}, "amount_rules", "true or false"),
    ({"currencies": ["EUR", "ZZZ"]}, "currencies", "not an ISO 4217"),
    ([1, 2], None, "JSON object"),
])
def test_invalid_settings_are_refused_and_nothing_changes(terminal, body, field, words):
    before = call(terminal, "GET", "/api/settings").json
    assert_error(call(terminal, "PUT", "/api/settings", body), 400, field, words)
    assert call(terminal, "GET", "/api/settings").json == before


@pytest.mark.parametrize("raw, headers, status, words", [
    (b"{not json", JSON, 400, "not valid JSON"),
    (b"", JSON, 400, "needs a JSON body"),
    (b'{"duration": 1}', {"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
    (b'{"duration": 1}', {"Content-Type": "application/x-www-form-urlencoded"}, 415, "JSON"),
    (b"\xff\xfe", JSON, 400, "not valid JSON"),
])
def test_bodies_that_are_not_json(terminal, raw, headers, status, words):
    answer = call(terminal, "PUT", "/api/settings", raw=raw, headers=headers)
    assert_error(answer, status, None, words)


def test_settings_event_follows_a_change(terminal):
    with terminal.events() as events:
        terminal.settings(duration=0.25)
        event = events.get("settings")
    assert event["data"]["duration"] == 0.25 and event["id"] > 0


# --- The queue --------------------------------------------------------------------------


def test_queue_is_consumed_in_order(terminal):
    answer = call(terminal, "POST", "/api/next", {"outcome": "refused"})
    assert answer.status == 201 and answer.json == {"queue": [{"outcome": "refused"}]}
    answer = call(terminal, "POST", "/api/next", [
        {"outcome": "approved", "payment_type": "cbcontactless"},
        {"outcome": "04"},
        {"outcome": "hang-up"},
    ])
    assert answer.json["queue"] == [
        {"outcome": "refused"}, {"outcome": "approved", "payment_type": "cbcontactless"},
        {"outcome": "refused"}, {"outcome": "hang-up"}]
    assert call(terminal, "GET", "/api/next").json == answer.json
    assert call(terminal, "GET", "/api/status").json["queue"] == answer.json["queue"]
    results = [pay(terminal) for _ in range(4)]
    assert [r.status for r in results] == ["declined", "approved", "declined", "unknown"]
    assert results[1].answer.application == "00B"
    assert "closed" in results[3].problem
    assert call(terminal, "GET", "/api/next").json == {"queue": []}
    assert pay(terminal).status == "approved"  # the settings again
    decided = [t["decided_by"] for t in terminal.transactions(limit=5)]
    assert decided == ["settings", "queue", "queue", "queue", "queue"]


def test_queue_delay_and_partial(terminal):
    terminal.next("partial", delay=0)
    result = pay(terminal, "10.00", partial=True)
    assert result.status == "approved" and result.answer.amount == 500


def test_delete_clears_the_queue(terminal):
    terminal.next("refused")
    terminal.next("refused")
    answer = call(terminal, "DELETE", "/api/next")
    assert answer.status == 200 and answer.json == {"queue": []}
    assert pay(terminal).status == "approved"


@pytest.mark.parametrize("body, field, words", [
    ({"outcome": "sometimes"}, "outcome", "unknown failure type"),
    ({"outcome": "approved", "delay": "soon"}, "delay", "number of seconds"),
    ({"outcome": "approved", "payment_type": "visa"}, "payment_type", "unknown payment type"),
    ({"outcome": "approved", "colour": "red"}, "colour", "unknown outcome field"),
    ({"delay": 1}, "outcome", "outcome is missing"),
    ([{"outcome": "refused"}, {"outcome": "bad"}], "outcome", "(item 2)"),
    ([], "outcome", "empty"),
    (3, "outcome", "JSON object or a name"),
])
def test_bad_outcomes_are_refused_and_nothing_is_queued(terminal, body, field, words):
    assert_error(call(terminal, "POST", "/api/next", body), 400, field, words)
    assert terminal.api("GET", "/api/next") == {"queue": []}


def test_the_queue_is_bounded(terminal):
    answer = call(terminal, "POST", "/api/next", [{"outcome": "approved"}] * 1001)
    assert_error(answer, 409, "outcome", "at most 1000")
    assert terminal.api("GET", "/api/next") == {"queue": []}


# --- Transactions -----------------------------------------------------------------------


def test_transactions_newest_first_with_limit_after_and_status(terminal):
    first = pay(terminal, "1.00")
    terminal.next("refused")
    pay(terminal, "2.00")
    pay(terminal, "3.00")
    assert first.status == "approved"
    newest = terminal.transactions(limit=3)
    assert [t["amount"] for t in newest] == ["3.00", "2.00", "1.00"]
    ids = [t["id"] for t in newest]
    assert ids == sorted(ids, reverse=True)
    assert [t["amount"] for t in terminal.transactions(after=ids[1])] == ["3.00"]
    declined = terminal.transactions(status="declined", after=ids[2])
    assert [t["amount"] for t in declined] == ["2.00"]
    one = call(terminal, "GET", f"/api/transactions/{ids[0]}")
    assert one.status == 200 and one.json == newest[0]
    txn = newest[0]
    assert txn["peer"].startswith("127.0.0.1:") and txn["action"] == "debit"
    assert (txn["currency"], txn["currency_numeric"], txn["currency_symbol"]) == (
        "EUR", "978", "€")
    assert tlv.decode(txn["request_frame"]) == [tuple(f) for f in txn["request"]]
    assert tlv.decode(txn["answer_frame"]) == [tuple(f) for f in txn["answer"]]
    assert txn["labels"]["AE"] == "opération effectuée" and txn["duration_s"] >= 0


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
    ("after=-1", "after"), ("status=lost", "status"), ("limit=%ff", "limit"),
])
def test_bad_transaction_queries(terminal, query, field):
    assert_error(call(terminal, "GET", f"/api/transactions?{query}"), 400, field)


@pytest.mark.parametrize("path", ["/api/transactions/999999", "/api/transactions/abc",
                                  "/api/transactions/-1"])
def test_unknown_transaction_is_404(terminal, path):
    assert_error(call(terminal, "GET", path), 404, None, "No transaction")


def test_malformed_request_is_journalled_as_an_error(terminal, pos):
    connection = pos(terminal.address)
    answer = dict(connection.exchange("CZ0040300CJ012012345678901CA00201CE003978CD0010"
                                      "BA0010CB0055x245"))
    assert answer["AF"] == "09"
    last = terminal.transactions(limit=1)[0]
    assert last["decided_by"] == "request-error" and last["reason"]["code"] == "09"


# --- Manual mode --------------------------------------------------------------------------


def wait_for_request(events, amount: str) -> dict:
    while True:
        data = events.get("request")["data"]
        if data["amount"] == amount:
            return data


def test_manual_decision(terminal):
    terminal.settings(mode="manual")
    with terminal.events() as events:
        thread, outcome = pay_in_thread(terminal, "21.00")
        waiting = wait_for_request(events, "21.00")
        assert waiting["status"] == "pending" and waiting["answer"] is None
        listed = terminal.transactions(status="pending")
        assert [t["id"] for t in listed] == [waiting["id"]]
        assert "decision_deadline" in listed[0]
        assert terminal.transaction(waiting["id"])["decision_deadline"]
        answer = call(terminal, "POST", f"/api/transactions/{waiting['id']}/decision",
                      {"outcome": "refused"})
        thread.join(10)
        finished = events.get("answer")["data"]
    assert answer.status == 200
    assert answer.json["status"] == "declined" and answer.json["decided_by"] == "manual"
    assert "decision_deadline" not in answer.json
    assert outcome["result"].status == "declined"
    assert outcome["result"].answer.reason.code == "04"
    assert finished["id"] == waiting["id"] and finished["status"] == "declined"
    again = call(terminal, "POST", f"/api/transactions/{waiting['id']}/decision",
                 {"outcome": "approved"})
    assert_error(again, 409, None, "not waiting for a decision")


def test_manual_decision_errors(terminal):
    assert_error(call(terminal, "POST", "/api/transactions/999999/decision",
                      {"outcome": "approved"}), 404)
    terminal.settings(mode="manual")
    with terminal.events() as events:
        thread, outcome = pay_in_thread(terminal, "22.00")
        waiting = wait_for_request(events, "22.00")
        path = f"/api/transactions/{waiting['id']}/decision"
        assert_error(call(terminal, "POST", path, {"outcome": "maybe"}), 400, "outcome")
        assert_error(call(terminal, "POST", path, raw=b"[", headers=JSON), 400)
        assert_error(call(terminal, "GET", path), 405)
        assert terminal.transaction(waiting["id"])["status"] == "pending"  # still waiting
        decided = terminal.decide(waiting["id"], "approved", payment_type="amexcontact")
        thread.join(10)
    assert decided["status"] == "approved" and outcome["result"].answer.application == "002"


def test_manual_timeout_answers_af_08(terminal):
    terminal.settings(mode="manual", manual_timeout=0.2)
    with terminal.events() as events:
        result = pay(terminal, "23.00")  # nobody decides
        finished = events.get("answer")["data"]
    assert result.status == "declined" and result.answer.reason.code == "08"
    assert (finished["decided_by"], finished["reason"]["code"]) == ("manual-timeout", "08")


def test_manual_request_answered_at_shutdown():
    with simulated_terminal(mode="manual") as terminal, terminal.events() as events:
        thread, outcome = pay_in_thread(terminal, "24.00")
        wait_for_request(events, "24.00")
        terminal.stop()
        thread.join(10)
    assert outcome["result"].status == "declined"
    assert outcome["result"].answer.reason.code == "08"


def test_pos_leaving_during_a_manual_wait_is_dropped(terminal, pos):
    terminal.settings(mode="manual")
    with terminal.events() as events:
        connection = pos(terminal.address)
        connection.send(PaymentRequest(amount=2500).encode())
        waiting = events.get("request")["data"]
        # A reset, as a crashing POS sends: a plain close is a half-close, still answered.
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        connection.close()
        finished = events.get("answer")["data"]
    assert finished["id"] == waiting["id"] and finished["status"] == "dropped"
    assert_error(call(terminal, "POST", f"/api/transactions/{waiting['id']}/decision",
                      {"outcome": "approved"}), 409)


def test_the_queue_comes_before_manual_mode(terminal):
    terminal.settings(mode="manual")
    terminal.next("forbidden")
    result = pay(terminal)
    assert result.answer.reason.code == "05"


# --- Amount rules -----------------------------------------------------------------------


def test_amount_rules_endpoint_and_switch(terminal):
    answer = call(terminal, "GET", "/api/amount-rules")
    assert answer.status == 200 and answer.json["enabled"] is False
    assert answer.json["source"] == "default table"
    assert answer.json["rules"] == AmountRules().to_json()
    assert pay(terminal, "7.51").status == "approved"
    terminal.settings(amount_rules=True)
    assert call(terminal, "GET", "/api/amount-rules").json["enabled"] is True
    assert pay(terminal, "7.51").answer.reason.code == "04"
    terminal.next("approved")  # the queue comes first
    assert pay(terminal, "7.51").status == "approved"


def test_amount_rules_from_a_file(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\namount = "42.00"\noutcome = "forbidden"\n')
    with simulated_terminal(amount_rules=rules) as terminal:
        assert pay(terminal, "42.00").answer.reason.code == "05"
        assert pay(terminal, "12.51").status == "approved"  # no default table here
        listed = terminal.api("GET", "/api/amount-rules")
    assert listed["source"] == str(rules) and len(listed["rules"]) == 1


# --- Test payment -------------------------------------------------------------------------


def test_test_payment_to_this_terminal(terminal):
    answer = call(terminal, "POST", "/api/test-payment",
                  {"amount": "12,50", "currency": "EUR", "action": "debit", "cheque": False})
    assert answer.status == 200
    result = answer.json
    assert (result["status"], result["amount"], result["currency"]) == (
        "approved", "12.50", "EUR")
    assert result["fields"]["AE"] == "10" and result["labels"]["AE"] == "opération effectuée"
    assert result["elapsed_s"] >= 0 and result["request"].startswith("CZ")
    assert terminal.transactions(limit=1)[0]["amount"] == "12.50"


def test_test_payment_cheque_refund_and_failure(terminal):
    terminal.next("refused")
    cheque = terminal.api("POST", "/api/test-payment", {"amount": "30", "cheque": True})
    assert cheque["status"] == "declined" and cheque["reason"]["code"] == "04"
    refund = terminal.api("POST", "/api/test-payment", {"amount": "5.00", "action": "refund",
                                                        "receipt": True})
    assert refund["status"] == "approved" and refund["action"] == "refund"
    assert "CREDIT" in refund["receipt"]


def test_test_payment_to_another_host_and_port(terminal):
    with simulated_terminal(mode="failure", failure_type="forbidden") as other:
        result = terminal.api("POST", "/api/test-payment",
                              {"amount": "1.00", "host": "127.0.0.1", "port": other.port})
        assert other.transactions(limit=1)[0]["amount"] == "1.00"
    assert result["status"] == "declined" and result["reason"]["code"] == "05"


def test_test_payment_nobody_listening(terminal):
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # a port nothing listens on
    result = terminal.api("POST", "/api/test-payment", {"amount": "1.00", "port": port})
    assert result["status"] == "error" and "nothing was sent" in result["problem"]


def test_test_payment_time_out(terminal):
    terminal.next("no-answer")
    result = terminal.api("POST", "/api/test-payment", {"amount": "1.00", "timeout": 0.3})
    assert result["status"] == "unknown"


@pytest.mark.parametrize("body, field", [
    ({}, "amount"),
    ({"amount": "abc"}, "amount"),
    ({"amount": "1.00", "currency": "ZZZ"}, "currency"),
    ({"amount": "1.00", "action": "steal"}, "action"),
    ({"amount": "1.00", "cheque": "yes"}, "cheque"),
    ({"amount": "1.00", "port": 70000}, "port"),
    ({"amount": "1.00", "host": ""}, "host"),
    ({"amount": "1.00", "timeout": 0}, "timeout"),
    ({"amount": "1.00", "tip": 3}, "tip"),
])
def test_bad_test_payments(terminal, body, field):
    assert_error(call(terminal, "POST", "/api/test-payment", body), 400, field)


def test_an_export_reads_the_journal_page_by_page(terminal):
    ids = []
    for amount in ("41.00", "42.00", "43.00"):
        pay(terminal, amount)
        ids.append(terminal.api("GET", "/api/transactions?limit=1")["transactions"][0]["id"])
    older = terminal.api("GET", f"/api/transactions?limit=2&before={ids[2]}")["transactions"]
    assert [t["id"] for t in older] == [ids[1], ids[0]]
    assert terminal.api("GET", "/api/transactions?before=1")["transactions"] == []
    answer = call(terminal, "GET", "/api/transactions?before=0")
    assert_error(answer, 400, "before")
    assert answer.json["code"] == "out_of_range"


@pytest.mark.parametrize("amount, code, limits", [
    ("0", "amount_zero", None),
    ("-5", "amount_negative", None),  # as a debit (the console's choice); alone, a refund
    ("99999999999", "amount_too_large", {"max": "9999999999.99", "currency": "EUR"}),
    ("12,345", "amount_too_precise", {"decimals": 2, "currency": "EUR"}),
    ("douze", "invalid_amount", None),
    ("  ", "empty", None),
])
def test_a_bad_amount_says_what_is_wrong(terminal, amount, code, limits):
    """The library's own amount check decides; its reason becomes the error's code."""
    answer = call(terminal, "POST", "/api/test-payment", {"amount": amount, "action": "debit"})
    assert_error(answer, 400, "amount")
    assert answer.json["code"] == code
    assert answer.json.get("limits") == limits


def test_outcomes_of_a_real_terminal_are_refused_without_one(terminal):
    status = terminal.api("GET", "/api/status")
    assert status["upstream"] is None
    assert status["choices"]["forwarded_outcomes"] == ["terminal", "terminal-split"]
    for body in ({"outcome": "terminal"}, [{"outcome": "approved"},
                                          {"outcome": "terminal-split", "delay": 1}]):
        answer = call(terminal, "POST", "/api/next", body)
        assert_error(answer, 400, "outcome", "real terminal")
        assert answer.json["code"] == "real_terminal_required"
    assert terminal.api("GET", "/api/next")["queue"] == []  # nothing half added
    terminal.settings(mode="manual")
    with terminal.events() as events:
        thread, outcome = pay_in_thread(terminal, "24.00")
        waiting = wait_for_request(events, "24.00")
        path = f"/api/transactions/{waiting['id']}/decision"
        answer = call(terminal, "POST", path, {"outcome": "terminal"})
        assert_error(answer, 400, "outcome", "answered by this simulator")
        assert answer.json["code"] == "real_terminal_required"
        assert terminal.transaction(waiting["id"])["status"] == "pending"  # still waiting
        terminal.decide(waiting["id"], "approved")
        thread.join(10)
    assert outcome["result"].status == "approved"


@pytest.fixture
def proxy_pair():
    """A simulated terminal standing for the shop's real one, and a --proxy to it."""
    real = ServerProcess("--no-web", "-d", "0")
    try:
        middle = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", "-d", "0",
                               "--proxy", f"127.0.0.1:{real.port}")
    except BaseException:
        real.stop()
        raise
    yield real, middle
    middle.stop()
    real.stop()


@pytest.mark.slow
def test_behind_a_proxy_a_test_payment_needs_a_confirmation_naming_the_terminal(proxy_pair):
    real, middle = proxy_pair
    real_name = f"127.0.0.1:{real.port}"
    status = call(middle, "GET", "/api/status").json
    assert status["upstream"] == {"mode": "proxied", "host": "127.0.0.1", "port": real.port}
    payments = [
        {"amount": "10,00"},  # to the proxy, which passes it on
        {"amount": "10,00", "confirm_real_payment": "127.0.0.1:1"},
        {"amount": "10,00", "host": "127.0.0.1", "port": real.port},  # to the terminal itself
        {"amount": "10,00", "confirm_real_payment": True},
    ]
    for body in payments:
        answer = call(middle, "POST", "/api/test-payment", body)
        assert_error(answer, 400, "confirm_real_payment", real_name)
        assert answer.json["code"] == "confirmation_required"
    assert call(middle, "GET", "/api/transactions").json["transactions"] == []  # none sent
    confirmed = call(middle, "POST", "/api/test-payment",
                     {"amount": "10,00", "confirm_real_payment": real_name})
    assert confirmed.status == 200 and confirmed.json["status"] == "approved", confirmed.raw
    [sent] = call(middle, "GET", "/api/transactions").json["transactions"]
    assert (sent["mode"], sent["amount"]) == ("proxied", "10.00")
    # Behind the proxy the queue may hold the real terminal's answer, delayed or cut.
    queued = call(middle, "POST", "/api/next", {"outcome": "terminal-split"})
    assert queued.status == 201, queued.raw


@pytest.mark.slow
def test_a_replaying_server_names_its_recording(tmp_path):
    path = tmp_path / "shop.jsonl"
    path.write_text('{"type": "recording", "version": 1, "mode": "simulated"}\n')
    replaying = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", "-d", "0",
                              "--replay", str(path))
    try:
        status = call(replaying, "GET", "/api/status").json
        # No real terminal behind a recording: a test payment needs no confirmation.
        paid = call(replaying, "POST", "/api/test-payment", {"amount": "3,00"})
    finally:
        replaying.stop()
    assert status["upstream"] == {"mode": "replayed", "file": str(path), "in_order": False}
    assert paid.status == 200 and paid.json["status"] == "approved", paid.raw


# --- Event stream ---------------------------------------------------------------------------


def test_events_for_a_request_and_its_answer(terminal):
    with terminal.events() as events:
        assert events.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert events.response.headers["Cache-Control"] == "no-cache"
        pay(terminal, "31.00")
        request = events.get()
        answer = events.get()
    assert request["event"] == "request" and answer["event"] == "answer"
    assert answer["id"] == request["id"] + 1
    assert request["data"]["status"] == "pending" and request["data"]["amount"] == "31.00"
    assert request["data"]["answer"] is None
    assert answer["data"]["id"] == request["data"]["id"]
    assert answer["data"]["status"] == "approved" and answer["data"]["answer"]


def test_events_replay_after_last_event_id(terminal):
    with terminal.events() as events:
        pay(terminal, "32.00")
        request = events.get("request")
        events.get("answer")
    with terminal.events(last_event_id=request["id"]) as replayed:
        missed = replayed.get()
    assert missed["event"] == "answer" and missed["data"]["amount"] == "32.00"


def test_hang_up_and_dropped_events(terminal, pos):
    with terminal.events() as events:
        terminal.settings(mode="hang-up")
        connection = pos(terminal.address)
        connection.send(PaymentRequest(amount=3300).encode())
        assert events.get("answer")["data"]["status"] == "hang-up"
        terminal.settings(mode="success", duration=30)
        connection = pos(terminal.address)
        connection.send(PaymentRequest(amount=3400).encode())
        events.get("request")
        # A reset, as a crashing POS sends: a plain close is a half-close, still answered.
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        connection.close()
        assert events.get("answer")["data"]["status"] == "dropped"


def test_keep_alive_comments(reactor_thread):
    from caisse_ap.testing import EventStream

    reactor = reactor_thread.reactor

    def start():
        return app.start(reactor, app.TerminalOptions(
            web=WebOptions("127.0.0.1", 0, keep_alive=0.05)))

    running = reactor_thread.call(start)
    try:
        with EventStream(running.web_url) as events:
            assert events.comments.get(timeout=10) == "keep-alive"
            assert events.comments.get(timeout=10) == "keep-alive"
    finally:
        reactor_thread.call(running.stop)


def test_event_streams_end_when_the_server_stops():
    with simulated_terminal() as terminal:
        events = terminal.events()
    with pytest.raises(ConnectionError):
        events.get(timeout=10)
    events.close()


# --- Security and errors -------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded():
    with simulated_terminal(token="s3cret") as running:
        yield running


@pytest.mark.parametrize("method, path, body", [
    ("PUT", "/api/settings", {"duration": 1}),
    ("POST", "/api/next", {"outcome": "refused"}),
    ("DELETE", "/api/next", None),
    ("POST", "/api/test-payment", {"amount": "1.00"}),
    ("POST", "/api/transactions/1/decision", {"outcome": "approved"}),
])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic s3cret", "s3cret"])
def test_mutating_calls_need_the_token(guarded, method, path, body, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = call(guarded, method, path, body, headers=headers)
    assert_error(answer, 401, None, "Authorization: Bearer")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert guarded.api("GET", "/api/next") == {"queue": []}


def test_the_right_token(guarded):
    answer = call(guarded, "PUT", "/api/settings", {"duration": 0},
                  headers={"Authorization": "Bearer s3cret"})
    assert answer.status == 200
    assert guarded.settings(duration=0)["duration"] == 0  # the helper sends the token


def test_cross_origin_writes_are_refused(terminal):
    answer = call(terminal, "POST", "/api/next", {"outcome": "refused"},
                  headers={"Origin": "http://attacker.example"})
    assert_error(answer, 403, None, "Cross-origin")
    answer = call(terminal, "POST", "/api/next", {"outcome": "refused"},
                  headers={"Origin": "null"})
    assert_error(answer, 403)
    same = call(terminal, "POST", "/api/next", {"outcome": "refused"},
                headers={"Origin": f"http://127.0.0.1:{terminal.web_port}"})
    assert same.status == 201


def test_bodies_over_64_kib_are_refused(terminal):
    big = json.dumps({"mode": "failure", "padding": "x" * MAX_BODY}).encode()
    assert_error(call(terminal, "PUT", "/api/settings", raw=big, headers=JSON), 413, None,
                 "64 KiB")
    assert terminal.settings()["mode"] == "success"
    # Without a Content-Length: chunked, cut off as it comes.
    connection = http.client.HTTPConnection("127.0.0.1", terminal.web_port, timeout=10)
    connection.request("PUT", "/api/settings", body=iter([big[:40000], big[40000:]]),
                       headers={**JSON, "Transfer-Encoding": "chunked"}, encode_chunked=True)
    answer = Answer(connection.getresponse())
    connection.close()
    assert_error(answer, 413)
    exactly = json.dumps({"duration": 0}).encode().ljust(MAX_BODY)
    assert call(terminal, "PUT", "/api/settings", raw=exactly, headers=JSON).status == 200


def test_unknown_endpoints_and_methods(terminal):
    assert_error(call(terminal, "GET", "/api/nothing"), 404, None, "/api/nothing")
    assert_error(call(terminal, "GET", "/api/"), 404)
    answer = call(terminal, "POST", "/api/status", {})
    assert_error(answer, 405, None, "use GET")
    assert answer.headers["Allow"] == "GET"
    assert call(terminal, "PATCH", "/api/settings", {}).headers["Allow"] == "GET, PUT"


def test_internal_errors_are_json_without_traceback(terminal, monkeypatch):
    def broken():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(terminal._terminal, "counters", broken)
    answer = call(terminal, "GET", "/api/status")
    assert_error(answer, 500, None, "see the server log")
    assert b"secret internals" not in answer.raw


def test_web_host_warning_rule():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("127.1.2.3")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.10")


# --- The console's files ----------------------------------------------------------------------


def test_console_files_are_served_with_their_types(terminal):
    page = call(terminal, "GET", "/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.raw == (STATIC / "index.html").read_bytes()
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        if (STATIC / name).exists():
            assert call(terminal, "GET", f"/{name}").headers["Content-Type"].startswith(kind)


def test_no_directory_listing_and_plain_errors(reactor_thread, tmp_path):
    from caisse_ap.terminal.server import start_terminal, stop_terminal
    from caisse_ap.terminal.web.api import ControlApi
    from caisse_ap.terminal.web.site import HostAllowlist, build_site

    (tmp_path / "index.html").write_text("<p>hello</p>")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "logo.svg").write_text("<svg/>")
    (tmp_path / "notes.rpy").write_text("print('run me')")
    reactor = reactor_thread.reactor

    def start():
        terminal = start_terminal(reactor, None, "127.0.0.1", 0)
        api = ControlApi(terminal, Journal(), AmountRules())
        port = reactor.listenTCP(0, build_site(api, HostAllowlist("127.0.0.1"), tmp_path),
                                 interface="127.0.0.1")
        return terminal, port

    terminal, port = reactor_thread.call(start)
    web_port = port.getHost().port
    try:
        assert call(None, "GET", "/", port=web_port).raw == b"<p>hello</p>"
        listing = call(None, "GET", "/images/", port=web_port)
        assert listing.status == 404 and b"logo.svg" not in listing.raw
        assert call(None, "GET", "/images/logo.svg", port=web_port).headers[
            "Content-Type"] == "image/svg+xml"
        script = call(None, "GET", "/notes.rpy", port=web_port)
        assert script.raw == b"print('run me')"  # served as a file, never run
        missing = call(None, "GET", "/missing.html", port=web_port)
        assert missing.status == 404 and missing.headers["Content-Type"].startswith("text/plain")
        assert b"<html" not in missing.raw.lower()
        escape = call(None, "GET", "/../../etc/passwd", port=web_port)
        assert escape.status == 404 and b"root:" not in escape.raw
        api_only = build_site(ControlApi(terminal, Journal(), AmountRules()),
                              HostAllowlist("127.0.0.1"), Path(tmp_path / "absent"))
        assert api_only.resource.getChildWithDefault(b"anything", None).code == 404
    finally:
        reactor_thread.call(port.stopListening)
        reactor_thread.call(stop_terminal, terminal)


def test_bad_settings_raise_from_the_helper(terminal):
    with pytest.raises(SimulatedTerminalError) as caught:
        terminal.settings(mode="sometimes")
    assert caught.value.status == 400 and caught.value.field == "mode"


# --- Command line ---------------------------------------------------------------------------



@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (("--web-port", "70000"), "web port must be 0 to 65535"),
    (("--web-host", "my-laptop"), "web host must be an IP address"),
    (("--web-token", "has space"), "printable ASCII without spaces"),
    (("--manual-timeout", "0"), "manual_timeout must be above 0"),
    (("--manual", "-f"), "--manual and -f cannot be used together"),
    (("--manual", "--no-web"), "--manual needs the web console"),
    (("--journal", "/nonexistent/dir/journal.sqlite"), "cannot open the journal"),
])
def test_bad_web_options_are_one_line_and_status_2(args, words):
    result = run_server("--host", "127.0.0.1", "-p", "0", "--web-port", "0", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr


@pytest.mark.slow
def test_web_port_taken_is_one_line_and_status_2():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        result = run_server("--host", "127.0.0.1", "-p", "0", "--web-port",
                            str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1:" in result.stderr and "for the web console" in (
        result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_startup_lines_and_manual_mode_from_the_command_line():
    server = ServerProcess("-d", "0", "--web-port", "0", "--manual", "--manual-timeout", "5",
                           "--amount-rules")
    try:
        assert server.web_port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{server.web_port}/api/settings",
                                    timeout=10) as response:
            settings = json.loads(response.read())
    finally:
        server.stop()
    output = server.output()
    assert (settings["mode"], settings["manual_timeout"], settings["amount_rules"]) == (
        "manual", 5.0, True)
    assert "transaction journal in memory" in output
    assert "amount rules on (default table)" in output
    assert server.process.returncode == 0 and "Traceback" not in output


@pytest.mark.slow
def test_no_web():
    server = ServerProcess("-d", "0", "--no-web")
    try:
        result = client.pay(client.make_request("1.00"), "127.0.0.1", server.port, timeout=10)
    finally:
        server.stop()
    output = server.output()
    assert result.status == "approved"
    assert server.web_port is None and "web console" not in output


def test_a_token_is_made_when_the_web_host_is_not_loopback_and_none_given(reactor_thread,
                                                                          caplog, monkeypatch):
    """start() as the command line calls it; the listening address is kept on 127.0.0.1."""
    from caisse_ap.terminal import cli
    from caisse_ap.terminal.web import site

    reactor = reactor_thread.reactor

    class LoopbackPort(site.LimitedPort):
        """The console's port (site.LimitedPort), kept on 127.0.0.1."""

        def __init__(self, port, factory, backlog, interface, reactor):
            super().__init__(port, factory, backlog, "127.0.0.1", reactor)

    monkeypatch.setattr(site, "LimitedPort", LoopbackPort)

    class LoopbackOnly:
        """The reactor, but every port stays on 127.0.0.1 and no trigger is registered."""

        def listenTCP(self, port, factory, interface=""):  # noqa: N802 - Twisted's name
            return reactor.listenTCP(port, factory, interface="127.0.0.1")

        def addSystemEventTrigger(self, *args):  # noqa: N802
            pass

        def __getattr__(self, name):
            return getattr(reactor, name)

    started, warnings = [], {}
    for token in (None, "s3cret"):
        args = cli.build_parser().parse_args(
            ["-p", "0", "--web-host", "192.0.2.10", "--web-port", "0"]
            + (["--web-token", token] if token else []))

        def start(args=args):
            running = app.start(LoopbackOnly(), cli.options_from_args(args))
            return running, running.console

        with caplog.at_level(logging.WARNING, logger="caisse_ap.terminal.web"):
            caplog.clear()
            running, console = reactor_thread.call(start)
            started.append((running, console))
            warnings[token] = [r.getMessage() for r in caplog.records
                               if r.levelno == logging.WARNING]
    assert len(warnings[None]) == 1 and "no --web-token for a console listening on " \
        "192.0.2.10" in warnings[None][0]
    made = warnings[None][0].rpartition("#token=")[2]
    assert len(made) >= 32 and started[0][1].api.token == made
    assert warnings["s3cret"] == [] and started[1][1].api.token == "s3cret"
    url = started[0][1].web_url
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {made}"}, 200)):
        request = urllib.request.Request(url + "api/settings", headers=headers)
        try:
            assert urllib.request.urlopen(request, timeout=10).status == status
        except urllib.error.HTTPError as error:
            assert error.code == status
    for running, _ in started:
        reactor_thread.call(running.stop)


def test_an_event_client_that_stops_reading_is_cut_off():
    """The stream is a push producer: paused by twisted.web, it is aborted once the unsent
    bytes (the transport's buffer, then what was written since the pause) pass 256 KiB."""
    from twisted.internet import defer

    from caisse_ap.terminal.web.api import MAX_STREAM_UNSENT, _EventStream

    class FakeTransport:
        bufferSize = 65536
        aborted = False

        def abortConnection(self):  # noqa: N802 - Twisted's names
            self.aborted = True

    class FakeRequest:
        def __init__(self):
            self.written, self.finished = 0, defer.Deferred()
            self.transport = FakeTransport()

        def registerProducer(self, producer, streaming):  # noqa: N802
            self.producer = producer

        def notifyFinish(self):  # noqa: N802
            return self.finished

        def write(self, data):
            self.written += len(data)

        def getClientAddress(self):  # noqa: N802
            from twisted.internet.address import IPv4Address
            return IPv4Address("TCP", "127.0.0.1", 1)

    class Api:
        closed = []
        streams_unsent = 0

        def _stream_closed(self, stream):
            self.closed.append(stream)

    request, api = FakeRequest(), Api()
    stream = _EventStream(request, api)
    event = b"x" * 1024
    room = (MAX_STREAM_UNSENT - FakeTransport.bufferSize) // len(event)
    stream.write(event)
    stream.pauseProducing()
    for _ in range(room):
        stream.write(event)
    stream.resumeProducing()  # the client caught up: the count starts again
    stream.pauseProducing()
    stream.pauseProducing()  # again, as the transport does at each write while full
    for _ in range(room):
        stream.write(event)
    assert not request.transport.aborted and api.closed == []
    stream.write(event)  # one too many while paused
    assert request.transport.aborted and api.closed == [stream]
    written = request.written
    stream.write(event)
    assert request.written == written  # nothing more once cut off
    assert api.streams_unsent == 0


def test_event_clients_that_stop_reading_are_cut_off_past_a_total_too():
    """256 KiB each would let 200 clients hold 50 MiB: past 24 MiB together, the client
    being written to is cut off, however little it holds itself."""
    from caisse_ap.terminal.web.api import MAX_STREAMS_UNSENT, _EventStream

    class Transport:
        bufferSize = 65536

        def __init__(self):
            self.aborted = False

        def abortConnection(self):  # noqa: N802
            self.aborted = True

    class Request:
        def __init__(self):
            from twisted.internet import defer
            self.transport, self.finished = Transport(), defer.Deferred()

        def registerProducer(self, producer, streaming):  # noqa: N802
            pass

        def notifyFinish(self):  # noqa: N802
            return self.finished

        def write(self, data):
            pass

        def getClientAddress(self):  # noqa: N802
            from twisted.internet.address import IPv4Address
            return IPv4Address("TCP", "127.0.0.1", 1)

    class Api:
        streams_unsent = 0

        def _stream_closed(self, stream):
            pass

    api = Api()
    streams = [_EventStream(Request(), api) for _ in range(MAX_STREAMS_UNSENT // 65536)]
    for stream in streams:
        stream.pauseProducing()  # each holds its transport's 64 KiB
    assert api.streams_unsent == MAX_STREAMS_UNSENT
    assert not any(stream.request.transport.aborted for stream in streams)
    streams[0].write(b"x")  # one byte more in all
    assert streams[0].request.transport.aborted and streams[0].unsent == 0
    assert api.streams_unsent == MAX_STREAMS_UNSENT - 65536
    streams[1].resumeProducing()  # caught up: its share is freed
    assert api.streams_unsent == MAX_STREAMS_UNSENT - 2 * 65536
