"""Requests and answers: caisse_ap.messages."""

import base64
import json
from pathlib import Path

import pytest

from caisse_ap import tags, tlv
from caisse_ap.messages import (
    Action,
    FailureReason,
    Outcome,
    PaymentRequest,
    ProtocolError,
    RequestError,
    TerminalAnswer,
)

VECTORS = json.loads((Path(__file__).parent / "frames.json").read_text(encoding="utf-8"))
FRAMES = {case["name"]: case["frame"] for case in VECTORS["valid"]}

DEFAULT_REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
EUR_ONLY = frozenset({"978"})


def answer(*fields):
    return TerminalAnswer.parse(tlv.encode([("CZ", "0300"), *fields]))


def approved(*fields):
    return answer(("AE", "10"), *fields)


def receipt_block(raw: bytes) -> tuple[str, list]:
    return ("ZT", [("CK", "100"), ("AK", base64.b64encode(raw).decode("ascii"))])


# --- PaymentRequest: building ----------------------------------------------


def test_default_request_is_the_frame_real_terminals_know():
    request = PaymentRequest(11245)
    assert request.encode() == DEFAULT_REQUEST
    assert request.encode() == FRAMES["open-source POS script, debit 112.45 EUR"].encode()


def test_partial_payment_is_omitted_unless_asked():
    assert b"BF" not in PaymentRequest(11245).encode()
    assert PaymentRequest(11245).value("BF") is None
    assert PaymentRequest(11245, partial=True).encode() == DEFAULT_REQUEST + b"BF0011"


def test_cheque_request_matches_the_vector():
    frame = FRAMES["cheque request"].encode()
    assert PaymentRequest(2500, cheque=True).encode() == frame
    assert PaymentRequest(2500, cheque=True).value("CC") == "00C"


def test_every_option_has_its_field():
    request = PaymentRequest(
        5, currency="953", action=Action.REFUND, register="07", pos_id="247300123456",
        version="0320", immediate=True, partial=True, cheque=True, reference="REF-42",
        receipt=True,
    )
    assert tlv.decode(request.encode()) == [
        ("CZ", "0320"), ("CJ", "247300123456"), ("CA", "07"), ("CE", "953"), ("BA", "1"),
        ("CD", "1"), ("CC", "00C"), ("CB", "05"), ("BF", "1"), ("CF", "REF-42"), ("CK", "100"),
    ]


@pytest.mark.parametrize(("action", "code"), [
    (Action.DEBIT, "0"), (Action.REFUND, "1"), (Action.CANCELLATION, "2"),
    (Action.DUPLICATE, "3"), ("2", "2"),
])
def test_action_is_cd(action, code):
    assert PaymentRequest(100, action=action).value("CD") == code


def test_extra_overrides_in_place_and_adds_at_the_end():
    request = PaymentRequest(11245, extra=(("CA", "02"), ("BB", "1"), ("CZ", "0301")))
    assert tlv.decode(request.encode()) == [
        ("CZ", "0301"), ("CJ", "012345678901"), ("CA", "02"), ("CE", "978"), ("BA", "0"),
        ("CD", "0"), ("CB", "11245"), ("BB", "1"),
    ]


def test_a_request_the_framing_refuses_is_not_encoded():
    with pytest.raises(tlv.FrameError, match="field 7 \\(CF\\): value is 1000 characters"):
        PaymentRequest(100, reference="x" * 1000).encode()
    with pytest.raises(tlv.FrameError, match="field 6 \\(CB\\): value is empty"):
        PaymentRequest(100, extra=(("CB", ""),)).encode()
    with pytest.raises(tlv.FrameError, match="field 7 \\(CF\\): value has a byte"):
        PaymentRequest(100, reference="référence").encode()


# --- PaymentRequest: parsing what a terminal received -----------------------


@pytest.mark.parametrize("name", [
    "open-source POS script, debit 112.45 EUR",
    "mandatory fields only, debit 123.45 EUR",
    "refund with contact fields and receipt wanted",
    "cheque request",
])
def test_valid_request_vectors_parse_and_echo_byte_for_byte(name):
    frame = FRAMES[name].encode()
    request = PaymentRequest.parse(frame, currencies=EUR_ONLY)
    assert request.encode() == frame
    assert request.fields() == tlv.decode(frame)


