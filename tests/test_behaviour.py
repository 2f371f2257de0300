"""The terminal's pure behaviour: settings, outcomes and the answers built for them."""

import base64
import random
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caisse_ap import money, tlv
from caisse_ap.messages import PaymentRequest, TerminalAnswer
from caisse_ap.terminal import behaviour
from caisse_ap.terminal.behaviour import (
    FAILURE_TYPES,
    OUTCOMES,
    PAYMENT_TYPES,
    Decision,
    OutcomeSpec,
    SettingsError,
    TerminalSettings,
    decide_from_settings,
    error_reply,
    immediate_reply,
    luhn_check_digit,
    reply,
)

NOW = datetime(2026, 11, 27, 3, 10, 0)
DEBIT = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"


def parsed(frame, **kwargs):
    return PaymentRequest.parse(frame.encode() if isinstance(frame, str) else frame, **kwargs)


def answer_for(frame, outcome="approved", settings=None, seed=1, **spec):
    request = parsed(frame)
    result = reply(request, OutcomeSpec.parse(outcome, **spec), settings or TerminalSettings(),
                   random.Random(seed), NOW)
    return request, result, dict(result.fields) if result.fields else None


def luhn_valid(number):
    return luhn_check_digit(number[:-1]) == number[-1]


# --- Settings ---------------------------------------------------------------


def test_default_settings_are_the_api_settings_object():
    assert TerminalSettings().to_dict() == {
        "mode": "success", "failure_type": "abandon", "duration": 3.0,
        "payment_type": "cbcontact", "seller_contract": "424242", "answer_version": None,
        "pad_amount": False, "currencies": None, "amount_rules": False, "manual_timeout": 60.0,
        "profile": "standard",
    }


def test_updated_returns_new_settings_and_keeps_the_old_ones():
    before = TerminalSettings()
    after = before.updated({"mode": "failure", "failure_type": "04", "duration": "0.5"})
    assert (after.mode, after.failure_type, after.duration) == ("failure", "refused", 0.5)
    assert before.mode == "success"
    assert after.failure_code == "04"


