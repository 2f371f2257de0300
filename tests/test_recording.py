"""--record and --replay: the recording format, masking, and a record -> replay round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import TIMEOUT
from server_process import ServerProcess, run_server

from caisse_ap import client, masking, tlv
from caisse_ap.messages import PaymentRequest
from caisse_ap.payment import Outcome
from caisse_ap.terminal import profiles, proxy, taps
from caisse_ap.terminal.behaviour import OutcomeSpec
from caisse_ap.terminal.derive import check, derive_profile, profile_name
from caisse_ap.terminal.outcomes import OutcomeQueue
from caisse_ap.terminal.recording import (
    Recording,
    RecordingError,
    ReplayBook,
    Segment,
    adjust_echoes,
    transaction_entry,
)
from caisse_ap.terminal.server import TerminalFactory

FULL_PAN = "4970101234560123"


# --- Masking ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, masked", [
    ("4970101234560123", "497010######0123"),
    ("497010######0123", "497010######0123"),  # already masked: unchanged
    ("374245123456789", "374245#####6789"),
    ("4970 1012 3456 0123", "4970 10## #### 0123"),
    ("0123", "0123"),
])
def test_a_card_number_shows_its_first_six_and_last_four_digits(value, masked):
    assert masking.mask_card_number(value) == masked
    assert len(masking.mask_card_number(value)) == len(value)


def test_a_full_number_cut_between_segments_is_masked_in_both():
    frame = tlv.encode([("CZ", "0300"), ("AE", "10"), ("AA", FULL_PAN)])
    cut = frame.index(FULL_PAN.encode()) + 8
    segments = [Segment(0.0, "terminal", frame[:cut]), Segment(0.1, "terminal", frame[cut:])]
    entry = transaction_entry(
        txn_id=1, mode="proxied", peer="p", received_at=None,
        request=[("CZ", "0300")], answer=tlv.decode(frame), status="approved", reason=None,
        decided_by="terminal", outcome=None, latency=0.1, segments=segments)
    text = json.dumps(entry)
    assert FULL_PAN not in text and FULL_PAN[6:12] not in text
    joined = "".join(s["data"] for s in entry["segments"])
    assert tlv.decode(joined)[2] == ("AA", "497010######0123")
    assert [len(s["data"]) for s in entry["segments"]] == [cut, len(frame) - cut]


# --- Echoes of a replayed answer --------------------------------------------------------


def test_echoes_follow_the_new_request_in_the_recorded_style():
    recorded_request = [("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"), ("CB", "1000"),
                        ("CD", "0"), ("CE", "978"), ("BF", "1"), ("CF", "OLD")]
    recorded_answer = [("CZ", "0301"), ("CJ", "012345678901"), ("AE", "10"), ("CA", "01"),
                       ("CB", "000000000500"), ("CD", "0"), ("CE", "978"), ("CF", "OLD"),
                       ("AC", "424242")]
    request = [("CZ", "0300"), ("CJ", "999999999999"), ("CA", "07"), ("CB", "2000"),
               ("CD", "0"), ("CE", "978"), ("BF", "1"), ("CF", "NEW")]
    assert adjust_echoes(recorded_request, recorded_answer, request) == [
        ("CZ", "0301"), ("CJ", "999999999999"), ("AE", "10"), ("CA", "07"),
        ("CB", "000000001000"), ("CD", "0"), ("CE", "978"), ("CF", "NEW"), ("AC", "424242")]


def test_a_recording_that_is_not_one_is_refused_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "recording", "version": 1}\n{"type": "transaction"}\n')
    with pytest.raises(RecordingError, match=r"bad\.jsonl:2:"):
        Recording.read(path)
    path.write_text("not json\n")
    with pytest.raises(RecordingError, match=r"bad\.jsonl:1:"):
        Recording.read(path)
    with pytest.raises(RecordingError, match="cannot read"):
        Recording.read(tmp_path / "missing.jsonl")


# --- Record, then replay ----------------------------------------------------------------


PAYMENTS = [  # (request, outcome the recorded terminal is told to give)
    (PaymentRequest(1250, receipt=True), "approved"),
    (PaymentRequest(3000), "refused"),
    (PaymentRequest(4000, partial=True, reference="A-1"), "partial"),
    (PaymentRequest(500, action="1"), "approved"),
    (PaymentRequest(600), "hang-up"),
]


@pytest.fixture
def recorded(start_terminal, tmp_path):
    """Record PAYMENTS against a simulated terminal; the recording's path and the results."""
    path = tmp_path / "session.jsonl"
    terminal = start_terminal(
        {"duration": 0, "pad_amount": True, "answer_version": "0301"}, seed="record",
        factory=lambda t: taps.TapFactory(TerminalFactory(t), t.reactor))
    queue = OutcomeQueue()
    terminal.outcome_sources.insert(0, queue)
    queue.extend([OutcomeSpec.parse(outcome) for _, outcome in PAYMENTS])
    recorder = taps.start_recording(terminal, path, terminal.listening_port.factory.logs,
                                    {"mode": "simulated"})
    results = [client.pay(request, *terminal.address, timeout=TIMEOUT)
               for request, _ in PAYMENTS]
    recorder.record.close()
    return path, results


