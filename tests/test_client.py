"""The command-line point of sale (client_cli) and the blocking library client against
small fake terminals written here.

Each fake terminal is a real socket on 127.0.0.1 port 0, served by a thread,
that reads one request and plays a script: bytes to write, short pauses to
force separate TCP segments, a close, or keeping the connection open.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from server_process import ROOT, ServerProcess

from caisse_ap import TerminalUnreachable, client, client_cli, tlv
from caisse_ap.errors import InvalidRequest
from caisse_ap.messages import (
    Action,
    PaymentRequest,
    TerminalAnswer,
    has_mandatory_fields,
)
from caisse_ap.payment import Outcome, payment_result

LAUNCHER = ROOT / "caisse-ap-ip-client.py"
FRAMES = json.loads((Path(__file__).parent / "frames.json").read_text())

KEEP_OPEN = "keep open"  # script step: hold the connection until the client closes it
ECHOED = ("CZ", "CJ", "CA", "CB", "CD", "CE", "BF", "CF")




def read_request(conn: socket.socket) -> list[tuple[str, str]]:
    decoder = tlv.FrameDecoder(is_complete=has_mandatory_fields)
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return decoder.finish() or []
        decoder.feed(chunk)
        message = decoder.next_message()
        if message is not None:
            return message


def answer(request, status="10", *, drop=(), **fields) -> bytes:
    """The frame a terminal would answer: the request's echoes, AE, then `fields`."""
    values = dict(request)
    echoes = [(tag, values[tag]) for tag in ECHOED if tag in values and tag not in drop]
    overrides = {tag: value for tag, value in fields.items()}
    merged = [(tag, overrides.pop(tag, value)) for tag, value in echoes]
    merged.insert(1, ("AE", status))
    return tlv.encode(merged + list(overrides.items()))


class FakeTerminal:
    """Serves one connection: reads the request, then plays script(request) steps.

    A step is bytes (written at once), a float (pause, to make a separate TCP
    segment), or KEEP_OPEN. After the last step the connection is closed.
    """

    def __init__(self, script):
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[list[tuple[str, str]]] = []
        self.raw_requests: list[bytes] = []
        self.client_closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        with self.listener:
            conn, _ = self.listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(10)
            request = read_request(conn)
            self.requests.append(request)
            self.raw_requests.append(tlv.encode(request))
            for step in self.script(request):
                if step == KEEP_OPEN:
                    self._wait_for_close(conn)
                elif isinstance(step, float):
                    time.sleep(step)
                else:
                    conn.sendall(step)

    def _wait_for_close(self, conn):
        try:
            while conn.recv(4096):
                pass
            self.client_closed.set()
        except OSError:
            pass

    def join(self):
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def run(capsys, *args) -> tuple[int, str, str]:
    status = client_cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys, terminal, *args) -> tuple[int, dict, str]:
    status, out, err = run(capsys, "-p", str(terminal.port), "--json", *args)
    terminal.join()
    assert out.count("\n") == 1, out  # one JSON object and nothing else on stdout
    return status, json.loads(out), err


# --- answers as real terminals write them ---------------------------------------------


def test_approved_answer_like_a_real_terminal(capsys):
    """Zero-padded CB, CZ0301, an unknown tag and a ZT receipt are all accepted."""
    receipt = "CARTE BANCAIRE\nMONTANT 12,50 EUR\n"
    block = tlv.encode([("CK", "100"), ("AK", base64.b64encode(receipt.encode()).decode())],
                       bare=True).decode()
    terminal = FakeTerminal(lambda req: [answer(
        req, CZ="0301", CB="0000001250", CC="001", CI="1", AC="123456", AA="497010######0123",
        QX="vendor thing", ZT=block)])
    status, result, err = run_json(capsys, terminal, "-a", "12,50", "--receipt")
    assert status == 0
    assert result["status"] == "approved"
    assert (result["amount"], result["currency"], result["action"]) == ("12.50", "EUR", "debit")
    assert result["reason"] is None
    assert result["fields"]["CB"] == "0000001250"
    assert result["fields"]["CZ"] == "0301"
    assert result["fields"]["QX"] == "vendor thing"
    assert result["labels"]["CC"] == "CB contact"
    assert result["labels"]["CI"] == "contact"
    assert "QX" in result["labels"]["QX"]
    assert result["receipt"] == receipt
    assert result["request"] == terminal.raw_requests[0].decode()
    assert result["answer"].startswith("CZ0040301AE00210")
    assert result["problem"] is None
    assert isinstance(result["elapsed_s"], float)
    assert dict(terminal.requests[0])["CK"] == "100"
    assert err == ""


