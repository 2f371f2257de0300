"""The connection state machines of connection.py, with an injected clock: no socket, no sleep."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caisse_ap import tlv
from caisse_ap.connection import (
    TRAILING_GRACE,
    TRANSITIONS,
    AnswerReceived,
    AnswerUnreadable,
    BytesDropped,
    CloseConnection,
    ConnectionClosed,
    LocalProtocolError,
    MalformedRequest,
    NeedData,
    PosConnection,
    PosState,
    RequestExtended,
    RequestReceived,
    Step,
    TerminalConnection,
    TerminalState,
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
    connection = pos(clock, trailing_grace=0.05)
    connection.receive_data(ANSWER)
    assert isinstance(connection.next_event(), NeedData)
    clock.advance(0.04)
    connection.receive_data(TRAILING[:9])  # a field and a half
    # A field is cut: no grace runs until its rest comes (it was NeedData(now + grace)
    # before a cut field stopped ending answers).
    assert connection.next_event() == NeedData(None)
    clock.advance(0.04)
    connection.receive_data(TRAILING[9:])
    assert connection.next_event() == NeedData(clock.now + 0.05)  # silence counts from here
    clock.advance(0.05)
    event = connection.next_event()
    assert event.fields == tlv.decode(ANSWER + TRAILING)
    assert event.frame == ANSWER + TRAILING
    assert event.dropped == b""


def test_fields_after_the_grace_are_not_read():
    clock = Clock()
    connection = pos(clock, trailing_grace=0.05)
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


def test_a_field_cut_then_the_exchange_time_out_or_a_close_makes_the_answer_unreadable():
    """A cut field is never the end of an answer: the grace does not end it; the
    exchange's time-out (timed_out()) or a close gives the error."""
    clock = Clock()
    silent = pos(clock, trailing_grace=0.05)
    silent.receive_data(ANSWER + b"CG00")
    assert silent.next_event() == NeedData(None)
    clock.advance(0.05)
    assert silent.next_event() == NeedData(None)
    assert silent.field_cut
    event = silent.timed_out()
    assert isinstance(event, AnswerUnreadable)
    assert "truncated" in str(event.error)
    assert event.error.fields == tlv.decode(ANSWER)
    closed = pos()
    closed.receive_data(ANSWER[:-3])
    closed.receive_data(b"")
    assert "truncated" in str(closed.next_event().error)


def test_a_field_cut_waits_past_the_grace_for_its_rest():
    """One lost segment in the middle of a field: its retransmission completes the answer,
    however late."""
    clock = Clock()
    connection = pos(clock)
    connection.receive_data(ANSWER + TRAILING[:13])  # AC whole, CG cut in its length
    clock.advance(5.0)
    assert connection.next_event() == NeedData(None)
    connection.receive_data(TRAILING[13:])
    assert connection.next_event() == NeedData(clock.now + TRAILING_GRACE)
    clock.advance(TRAILING_GRACE)
    assert connection.next_event() == AnswerReceived(tlv.decode(ANSWER + TRAILING),
                                                     ANSWER + TRAILING)


def test_timed_out_without_a_cut_field_is_none():
    connection = pos()
    assert connection.timed_out() is None
    connection.receive_data(ANSWER[:12])  # cut before AE: the exchange's own time-out says it
    assert connection.next_event() == NeedData(None)
    assert connection.timed_out() is None


def test_the_grace_covers_one_retransmission_at_linux_minimum_rto():
    """TCP_RTO_MIN is 200 ms on Linux: one lost segment of optional fields still joins."""
    assert 0.2 < TRAILING_GRACE <= 0.5
    clock = Clock()
    connection = pos(clock)
    connection.receive_data(ANSWER)
    clock.advance(0.25)
    assert isinstance(connection.next_event(), NeedData)
    connection.receive_data(TRAILING)
    clock.advance(TRAILING_GRACE)
    assert connection.next_event().fields == tlv.decode(ANSWER + TRAILING)