def test_a_recording_holds_each_transaction_with_its_segments(recorded):
    path, results = recorded
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "recording" and lines[0]["mode"] == "simulated"
    transactions = lines[1:]
    assert [t["status"] for t in transactions] == ["approved", "declined", "approved",
                                                   "approved", "hang-up"]
    for line, (request, _), result in zip(transactions, PAYMENTS, results, strict=True):
        pos = "".join(s["data"] for s in line["segments"] if s["from"] == "pos")
        answered = "".join(s["data"] for s in line["segments"] if s["from"] == "terminal")
        assert pos.encode() == request.encode()
        assert answered.encode() == result.answer_frame
        assert line["request"] == [list(f) for f in request.fields()]
    assert transactions[1]["reason"] == "04" and transactions[1]["outcome"] == {
        "outcome": "refused"}


def test_replaying_a_recording_gives_the_same_outcomes_and_fields(recorded, start_terminal):
    path, results = recorded
    replayer = start_terminal(factory=lambda t: proxy.ProxyFactory(
        t, proxy.RecordingUpstream(Recording.read(path))))
    for (request, _), before in zip(PAYMENTS, results, strict=True):
        again = client.pay(request, *replayer.address, timeout=TIMEOUT)
        assert again.outcome is before.outcome
        assert again.answer_frame == before.answer_frame  # random card data included
        assert (again.answer.fields if again.answer else None) == (
            before.answer.fields if before.answer else None)


def test_echoes_are_adjusted_and_unmatched_requests_flagged(recorded, start_terminal):
    path, _ = recorded
    replayer = start_terminal({"duration": 0}, factory=lambda t: proxy.ProxyFactory(
        t, proxy.RecordingUpstream(Recording.read(path))))
    seen: list[Any] = []
    replayer.observers.append(type("Seen", (), {"transaction_finished":
                                                lambda self, txn: seen.append(txn)})())
    other_register = PaymentRequest(3000, register="07")
    declined = client.pay(other_register, *replayer.address, timeout=TIMEOUT)
    assert declined.answer.reason.code == "04" and declined.answer.value("CA") == "07"
    assert declined.answer.value("CB") == "000000003000"  # padded as recorded
    unmatched = client.pay(PaymentRequest(777), *replayer.address, timeout=TIMEOUT)
    assert unmatched.outcome is Outcome.APPROVED
    assert unmatched.answer.value("CB") == "777"  # the settings' own answer
    assert [d["code"] for d in seen[-1].deviations] == ["replay-unmatched"]


def test_in_order_the_recorded_answers_come_one_after_the_other(recorded):
    path, results = recorded
    book = ReplayBook(Recording.read(path), in_order=True)
    request = PaymentRequest(9999).fields()
    statuses = [book.answer_for(request).status for _ in PAYMENTS]
    assert statuses == ["approved", "declined", "approved", "approved", "hang-up"]
    assert book.answer_for(request) is None


# --- The command line -------------------------------------------------------------------


@pytest.mark.slow
def test_record_then_replay_from_the_command_line(tmp_path):
    path = tmp_path / "cli.jsonl"
    recording = ServerProcess("--no-web", "-d", "0", "--seed", "s", "--record", str(path))
    try:
        first = client.pay(PaymentRequest(2500), *recording.address, timeout=TIMEOUT)
    finally:
        assert recording.stop() == 0
    assert "recording every exchange in" in recording.output()
    replaying = ServerProcess("--no-web", "-d", "0", "--replay", str(path))
    try:
        again = client.pay(PaymentRequest(2500), *replaying.address, timeout=TIMEOUT)
    finally:
        replaying.stop()
    assert f"replay of {path} (1 transactions" in replaying.startup_line
    assert "simulated terminal" not in replaying.startup_line
    assert first.outcome is again.outcome is Outcome.APPROVED
    assert again.answer_frame == first.answer_frame


