"""Strict on output: whatever valid request comes, the answer fits the tag table and its
receipt fits ZT (rules 7 and 8 of docs/protocol.md)."""

from __future__ import annotations

import random
import string
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from caisse_ap import tags, tlv
from caisse_ap.messages import PaymentRequest
from caisse_ap.terminal import behaviour
from caisse_ap.terminal.behaviour import OutcomeSpec, TerminalSettings

PRINTABLE = string.printable[:95]  # printable ASCII, space included, no other white space


def text(size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(PRINTABLE, min_size=size, max_size=max_size or size)


@st.composite
def valid_requests(draw) -> list[tuple[str, str]]:
    """Any request a terminal accepts: the mandatory fields and optional ones, sizes within
    the tag table, values as odd as the framing allows."""
    fields = [
        ("CZ", draw(text(4))),
        ("CJ", draw(text(12))),
        ("CA", draw(text(2))),
        ("CB", draw(st.text("0123456789", min_size=1, max_size=12))),
        ("CD", draw(st.sampled_from("0123"))),
        ("CE", draw(st.sampled_from(["978", "953", "840", "392", "048", "999"]))),
        ("CK", "1" + draw(text(2))),
    ]
    optional = [("BA", st.just("0")), ("BF", st.sampled_from("01")), ("CC", text(3)),
                ("CF", text(1, 99)), ("CH", text(1, 999)), ("BH", text(1, 200))]
    for tag, values in optional:
        if draw(st.booleans()):
            fields.append((tag, draw(values)))
    return fields


@settings(deadline=None)  # a busy machine must not fail a timing-free test
@given(valid_requests(), st.sampled_from(["approved", "partial", "refused", "abandon"]),
       st.sampled_from(list(behaviour.PAYMENT_TYPES)), st.booleans())
def test_any_accepted_request_gets_an_answer_and_a_receipt_that_fit(fields, outcome, kind,
                                                                     pad):
    try:
        request = PaymentRequest.parse(fields)
    except ValueError:
        return  # refused (an unknown currency such as 999): an AF answer, tested elsewhere
    settings = TerminalSettings(payment_type=kind, pad_amount=pad, seller_contract="9" * 10)
    reply = behaviour.reply(request, OutcomeSpec.parse(outcome), settings, random.Random(1),
                            datetime(2026, 12, 1, 20, 0, 0))
    tlv.encode(reply.fields)  # valid framing: raises otherwise
    for tag, value in reply.fields:
        assert tags.fits(tag, value), (tag, len(value))
    answer = dict(reply.fields)
    if "ZT" in answer:
        receipt = dict(tlv.nested(answer["ZT"]))
        assert all(tags.fits(tag, value) for tag, value in receipt.items())
        assert receipt["CK"] == dict(fields)["CK"]


@settings(deadline=None)  # a busy machine must not fail a timing-free test
@given(valid_requests())
def test_receipt_lines_are_cut_to_the_ticket_width(fields):
    request = PaymentRequest.parse(fields, currencies=frozenset({dict(fields)["CE"]}))
    card = behaviour.make_card(behaviour.PAYMENT_TYPES["cbcontact"], random.Random(2),
                               datetime(2026, 12, 1))
    receipt = behaviour.receipt_text(request, TerminalSettings(), card, request.amount,
                                     datetime(2026, 12, 1))
    assert all(len(line) <= behaviour.RECEIPT_WIDTH for line in receipt.splitlines())