def test_parsed_request_reads_every_option():
    request = PaymentRequest.parse(FRAMES["refund with contact fields and receipt wanted"])
    assert request.amount == 300
    assert request.currency == "978"
    assert request.action is Action.REFUND
    assert (request.register, request.pos_id, request.version) == ("01", "247300123456", "0310")
    assert request.receipt is True
    assert request.value("BH") == "18295910399"
    assert not (request.partial or request.cheque or request.immediate)
    assert request.reference is None
    assert PaymentRequest.parse(FRAMES["cheque request"]).cheque is True
    options = PaymentRequest.parse(PaymentRequest(
        5, immediate=True, partial=True, reference="R1", receipt=True).encode())
    assert (options.immediate, options.partial, options.reference, options.receipt) == (
        True, True, "R1", True)


def test_parse_accepts_a_field_list_and_str():
    fields = tlv.decode(DEFAULT_REQUEST)
    assert PaymentRequest.parse(fields) == PaymentRequest(11245)
    assert PaymentRequest.parse(DEFAULT_REQUEST.decode()) == PaymentRequest(11245)


def test_format_error_is_09_with_the_fields_read():
    frame = b"CZ0040300CJ012012345678901CA002\xe901CE003978CD0010CB00205"
    with pytest.raises(RequestError) as caught:
        PaymentRequest.parse(frame)
    error = caught.value
    assert str(error) == (
        "value of CA at offset 26 has a byte that is not printable ASCII at offset 31")
    assert error.reason == "09"
    assert error.fields == [("CZ", "0300"), ("CJ", "012345678901")]


def test_truncated_request_is_09_with_the_fields_read():
    with pytest.raises(RequestError) as caught:
        PaymentRequest.parse(DEFAULT_REQUEST[:-2])
    assert str(caught.value) == "value of CB at offset 53 is truncated: 5 announced, 3 present"
    assert caught.value.reason == "09"
    assert caught.value.fields[-1] == ("CD", "0")


@pytest.mark.parametrize(("frame", "message", "reason"), [
    (b"CZ0040300CJ012012345678901CA00201CE003978", "missing mandatory field CB, CD", "09"),
    (b"CZ0040300CA00201CB00205CD0010CE003978", "missing mandatory field CJ", "09"),
    (b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0131234567890123",
     "field size outside the tag table: CB of 13 characters", "09"),
    (b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041,00",
     "amount CB='1,00' is not digits", "09"),
    (b"CZ0040300CJ012012345678901CA00201CE00397XCD0010CB00205",
     "currency CE='97X' is not three digits", "09"),
    (b"CZ0040300CJ012012345678901CA00201CE003978CD0015CB00205",
     "unknown action type CD='5'", "12"),
    (b"CZ0040300CJ012012345678901CA00201CE003978CD00200CB00205",
     "field size outside the tag table: CD of 2 characters", "09"),
    (b"CZ0040300CJ012012345678901CA00201CE003840CD0010CB00205",
     "currency 840 is not supported", "13"),
])
def test_each_refusal_has_its_reason_code(frame, message, reason):
    with pytest.raises(RequestError) as caught:
        PaymentRequest.parse(frame, currencies=EUR_ONLY)
    assert str(caught.value) == message
    assert caught.value.reason == reason
    # Only the fields that fit the tag table are kept, for the echoes.
    assert caught.value.fields == [(tag, value) for tag, value in tlv.decode(frame)
                                   if tags.fits(tag, value)]


def test_default_currencies_are_all_of_iso_4217():
    usd = b"CZ0040300CJ012012345678901CA00201CE003840CD0010CB00205"
    assert PaymentRequest.parse(usd).currency == "840"
    with pytest.raises(RequestError, match="currency 000 is not supported") as caught:
        PaymentRequest.parse(usd.replace(b"CE003840", b"CE003000"))
    assert caught.value.reason == "13"


def test_unknown_action_is_checked_before_the_currency():
    frame = b"CZ0040300CJ012012345678901CA00201CE003840CD0019CB00205"
    with pytest.raises(RequestError) as caught:
        PaymentRequest.parse(frame, currencies=EUR_ONLY)
    assert caught.value.reason == "12"


# --- TerminalAnswer -----------------------------------------------------------

