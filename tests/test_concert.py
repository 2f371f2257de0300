"""Concert E+ core: messages, their Caisse-AP equivalents, and the link layer with a fake clock."""

from __future__ import annotations

import pytest

from caisse_ap import concert
from caisse_ap.concert import (
    ACK,
    ENQ,
    EOT,
    ETX,
    NAK,
    STX,
    BytesIgnored,
    ConcertAnswer,
    ConcertError,
    ConcertLink,
    ConcertRequest,
    FrameRejected,
    LinkState,
    LinkTimings,
    MessageReceived,
    MessageSent,
    NeedData,
    ReceiveFailed,
    Role,
    SendFailed,
)
from caisse_ap.messages import Action, PaymentRequest, TerminalAnswer

REQUEST = b"0100001250110978          A010B010"  # 12,50 EUR debit, long answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def events(link: ConcertLink) -> list:
    """Every event up to the next NeedData (included)."""
    out = []
    while True:
        event = link.next_event()
        out.append(event)
        if isinstance(event, NeedData):
            return out


def feed(link: ConcertLink, data: bytes) -> list:
    link.receive_data(data)
    return events(link)


def kinds(found: list) -> list[type]:
    return [type(event) for event in found]


# --- frames and messages ---------------------------------------------------------------

def test_lrc_is_the_xor_of_the_message_and_etx():
    assert concert.lrc(b"") == 0x03
    assert concert.lrc(b"A") == 0x41 ^ 0x03
    assert concert.lrc(b"AB") == 0x41 ^ 0x42 ^ 0x03
    assert concert.frame(b"AB") == b"\x02AB\x03" + bytes([0x41 ^ 0x42 ^ 0x03])


def test_request_fields_by_position():
    request = ConcertRequest.parse(REQUEST)
    assert request == ConcertRequest("01", "00001250", "1", "1", "0", "978", " " * 10,
                                     "A010", "B010")
    assert request.encode() == REQUEST
    assert request.long_answer
    assert [row[0] for row in request.described()][:3] == ["pos_number", "amount", "answer_flag"]
    assert ["payment_mode", "1", "carte bancaire"] in request.described()


@pytest.mark.parametrize("size", [0, 33, 35])
def test_request_of_another_size_is_refused(size):
    with pytest.raises(ConcertError, match="34"):
        ConcertRequest.parse(b"0" * size)


def test_request_as_caisse_ap_fields():
    fields = ConcertRequest.parse(b"0700001250112978REF123    A011B011").caisse_ap_fields()
    values = dict(fields)
    assert values["CA"] == "07" and values["CB"] == "00001250" and values["CE"] == "978"
    assert values["CD"] == "2" and values["BA"] == "1" and values["BB"] == "1"
    assert values["CC"] == "001" and values["CF"] == "REF123    "
    cheque = dict(ConcertRequest(payment_mode="C", amount="00000100").caisse_ap_fields())
    assert cheque["CC"] == "00C" and cheque["BA"] == "0" and "CF" not in cheque
    parsed = PaymentRequest.parse(ConcertRequest(amount="00000100").caisse_ap_fields())
    assert parsed.amount == 100 and parsed.action is Action.DEBIT


def test_unknown_type_and_mode_pass_through_for_the_core_to_judge():
    values = dict(ConcertRequest(payment_mode="Z", transaction_type="4").caisse_ap_fields())
    assert values["CD"] == "4" and "CC" not in values


def test_request_from_a_payment_request():
    request = PaymentRequest(amount=1250, currency="840", action=Action.REFUND, register="03",
                             reference="ABC", cheque=True, immediate=True)
    eplus = ConcertRequest.from_payment_request(request, long_answer=False)
    assert eplus.encode() == b"0300001250" + b"0C1840" + b"ABC       A011B010"


@pytest.mark.parametrize("request_, problem", [
    (PaymentRequest(amount=1, receipt=True), "receipt_mode"),
    (PaymentRequest(amount=1, partial=True), "partial_payment"),
    (PaymentRequest(amount=1, action=Action.DUPLICATE), "transaction type"),
    (PaymentRequest(amount=10**8), "8 digits"),
    (PaymentRequest(amount=1, reference="12345678901"), "10 characters"),
    (PaymentRequest(amount=1, extra=(("CC", "00E"),)), "CC=00E"),
])
def test_what_concert_cannot_carry(request_, problem):
    with pytest.raises(ConcertError, match=problem):
        ConcertRequest.from_payment_request(request_)