@pytest.mark.slow
def test_the_start_up_line_says_the_proxy_runs():
    proxying = ServerProcess("--no-web", "--proxy", "127.0.0.1:1")  # connected to per POS
    line = proxying.startup_line
    proxying.stop()  # perhaps before the reactor runs: its status is not this test's point
    assert "proxy to the terminal at 127.0.0.1:1:" in line
    assert "simulated terminal" not in line and "profile standard" in line


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--replay-order"], "--replay-order needs --replay"),
    (["--replay", "/nonexistent/x.jsonl"], "cannot read the recording"),
    (["--proxy", "nowhere"], "HOST:PORT"),
    (["--proxy", "127.0.0.1:1", "--replay", "x"], "cannot be used together"),
    (["--record", "/nonexistent/dir/x.jsonl"], "cannot write the recording"),
])
def test_bad_debugging_options_give_one_line_and_status_2(args, message):
    result = run_server("--no-web", "--host", "127.0.0.1", "-p", "0", *args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


# --- A profile from a recording ----------------------------------------------------------


DERIVE_PAYMENTS = [  # every point a profile may change that an answer shows
    (PaymentRequest(1250, receipt=True, reference="R1"), "approved"),
    (PaymentRequest(3000, receipt=True), "refused"),
    (PaymentRequest(700, immediate=True), "approved"),
    (PaymentRequest(800, action="2"), "approved"),
    (PaymentRequest(900, action="1", partial=True), "approved"),
    (PaymentRequest(4000, cheque=True), "refused"),
    (PaymentRequest(1500), "abandon"),
    (PaymentRequest(2100), "approved"),
]


def answers_of(terminal, payments) -> list[Any]:
    """Each payment's answer fields, with what depends on the hour left out (the receipt's
    date, a time-filled extra tag: their presence and size are kept)."""
    queue = OutcomeQueue()
    terminal.outcome_sources.insert(0, queue)
    queue.extend([OutcomeSpec.parse(outcome) for _, outcome in payments])
    answers = []
    for request, _ in payments:
        result = client.pay(request, *terminal.address, timeout=TIMEOUT)
        fields = list(result.answer.fields) if result.answer else None
        answers.append([(tag, len(value)) if tag in ("ZT", "AP") else (tag, value)
                        for tag, value in fields or ()])
    return answers


@pytest.mark.slow  # record, derive, replay: end to end, 1 s a profile
@pytest.mark.parametrize("name", list(profiles.builtins()))
def test_a_derived_profile_answers_as_the_recorded_one(start_terminal, tmp_path, name):
    path = tmp_path / f"{name}.jsonl"
    recorded = start_terminal({"duration": 0, "profile": name}, seed="derive",
                              factory=lambda t: taps.TapFactory(TerminalFactory(t), t.reactor))
    recorder = taps.start_recording(recorded, path, recorded.listening_port.factory.logs,
                                    {"mode": "simulated"})
    before = answers_of(recorded, DERIVE_PAYMENTS)
    recorder.record.close()
    text = derive_profile(Recording.read(path), profile_name(str(path)))
    derived = check(text)
    again = start_terminal({"duration": 0, "profile": derived}, seed="derive")
    assert answers_of(again, DERIVE_PAYMENTS) == before, text


def test_what_a_recording_cannot_show_is_left_standard_and_said(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"type": "recording", "version": 1}\n')
    text = derive_profile(Recording.read(path), "empty")
    derived = check(text)
    assert derived.summary() == profiles.builtin("standard").summary()
    assert "no answer recorded: standard value kept" in text
    assert any("BA=1" in note for note in derived.silent)


@pytest.mark.slow
def test_derive_profile_from_the_command_line(tmp_path):
    path = tmp_path / "Shop Till 3.jsonl"
    path.write_text('{"type": "recording", "version": 1}\n')
    result = run_server("--derive-profile", str(path))
    assert result.returncode == 0, result.stderr
    assert check(result.stdout).name == "shop-till-3"
    bad = run_server("--derive-profile", str(tmp_path / "none.jsonl"))
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


def test_behind_a_proxy_only_the_real_terminals_answers_make_the_profile(tmp_path):
    def line(mode: str, answer: list[list[str]]) -> str:
        return json.dumps({"type": "transaction", "mode": mode, "status": "approved",
                           "request": [["CZ", "0300"], ["CD", "0"], ["CB", "100"]],
                           "answer": answer, "segments": []})

    path = tmp_path / "shop.jsonl"
    path.write_text("\n".join([
        '{"type": "recording", "version": 1, "mode": "proxied"}',
        line("proxied", [["CZ", "0301"], ["AE", "10"], ["CB", "0000000100"]]),
        line("simulated", [["CZ", "0300"], ["AE", "01"], ["AF", "04REFUSED BY QUEUE"]]),
    ]) + "\n")
    derived = check(derive_profile(Recording.read(path), "shop"))
    assert (derived.answer_version, derived.pad_amount, derived.amount_width) == (
        "0301", True, 10)
    assert dict(derived.failure_details) == {}