APPROVED_FIELDS = [
    ("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"), ("CE", "978"), ("CD", "0"),
    ("CB", "0000011245"), ("AE", "10"), ("AF", "01"), ("CC", "00B"), ("CI", "2"),
    ("AA", "497010XXXXXX1234"), ("AB", "2712"), ("AC", "A1B2C3"), ("AI", "A0000000421010"),
    ("CG", "4242424"), ("CF", "REF-42"), ("QZ", "vendor thing"),
]


def test_approved_answer_gives_every_detail():
    result = TerminalAnswer.parse(tlv.encode(APPROVED_FIELDS))
    assert result.outcome is Outcome.APPROVED
    assert result.problem is None
    assert result.fields == tuple(APPROVED_FIELDS)
    assert result.amount == 11245  # zero padding stripped
    assert result.application == "00B"
    assert result.read_mode == "2"
    assert result.card_number == "497010XXXXXX1234"
    assert result.expiry == "2712"
    assert result.authorisation_number == "A1B2C3"
    assert result.aid == "A0000000421010"
    assert result.seller_contract == "4242424"
    assert result.reference == "REF-42"
    assert result.unknown_fields == [("QZ", "vendor thing")]
    assert result.reason == FailureReason("01")
    labels = result.labels()
    assert labels["CC"] == "CB sans contact"
    assert labels["CI"] == "sans contact"
    assert labels["AE"] == "opération effectuée"
    assert labels["QZ"] == ""
    assert result.labels("en")["CC"] == "CB (Visa/Mastercard) contactless"


@pytest.mark.parametrize(("status", "outcome"), [
    ("10", Outcome.APPROVED), ("01", Outcome.DECLINED), ("11", Outcome.ACCEPTED),
])
def test_outcome_follows_ae(status, outcome):
    result = answer(("AE", status))
    assert result.outcome is outcome
    assert result.reason is None
    assert result.amount is None


def test_failure_reason_keeps_acquirer_details():
    result = answer(("AE", "01"), ("AF", "04 REFUS EMETTEUR 51"), ("CA", "01"))
    assert result.outcome is Outcome.DECLINED
    assert result.reason == FailureReason("04", "REFUS EMETTEUR 51")
    assert (result.reason.label, result.reason.label_en) == ("Refusée", "Refused")
    assert result.labels()["AF"] == "Refusée"


def test_unknown_failure_code_gets_a_placeholder_label():
    reason = answer(("AE", "01"), ("AF", "77")).reason
    assert reason.label == "code inconnu '77'"
    assert reason.label_en == "unknown code '77'"


@pytest.mark.parametrize(("frame", "problem", "fields"), [
    (b"garbage", "tag 'ga' at offset 0 is not two upper-case letters", ()),
    (b"CZ0040300CA00201AE002", "value of AE at offset 16 is truncated: 2 announced, 0 present",
     (("CZ", "0300"), ("CA", "01"))),
    (b"CZ0040300CA00201", "the answer has no action status AE", (("CZ", "0300"), ("CA", "01"))),
    (b"CZ0040300AE00299", "unknown action status AE='99'", (("CZ", "0300"), ("AE", "99"))),
    (b"", "empty frame", ()),
])
def test_unreadable_answers_never_raise(frame, problem, fields):
    result = TerminalAnswer.parse(frame)
    assert result.outcome is Outcome.UNREADABLE
    assert result.problem == problem
    assert result.fields == fields


def test_answer_vectors_parse():
    result = TerminalAnswer.parse(FRAMES["answer parsed by a POS integration test"])
    assert (result.outcome, result.amount) == (Outcome.APPROVED, 5)
    rejected = TerminalAnswer.parse(FRAMES["terminal rejects a malformed request"])
    assert rejected.outcome is Outcome.DECLINED
    assert rejected.reason.code == "09"


def test_amount_that_is_not_digits_is_none():
    assert answer(("AE", "10"), ("CB", "1a")).amount is None
    assert TerminalAnswer.parse([("CZ", "0300"), ("AE", "10"), ("CB", "²")]).amount is None


@pytest.mark.parametrize(("raw", "text"), [
    ("Merci, à bientôt\n12,50 €".encode(), "Merci, à bientôt\n12,50 €"),
    ("Reçu à conserver".encode("latin-1"), "Reçu à conserver"),
])
def test_receipt_is_decoded_from_zt_ak(raw, text):
    assert approved(receipt_block(raw)).receipt == text