def test_human_output_lists_fields_with_labels(capsys):
    receipt = "TICKET CLIENT"
    block = tlv.encode([("CK", "100"), ("AK", base64.b64encode(receipt.encode()).decode())],
                       bare=True).decode()
    terminal = FakeTerminal(lambda req: [answer(req, CC="001", CI="1", ZT=block)])
    status, out, err = run(capsys, "-p", str(terminal.port), "-a", "12,50", "--raw")
    terminal.join()
    lines = out.splitlines()
    assert status == 0
    assert lines[0] == "APPROVED  12.50 EUR"
    assert any(line.split() == ["CC", "001", "CB", "contact"] for line in lines)
    assert any(line.split() == ["CI", "1", "contact"] for line in lines)
    assert "TICKET CLIENT" in lines
    assert f"sent:     {terminal.raw_requests[0].decode()}" in lines
    assert any(line.startswith("received: CZ0040300AE00210") for line in lines)
    assert "\x1b[" not in out  # not a terminal: no colours
    assert err == ""  # not a terminal: no live elapsed line


def test_declined_shows_the_refusal_and_exits_1(capsys):
    terminal = FakeTerminal(lambda req: [answer(req, "01", AF="04")])
    status, out, _ = run(capsys, "-p", str(terminal.port), "-a", "12.50")
    terminal.join()
    assert status == 1
    assert out.splitlines()[0] == "DECLINED — Refusée (AF=04)  12.50 EUR"


def test_declined_json_has_the_reason_with_acquirer_details(capsys):
    terminal = FakeTerminal(lambda req: [answer(req, "01", AF="0405 DO NOT HONOUR")])
    status, result, _ = run_json(capsys, terminal, "-a", "12.50")
    assert status == 1
    assert result["status"] == "declined"
    assert result["reason"] == {"code": "04", "label": "Refusée", "details": "05 DO NOT HONOUR"}


def test_answer_in_several_segments_with_pauses(capsys, monkeypatch):
    """Cut before AE and after it: the pause after AE is within the grace (made long here so
    that a busy machine cannot outlast it; the close ends it)."""
    monkeypatch.setattr(client, "TRAILING_GRACE", 30.0)

    def script(req):
        frame = answer(req, CC="00B", CI="2")
        # Cut inside a tag, inside a length and inside a value.
        return [frame[:1], 0.05, frame[1:13], 0.05, frame[13:33], 0.05, frame[33:]]

    terminal = FakeTerminal(script)
    status, result, _ = run_json(capsys, terminal, "-a", "7")
    assert status == 0
    assert result["fields"]["CI"] == "2"
    assert result["answer"] == answer(terminal.requests[0], CC="00B", CI="2").decode()


def test_connection_kept_open_after_answering(capsys):
    """The client stops reading once the answer is whole; it does not wait for a close."""
    terminal = FakeTerminal(lambda req: [answer(req), KEEP_OPEN])
    status, result, _ = run_json(capsys, terminal, "--timeout", "20")
    assert status == 0
    assert result["status"] == "approved"
    assert terminal.client_closed.is_set()


def test_trailing_crlf_is_accepted(capsys):
    terminal = FakeTerminal(lambda req: [answer(req) + b"\r\n", KEEP_OPEN])
    status, result, _ = run_json(capsys, terminal)
    assert status == 0
    assert result["answer"].endswith("\r\n")