def test_garbage_before_ae_is_a_protocol_error():
    connection = pos()
    connection.receive_data(b"HELLO WORLD\r\n")
    event = connection.next_event()
    assert isinstance(event, AnswerUnreadable)
    assert event.frame == b"HELLO WORLD\r\n"
    assert connection.state is PosState.ERROR


def test_a_line_end_before_ae_is_a_protocol_error_keeping_the_fields_read():
    connection = pos()
    connection.receive_data(b"CZ0040300CA00201\r\n")
    event = connection.next_event()
    assert isinstance(event, AnswerUnreadable)
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


@settings(deadline=None)  # a busy machine must not fail a timing-free test
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


# --- TerminalConnection -------------------------------------------------------------------

REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"


def request(ref: str) -> bytes:
    return REQUEST + f"CF{len(ref):03d}{ref}".encode()


def terminal(clock: Clock | None = None, **options) -> TerminalConnection:
    return TerminalConnection(clock or Clock(), **options)


def drain(connection: TerminalConnection, answer: bool = True) -> list:
    """Every event until NeedData (kept last); each request is answered at once if `answer`."""
    events = []
    while True:
        event = connection.next_event()
        events.append(event)
        if isinstance(event, NeedData | CloseConnection):
            return events
        if answer and isinstance(event, RequestReceived | MalformedRequest):
            connection.request_finished()


def kinds(events: list) -> list[str]:
    return [type(event).__name__ for event in events]


def requests(events: list) -> list[dict[str, str]]:
    """The requests handed out, each with the late fields that joined it."""
    handed: list[dict[str, str]] = []
    for event in events:
        if isinstance(event, RequestReceived):
            handed.append(dict(event.fields))
        elif isinstance(event, RequestExtended):
            handed[-1] = dict(event.fields)
    return handed


def references(events: list) -> list[str | None]:
    return [fields.get("CF") for fields in requests(events)]


def test_whole_request_in_one_segment():
    clock = Clock()
    connection = terminal(clock)
    connection.receive_data(REQUEST)
    assert connection.next_event() == RequestReceived(tlv.decode(REQUEST), 100.0)
    assert connection.state is TerminalState.OPEN and connection.in_progress
    assert connection.next_event() == NeedData(None)  # whole: no time-out runs


def test_split_anywhere_gives_the_same_request_once():
    for cut in range(1, len(REQUEST)):
        connection = terminal()
        connection.receive_data(REQUEST[:cut])
        first = drain(connection)
        connection.receive_data(REQUEST[cut:])
        assert kinds(first) == ["NeedData"], cut
        assert drain(connection)[0] == RequestReceived(tlv.decode(REQUEST), 100.0), cut


def test_late_fields_join_the_request_until_its_answer():
    connection = terminal()
    connection.receive_data(REQUEST)
    assert isinstance(connection.next_event(), RequestReceived)
    connection.receive_data(b"CF003XYZ")
    assert connection.next_event() == RequestExtended(tlv.decode(request("XYZ")))
    connection.request_finished()  # answered
    connection.receive_data(b"CK003100")
    dropped, need = drain(connection)
    assert isinstance(dropped, BytesDropped) and dropped.data == b"CK003100"
    assert need == NeedData(None)


def test_late_fields_of_a_request_not_started_yet_are_in_it_when_it_starts():
    connection = terminal()
    connection.receive_data(request("A"))
    assert isinstance(connection.next_event(), RequestReceived)  # in progress
    connection.receive_data(REQUEST)
    connection.receive_data(b"CF001B")
    assert connection.next_event() == NeedData(None)  # the first is still in progress
    connection.request_finished()
    assert references([connection.next_event()]) == ["B"]


def test_a_line_end_closes_the_request_to_late_fields():
    connection = terminal()
    connection.receive_data(REQUEST + b"\r\n")
    connection.receive_data(b"CF003XYZ")
    events = drain(connection, answer=False)
    assert kinds(events) == ["RequestReceived", "BytesDropped", "NeedData"]
    assert "CF" not in dict(events[0].fields)