def test_answer_short_and_long():
    short = ConcertAnswer("01", "0", "00001250", "1", "978", "REF       ")
    assert short.encode() == b"010000012501978REF       "
    assert len(concert.frame(short.encode())) == 28
    assert ConcertAnswer.parse(short.encode()) == short
    long = ConcertAnswer("01", "7", "00001250", "1", "978", " " * 10, "4970".ljust(55))
    assert len(concert.frame(long.encode())) == 83
    assert ConcertAnswer.parse(long.encode()) == long
    with pytest.raises(ConcertError):
        ConcertAnswer.parse(b"0" * 26)


def test_answer_from_the_terminal_decision():
    request = ConcertRequest.parse(REQUEST)
    approved = ConcertAnswer.from_caisse_ap(request, [
        ("AE", "10"), ("CB", "1250"), ("CC", "002"), ("AA", "374245*****1234")])
    assert approved.status == "0" and approved.amount == "00001250"
    assert approved.payment_mode == "2" and approved.card_data.strip() == "374245*****1234"
    refused = ConcertAnswer.from_caisse_ap(request, [("AE", "01"), ("AF", "04"), ("CB", "xx")])
    assert refused.status == "7" and refused.amount == "00001250"
    assert refused.card_data == " " * 55 and refused.payment_mode == "1"
    short = ConcertRequest(answer_flag="0", delay="A011")
    accepted = ConcertAnswer.from_caisse_ap(short, [("AE", "11"), ("CB", "00000000")])
    assert accepted.status == "9" and accepted.card_data is None


def test_answer_read_as_a_terminal_answer():
    answer = ConcertAnswer("01", "0", "00001250", "2", "978", "REF       ", "3742".ljust(55))
    read = TerminalAnswer.parse(answer.caisse_ap_fields())
    assert read.outcome.value == "approved" and read.amount == 1250
    assert read.application == "002" and read.card_number == "3742" and read.reference == "REF"
    refused = TerminalAnswer.parse(ConcertAnswer("01", "7", "00000100", "1", "978",
                                                 " " * 10).caisse_ap_fields())
    assert refused.outcome.value == "declined" and refused.reason is None
    odd = TerminalAnswer.parse(ConcertAnswer("01", "5", "00000100", "1", "978",
                                             " " * 10).caisse_ap_fields())
    assert odd.outcome.value == "unreadable"


def test_describe_frame_names_control_characters():
    assert concert.describe_frame(b"\x02AB\x03\x7f\x06") == "<STX>AB<ETX><7f><ACK>"


# --- link: receiving ------------------------------------------------------------------------

def terminal_link(clock: Clock, **timings) -> ConcertLink:
    return ConcertLink(Role.TERMINAL, clock, LinkTimings(**timings))


def test_receive_a_request():
    clock = Clock()
    link = terminal_link(clock)
    assert link.state is LinkState.IDLE
    assert feed(link, ENQ) == [NeedData(clock.now + 3.0)]
    assert link.data_to_send() == ACK and link.state is LinkState.RECEIVING
    found = feed(link, concert.frame(REQUEST))
    assert found[0] == MessageReceived(REQUEST, concert.frame(REQUEST))
    assert link.data_to_send() == ACK and link.state is LinkState.AWAITING_EOT
    assert feed(link, EOT) == [NeedData(None)]
    assert link.state is LinkState.IDLE and link.data_to_send() == b""


def test_request_in_pieces_byte_by_byte():
    link = terminal_link(Clock())
    got = []
    for byte in ENQ + concert.frame(REQUEST) + EOT:
        got += feed(link, bytes([byte]))
    assert [e for e in got if isinstance(e, MessageReceived)] == [
        MessageReceived(REQUEST, concert.frame(REQUEST))]
    assert link.data_to_send() == ACK + ACK


