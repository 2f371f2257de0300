"""Amount-driven outcomes: the default table, rule files, and each default rule end to end."""

from __future__ import annotations

import re
import select
import threading

import pytest
from server_process import ROOT, run_server
from twisted.internet.task import Clock

from caisse_ap import client, tlv
from caisse_ap.messages import Action, PaymentRequest
from caisse_ap.terminal.behaviour import OutcomeSpec, TerminalSettings
from caisse_ap.terminal.rules import (
    DEFAULT_RULES,
    AmountRules,
    RulesError,
    load_rules,
    parse_rules,
)
from caisse_ap.terminal.service import Terminal
from caisse_ap.testing import simulated_terminal

# The session reactor of conftest.py runs the simulated terminals of this module.
pytestmark = pytest.mark.usefixtures("reactor_thread")


def request(amount: int, **options) -> PaymentRequest:
    return PaymentRequest.parse(PaymentRequest(amount=amount, **options).encode())


def outcome_for(rules: AmountRules, amount: int, **options) -> OutcomeSpec | None:
    rule = rules.find(request(amount, **options))
    return None if rule is None else rule.outcome


# --- The default table -------------------------------------------------------------

DEFAULT_TABLE = [
    (1200, "approved", None, None),
    (1250, "approved", None, None),
    (1251, "refused", None, None),
    (1252, "forbidden", None, None),
    (1253, "abandon", None, None),
    (1254, "timeout", None, None),
    (1255, "no-answer", None, None),
    (1256, "hang-up", None, None),
    (1257, "phone-authorisation", None, None),
    (1258, "partial", None, None),
    (1259, "approved", "cbcontactless", None),
    (1260, "approved", "amexcontact", None),
    (1261, "not-completed", None, None),
    (1262, "approved", None, 10.0),
]


@pytest.mark.parametrize("amount, outcome, payment_type, delay", DEFAULT_TABLE)
def test_default_table(amount, outcome, payment_type, delay):
    assert outcome_for(AmountRules(), amount) == OutcomeSpec(outcome, delay, payment_type)


@pytest.mark.parametrize("amount", [1263, 1299, 99])
def test_cents_without_a_rule_leave_it_to_the_settings(amount):
    assert outcome_for(AmountRules(), amount) is None


def test_listing_names_every_rule_and_the_fallback():
    text = AmountRules().listing()
    assert "default table" in text
    assert "cents .00-.50  approved" in text
    assert "cents .51      refused (AF=04, Refusée)" in text
    assert "cents .55      no-answer" in text
    assert "partial approval of half the amount when BF=1" in text
    assert text.rstrip().endswith("the settings decide")
    assert len(text.splitlines()) == len(DEFAULT_RULES) + 2


def test_rules_as_json():
    rules = AmountRules().to_json()
    assert rules[0] == {"match": {"cents": list(range(51))}, "outcome": {"outcome": "approved"},
                        "description": "approved"}
    assert rules[8]["outcome"] == {"outcome": "partial"}
    assert rules[9]["outcome"] == {"outcome": "approved", "payment_type": "cbcontactless"}


def test_rules_decide_only_when_the_settings_enable_them():
    terminal = Terminal(TerminalSettings(), reactor=Clock())
    rules = AmountRules(terminal=terminal)
    assert rules(None, request(1251)) is None
    terminal.update_settings({"amount_rules": True})
    decision = rules(None, request(1251))
    assert decision.spec.outcome == "refused" and decision.decided_by == "amount-rule"
    assert rules(None, request(1270)) is None


def test_delay_rule_waits_on_the_clock():
    clock = Clock()
    terminal = Terminal(TerminalSettings(amount_rules=True, duration=0), reactor=clock)
    terminal.outcome_sources.append(AmountRules(terminal=terminal))
    sent = []

    class Connection:
        peer = "10.0.0.1:1"
        send = sent.append

        def hang_up(self):
            pass

        def transaction_done(self, txn):
            pass

    txn = terminal.receive(Connection(), tlv.decode(PaymentRequest(amount=1262).encode()))
    clock.advance(9.99)
    assert sent == [] and txn.decided_by == "amount-rule"
    clock.advance(0.01)
    assert dict(tlv.decode(sent[0]))["AE"] == "10"


# --- Rule files ----------------------------------------------------------------------

GOOD_FILE = """\
# A POS project's own rules
[[rule]]
amount = "99.99"
outcome = "refused"
description = "the famous refused amount"

[[rule]]
cents = [1, 2]
action = "refund"
outcome = "05"

[[rule]]
cents = "10-19"
application = "cheque"
outcome = "approved"
delay = 0.5

[[rule]]
amount_min = 1000
amount_max = "2000.00"
outcome = "approved"
payment_type = "amexcontactless"

[[rule]]
application = "00C"
outcome = "abandon"
"""