def test_a_late_field_cut_by_the_answer_is_dropped_whole():
    connection = terminal()
    connection.receive_data(REQUEST)
    drain(connection, answer=False)
    connection.receive_data(b"CF003X")
    assert connection.next_event() == NeedData(100.0 + 2.0)
    connection.request_finished()
    connection.receive_data(b"YZ")
    events = drain(connection)
    assert kinds(events) == ["BytesDropped", "NeedData"]
    assert events[0].data == b"CF003XYZ"


def test_an_unfinished_request_is_refused_after_the_silence_from_its_last_byte():
    clock = Clock()
    connection = terminal(clock, request_timeout=2.0)
    connection.receive_data(REQUEST[:30])
    assert connection.next_event() == NeedData(102.0)
    clock.advance(1.5)
    connection.receive_data(REQUEST[30:-3])  # silence counts again from here
    assert connection.next_event() == NeedData(103.5)
    clock.advance(1.999)
    assert connection.next_event() == NeedData(103.5)
    clock.advance(0.001)
    event = connection.next_event()
    assert isinstance(event, MalformedRequest) and event.received_at == 100.0
    assert "truncated" in str(event.error) and event.error.fields[0] == ("CZ", "0300")
    connection.request_finished()
    connection.receive_data(b"245")  # the end, too late: a fragment, not a request
    assert kinds(drain(connection)) == ["BytesDropped", "NeedData"]


def test_whole_fields_without_the_mandatory_ones_are_handed_out_after_the_silence():
    clock = Clock()
    connection = terminal(clock)
    connection.receive_data(REQUEST[:-10])  # no CB
    assert connection.next_event() == NeedData(102.0)
    clock.advance(2)
    event = connection.next_event()
    assert event == RequestReceived(tlv.decode(REQUEST[:-10]), 100.0)  # the terminal refuses it


def test_framing_error_one_answer_then_the_next_request_in_the_same_read():
    connection = terminal()
    broken = REQUEST[:9] + b"cj" + REQUEST[11:]  # a tag in lower case
    connection.receive_data(broken + request("A") + b"\r\njunk" + request("B"))
    events = drain(connection)
    assert kinds(events) == ["MalformedRequest", "BytesDropped", "RequestReceived",
                             "BytesDropped", "RequestReceived", "NeedData"]
    assert references(events) == ["A", "B"]
    assert events[0].error.fields == [("CZ", "0300")]


def test_what_breaks_the_framing_after_the_mandatory_fields_is_dropped_in_any_segmentation():
    stream = request("A") + b"CF001B" + b"junk" + request("C")
    for cut in range(1, len(stream)):
        connection = terminal()
        connection.receive_data(stream[:cut])
        events = drain(connection, answer=False)
        connection.receive_data(stream[cut:])
        connection.request_finished()
        events += drain(connection)
        assert references(events) == ["A", "C"], cut
        assert "MalformedRequest" not in kinds(events), cut


def test_a_corrupt_request_sent_byte_by_byte_gets_one_answer():
    connection = terminal()
    events = []
    for byte in REQUEST[:9] + b"cj" + REQUEST[11:]:
        connection.receive_data(bytes([byte]))
        events += drain(connection)
    assert kinds(events).count("MalformedRequest") == 1
    connection.receive_data(request("NEXT"))
    assert references(drain(connection)) == ["NEXT"]


def test_garbage_first_is_refused_once_garbage_after_an_answer_is_dropped():
    clock = Clock()
    connection = terminal(clock)
    connection.receive_data(b"hello\r\n")
    assert kinds(drain(connection)) == ["BytesDropped", "NeedData"]
    clock.advance(2)  # no request followed: the bytes were the POS's first message
    first = drain(connection)
    assert kinds(first)[0] == "MalformedRequest"
    connection.receive_data(REQUEST + b"\r\n")
    drain(connection)
    connection.receive_data(b"hello\r\n")
    assert kinds(drain(connection)) == ["BytesDropped", "NeedData"]


@pytest.mark.parametrize("stray", [b"x", b"\x00", b" ", b"hello", b"hello\r\n", b"CZ",
                                   b"CZabc", b"CA00201", b"\r\nzz\r\n"])