@pytest.mark.parametrize("end", [b"", b"\r\n"])
def test_fields_after_ae_in_a_second_segment_are_kept(capsys, monkeypatch, end):
    """A segment that ends right after AE is not the whole answer if more comes soon.

    The grace is made long here so that the pause cannot outlast it on a busy
    machine; the close or the CR/LF that follows ends it early.
    """
    monkeypatch.setattr(client, "TRAILING_GRACE", 30.0)

    def script(req):
        frame = answer(req, AC="999999", CG="424242")
        cut = frame.index(b"AE00210") + len(b"AE00210")
        steps = [frame[:cut], 0.1, frame[cut:-2], 0.1, frame[-2:] + end]
        return [*steps, KEEP_OPEN] if end else steps

    terminal = FakeTerminal(script)
    status, result, _ = run_json(capsys, terminal)
    assert status == 0
    assert result["fields"]["CG"] == "424242"
    assert result["fields"]["CB"] == "11245"
    assert result["elapsed_s"] < 20  # the grace ended at the close or the CR/LF


@pytest.mark.parametrize("tail, warning", [
    (b"\x00\xff", "ignored 2 bytes after the answer: tag"),
    (b"CA00202", "ignored 7 bytes after the answer: duplicate tag CA"),
])
def test_bad_trailing_bytes_are_ignored_with_a_warning(capsys, monkeypatch, tail, warning):
    """Bytes in a later segment cannot spoil an answer already whole (in one segment they do)."""
    monkeypatch.setattr(client, "TRAILING_GRACE", 30.0)  # the close ends it
    terminal = FakeTerminal(lambda req: [answer(req), 0.1, tail])  # then closes
    status, result, err = run_json(capsys, terminal)
    assert status == 0
    assert result["fields"]["CA"] == "01"
    assert warning in err


def test_a_second_message_after_the_answer_is_ignored(capsys):
    def script(req):
        frame = answer(req)
        return [frame, 0.01, frame]

    terminal = FakeTerminal(script)
    status, result, _ = run_json(capsys, terminal)
    assert status == 0
    assert list(result["fields"]) == ["CZ", "AE", "CJ", "CA", "CB", "CD", "CE"]


@pytest.mark.trailing_grace
def test_whole_fields_arriving_later_than_the_grace_are_not_awaited(capsys):
    def script(req):
        frame = answer(req, CG="424242")
        cut = frame.index(b"AE00210") + len(b"AE00210")
        return [frame[:cut], 1.0, frame[cut:], KEEP_OPEN]

    terminal = FakeTerminal(script)
    status, result, _ = run_json(capsys, terminal)
    assert status == 0
    assert "CG" not in result["fields"]


def test_immediate_answer_is_accepted(capsys):
    terminal = FakeTerminal(lambda req: [answer(req, "11")])
    status, out, _ = run(capsys, "-p", str(terminal.port), "--immediate")
    terminal.join()
    assert status == 0
    assert out.splitlines()[0] == ("ACCEPTED by the terminal (immediate answer; not paid yet)"
                                   "  112.45 EUR")
    assert dict(terminal.requests[0])["BA"] == "1"


def test_partial_approval_for_a_lower_amount(capsys):
    terminal = FakeTerminal(lambda req: [answer(req, CB="0000000625")])
    status, out, _ = run(capsys, "-p", str(terminal.port), "-a", "12.50", "--partial")
    terminal.join()
    assert status == 0
    assert out.splitlines()[0] == "APPROVED  6.25 EUR of 12.50 EUR (partial payment)"


# --- answers the client cannot trust: exit 3, never a refusal ---------------------------


@pytest.mark.parametrize("bad", [
    {"CA": "02"},
    {"CD": "1"},
    {"CE": "840"},
    {"CB": "1250"},  # approved for less without BF=1
])
def test_echo_mismatch_is_a_protocol_error(capsys, bad):
    terminal = FakeTerminal(lambda req: [answer(req, **bad)])
    status, result, err = run_json(capsys, terminal)
    assert status == 3
    assert result["status"] == "unknown"
    tag = next(iter(bad))
    assert f"{tag} echoed as" in result["problem"]
    assert result["fields"]["AE"] == "10"
    assert "does not match" in err


def test_echo_mismatch_on_a_refusal_too(capsys):
    terminal = FakeTerminal(lambda req: [answer(req, "01", AF="04", CA="07")])
    status, out, _ = run(capsys, "-p", str(terminal.port))
    terminal.join()
    assert status == 3
    assert out.startswith("UNKNOWN OUTCOME — the answer does not match the request")