def test_a_rules_file_matches_on_amount_cents_action_and_application():
    rules = parse_rules(GOOD_FILE, "pos.toml")
    assert rules.source == "pos.toml" and len(rules.rules) == 5
    assert outcome_for(rules, 9999).outcome == "refused"
    assert rules.find(request(9999)).description == "the famous refused amount"
    assert outcome_for(rules, 101, action=Action.REFUND).outcome == "forbidden"
    assert outcome_for(rules, 101) is None  # a debit
    assert outcome_for(rules, 515, cheque=True) == OutcomeSpec("approved", 0.5)
    assert outcome_for(rules, 520, cheque=True).outcome == "abandon"
    assert outcome_for(rules, 515) is None  # a card
    assert outcome_for(rules, 150000).payment_type == "amexcontactless"
    assert outcome_for(rules, 200001) is None
    assert [rule.line for rule in rules.rules] == [2, 7, 12, 18, 24]


def test_amounts_follow_the_currency_exponent():
    rules = parse_rules('[[rule]]\namount = 1250\noutcome = "refused"\n')
    assert outcome_for(rules, 1250, currency="953") is not None  # XPF: no decimals
    assert outcome_for(rules, 1250) is None  # 12.50 EUR
    assert outcome_for(rules, 125000) is not None  # 1250.00 EUR


def test_include_defaults_appends_the_default_table():
    rules = parse_rules('include_defaults = true\n[[rule]]\ncents = 51\noutcome = "approved"\n')
    assert outcome_for(rules, 1251).outcome == "approved"
    assert outcome_for(rules, 1252).outcome == "forbidden"
    assert parse_rules("include_defaults = true\n").rules == DEFAULT_RULES


@pytest.mark.parametrize("text, message", [
    ('[[rule]]\ncents = 51\noutcome = "refused"\n\n[[rule]]\ncents = 52\noutcome = "refusd"\n',
     "f.toml:7: rule 2: unknown failure type 'refusd'"),
    ('[[rule]]\ncents = 51\noutcome = refused\n', "f.toml: not valid TOML: "),
    ('[[rule]]\ncents = 51\noutcome = refused\n', "line 3"),
    ('[[rule]]\ncents = 100\noutcome = "refused"\n', "f.toml:2: rule 1: cents must be whole"),
    ('[[rule]]\ncents = "60-50"\noutcome = "refused"\n', "f.toml:2: rule 1: cents range"),
    ('[[rule]]\ncents = 51\n', "f.toml:1: rule 1: the rule has no outcome"),
    ('[[rule]]\ncents = 51\ncolour = "red"\noutcome = "refused"\n',
     "f.toml:3: rule 1: unknown key 'colour'"),
    ('[[rule]]\naction = "payment"\noutcome = "refused"\n', "f.toml:2: rule 1: unknown action"),
    ('[[rule]]\napplication = "visa"\noutcome = "refused"\n',
     "f.toml:2: rule 1: unknown application"),
    ('[[rule]]\namount = "12.5.0"\noutcome = "refused"\n', "f.toml:2: rule 1: amount:"),
    ('[[rule]]\namount_min = 20\namount_max = 10\noutcome = "approved"\n',
     "f.toml:2: rule 1: amount_min is above amount_max"),
    ('[[rule]]\ncents = 1\noutcome = "approved"\ndelay = -1\n', "f.toml:4: rule 1: delay must"),
    ('[[rule]]\ncents = 1\noutcome = "approved"\npayment_type = "visa"\n',
     "f.toml:4: rule 1: unknown payment type 'visa'"),
    ('[[rule]]\ncents = 1\noutcome = "approved"\ndescription = 3\n', "f.toml:4: rule 1: desc"),
    ('rules = []\n', "f.toml: unknown top-level key 'rules'"),
    ('rule = 3\n', "f.toml: 'rule' must be an array of tables"),
    ('include_defaults = "yes"\n', "f.toml: include_defaults must be true or false"),
    ('# nothing\n', "f.toml: no [[rule]] in the file"),
])
def test_bad_rules_files_name_the_line_and_the_rule(text, message):
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "f.toml")
    assert message in str(caught.value)


def test_load_rules_errors_are_rules_errors(tmp_path):
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[[rule]]\ndescription = "refusé"\n'.encode("latin-1"))
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(latin)
    good = tmp_path / "good.toml"
    good.write_text(GOOD_FILE)
    assert load_rules(good).source == str(good)


# --- Command line -----------------------------------------------------------------------


@pytest.mark.slow
def test_list_amount_rules_prints_the_table():
    result = run_server("--list-amount-rules")
    assert result.returncode == 0, result.stderr
    assert result.stdout == AmountRules().listing()


@pytest.mark.slow
def test_list_amount_rules_of_a_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(GOOD_FILE)
    result = run_server("--amount-rules", str(path), "--list-amount-rules")
    assert result.returncode == 0, result.stderr
    assert f"Amount rules ({path})" in result.stdout
    assert re.search(r"^  amount 99\.99 +the famous refused amount$", result.stdout, re.M)


