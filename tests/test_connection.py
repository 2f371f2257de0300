"""The connection state machines of connection.py, with an injected clock: no socket, no sleep."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from caisse_ap import tlv
from caisse_ap.connection import (
    AnswerReceived,
    ConnectionClosed,
    NeedData,
    PosConnection,
    PosState,
    ProtocolError,
)

ANSWER = tlv.encode([("CZ", "0300"), ("AE", "10"), ("CJ", "012345678901"), ("CA", "01"),
                     ("CB", "11245"), ("CD", "0"), ("CE", "978")])
TRAILING = b"AC006999999CG006424242"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pos(clock: Clock | None = None, **options) -> PosConnection:
    return PosConnection(clock=clock or Clock(), **options)


# --- PosConnection ----------------------------------------------------------------------


def test_nothing_received_needs_data_without_deadline():
    connection = pos()
    assert connection.next_event() == NeedData(None)
    assert connection.state is PosState.AWAITING_ANSWER


def test_whole_answer_waits_the_grace_from_the_last_byte_then_is_received():
    clock = Clock()
    connection = pos(clock, trailing_grace=0.05)
    connection.receive_data(ANSWER)
    assert connection.next_event() == NeedData(100.05)
    assert connection.state is PosState.TRAILING
    clock.advance(0.049)
    assert connection.next_event() == NeedData(100.05)
    clock.advance(0.001)
    event = connection.next_event()
    assert event == AnswerReceived(tlv.decode(ANSWER), ANSWER)
    assert connection.state is PosState.ANSWERED


def test_trailing_fields_within_the_grace_join_the_answer():
    clock = Clock()
    connection = pos(clock)
    connection.receive_data(ANSWER)
    assert isinstance(connection.next_event(), NeedData)
    clock.advance(0.04)
    connection.receive_data(TRAILING[:9])  # a field and a half
    assert connection.next_event() == NeedData(clock.now + 0.05)  # silence counts from here
    clock.advance(0.04)
    connection.receive_data(TRAILING[9:])
    clock.advance(0.05)
    event = connection.next_event()
    assert event.fields == tlv.decode(ANSWER + TRAILING)
    assert event.frame == ANSWER + TRAILING
    assert event.dropped == b""


def test_fields_after_the_grace_are_not_read():
    clock = Clock()
    connection = pos(clock)
    connection.receive_data(ANSWER)
    clock.advance(0.05)
    assert isinstance(connection.next_event(), AnswerReceived)
    connection.receive_data(TRAILING)
    assert connection.next_event() == NeedData(None)
    connection.receive_data(b"")
    assert connection.next_event() == ConnectionClosed()


def test_a_line_end_ends_the_answer_at_once():
    connection = pos()
    connection.receive_data(b"\r\n" + ANSWER + b"\r\n")
    assert connection.next_event() == AnswerReceived(tlv.decode(ANSWER), ANSWER)


def test_a_close_ends_the_answer_at_once():
    connection = pos()
    connection.receive_data(ANSWER)
    connection.receive_data(b"")
    assert connection.next_event() == AnswerReceived(tlv.decode(ANSWER), ANSWER)


def test_a_second_message_ends_the_answer_and_is_dropped():
    connection = pos()
    connection.receive_data(ANSWER + ANSWER)
    event = connection.next_event()
    assert (event.fields, event.frame, event.dropped) == (tlv.decode(ANSWER), ANSWER, ANSWER)
    assert "second message" in event.dropped_reason


def test_broken_bytes_after_ae_end_the_answer_without_spoiling_it():
    connection = pos()
    connection.receive_data(ANSWER + b"CA00202")
    event = connection.next_event()
    assert event.fields == tlv.decode(ANSWER)
    assert event.dropped == b"CA00202"
    assert "duplicate tag CA" in event.dropped_reason


def test_a_field_cut_by_the_end_of_the_grace_or_a_close_makes_the_answer_unreadable():
    clock = Clock()
    silent = pos(clock)
    silent.receive_data(ANSWER + b"CG00")
    assert isinstance(silent.next_event(), NeedData)
    clock.advance(0.05)
    event = silent.next_event()
    assert isinstance(event, ProtocolError)
    assert "truncated" in str(event.error)
    assert event.error.fields == tlv.decode(ANSWER)
    closed = pos()
    closed.receive_data(ANSWER[:-3])
    closed.receive_data(b"")
    assert "truncated" in str(closed.next_event().error)


def test_garbage_before_ae_is_a_protocol_error():
    connection = pos()
    connection.receive_data(b"HELLO WORLD\r\n")
    event = connection.next_event()
    assert isinstance(event, ProtocolError)
    assert event.frame == b"HELLO WORLD\r\n"
    assert connection.state is PosState.ERROR


def test_a_line_end_before_ae_is_a_protocol_error_keeping_the_fields_read():
    connection = pos()
    connection.receive_data(b"CZ0040300CA00201\r\n")
    event = connection.next_event()
    assert isinstance(event, ProtocolError)
    assert event.error.fields == [("CZ", "0300"), ("CA", "01")]
    assert "without an action status (AE)" in str(event.error)


def test_close_before_ae_and_close_in_a_field_before_ae():
    whole = pos()
    whole.receive_data(b"CZ0040300CA00201")
    assert whole.next_event() == NeedData(None)
    whole.receive_data(b"")
    event = whole.next_event()
    assert "closed the connection before the action status" in str(event.error)
    cut = pos()
    cut.receive_data(ANSWER[:12])
    cut.receive_data(b"")
    assert "truncated" in str(cut.next_event().error)


def test_close_with_nothing_received():
    connection = pos()
    connection.receive_data(b"")
    assert connection.next_event() == ConnectionClosed()
    assert connection.state is PosState.CLOSED


def test_an_answer_too_long_is_an_error():
    connection = pos(max_answer=100)
    connection.receive_data(b"CZ0040300" + b"CF099" + b"x" * 99)
    assert "exceeds 100 bytes" in str(connection.next_event().error)


@given(st.data())
def test_any_segmentation_gives_the_same_answer(data):
    """Cut anywhere, each piece within the grace of the previous one: the same answer."""
    frame = ANSWER + TRAILING
    cuts = sorted(data.draw(st.sets(st.integers(1, len(frame) - 1), max_size=8)))
    clock = Clock()
    connection = pos(clock)
    for start, end in zip([0, *cuts], [*cuts, len(frame)], strict=True):
        assert isinstance(connection.next_event(), NeedData)
        clock.advance(data.draw(st.floats(0, 0.049)))
        connection.receive_data(frame[start:end])
    event = connection.next_event()
    while isinstance(event, NeedData):
        assert event.deadline is not None
        clock.now = event.deadline
        event = connection.next_event()
    assert event == AnswerReceived(tlv.decode(frame), frame)