def test_garbage_answer(capsys):
    terminal = FakeTerminal(lambda req: [b"HELLO WORLD\r\n", KEEP_OPEN])
    status, result, _ = run_json(capsys, terminal)
    assert status == 3
    assert result["status"] == "unknown"
    assert result["problem"].startswith("unreadable answer:")
    assert result["answer"] == "HELLO WORLD\r\n"


def test_garbage_human_output_says_to_check_the_terminal(capsys):
    terminal = FakeTerminal(lambda req: [b"\x00\xff\xfe", KEEP_OPEN])
    status, out, _ = run(capsys, "-p", str(terminal.port), "--raw")
    terminal.join()
    assert status == 3
    assert out.startswith("UNKNOWN OUTCOME — unreadable answer")
    assert "check the terminal before trying again" in out.splitlines()[0]
    assert "received: \\x00\\xff\\xfe" in out


def test_close_without_answer(capsys):
    terminal = FakeTerminal(lambda req: [])
    status, result, _ = run_json(capsys, terminal)
    assert status == 3
    assert result["problem"] == "the terminal closed the connection without answering"
    assert result["answer"] is None


def test_close_in_the_middle_of_the_answer(capsys):
    terminal = FakeTerminal(lambda req: [answer(req)[:-3]])
    status, result, _ = run_json(capsys, terminal)
    assert status == 3
    assert result["status"] == "unknown"
    assert "truncated" in result["problem"]


def test_close_after_whole_fields_without_ae(capsys):
    terminal = FakeTerminal(lambda req: [tlv.encode([("CZ", "0300"), ("CA", "01")])])
    status, result, _ = run_json(capsys, terminal)
    assert status == 3
    assert result["problem"] == ("unreadable answer: the terminal closed the connection "
                                 "before the action status (AE)")
    assert result["fields"] == {"CZ": "0300", "CA": "01"}


def test_no_answer_at_all(capsys):
    terminal = FakeTerminal(lambda req: [KEEP_OPEN])
    status, result, _ = run_json(capsys, terminal, "--timeout", "0.3")
    assert status == 3
    assert result["problem"] == "no answer within 0.3 s"
    assert terminal.client_closed.is_set()  # the client gave up and closed, never resent


def test_partial_answer_then_silence(capsys):
    terminal = FakeTerminal(lambda req: [b"CZ0040300AE0", KEEP_OPEN])
    status, out, _ = run(capsys, "-p", str(terminal.port), "--timeout", "0.3")
    terminal.join()
    assert status == 3
    assert "no answer within 0.3 s (12 bytes, not a whole answer)" in out
    assert len(terminal.requests) == 1


# --- connection failures: exit 4, one line --------------------------------------------


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


def test_nothing_listening(capsys):
    status, out, err = run(capsys, "-p", str(_closed_port()))
    assert status == 4
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot connect to 127.0.0.1" in err and "nothing was sent" in err


def test_nothing_listening_json(capsys):
    status, out, _ = run(capsys, "-p", str(_closed_port()), "--json")
    result = json.loads(out)
    assert status == 4
    assert result["status"] == "error"
    assert result["answer"] is None
    assert "nothing was sent" in result["problem"]


def test_a_refused_connection_raises_terminal_unreachable():
    port = _closed_port()
    with pytest.raises(TerminalUnreachable) as caught:
        client.PaymentTerminal("127.0.0.1", port, connect_timeout=1).pay("12.50")
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
    assert str(caught.value).endswith("; nothing was sent")


# --- the request the options build ------------------------------------------------------


def test_default_request_is_the_widely_used_frame(capsys):
    terminal = FakeTerminal(lambda req: [answer(req)])
    status, result, _ = run_json(capsys, terminal)
    assert status == 0
    assert result["request"] == FRAMES["valid"][0]["frame"]