@pytest.mark.slow
def test_a_bad_rules_file_is_one_line_and_status_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[rule]]\ncents = 51\noutcome = "refused"\n\n[[rule]]\ncents = 52\n'
                    'outcome = "sometimes"\n')
    result = run_server("-p", "0", "--host", "127.0.0.1", "--web-port", "0",
                        "--amount-rules", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{path}:7: rule 2: unknown failure type 'sometimes'" in result.stderr


# --- Each default rule end to end, over real sockets ----------------------------------


@pytest.fixture(scope="module")
def ruled_terminal():
    with simulated_terminal(amount_rules=True, seed=7) as terminal:
        yield terminal


@pytest.mark.parametrize("amount, status, reason", [
    ("12.00", "approved", None),
    ("12.50", "approved", None),
    ("12.51", "declined", "04"),
    ("12.52", "declined", "05"),
    ("12.53", "declined", "11"),
    ("12.54", "declined", "08"),
    ("12.57", "declined", "02"),
    ("12.61", "declined", "07"),
])
def test_default_rule_end_to_end(ruled_terminal, amount, status, reason):
    result = client.pay(client.make_request(amount), *ruled_terminal.address, timeout=10)
    assert result.status == status
    assert (result.answer.reason.code if result.answer.reason else None) == reason
    last = ruled_terminal.transactions(limit=1)[0]
    assert last["amount"] == amount and last["decided_by"] == "amount-rule"


@pytest.mark.parametrize("amount, application, read_mode", [
    ("3.59", "00B", "2"),
    ("3.60", "002", "1"),
])
def test_payment_type_rules_end_to_end(ruled_terminal, amount, application, read_mode):
    result = client.pay(client.make_request(amount), *ruled_terminal.address, timeout=10)
    assert result.status == "approved"
    assert (result.answer.application, result.answer.read_mode) == (application, read_mode)


def test_partial_rule_end_to_end(ruled_terminal):
    result = client.pay(client.make_request("10.58", partial=True), *ruled_terminal.address,
                        timeout=10)
    assert result.status == "approved" and result.answer.amount == 529
    whole = client.pay(client.make_request("10.58"), *ruled_terminal.address, timeout=10)
    assert whole.status == "approved" and whole.answer.amount == 1058


def test_no_answer_rule_end_to_end(ruled_terminal, pos):
    with ruled_terminal.events() as events:
        connection = pos(ruled_terminal.address)
        connection.send(PaymentRequest(amount=1255).encode())
        finished = events.get("answer")
    assert finished["data"]["status"] == "no-answer"
    assert finished["data"]["decided_by"] == "amount-rule"
    # The terminal is done with the request and sent nothing: the POS would wait forever.
    readable, _, _ = select.select([connection.sock], [], [], 0)
    assert readable == []


def test_hang_up_rule_end_to_end(ruled_terminal, pos):
    connection = pos(ruled_terminal.address)
    connection.send(PaymentRequest(amount=1256).encode())
    assert connection.closed_by_peer()
    assert ruled_terminal.transactions(limit=1)[0]["status"] == "hang-up"


def test_delay_rule_end_to_end_is_answered_at_shutdown():
    # The 10 s rule is checked on the clock above; here: it is the rule that holds the answer.
    with simulated_terminal(amount_rules=True) as terminal, terminal.events() as events:
        outcome = {}
        paying = threading.Thread(target=lambda: outcome.setdefault(
            "result", client.pay(client.make_request("1.62"), *terminal.address, timeout=10)))
        paying.start()
        received = events.get("request")["data"]
        assert received["status"] == "pending"
        terminal.stop()  # answers what is in flight at once
        paying.join(10)
    assert outcome["result"].status == "approved"
    assert received["amount"] == "1.62"


def test_rules_off_leave_the_amount_alone(ruled_terminal):
    ruled_terminal.settings(amount_rules=False)
    try:
        result = client.pay(client.make_request("12.51"), *ruled_terminal.address, timeout=10)
        assert result.status == "approved"
        assert ruled_terminal.transactions(limit=1)[0]["decided_by"] == "settings"
    finally:
        ruled_terminal.settings(amount_rules=True)


def test_listing_keeps_the_outcome_of_a_rule_with_a_description():
    lines = parse_rules(GOOD_FILE, "pos.toml").listing().splitlines()
    described = next(number for number, line in enumerate(lines)
                     if line.endswith("the famous refused amount"))
    assert lines[described + 1].split() == ["→", "refused", "(AF=04,", "Refusée)"]


def test_the_readme_cheque_rule_still_says_it_is_refused():
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```toml\n(include_defaults = true.*?)```", readme, re.S)[1]
    lines = parse_rules(example, "regles.toml").listing().splitlines()
    cheque = next(number for number, line in enumerate(lines) if "chèques de 1000" in line)
    assert "application cheque" in lines[cheque]
    assert lines[cheque + 1].strip().startswith("→ refused (AF=04")