@pytest.mark.parametrize("changes, field", [
    ({"mode": "sometimes"}, "mode"),
    ({"failure_type": "nope"}, "failure_type"),
    ({"failure_type": "14"}, "failure_type"),
    ({"duration": -1}, "duration"),
    ({"duration": "abc"}, "duration"),
    ({"duration": float("nan")}, "duration"),
    ({"duration": True}, "duration"),
    ({"payment_type": "visa-gold"}, "payment_type"),
    ({"seller_contract": "12345678901"}, "seller_contract"),
    ({"seller_contract": ""}, "seller_contract"),
    ({"seller_contract": "42é"}, "seller_contract"),
    ({"answer_version": "301"}, "answer_version"),
    ({"pad_amount": "yes"}, "pad_amount"),
    ({"currencies": ["978", "001"]}, "currencies"),
    ({"currencies": []}, "currencies"),
    ({"amount_rules": 1}, "amount_rules"),
    ({"manual_timeout": 0}, "manual_timeout"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(SettingsError) as caught:
        TerminalSettings().updated({"duration": 1, **changes})
    assert caught.value.field == field
    assert caught.value.message


def test_currencies_accept_alphabetic_codes_and_text():
    settings = TerminalSettings.from_dict({"currencies": "EUR, 840,eur"})
    assert settings.currencies == ("978", "840")
    assert settings.to_dict()["currencies"] == ["978", "840"]
    assert settings.accepted_currencies == frozenset({"978", "840"})
    assert TerminalSettings().accepted_currencies == money.numeric_codes()


def test_settings_must_be_a_mapping():
    with pytest.raises(SettingsError):
        TerminalSettings().updated(["mode"])


# --- Outcomes ---------------------------------------------------------------


@pytest.mark.parametrize("name, code", sorted(FAILURE_TYPES.items()))
def test_every_failure_type_by_name_and_by_code(name, code):
    assert OutcomeSpec.parse(name).failure_code == code
    assert OutcomeSpec.parse(code).outcome == name
    assert behaviour.failure_name(code) == name


@pytest.mark.parametrize("name", ["approved", "partial", "no-answer", "hang-up", "Approved "])
def test_non_failure_outcomes(name):
    spec = OutcomeSpec.parse(name)
    assert spec.outcome == name.strip().lower()
    assert spec.failure_code is None


@pytest.mark.parametrize("values, field", [
    ({"outcome": "maybe"}, "outcome"),
    ({"outcome": 4}, "outcome"),
    ({}, "outcome"),
    ({"outcome": "approved", "delay": -2}, "delay"),
    ({"outcome": "approved", "payment_type": "cash"}, "payment_type"),
    ({"outcome": "approved", "colour": "red"}, "colour"),
])
def test_bad_outcomes_name_the_field(values, field):
    with pytest.raises(SettingsError) as caught:
        OutcomeSpec.from_dict(values)
    assert caught.value.field == field


def test_outcome_round_trip():
    spec = OutcomeSpec.from_dict({"outcome": "approved", "delay": 0.5,
                                  "payment_type": "cbcontactless"})
    assert OutcomeSpec.from_dict(spec.to_dict()) == spec
    assert OutcomeSpec.from_dict("04").to_dict() == {"outcome": "refused"}
    assert set(OUTCOMES) >= {"approved", "partial", "no-answer", "hang-up", "refused"}


@pytest.mark.parametrize("mode, outcome, decided_by, delay", [
    ("success", "approved", "settings", 2.0),
    ("failure", "refused", "settings", 2.0),
    ("no-answer", "no-answer", "settings", 2.0),
    ("hang-up", "hang-up", "settings", 2.0),
    ("manual", "timeout", "manual-timeout", 7.0),
])
def test_decide_from_settings(mode, outcome, decided_by, delay):
    settings = TerminalSettings.from_dict({"mode": mode, "failure_type": "refused",
                                           "duration": 2, "manual_timeout": 7})
    decision, wait = decide_from_settings(settings)
    assert decision == Decision(OutcomeSpec(outcome), decided_by)
    assert wait == delay


# --- Answers ----------------------------------------------------------------


def test_success_echoes_and_adds_card_fields():
    request, result, values = answer_for(DEBIT)
    assert result.status == "approved" and result.reason is None
    assert result.fields[0] == ("CZ", "0300")
    assert values["AE"] == "10"
    for tag in ("CJ", "CA", "CB", "CD", "CE"):
        assert values[tag] == request.value(tag)
    assert "BA" not in values  # not an echoed field
    assert (values["CC"], values["CI"], values["AI"]) == ("001", "1", "A0000000421010")
    assert values["CG"] == "424242"
    assert len(values["AC"]) == 6 and values["AC"].isdigit()
    assert values["AA"][:6] in behaviour.CB.bins and values["AA"][6:12] == "######"
    assert int(values["AB"][:2]) > NOW.year % 100 and 1 <= int(values["AB"][2:]) <= 12
    TerminalAnswer.parse(tlv.encode(result.fields)).check_echoes(request)


@pytest.mark.parametrize("name", sorted(PAYMENT_TYPES))
def test_card_of_each_payment_type(name):
    kind = PAYMENT_TYPES[name]
    for seed in range(20):
        card = behaviour.make_card(kind, random.Random(seed), NOW)
        assert card.masked_pan[:6] in kind.scheme.bins
        assert len(card.masked_pan) == kind.scheme.pan_length
        assert card.masked_pan[6:-4] == "#" * (kind.scheme.pan_length - 10)
        assert "20" + card.expiry[:2] > str(NOW.year)


def test_masked_numbers_hide_luhn_valid_numbers():
    for scheme in {kind.scheme for kind in PAYMENT_TYPES.values()}:
        for bin_ in scheme.bins:
            numbers = behaviour._masked_numbers(bin_, scheme.pan_length)
            assert len(set(numbers)) == behaviour.SHOWN_DIGITS
            assert all(luhn_valid(number.replace("#", "0")) for number in numbers)


def test_luhn_check_digit_of_known_numbers():
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert luhn_check_digit("411111111111111") == "1"
    assert luhn_check_digit("37828224631000") == "5"


@pytest.mark.parametrize("name, cc, ci, aid", [
    ("cbcontactless", "00B", "2", "A0000000421010"),
    ("amexcontact", "002", "1", "A000000025010801"),
    ("amexcontactless", "00D", "2", "A000000025010801"),
])
def test_payment_type_from_settings_or_outcome(name, cc, ci, aid):
    _, _, by_settings = answer_for(DEBIT, settings=TerminalSettings(payment_type=name))
    _, _, by_outcome = answer_for(DEBIT, payment_type_name=name)
    for values in (by_settings, by_outcome):
        assert (values["CC"], values["CI"], values["AI"]) == (cc, ci, aid)
    if name.startswith("amex"):
        assert by_settings["AA"].startswith("37") and len(by_settings["AA"]) == 15


def test_failure_echoes_without_card_fields():
    request, result, values = answer_for(DEBIT + "BF0011CF005REF42", "refused")
    assert (result.status, result.reason) == ("declined", "04")
    assert (values["AE"], values["AF"]) == ("01", "04")
    for tag in ("CJ", "CA", "CB", "CD", "CE", "BF", "CF"):
        assert values[tag] == request.value(tag)
    assert not {"AA", "AC", "CC", "ZT"} & set(values)
    TerminalAnswer.parse(tlv.encode(result.fields)).check_echoes(request)


CHEQUE = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CC00300CCB0042500"


def test_cheque_success_has_no_card_fields():
    _, result, values = answer_for(CHEQUE)
    assert values["AE"] == "10" and values["CC"] == "00C"
    assert not {"AA", "AB", "AC", "AI", "CI"} & set(values)


@pytest.mark.parametrize("outcome", ["abandon", "timeout", "forbidden", "refused"])
def test_cheque_failure_is_refused_04_unless_a_failure_is_chosen(outcome):
    """A failure the terminal picks itself (the default, the manual mode's time-out) is
    AF=04 for a cheque, as an Ingenico answers; one a person chose (-ft, the queue, a
    rule, the keypad: OutcomeSpec.parse) is answered as chosen."""
    request = parsed(CHEQUE)
    result = reply(request, OutcomeSpec(outcome), TerminalSettings(), random.Random(1), NOW)
    values = dict(result.fields)
    assert (values["AE"], values["AF"]) == ("01", "04")
    _, _, chosen = answer_for(CHEQUE, outcome)
    assert (chosen["AE"], chosen["AF"]) == ("01", behaviour.FAILURE_TYPES[outcome])


def test_cheque_failure_of_the_settings_is_04_by_default_and_follows_ft():
    request = parsed(CHEQUE)
    for failure_type, code in (("abandon", "04"), ("forbidden", "05"), ("refused", "04")):
        settings = TerminalSettings(mode="failure", failure_type=failure_type)
        decision, _ = behaviour.decide_from_settings(settings)
        values = dict(reply(request, decision.spec, settings, random.Random(1), NOW).fields)
        assert (values["AE"], values["AF"]) == ("01", code), failure_type


def test_partial_approves_half_when_allowed():
    request, result, values = answer_for(DEBIT + "BF0011", "partial")
    assert values["AE"] == "10" and values["CB"] == "5622"
    TerminalAnswer.parse(tlv.encode(result.fields)).check_echoes(request)
    _, _, without_bf = answer_for(DEBIT, "partial")
    assert without_bf["CB"] == "11245"


def test_pad_amount_and_answer_version():
    settings = TerminalSettings(pad_amount=True, answer_version="0301")
    request, result, values = answer_for(DEBIT, settings=settings)
    assert result.fields[0] == ("CZ", "0301")
    assert values["CB"] == "000000011245"
    TerminalAnswer.parse(tlv.encode(result.fields)).check_echoes(request)
    _, failed, failed_values = answer_for(DEBIT, "refused", settings=settings)
    assert failed_values["CB"] == "000000011245" and failed.fields[0] == ("CZ", "0301")


def receipt_of(values):
    block = dict(tlv.nested(values["ZT"]))
    return block, base64.b64decode(block["AK"]).decode("ascii")


def test_receipt_in_zt():
    _, result, values = answer_for(DEBIT + "CK003100")
    block, text = receipt_of(values)
    assert block["CK"] == "100"
    for expected in ("424242", "27/11/26", "03:10:00", values["AA"], "112,45 EUR", "DEBIT",
                     "TICKET CLIENT A CONSERVER"):
        assert expected in text
    assert len(values["ZT"]) <= tlv.MAX_VALUE_LENGTH


def test_refund_receipt_says_credit():
    frame = ("CZ0040310CJ012247300123456CA00201CB0040300CD0011CE003978"
             "BH01118295910399BI020your.email@gmail.comCK003120")
    _, result, values = answer_for(frame)
    assert values["AE"] == "10" and values["CD"] == "1"
    block, text = receipt_of(values)
    assert block["CK"] == "120"
    assert "CREDIT" in text and "3,00 EUR" in text and "DEBIT" not in text


def test_no_receipt_unless_asked():
    for frame in (DEBIT, DEBIT + "CK003000"):
        assert "ZT" not in answer_for(frame)[2]


def test_duplicate_reprints_the_previous_card():
    first = reply(parsed(DEBIT), OutcomeSpec("approved"), TerminalSettings(),
                  random.Random(1), NOW)
    duplicate_frame = DEBIT.replace("CD0010", "CD0013") + "CK003100"
    again = reply(parsed(duplicate_frame), OutcomeSpec("approved"), TerminalSettings(),
                  random.Random(2), NOW, previous_card=first.card)
    values = dict(again.fields)
    assert values["AA"] == first.card.masked_pan and values["AC"] == first.card.authorisation_number
    assert "DUPLICATA" in receipt_of(values)[1]
    alone = dict(reply(parsed(duplicate_frame), OutcomeSpec("approved"), TerminalSettings(),
                       random.Random(2), NOW).fields)
    assert alone["AE"] == "10" and "AA" not in alone


def test_no_answer_and_hang_up_send_nothing():
    for outcome in ("no-answer", "hang-up"):
        result = answer_for(DEBIT, outcome)[1]
        assert result.fields is None and result.status == outcome
    assert answer_for(DEBIT, "hang-up")[1].hang_up


def test_immediate_answer():
    request = parsed(DEBIT.replace("BA0010", "BA0011"))
    result = immediate_reply(request, TerminalSettings())
    assert result.status == "accepted" and dict(result.fields)["AE"] == "11"
    TerminalAnswer.parse(tlv.encode(result.fields)).check_echoes(request)


def test_error_reply_echoes_what_was_read():
    result = error_reply([("CZ", "0320"), ("CJ", "999999999999"), ("CA", "01"),
                          ("CB", "12345"), ("CD", "0"), ("CE", "978")], "09", TerminalSettings())
    # The exact frame of PROTOCOL.md's "answer rejecting a malformed request".
    assert tlv.encode(result.fields) == (
        b"CZ0040320CJ012999999999999AE00201AF00209CA00201CB00512345CD0010CE003978")
    assert (result.status, result.reason) == ("error", "09")
    nothing = error_reply([], "09", TerminalSettings())
    assert tlv.encode(nothing.fields) == b"CZ0040300AE00201AF00209"
    assert error_reply([], "13", TerminalSettings()).status == "declined"


def test_same_seed_same_answer():
    assert answer_for(DEBIT, seed=7)[1] == answer_for(DEBIT, seed=7)[1]
    cards = {answer_for(DEBIT, seed=s)[2]["AA"] for s in range(10)}
    assert len(cards) > 1


@given(
    outcome=st.sampled_from(OUTCOMES),
    kind=st.sampled_from(sorted(PAYMENT_TYPES)),
    amount=st.integers(min_value=1, max_value=10**12 - 1),
    action=st.sampled_from("0123"),
    partial=st.booleans(),
    receipt=st.booleans(),
    cheque=st.booleans(),
    pad=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_every_answer_encodes_and_matches_its_request(outcome, kind, amount, action, partial,
                                                      receipt, cheque, pad, seed):
    request = PaymentRequest(amount=amount, action=behaviour.Action(action), partial=partial,
                             receipt=receipt, cheque=cheque, reference="ref 1")
    request = PaymentRequest.parse(request.encode())
    settings = TerminalSettings(payment_type=kind, pad_amount=pad)
    result = reply(request, OutcomeSpec.parse(outcome), settings, random.Random(seed), NOW)
    if result.fields is None:
        assert outcome in ("no-answer", "hang-up")
        return
    answer = TerminalAnswer.parse(tlv.encode(result.fields))
    answer.check_echoes(request)
    assert answer.outcome.value == result.status
    if receipt and result.status == "approved":
        assert "TICKET CLIENT A CONSERVER" in answer.receipt