def test_stray_bytes_before_the_first_request_are_dropped_never_answered(stray):
    """One request, one answer: the stray bytes are logged (BytesDropped), not refused."""
    for segments in ([stray + request("A")], [stray, request("A")]):
        connection = terminal()
        events = []
        for segment in segments:
            connection.receive_data(segment)
            events += drain(connection)
        assert [kind for kind in kinds(events) if kind != "NeedData"] == [
            "BytesDropped", "RequestReceived"], (stray, segments)
        assert references(events) == ["A"]


@pytest.mark.parametrize("ending", ["close", "silence"])
@pytest.mark.parametrize("stray", [b"x", b"C", b"CZ0", b"hello\r\n"])
def test_stray_bytes_alone_get_one_af09(stray, ending):
    clock = Clock()
    connection = terminal(clock)
    connection.receive_data(stray)
    events = drain(connection)
    if ending == "close":
        connection.receive_data(b"")
    else:
        clock.advance(2)
    events += drain(connection)
    assert kinds(events).count("MalformedRequest") == 1
    assert not [event for event in events if isinstance(event, RequestReceived)]


@settings(deadline=None, max_examples=300)
@given(st.lists(st.sampled_from([b"x", b"\x00", b" ", b"\r\n", b"CZ", b"CZ004", b"0300",
                                 b"CA00201", b"CB0015", REQUEST, REQUEST[:20], b"cj",
                                 b"QQ999"]), max_size=8),
       st.data())
def test_never_more_answers_than_requests(pieces, data):
    """For any input and any segmentation: answers (requests handed out, MalformedRequest
    included) are at most the request starts it holds, or one when it holds none."""
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(stream) - 1, 1)), max_size=4)))
    connection = terminal()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        connection.receive_data(stream[start:end])
        events += drain(connection)
    connection.receive_data(b"")
    events += drain(connection)
    answers = sum(isinstance(event, RequestReceived | MalformedRequest) for event in events)
    starts = len(re.findall(rb"CZ[0-9]{3}", stream))
    assert answers <= max(1, starts), (stream, kinds(events))


def test_a_request_start_inside_a_dropped_field_value_is_not_taken():
    connection = terminal()
    connection.receive_data(REQUEST + b"\r\n")
    drain(connection)
    connection.receive_data(b"CF011xxCZ0040300" + request("A"))
    events = drain(connection)
    assert kinds(events) == ["BytesDropped", "RequestReceived", "NeedData"]
    assert references(events) == ["A"]


def test_a_junk_flood_is_refused_once_then_closed():
    connection = terminal(max_junk=1000)
    events = []
    while connection.wants_data:
        connection.receive_data(b"x" * 100)
        events += drain(connection)
    assert kinds(events).count("MalformedRequest") == 1
    assert events[-1] == CloseConnection(peer_closed=False)
    assert 1000 <= sum(event.size for event in events if isinstance(event, BytesDropped)) < 1100
    assert connection.state is TerminalState.CLOSING and not connection.wants_data


def test_an_oversized_request_is_refused_then_closed():
    connection = terminal(max_message=200)
    connection.receive_data(b"CZ0040300CJ012012345678901" + b"".join(
        f"Q{letter}050".encode() + b"x" * 50 for letter in "ABCDEF"))
    events = drain(connection)
    assert kinds(events) == ["MalformedRequest", "CloseConnection"]
    assert "exceeds 200 bytes" in str(events[0].error)
    assert events[0].error.fields[:2] == [("CZ", "0300"), ("CJ", "012345678901")]


def test_at_most_16_requests_wait_then_reading_stops():
    connection = terminal()
    connection.receive_data(b"".join(request(str(n)) + b"\r\n" for n in range(40)))
    assert connection.waiting == 16 and not connection.wants_data
    handed = []
    while len(handed) < 40:
        event = connection.next_event()
        assert isinstance(event, RequestReceived)
        handed.append(event)
        assert connection.waiting <= 16
        connection.request_finished()
    assert references(handed) == [str(n) for n in range(40)]
    assert connection.wants_data