def test_receipt_vector_that_is_not_base64_is_none():
    result = TerminalAnswer.parse(FRAMES["constructed receipt block"])
    assert result.outcome is Outcome.APPROVED
    assert result.receipt is None  # "QUI" is not valid base64


@pytest.mark.parametrize("fields", [
    [],
    [("ZT", [("CK", "100")])],
    [("ZT", [("AK", "####")])],
])
def test_missing_or_unreadable_receipt_is_none(fields):
    assert approved(*fields).receipt is None


def test_receipt_in_a_malformed_zt_of_a_field_list_is_none():
    fields = [("CZ", "0300"), ("AE", "10"), ("ZT", "AK005QUI")]
    assert TerminalAnswer.parse(fields).receipt is None


# --- echoes -----------------------------------------------------------------------

REQUEST = PaymentRequest(11245, reference="REF-42")


def echo(*fields, status="10", request=REQUEST):
    echoed = [(tag, request.value(tag)) for tag in ("CA", "CE", "CD", "CB", "BF", "CF")
              if request.value(tag) is not None]
    given = dict(fields)
    merged = [(tag, given.pop(tag, value)) for tag, value in echoed]
    return answer(("AE", status), *merged, *given.items())


def test_faithful_echoes_pass():
    result = echo()
    assert result.echo_mismatches(REQUEST) == []
    result.check_echoes(REQUEST)


def test_zero_padded_amount_passes():
    assert echo(("CB", "0000011245")).echo_mismatches(REQUEST) == []


def test_left_out_echoes_are_tolerated():
    assert approved().echo_mismatches(REQUEST) == []


@pytest.mark.parametrize(("field", "problem"), [
    (("CA", "02"), "CA echoed as '02', sent '01'"),
    (("CD", "1"), "CD echoed as '1', sent '0'"),
    (("CE", "840"), "CE echoed as '840', sent '978'"),
    (("CB", "11246"), "CB echoed as '11246', sent '11245'"),
    (("CB", "5000"), "CB echoed as '5000', sent '11245'"),  # lower without BF=1
    (("CB", "1a"), "CB echoed as '1a', sent '11245'"),
])
def test_echo_mismatch_is_a_protocol_error(field, problem):
    result = echo(field)
    assert result.echo_mismatches(REQUEST) == [problem]
    with pytest.raises(ProtocolError) as caught:
        result.check_echoes(REQUEST)
    assert str(caught.value) == problem


def test_several_mismatches_are_listed_together():
    with pytest.raises(ProtocolError) as caught:
        echo(("CA", "02"), ("CE", "840")).check_echoes(REQUEST)
    assert str(caught.value) == "CA echoed as '02', sent '01'; CE echoed as '840', sent '978'"


def test_bf_is_compared_exactly():
    partial = PaymentRequest(11245, partial=True)
    assert echo(("BF", "0"), request=partial).echo_mismatches(partial) == [
        "BF echoed as '0', sent '1'"]
    assert echo(("BF", "1"), request=partial).echo_mismatches(partial) == []


def test_lower_amount_is_allowed_only_for_an_approved_partial_payment():
    partial = PaymentRequest(11245, partial=True)
    assert echo(("CB", "5000"), request=partial).echo_mismatches(partial) == []
    assert echo(("CB", "0000005000"), request=partial).echo_mismatches(partial) == []
    declined = echo(("CB", "5000"), status="01", request=partial)
    assert declined.echo_mismatches(partial) == ["CB echoed as '5000', sent '11245'"]
    higher = echo(("CB", "11246"), request=partial)
    assert higher.echo_mismatches(partial) == ["CB echoed as '11246', sent '11245'"]
    zero = echo(("CB", "00"), request=partial)
    assert zero.echo_mismatches(partial) == ["CB echoed as '00', sent '11245'"]


def test_a_request_amount_that_is_not_digits_is_a_mismatch():
    odd = PaymentRequest(11245, extra=(("CB", "12,45"),))
    assert echo(("CB", "1245"), request=odd).echo_mismatches(odd) == [
        "CB echoed as '1245', sent '12,45'"]
