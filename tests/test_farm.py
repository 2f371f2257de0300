"""The terminal farm (docs/api.md): terminals created, changed and deleted over the API,
each with every per-terminal route under /api/terminals/{id}/, and --terminals FILE.

Real HTTP against a console on a free port, real POS connections to the
farm's terminals, the session reactor thread (conftest.py).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_check import check_response

from caisse_ap import client
from caisse_ap.terminal import app
from caisse_ap.terminal.behaviour import TerminalSettings
from caisse_ap.terminal.options import UsageError
from caisse_ap.terminal.service import Terminal
from caisse_ap.terminal.web import WebOptions, farm_file
from caisse_ap.terminal.web.api import ERROR_CODES

JSON = {"Content-Type": "application/json"}


def call(port: int, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data,
                           headers={**(JSON if data is not None else {}), **(headers or {})})
        response = connection.getresponse()
        answer = json.loads(response.read() or b"null")
        check_response(method, path, response.status, response.headers.get("content-type"),
                       answer)  # as docs/openapi.json says (tests/openapi_check.py)
        return response.status, answer
    finally:
        connection.close()


@pytest.fixture
def start_farm(reactor_thread):
    started = []

    def start(**web: object) -> tuple[app.RunningTerminal, int]:
        options = app.TerminalOptions(TerminalSettings.from_dict({"duration": 0}),
                                      web=WebOptions("127.0.0.1", 0, **web))
        running = reactor_thread.call(app.start, reactor_thread.reactor, options)
        started.append(running)
        return running, running.console.web_address[1]

    yield start
    for running in started:
        reactor_thread.call(running.stop)


def test_a_terminal_created_over_the_api_listens_at_once_with_its_own_routes(start_farm):
    running, web = start_farm()
    status, made = call(web, "POST", "/api/terminals", {
        "profile": "ingenico", "label": "Caisse 1",
        "settings": {"mode": "failure", "duration": 0}})
    assert status == 201, made
    assert made["id"] == "t1" and made["label"] == "Caisse 1" and made["state"] == "listening"
    assert made["console_url"] == f"http://127.0.0.1:{web}/?terminal=t1"
    assert made["settings"]["profile"] == "ingenico" and made["settings"]["mode"] == "failure"
    assert made["port"] not in (0, running.address[1])
    # Listening at once: a POS pays, the farm terminal refuses as asked.
    assert client.pay(client.make_request("3.00"), "127.0.0.1", made["port"]).status == "declined"
    status, listed = call(web, "GET", "/api/terminals/t1/transactions")
    assert status == 200 and [t["status"] for t in listed["transactions"]] == ["declined"]
    # The command line's terminal saw nothing; the one journal holds every terminal's rows.
    assert call(web, "GET", "/api/transactions?terminal=main")[1]["transactions"] == []
    [row] = call(web, "GET", "/api/transactions")[1]["transactions"]
    assert row["terminal"] == "t1"
    assert client.pay(client.make_request("1.00"), *running.address).status == "approved"
    assert len(call(web, "GET", "/api/transactions?terminal=main")[1]["transactions"]) == 1
    assert len(call(web, "GET", "/api/transactions")[1]["transactions"]) == 2
    assert len(call(web, "GET", "/api/terminals/t1/transactions")[1]["transactions"]) == 1
    # Every per-terminal route: the queue, the settings, the status.
    assert call(web, "POST", "/api/terminals/t1/next", {"outcome": "approved"})[0] == 201
    assert client.pay(client.make_request("3.00"), "127.0.0.1", made["port"]).status == "approved"
    assert call(web, "PUT", "/api/terminals/t1/settings", {"mode": "success"})[0] == 200
    status, info = call(web, "GET", "/api/terminals/t1/status")
    assert info["counters"]["approved"] == 1 and info["counters"]["declined"] == 1
    assert info["terminal"]["port"] == made["port"]
    status, farm = call(web, "GET", "/api/terminals")
    assert status == 200 and farm["max_terminals"] == 64
    assert [(t["id"], t["counters"]["approved"]) for t in farm["terminals"]] == [("t1", 1)]


def test_patch_changes_label_and_settings_and_nothing_when_a_value_is_bad(start_farm):
    _, web = start_farm()
    made = call(web, "POST", "/api/terminals", {})[1]
    assert made["label"] == "t1" and made["settings"]["profile"] == "standard"
    status, changed = call(web, "PATCH", "/api/terminals/t1",
                           {"label": "Voie 2", "profile": "nepting",
                            "settings": {"mode": "failure"}})
    assert status == 200 and changed["label"] == "Voie 2"
    assert changed["settings"]["profile"] == "nepting" and changed["settings"]["mode"] == "failure"
    status, error = call(web, "PATCH", "/api/terminals/t1",
                         {"label": "Voie 3", "settings": {"duration": -1}})
    assert status == 400 and error["field"] == "duration" and error["code"] == "out_of_range"
    assert call(web, "GET", "/api/terminals/t1")[1]["label"] == "Voie 2"
    status, error = call(web, "PATCH", "/api/terminals/t9", {"label": "x"})
    assert status == 404 and error["code"] == "unknown_terminal"


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"port": 80}, "port", "out_of_range"),
    ({"port": 70000}, "port", "out_of_range"),
    ({"port": "8888"}, "port", "out_of_range"),
    ({"port": True}, "port", "out_of_range"),
    ({"port": False}, "port", "out_of_range"),
    ({"port": 0.0}, "port", "out_of_range"),
    ({"label": 12}, "label", "not_text"),
    ({"label": "x" * 65}, "label", "too_long"),
    ({"label": "a\nb"}, "label", "invalid_format"),
    ({"profile": "nowhere"}, "profile", "unknown_choice"),
    ({"settings": []}, "settings", "object_required"),
    ({"settings": {"duration": "long"}}, "duration", "not_a_number"),
    ({"settings": {"colour": "red"}}, "colour", "unknown_field"),
    ({"host": "0.0.0.0"}, "host", "unknown_field"),
])
def test_a_bad_body_gets_400_with_its_field_and_code(start_farm, body, field, code):
    _, web = start_farm()
    status, error = call(web, "POST", "/api/terminals", body)
    assert status == 400, error
    assert (error["field"], error["code"]) == (field, code) and code in ERROR_CODES
    if code == "out_of_range" and field == "port":
        assert error["limits"] == {"min": 1024, "max": 65535}
    assert call(web, "GET", "/api/terminals")[1]["terminals"] == []


def test_not_an_object_and_not_json_are_400(start_farm):
    _, web = start_farm()
    assert call(web, "POST", "/api/terminals", [1])[1]["code"] == "object_required"
    connection = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
    connection.request("POST", "/api/terminals", body=b"{", headers=JSON)
    response = connection.getresponse()
    assert response.status == 400 and json.loads(response.read())["code"] == "invalid_json"
    connection.close()
    assert call(web, "PUT", "/api/terminals")[0] == 405
    assert call(web, "GET", "/api/terminals/nope")[1]["code"] == "unknown_terminal"
    assert call(web, "GET", "/api/terminals/t1/settings")[0] == 404


def test_a_port_in_use_gets_409_and_the_limit_of_terminals_holds(start_farm):
    _, web = start_farm(max_terminals=2)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        status, error = call(web, "POST", "/api/terminals", {"port": port})
        assert status == 409 and error["code"] == "port_in_use" and error["field"] == "port"
    finally:
        taken.close()
    assert call(web, "POST", "/api/terminals", {})[0] == 201
    assert call(web, "POST", "/api/terminals", {})[0] == 201
    status, error = call(web, "POST", "/api/terminals", {})
    assert status == 409 and error["code"] == "too_many_terminals"
    assert error["limits"] == {"max": 2}
    assert call(web, "DELETE", "/api/terminals/t1")[0] == 200
    assert call(web, "POST", "/api/terminals", {})[1]["id"] == "t3"


def _paying(terminal: Terminal, port: int, amount: str) -> tuple[threading.Thread, list[object]]:
    """A POS paying `amount` on `port` in a thread; returns once `terminal` (a farm
    terminal's) has received its request, with the thread and the list its result goes
    into."""
    received = threading.Event()

    class Seen:  # an observer of the terminal (service.Terminal._notify)
        def request_received(self, transaction: object) -> None:
            received.set()

    terminal.observers.append(Seen())
    paid: list[object] = []
    paying = threading.Thread(target=lambda: paid.append(
        client.pay(client.make_request(amount), "127.0.0.1", port)))
    paying.start()
    assert received.wait(10)
    return paying, paid


def test_a_deleted_terminal_stops_accepting_finishes_its_payment_and_keeps_its_rows(
        start_farm, reactor_thread):
    running, web = start_farm()
    made = call(web, "POST", "/api/terminals", {"settings": {"duration": 1}})[1]
    kept = running.farm.terminals["t1"]
    # A POS paying, its terminal answering after 1 s.
    paying, paid = _paying(kept.member.terminal, made["port"], "4.00")
    # Accepted: it still answers the payment in flight, and accepts nothing more.
    status, deleting = call(web, "DELETE", "/api/terminals/t1")
    assert status == 202 and deleting["state"] == "deleting"
    assert deleting["counters"]["pending"] == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", made["port"]), timeout=5).close()
    status, again = call(web, "DELETE", "/api/terminals/t1")  # the same, while it answers
    assert status in (200, 202) and again["state"] in ("deleting", "deleted")
    # The POS gets its approval after its delay, as if nothing happened.
    paying.join(10)
    assert [result.status for result in paid] == ["approved"]
    reactor_thread.call(running.farm.delete, kept)  # fires once it is released
    assert call(web, "GET", "/api/terminals/t1")[1]["state"] == "deleted"
    rows = call(web, "GET", "/api/terminals/t1/transactions")[1]["transactions"]
    assert [(row["status"], row["decided_by"]) for row in rows] == [("approved", "settings")]
    assert rows == call(web, "GET", "/api/transactions?terminal=t1")[1]["transactions"]
    status, done = call(web, "DELETE", "/api/terminals/t1")
    assert status == 200 and done["state"] == "deleted"
    status, error = call(web, "PUT", "/api/terminals/t1/settings", {"mode": "failure"})
    assert status == 409 and error["code"] == "terminal_deleted"
    assert call(web, "PATCH", "/api/terminals/t1", {"label": "x"})[1]["code"] == \
        "terminal_deleted"
    assert call(web, "GET", "/api/terminals")[1]["terminals"][0]["state"] == "deleted"


def test_a_terminal_deleted_with_nothing_in_flight_answers_200_once_released(start_farm):
    _, web = start_farm()
    made = call(web, "POST", "/api/terminals", {})[1]
    status, deleted = call(web, "DELETE", "/api/terminals/t1")
    assert status == 200 and deleted["state"] == "deleted"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", made["port"]), timeout=5).close()


def test_the_token_guards_the_farm_and_every_terminal_route(start_farm):
    _, web = start_farm(token="s3cret")
    assert call(web, "POST", "/api/terminals", {})[0] == 401
    assert call(web, "GET", "/api/terminals")[0] == 401
    assert call(web, "GET", "/api/terminals/t1/settings")[0] == 401  # not 404: says nothing
    bearer = {"Authorization": "Bearer s3cret"}
    assert call(web, "POST", "/api/terminals", {}, bearer)[0] == 201
    assert call(web, "GET", "/api/terminals/t1/settings")[0] == 401
    assert call(web, "GET", "/api/terminals/t1/settings", headers=bearer)[0] == 200
    assert call(web, "PATCH", "/api/terminals/t1", {"label": "x"},
                {**bearer, "Origin": "http://evil.example"})[0] == 403


def test_stopping_the_server_stops_its_farm(start_farm, reactor_thread):
    running, web = start_farm()
    made = call(web, "POST", "/api/terminals", {})[1]
    reactor_thread.call(running.stop)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", made["port"]), timeout=5).close()


# --- --terminals FILE ------------------------------------------------------------------


SHOP = """\
[caisse-1]
profile = "ingenico"
label = "Caisse 1"

[caisse-2]
port = 0
[caisse-2.settings]
mode = "failure"
duration = 0
"""


def test_a_shop_file_starts_its_terminals_with_the_server(start_farm, tmp_path):
    path = tmp_path / "shop.toml"
    path.write_text(SHOP, encoding="utf-8")
    running, web = start_farm(terminals=farm_file.load(str(path)))
    listed = call(web, "GET", "/api/terminals")[1]["terminals"]
    assert [(t["label"], t["settings"]["profile"], t["settings"]["mode"]) for t in listed] == [
        ("Caisse 1", "ingenico", "success"), ("caisse-2", "standard", "failure")]
    assert client.pay(client.make_request("1.00"), "127.0.0.1",
                      listed[1]["port"]).status == "declined"


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("[a]\nport = 80\n", 2, "port must be 0"),
    ("[a]\nprofile = 'x'\n", 2, "unknown profile"),
    ("[a]\nlabel = 'A'\ncolour = 1\n", 3, "unknown key 'colour'"),
    ("[a]\nlabel = 'A'\n[a.settings]\nmode = 'sideways'\n", 4, "mode"),
    ("[a]\nport = 9000\n[b]\nport = 9000\n", 4, "already that of [a]"),
    ("[a\n", 1, "not valid TOML"),
    ("", 1, "names no terminal"),
    ("a = 1\n", 1, "must be a table"),
])
def test_a_bad_shop_file_says_file_line_and_reason(tmp_path, text, line, reason):
    path = tmp_path / "shop.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as raised:
        farm_file.load(str(path))
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert reason in str(raised.value)


@pytest.mark.slow
def test_the_command_line_refuses_a_bad_shop_file_in_one_line(tmp_path):
    path = tmp_path / "shop.toml"
    path.write_text("[a]\nport = 80\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "caisse_ap.terminal.cli", "--port", "0",
                           "--web-port", "0", "--terminals", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:2: port must be 0" in lines[0], done.stderr


def test_each_transaction_names_its_terminal_and_the_journal_filters_by_it(start_farm):
    running, web = start_farm()
    ports = [call(web, "POST", "/api/terminals", {"settings": {"duration": 0}})[1]["port"]
             for _ in range(2)]  # no card time to wait: the test is about the names
    for port, amount in ((ports[0], "1.00"), (ports[1], "2.00"), (ports[1], "3.00")):
        assert client.pay(client.make_request(amount), "127.0.0.1", port).status == "approved"
    assert client.pay(client.make_request("4.00"), *running.address).status == "approved"
    # The command line's terminal is none of the farm's.
    [own] = call(web, "GET", "/api/transactions?terminal=main")[1]["transactions"]
    assert own["terminal"] is None and own["amount"] == "4.00"
    # One journal, one numbering: every row, each naming its terminal, ids unique.
    every = call(web, "GET", "/api/transactions")[1]["transactions"]
    assert [(t["id"], t["terminal"], t["amount"]) for t in every] == [
        (4, None, "4.00"), (3, "t2", "3.00"), (2, "t2", "2.00"), (1, "t1", "1.00")]
    for terminal, amounts in (("t1", ["1.00"]), ("t2", ["3.00", "2.00"])):
        listed = call(web, "GET", f"/api/transactions?terminal={terminal}")[1]["transactions"]
        assert [(t["terminal"], t["amount"]) for t in listed] == [
            (terminal, amount) for amount in amounts]
        assert listed == call(web, "GET", f"/api/terminals/{terminal}/transactions")[1][
            "transactions"]
        first = call(web, "GET", f"/api/terminals/{terminal}/transactions/{listed[-1]['id']}")[1]
        assert first["terminal"] == terminal
    # A terminal's routes answer its rows only.
    status, error = call(web, "GET", "/api/terminals/t1/transactions/2")
    assert status == 404 and error["code"] == "unknown_transaction"
    status, error = call(web, "GET", "/api/transactions?terminal=t9")
    assert status == 404 and error["code"] == "unknown_terminal"


# --- No input gets a 5xx ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=10)
farm_keys = st.sampled_from(["profile", "settings", "label", "port", "mode", "duration"])
bodies = json_values | st.dictionaries(farm_keys, json_values, max_size=4) | st.fixed_dictionaries(
    {"settings": st.dictionaries(st.sampled_from(["mode", "duration", "profile", "currencies"]),
                                 json_values, max_size=2)})
ENDPOINTS = [("POST", "/api/terminals"), ("PATCH", "/api/terminals/{id}"),
             ("GET", "/api/terminals/{id}"), ("PUT", "/api/terminals/{id}/settings"),
             ("GET", "/api/transactions?terminal={id}"), ("DELETE", "/api/terminals/{id}")]


@pytest.fixture(scope="module")
def fuzzed_farm(reactor_thread):
    options = app.TerminalOptions(TerminalSettings.from_dict({"duration": 0}),
                                  web=WebOptions("127.0.0.1", 0, max_terminals=3))
    running = reactor_thread.call(app.start, reactor_thread.reactor, options)
    yield running.console.web_address[1]
    reactor_thread.call(running.stop)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies,
       text_id=st.sampled_from(["t1", "t2", "t0", "x"]) | st.text(max_size=12))
def test_no_farm_input_gets_a_5xx(fuzzed_farm, endpoint, body, text_id):
    from urllib.parse import quote

    method, path = endpoint
    path = path.replace("{id}", quote(text_id, safe=""))
    connection = http.client.HTTPConnection("127.0.0.1", fuzzed_farm, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body).encode(), headers=JSON)
        response = connection.getresponse()
        answer = json.loads(response.read() or b"null")
    finally:
        connection.close()
    assert response.status < 500, (method, path, body, answer)
    check_response(method, path, response.status, response.headers.get("content-type"),
                   answer)
    if response.status >= 400:
        assert answer["code"] in ERROR_CODES
    elif method == "POST":  # room for the next examples (at most 3 listening)
        assert call(fuzzed_farm, "DELETE", f"/api/terminals/{answer['id']}")[0] == 200


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-terminals", "-1"], "--max-terminals must be a whole number from 0 to 1000"),
    (["--max-terminals", "1001"], "--max-terminals must be a whole number from 0 to 1000"),
    (["--no-web", "--terminals", "shop.toml"], "--terminals needs the web console's API"),
])
def test_bad_farm_options_are_one_line_and_status_2(argv, message, capsys, tmp_path,
                                                    monkeypatch):
    from caisse_ap.terminal import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shop.toml").write_text("[a]\n", encoding="utf-8")
    assert cli.main(["-p", "0", "--web-port", "0", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_unreadable_shop_file_says_so(tmp_path):
    with pytest.raises(UsageError, match=r"nowhere\.toml:1: cannot read the terminals file"):
        farm_file.load(str(tmp_path / "nowhere.toml"))


def test_deleted_terminals_are_forgotten_past_the_ones_kept(start_farm, monkeypatch):
    from caisse_ap.terminal.web import farm

    monkeypatch.setattr(farm, "MAX_DELETED_KEPT", 1)
    _, web = start_farm()
    for _ in range(2):
        call(web, "POST", "/api/terminals", {})
    assert call(web, "DELETE", "/api/terminals/t1")[0] == 200
    assert call(web, "GET", "/api/terminals/t1")[1]["state"] == "deleted"
    assert call(web, "DELETE", "/api/terminals/t2")[0] == 200
    status, error = call(web, "GET", "/api/terminals/t1/transactions")
    assert status == 404 and error["code"] == "unknown_terminal"
    assert [t["id"] for t in call(web, "GET", "/api/terminals")[1]["terminals"]] == ["t2"]
    assert call(web, "DELETE", "/api/terminals/t2")[1]["state"] == "deleted"  # again: same
    connection = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    connection.close()
    assert 'terminal="t2"' in metrics and 'terminal="t1"' not in metrics


def test_a_journal_file_keeps_the_farm_s_rows_across_restarts(reactor_thread, tmp_path):
    from caisse_ap.terminal.journal import Journal

    path = tmp_path / "journal.sqlite"

    def start() -> tuple[app.RunningTerminal, int]:
        options = app.TerminalOptions(TerminalSettings.from_dict({"duration": 0}),
                                      journal=Journal(path),
                                      web=WebOptions("127.0.0.1", 0))
        running = reactor_thread.call(app.start, reactor_thread.reactor, options)
        return running, running.console.web_address[1]

    running, web = start()
    try:
        for _ in range(2):
            # No card time (the default 3 s): the rows are what this test reads.
            port = call(web, "POST", "/api/terminals", {"settings": {"duration": 0}})[1]["port"]
            assert client.pay(client.make_request("1.00"), "127.0.0.1", port).status == \
                "approved"
        assert client.pay(client.make_request("2.00"), *running.address).status == "approved"
    finally:
        reactor_thread.call(running.stop)
    running, web = start()
    try:
        every = call(web, "GET", "/api/transactions")[1]["transactions"]
        assert [(t["id"], t["terminal"]) for t in every] == [(3, None), (2, "t2"), (1, "t1")]
        assert [t["id"] for t in call(web, "GET", "/api/transactions?terminal=t2")[1][
            "transactions"]] == [2]
        # A new terminal is numbered after those the journal names, its ids after its rows.
        made = call(web, "POST", "/api/terminals", {"settings": {"duration": 0}})[1]
        assert made["id"] == "t3"
        assert client.pay(client.make_request("3.00"), "127.0.0.1", made["port"]).status == \
            "approved"
        [row] = call(web, "GET", "/api/terminals/t3/transactions")[1]["transactions"]
        assert row["id"] == 4 and row["terminal"] == "t3"
    finally:
        reactor_thread.call(running.stop)


def test_stopping_the_server_answers_a_deleted_terminal_s_payment_at_once(
        start_farm, reactor_thread):
    running, web = start_farm()
    made = call(web, "POST", "/api/terminals", {"settings": {"duration": 60}})[1]
    paying, paid = _paying(running.farm.terminals["t1"].member.terminal, made["port"],
                           "4.00")
    assert call(web, "DELETE", "/api/terminals/t1")[0] == 202
    reactor_thread.call(running.stop)  # as at SIGTERM: what is in flight is answered now
    paying.join(10)
    assert [result.status for result in paid] == ["approved"]
    assert running.farm.terminals["t1"].state == "deleted"


def test_a_payment_waiting_for_a_manual_decision_is_still_decided_while_deleting(
        start_farm, reactor_thread):
    running, web = start_farm()
    made = call(web, "POST", "/api/terminals", {"settings": {"mode": "manual"}})[1]
    paying, paid = _paying(running.farm.terminals["t1"].member.terminal, made["port"],
                           "5.00")
    status, deleting = call(web, "DELETE", "/api/terminals/t1")
    assert status == 202 and deleting["state"] == "deleting"
    [pending] = call(web, "GET", "/api/terminals/t1/transactions")[1]["transactions"]
    assert pending["status"] == "pending" and "decision_deadline" in pending
    # Its settings no longer change; its decision still comes, from the person.
    status, error = call(web, "PUT", "/api/terminals/t1/settings", {"mode": "failure"})
    assert status == 409 and error["code"] == "terminal_deleted"
    status, decided = call(web, "POST",
                           f"/api/terminals/t1/transactions/{pending['id']}/decision",
                           {"outcome": "refused"})
    assert status == 200 and decided["status"] == "declined"
    paying.join(10)
    assert [result.status for result in paid] == ["declined"]
    reactor_thread.call(running.farm.delete, running.farm.terminals["t1"])
    assert call(web, "GET", "/api/terminals/t1")[1]["state"] == "deleted"