def test_options_map_to_request_fields(capsys):
    terminal = FakeTerminal(lambda req: [answer(req)])
    status, _, _ = run_json(
        capsys, terminal, "-a", "25", "-ck", "--refund", "-r", "03", "--pos-id", "247300123456",
        "--protocol-version", "0320", "--partial", "--reference", "T-42", "--receipt",
        "--tag", "BB=1", "--tag", "CA=09")
    fields = dict(terminal.requests[0])
    assert status == 0
    assert fields == {"CZ": "0320", "CJ": "247300123456", "CA": "09", "CE": "978", "BA": "0",
                      "CD": "1", "CC": "00C", "CB": "2500", "BF": "1", "CF": "T-42",
                      "CK": "100", "BB": "1"}
    assert "BF" not in dict(PaymentRequest(amount=1).fields())


@pytest.mark.parametrize("args, action, amount", [
    (["-a", "-12,50"], "1", "1250"),
    (["--amount=-3"], "1", "300"),
    (["-a", "5", "--cancel"], "2", "500"),
    (["-a", "5", "--duplicate"], "3", "500"),
    (["-a", "0.05"], "0", "05"),
])
def test_action_and_amount(capsys, args, action, amount):
    terminal = FakeTerminal(lambda req: [answer(req)])
    status, result, _ = run_json(capsys, terminal, *args)
    fields = dict(terminal.requests[0])
    assert status == 0
    assert (fields["CD"], fields["CB"]) == (action, amount)
    assert result["action"] == Action(action).name.lower()