def test_wrong_lrc_gets_nak_then_the_retry_gets_ack():
    link = terminal_link(Clock())
    feed(link, ENQ)
    link.data_to_send()
    bad = concert.frame(REQUEST)[:-1] + b"\x00"
    found = feed(link, bad)
    assert isinstance(found[0], FrameRejected) and "LRC" in found[0].reason
    assert link.data_to_send() == NAK and link.state is LinkState.RECEIVING
    found = feed(link, concert.frame(REQUEST))
    assert isinstance(found[0], MessageReceived) and link.data_to_send() == ACK


def test_wrong_size_gets_nak():
    link = terminal_link(Clock())
    feed(link, ENQ)
    found = feed(link, concert.frame(REQUEST[:-1]))
    assert isinstance(found[0], FrameRejected) and "33 characters" in found[0].reason
    assert link.data_to_send() == ACK + NAK


def test_too_many_bad_frames_abandon_the_exchange():
    link = terminal_link(Clock())
    feed(link, ENQ)
    bad = STX + REQUEST + ETX + b"\x00"
    found = feed(link, bad * 4)
    assert kinds(found).count(FrameRejected) == 4 and ReceiveFailed in kinds(found)
    assert link.state is LinkState.IDLE
    assert link.data_to_send() == ACK + NAK * 4


def test_bytes_without_enq_are_ignored():
    link = terminal_link(Clock())
    found = feed(link, b"garbage" + concert.frame(REQUEST))
    assert kinds(found) == [BytesIgnored, NeedData]
    assert found[0].data == b"garbage" + concert.frame(REQUEST)
    assert link.data_to_send() == b"" and link.state is LinkState.IDLE
    assert isinstance(feed(link, ENQ + concert.frame(REQUEST))[0], MessageReceived)


def test_noise_before_stx_is_ignored_inside_an_exchange():
    link = terminal_link(Clock())
    found = feed(link, ENQ + b"\xff\x00" + concert.frame(REQUEST))
    assert kinds(found)[:2] == [BytesIgnored, MessageReceived]


def test_cut_frame_then_a_new_frame():
    link = terminal_link(Clock())
    found = feed(link, ENQ + STX + REQUEST[:10] + concert.frame(REQUEST))
    assert kinds(found)[:2] == [FrameRejected, MessageReceived]
    assert "cut" in found[0].reason
    assert link.data_to_send() == ACK + NAK + ACK


def test_cut_frame_times_out_with_nak():
    clock = Clock()
    link = terminal_link(clock)
    feed(link, ENQ + STX + REQUEST[:10])
    link.data_to_send()
    clock.now += 2.9
    assert kinds(events(link)) == [NeedData]
    clock.now += 0.1
    found = events(link)
    assert isinstance(found[0], FrameRejected) and "no LRC within 3 s" in found[0].reason
    assert link.data_to_send() == NAK


def test_frame_without_etx_is_rejected_when_too_long():
    link = terminal_link(Clock())
    found = feed(link, ENQ + STX + b"1" * 40)
    assert isinstance(found[0], FrameRejected) and "no ETX" in found[0].reason


def test_sender_vanishing_after_enq():
    clock = Clock()
    link = terminal_link(clock)
    feed(link, ENQ)
    clock.now += 3.0
    found = events(link)
    assert isinstance(found[0], ReceiveFailed) and "no frame within 3 s" in found[0].reason
    assert link.state is LinkState.IDLE


def test_enq_then_eot_is_a_presence_check():
    link = terminal_link(Clock())
    assert feed(link, ENQ + EOT) == [NeedData(None)]
    assert link.data_to_send() == ACK and link.state is LinkState.IDLE


def test_repeated_frame_after_a_lost_ack_is_not_a_second_message():
    link = terminal_link(Clock())
    found = feed(link, ENQ + concert.frame(REQUEST) + concert.frame(REQUEST) + EOT)
    assert kinds(found).count(MessageReceived) == 1
    assert link.data_to_send() == ACK * 3 and link.state is LinkState.IDLE


def test_missing_eot_is_no_harm():
    clock = Clock()
    link = terminal_link(clock)
    feed(link, ENQ + concert.frame(REQUEST))
    clock.now += 2.0
    assert kinds(events(link)) == [NeedData] and link.state is LinkState.IDLE


def test_enq_instead_of_eot_starts_the_next_exchange():
    link = terminal_link(Clock())
    found = feed(link, ENQ + concert.frame(REQUEST) + ENQ + concert.frame(REQUEST))
    assert kinds(found).count(MessageReceived) == 2