def test_answers_piling_up_stop_reading_and_the_time_out():
    clock = Clock()
    connection = terminal(clock)
    connection.receive_data(REQUEST[:30])
    connection.block_answers(True)
    assert not connection.wants_data
    clock.advance(10)
    assert connection.next_event() == NeedData(None)  # not read meanwhile: no silence
    connection.block_answers(False)
    assert connection.next_event() == NeedData(112.0)  # silence counts from reading again


def test_half_close_after_a_request_answers_it_then_closes():
    connection = terminal()
    connection.receive_data(REQUEST)
    connection.receive_data(b"")
    assert isinstance(connection.next_event(), RequestReceived)
    assert connection.next_event() == NeedData(None)  # its answer is still due
    connection.request_finished()
    assert connection.next_event() == CloseConnection(peer_closed=True)


def test_half_close_in_the_middle_of_a_request_refuses_it_at_once():
    connection = terminal()
    connection.receive_data(REQUEST[:-3])
    connection.receive_data(b"")
    events = drain(connection)
    assert kinds(events) == ["MalformedRequest", "CloseConnection"]


@settings(deadline=None)  # a busy machine must not fail a timing-free test
@given(st.data())
def test_any_requests_cut_anywhere_paused_below_the_timeout_one_answer_each_in_order(data):
    """Each request is told by its CJ (mandatory, so in RequestReceived); its optional CF
    may come as RequestExtended, or be dropped once it is answered."""
    count = data.draw(st.integers(1, 6))
    ids = [f"{n:012d}" for n in range(count)]
    ends = data.draw(st.lists(st.sampled_from([b"", b"\r\n"]), min_size=count, max_size=count))
    stream = b"".join(request("REF").replace(b"012345678901", pos_id.encode()) + end
                      for pos_id, end in zip(ids, ends, strict=True))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
    clock = Clock()
    connection = terminal(clock)
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        clock.advance(data.draw(st.floats(0, 1.999)))
        connection.receive_data(stream[start:end])
        events += drain(connection, answer=data.draw(st.booleans()))
    connection.receive_data(b"")
    while not isinstance(events[-1], CloseConnection):
        events += drain(connection)
        if connection.in_progress:
            connection.request_finished()
    assert [fields["CJ"] for fields in requests(events)] == ids
    assert "MalformedRequest" not in kinds(events)


def test_a_late_field_left_cut_is_dropped_after_the_silence_the_request_stands():
    clock = Clock()
    connection = terminal(clock)
    connection.receive_data(REQUEST)
    assert isinstance(connection.next_event(), RequestReceived)
    connection.receive_data(b"CF003X")
    assert connection.next_event() == NeedData(102.0)
    clock.advance(2)
    dropped = connection.next_event()
    assert isinstance(dropped, BytesDropped) and dropped.data == b"CF003X"
    assert "nothing more came within 2 s" in dropped.reason
    assert connection.next_event() == NeedData(None) and connection.in_progress


# --- Both directions, and the transition table ---------------------------------------------


def test_each_side_gives_the_bytes_it_sends_and_refuses_what_its_state_does_not_allow():
    pos_side = pos()
    assert pos_side.send(ANSWER) == ANSWER  # the bytes to write, once
    with pytest.raises(LocalProtocolError):
        pos_side.send(ANSWER)
    terminal = TerminalConnection(Clock())
    with pytest.raises(LocalProtocolError):
        terminal.send(ANSWER)  # no request in progress
    terminal.receive_data(REQUEST)
    assert isinstance(terminal.next_event(), RequestReceived)
    assert terminal.send(ANSWER) == ANSWER
    assert not terminal.in_progress and terminal.state is TerminalState.BETWEEN
    terminal.request_finished()  # nothing in progress: nothing to do


def test_every_state_change_is_in_the_table_and_a_missing_one_is_refused():
    states = {state for state, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert states == set(TerminalState)  # each state is left or reached by the table
    terminal = TerminalConnection(Clock())
    with pytest.raises(LocalProtocolError, match="cannot happen in state 'first'"):
        terminal._go(Step.ANSWERED)
    assert terminal.state is TerminalState.FIRST