@pytest.mark.parametrize("args, message", [
    (["-a", "12.505"], "more decimals than EUR"),
    (["-a", "0"], "zero"),
    (["-a", "0,00"], "zero"),
    (["-a", "1234567890123"], "too large"),
    (["-a", "12.5.0"], "is not an amount"),
    (["-a", "1e3"], "is not an amount"),
    (["-c", "XYZ"], "unknown currency"),
    (["-c", "JPY", "-a", "12.5"], "more decimals than JPY"),
    (["-a", "-5", "--cancel"], "negative amount is a refund"),
    (["--refund", "--cancel"], "not allowed with"),
    (["-p", "70000"], "port"),
    (["-p", "x"], "port"),
    (["--timeout", "0"], "positive number of seconds"),
    (["--timeout", "nan"], "positive number of seconds"),
    (["--tag", "C=1"], "two upper-case letters"),
    (["--tag", "CA="], "1 to 999 printable ASCII"),
    (["--tag", "CA=é"], "1 to 999 printable ASCII"),
    (["-r", "1"], "register number"),
    (["--pos-id", "123"], "POS identifier"),
    (["--protocol-version", "3"], "protocol version"),
    (["--reference", "x" * 33], "1 to 32 characters"),
    (["--reference", "café"], "cannot build the request"),
    (["-l", "loud"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
    (["-a"], "expected one argument"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, args, message):
    status, out, err = run(capsys, *args)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("caisse-ap-ip-client: ")
    assert message in err


def test_non_eur_currency(capsys):
    terminal = FakeTerminal(lambda req: [answer(req)])
    status, result, _ = run_json(capsys, terminal, "-c", "jpy", "-a", "1250")
    assert status == 0
    assert dict(terminal.requests[0])["CE"] == "392"
    assert (result["amount"], result["currency"]) == ("1250", "JPY")


def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as stop:
        client_cli.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    for line in ("0  approved", "1  declined", "2  usage error", "3  outcome unknown",
                 "4  connection failed", "130  interrupted"):
        assert line in out
    for option in ("-l", "-d", "-p", "-a", "-ck", "-c", "--refund", "--cancel", "--duplicate",
                   "-r", "--pos-id", "--protocol-version", "--immediate", "--partial",
                   "--reference", "--receipt", "--tag", "--timeout", "--connect-timeout",
                   "--json", "--raw"):
        assert f"{option} " in out or f"{option}," in out


def test_debug_log_goes_to_stderr(capsys):
    terminal = FakeTerminal(lambda req: [answer(req)])
    status, out, err = run(capsys, "-p", str(terminal.port), "-l", "debug")
    terminal.join()
    assert status == 0
    assert "DEBUG: connecting to 127.0.0.1" in err
    assert "DEBUG" not in out


# --- the library entry point, for the web console -------------------------------------


def test_pay_and_result_to_json_from_a_thread():
    terminal = FakeTerminal(lambda req: [answer(req, "01", AF="06")])
    request = client.make_request("9,99", "EUR", "debit", cheque=True)
    results = []
    worker = threading.Thread(target=lambda: results.append(
        client.pay(request, "127.0.0.1", terminal.port, timeout=5, connect_timeout=5)))
    worker.start()
    worker.join(timeout=10)
    terminal.join()
    result = results[0]
    assert result.outcome is Outcome.DECLINED and not result.approved
    assert (result.refusal_code, result.refusal_label) == ("06", "Abandon")
    as_json = client_cli.result_to_json(result)
    assert set(as_json) == {"status", "amount", "currency", "currency_symbol", "action",
                            "reason", "fields", "labels", "receipt", "elapsed_s", "request",
                            "answer", "problem"}
    assert as_json["reason"]["label"] == "Abandon"
    assert (as_json["amount"], as_json["currency_symbol"]) == ("9.99", "€")
    json.dumps(as_json)  # JSON-ready as it is


def test_pay_calls_on_wait_while_waiting(monkeypatch):
    monkeypatch.setattr(client, "WAIT_TICK", 0.05)
    terminal = FakeTerminal(lambda req: [KEEP_OPEN])
    ticks: list[float] = []
    result = client.PaymentTerminal("127.0.0.1", terminal.port, timeout=0.3,
                                    on_wait=ticks.append).pay("1.00")
    terminal.join()
    assert result.outcome is Outcome.UNKNOWN
    assert len(ticks) >= 2 and ticks == sorted(ticks)


@pytest.mark.trailing_grace
def test_on_wait_is_not_called_during_the_trailing_grace(monkeypatch):
    """Once AE is read, the wait is the grace for late fields, not the customer's: no tick.

    A tick can only come before the answer arrived, so at least the grace before the end."""
    monkeypatch.setattr(client, "WAIT_TICK", 0.02)
    monkeypatch.setattr(client, "TRAILING_GRACE", 0.4)
    terminal = FakeTerminal(lambda req: [answer(req), KEEP_OPEN])
    ticks: list[float] = []
    result = client.PaymentTerminal("127.0.0.1", terminal.port, timeout=20,
                                    on_wait=ticks.append).pay("1.00")
    terminal.join()
    assert result.outcome is Outcome.APPROVED
    assert result.elapsed_s >= 0.4
    assert all(tick < result.elapsed_s - 0.4 for tick in ticks), (ticks, result.elapsed_s)


@pytest.mark.parametrize("kwargs, field", [
    ({"amount": "abc"}, "amount"),
    ({"amount": "1", "currency": "ZZZ"}, "currency"),
    ({"amount": "1", "action": "steal"}, "action"),
])
def test_make_request_names_the_bad_field(kwargs, field):
    with pytest.raises(InvalidRequest) as error:
        client.make_request(**kwargs)
    assert error.value.field == field


def test_unreadable_answer_is_never_a_refusal():
    request = PaymentRequest(amount=100)
    result = payment_result(request, request.encode(), TerminalAnswer.parse(b"CZ0040300"),
                            b"CZ0040300", None, 0.1)
    assert result.outcome is Outcome.UNKNOWN
    assert result.problem == "unreadable answer: the answer has no action status AE"
    assert client_cli.headline(result).startswith("UNKNOWN OUTCOME")


# --- terminal niceties: colours and the live line --------------------------------------


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_colours_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert client_cli.wants_colour(FakeTty())
    assert not client_cli.wants_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not client_cli.wants_colour(FakeTty())


def test_coloured_headline(capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", FakeTty())
    terminal = FakeTerminal(lambda req: [answer(req, "01", AF="04")])
    status = client_cli.main(["-p", str(terminal.port)])
    terminal.join()
    assert status == 1
    assert sys.stdout.getvalue().startswith("\x1b[1;31mDECLINED")


def test_elapsed_line_is_drawn_then_erased():
    stream = FakeTty()
    line = client_cli.ElapsedLine(stream, "127.0.0.1:8888")
    line.clear()
    assert stream.getvalue() == ""  # nothing drawn, nothing to erase
    line.update(3.7)
    assert stream.getvalue() == "\rwaiting for the terminal at 127.0.0.1:8888... 3 s "
    line.clear()
    assert stream.getvalue().endswith("\r\x1b[K")


# --- the launcher, in a fresh interpreter -------------------------------------------------


def _python(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": ""}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env, **kwargs)


IMPORTS_PROBE = """
import sys
from caisse_ap.client_cli import main
status = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'iso4217'))
print('LOADED', ' '.join(loaded), file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.slow
def test_client_never_imports_twisted_nor_iso4217_for_eur():
    terminal = FakeTerminal(lambda req: [answer(req)])
    done = _python("-c", IMPORTS_PROBE, "-p", str(terminal.port), "-a", "12,50")
    terminal.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("APPROVED")
    assert done.stderr.strip() == "LOADED"


@pytest.mark.slow
def test_iso4217_is_imported_for_another_currency_but_not_twisted():
    terminal = FakeTerminal(lambda req: [answer(req)])
    done = _python("-c", IMPORTS_PROBE, "-p", str(terminal.port), "-c", "USD")
    terminal.join()
    assert done.returncode == 0, done.stderr
    loaded = done.stderr.split("LOADED")[1].split()
    assert "iso4217" in loaded
    assert not [name for name in loaded if name.startswith("twisted")]


@pytest.mark.slow
def test_launcher_against_nothing_listening():
    done = _python(str(LAUNCHER), "-p", str(_closed_port()), "-a", "12,50")
    assert done.returncode == 4
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_reader_leaving_early_is_no_traceback():
    terminal = FakeTerminal(lambda req: [answer(req, "01", AF="04")])
    with subprocess.Popen([sys.executable, str(LAUNCHER), "-p", str(terminal.port), "--raw"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as done:
        done.stdout.close()  # as `| head -0` would: nobody reads the result
        stderr = done.stderr.read().decode()
        status = done.wait(timeout=60)
    terminal.join()
    assert status == 1, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_launcher_usage_error():
    done = _python(str(LAUNCHER), "-a", "12,505")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "caisse-ap-ip-client: amount 12,505 has more decimals than EUR allows (2)"]


# --- end to end against the simulated terminal (caisse-ap-ip-server.py) ---------------

@pytest.fixture(scope="module")
def simulated():
    """Start each kind of simulated terminal once for the module: simulated("-f", ...)."""
    started: dict[tuple[str, ...], ServerProcess] = {}

    def get(*args: str) -> ServerProcess:
        if args not in started:
            started[args] = ServerProcess("-d", "0", "--no-web", *args, timeout=60)
        return started[args]

    yield get
    for terminal in started.values():
        terminal.stop()


def run_against(capsys, terminal: ServerProcess, *args) -> tuple[int, dict]:
    status, out, _ = run(capsys, "-p", str(terminal.port), "--json", *args)
    return status, json.loads(out)


@pytest.mark.slow
def test_simulated_approves_12_50_through_the_launcher(simulated):
    terminal = simulated()
    done = _python(str(LAUNCHER), "-p", str(terminal.port), "-a", "12,50")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "APPROVED  12.50 EUR"
    assert done.stderr == ""


@pytest.mark.slow
def test_simulated_refusal_through_the_launcher(simulated):
    terminal = simulated("-f", "-ft", "refused")
    done = _python(str(LAUNCHER), "-p", str(terminal.port), "-a", "12,50")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == "DECLINED — Refusée (AF=04)  12.50 EUR"


@pytest.mark.slow
def test_simulated_card_payment_fields(capsys, simulated):
    status, result = run_against(capsys, simulated(), "-a", "12,50", "--reference", "R1")
    assert status == 0
    fields = result["fields"]
    assert (fields["AE"], fields["CB"], fields["CC"], fields["CI"]) == ("10", "1250", "001", "1")
    assert fields["CG"] == "424242" and fields["CF"] == "R1"
    assert result["labels"]["CC"] == "CB contact"


@pytest.mark.slow
@pytest.mark.parametrize("args, tag, value", [
    (["-a", "-3"], "CD", "1"),
    (["--cancel"], "CD", "2"),
    (["--duplicate"], "CD", "3"),
    (["-ck"], "CC", "00C"),
    (["--partial"], "BF", "1"),
])
def test_simulated_actions(capsys, simulated, args, tag, value):
    status, result = run_against(capsys, simulated(), *args)
    assert status == 0
    assert result["status"] == "approved"
    assert result["fields"][tag] == value


@pytest.mark.slow
def test_simulated_receipt(capsys, simulated):
    status, result = run_against(capsys, simulated(), "-a", "12,50", "--receipt")
    assert status == 0
    assert "12,50 EUR" in result["receipt"]


@pytest.mark.slow
def test_simulated_immediate_answer(capsys, simulated):
    status, result = run_against(capsys, simulated(), "--immediate")
    assert (status, result["status"], result["fields"]["AE"]) == (0, "accepted", "11")


@pytest.mark.slow
def test_simulated_unknown_action(capsys, simulated):
    status, result = run_against(capsys, simulated(), "--tag", "CD=7")
    assert status == 1
    assert result["reason"]["code"] == "12"


@pytest.mark.slow
@pytest.mark.parametrize("failure, code", [("refused", "04"), ("abandon", "11"),
                                           ("timeout", "08"), ("forbidden", "05")])
def test_simulated_failures(capsys, simulated, failure, code):
    status, result = run_against(capsys, simulated("-f", "-ft", failure))
    assert status == 1
    assert result["status"] == "declined"
    assert result["reason"]["code"] == code


@pytest.mark.slow
def test_simulated_padded_amount_and_other_version(capsys, simulated):
    terminal = simulated("--pad-amount", "--answer-version", "0301", "--currencies", "978")
    status, result = run_against(capsys, terminal, "-a", "12,50")
    assert status == 0
    assert result["fields"]["CZ"] == "0301"
    assert result["fields"]["CB"] == "000000001250"
    status, result = run_against(capsys, terminal, "-a", "12,50", "-c", "USD")
    assert status == 1
    assert result["reason"]["code"] == "13"


@pytest.mark.slow
def test_simulated_no_answer(capsys, simulated):
    status, result = run_against(capsys, simulated("--no-answer"), "--timeout", "0.5")
    assert status == 3
    assert result["status"] == "unknown"
    assert result["problem"] == "no answer within 0.5 s"


@pytest.mark.slow
def test_simulated_hang_up(capsys, simulated):
    status, result = run_against(capsys, simulated("--hang-up"))
    assert status == 3
    assert result["problem"] == "the terminal closed the connection without answering"


# --- a real network's segmentation ----------------------------------------------------------


@pytest.mark.trailing_grace
def test_an_approval_in_four_segments_200_ms_apart_exits_0(capsys):
    """The answer cut in fields (after AE too), 200 ms apart (Linux's minimum TCP
    retransmission time-out), the connection kept open: approved, exit 0."""
    def script(req):
        frame = answer(req, CC="001", AC="123456", AA="497010######0123")
        steps = [frame[:12], 0.2, frame[12:37], 0.2, frame[37:52], 0.2, frame[52:]]
        return [*steps, KEEP_OPEN]

    terminal = FakeTerminal(script)
    status, result, _ = run_json(capsys, terminal, "-a", "12.50")
    assert status == 0, result
    assert result["fields"]["AA"] == "497010######0123"
    assert "dropped_after_answer" not in result  # present only when bytes were dropped


@pytest.mark.trailing_grace
def test_bytes_dropped_after_the_answer_are_in_json_and_in_french(capsys):
    def script(req):
        return [answer(req), 0.25, b"AC006123456CA00202", KEEP_OPEN]

    terminal = FakeTerminal(script)
    status, result, _ = run_json(capsys, terminal, "-a", "3")
    assert status == 0
    assert result["fields"]["AC"] == "123456"
    assert result["dropped_after_answer"] == "CA00202"
    terminal = FakeTerminal(script)
    status, out, _ = run(capsys, "-p", str(terminal.port), "-a", "3")
    terminal.join()
    assert status == 0
    assert ("Attention : 7 octets reçus après la réponse, illisibles avec elle, "
            "ignorés : CA00202") in out