# --- link: sending ---------------------------------------------------------------------------

ANSWER = ConcertAnswer("01", "0", "00001250", "1", "978", " " * 10).encode()


def pos_link(clock: Clock, **timings) -> ConcertLink:
    return ConcertLink(Role.POS, clock, LinkTimings(**timings))


def test_send_a_message():
    clock = Clock()
    link = terminal_link(clock)
    link.send(ANSWER)
    assert link.data_to_send() == ENQ and link.state is LinkState.AWAITING_ENQ_ACK
    assert events(link) == [NeedData(clock.now + 2.0)]
    feed(link, ACK)
    assert link.data_to_send() == concert.frame(ANSWER)
    found = feed(link, ACK)
    assert found[0] == MessageSent(ANSWER)
    assert link.data_to_send() == EOT and link.state is LinkState.IDLE and not link.busy


def test_nak_to_the_frame_sends_it_again():
    link = terminal_link(Clock())
    link.send(ANSWER)
    feed(link, ACK + NAK)
    assert link.data_to_send() == ENQ + concert.frame(ANSWER) * 2
    assert isinstance(feed(link, ACK)[0], MessageSent)


def test_enq_unanswered_is_tried_again_then_abandoned():
    clock = Clock()
    link = terminal_link(clock)
    link.send(ANSWER)
    for _ in range(3):
        clock.now += 2.0
        assert kinds(events(link)) == [NeedData]
    clock.now += 2.0
    found = events(link)
    assert isinstance(found[0], SendFailed) and not found[0].frame_sent
    assert "no answer to ENQ within 2 s (4 tries)" in found[0].reason
    assert link.data_to_send() == ENQ * 4 + EOT and link.state is LinkState.IDLE


def test_frame_always_refused_is_abandoned_as_maybe_read():
    link = terminal_link(Clock())
    link.send(ANSWER)
    found = feed(link, ACK + NAK * 4)
    assert isinstance(found[0], SendFailed) and found[0].frame_sent
    assert link.data_to_send() == ENQ + concert.frame(ANSWER) * 4 + EOT


def test_receiver_vanishing_after_the_frame():
    clock = Clock()
    link = terminal_link(clock, retries=1)
    link.send(ANSWER)
    feed(link, ACK)
    clock.now += 2.0
    events(link)
    clock.now += 2.0
    found = events(link)
    assert isinstance(found[0], SendFailed) and "no answer to the frame" in found[0].reason


def test_a_message_to_send_waits_for_the_exchange_in_progress():
    link = terminal_link(Clock())
    feed(link, ENQ + concert.frame(REQUEST))
    link.send(ANSWER)
    assert link.data_to_send() == ACK + ACK and link.busy  # not ENQ before the POS's EOT
    feed(link, EOT)
    assert link.data_to_send() == ENQ


def test_on_a_collision_the_pos_keeps_the_line():
    pos = pos_link(Clock())
    pos.send(REQUEST)
    found = feed(pos, ENQ)
    assert kinds(found) == [BytesIgnored, NeedData] and pos.state is LinkState.AWAITING_ENQ_ACK


def test_on_a_collision_the_terminal_gives_up_its_answer():
    link = terminal_link(Clock())
    link.send(ANSWER)
    found = feed(link, ENQ + concert.frame(REQUEST))
    assert isinstance(found[0], SendFailed) and not found[0].frame_sent
    assert isinstance(found[1], MessageReceived)
    assert link.data_to_send() == ENQ + ACK + ACK


def test_a_whole_exchange_between_two_links():
    clock = Clock()
    pos, terminal = pos_link(clock), terminal_link(clock)
    received = []

    def pump() -> None:
        for _ in range(10):
            for source, sink in ((pos, terminal), (terminal, pos)):
                data = source.data_to_send()
                sink.receive_data(data)
                received.extend(e for e in events(sink) if not isinstance(e, NeedData))

    pos.send(REQUEST)
    pump()
    terminal.send(ANSWER)
    pump()
    assert [type(e) for e in received if isinstance(e, MessageReceived)] == [MessageReceived] * 2
    messages = [e.message for e in received if isinstance(e, MessageReceived)]
    assert messages == [REQUEST, ANSWER]
    assert pos.state is LinkState.IDLE and terminal.state is LinkState.IDLE
