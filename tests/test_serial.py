"""The terminal on a real pseudo-terminal, speaking Concert E+: our client, pyTeliumManager, and
a raw POS writing bad bytes. One server (a subprocess, TCP and web on free ports) serves them all;
each test picks its outcome with the API's queue, as a developer would."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
import telium  # pyTeliumManager, a test dependency: a real POS implementation
from server_process import ROOT, ServerProcess, run_server

from caisse_ap import client, client_cli, concert
from caisse_ap.concert import ACK, ENQ, EOT, NAK, STX, ConcertRequest
from caisse_ap.errors import InvalidRequest, TerminalUnreachable
from caisse_ap.payment import Outcome

TIMEOUT = 10.0  # a wait this long means the test failed
SERIAL_LINE = re.compile(r"Concert E\+ terminal on serial line (\S+) \(link (\S+)\)")
CLIENT_SCRIPT = ROOT / "caisse-ap-ip-client.py"
REQUEST = ConcertRequest(amount="00001250")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    link = tmp_path_factory.mktemp("serial") / "eplus"
    process = ServerProcess("-d", "0", "--web-port", "0", "--serial", "pty",
                            "--serial-link", str(link))
    try:
        match = SERIAL_LINE.search(process.output())
        assert match, process.output()
        process.pty, process.link = match[1], match[2]
        assert os.path.realpath(process.link) == process.pty
        yield process
    finally:
        process.stop()
    assert not link.exists(), "the symlink is removed at shutdown"


def api(server, method: str, path: str, body=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.web_port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return json.loads(answer.read())


def queue(server, *outcomes: str) -> None:
    api(server, "POST", "/api/next", [{"outcome": outcome} for outcome in outcomes])


def last_transaction(server) -> dict:
    return api(server, "GET", "/api/transactions?limit=1")["transactions"][0]


def pay(server, *args: str, capsys) -> tuple[int, dict]:
    """Our client, in this process: (exit status, its --json object)."""
    code = client_cli.main(["--serial", server.link, "--json", "--timeout", str(TIMEOUT), *args])
    return code, json.loads(capsys.readouterr().out)


# --- our client ---------------------------------------------------------------------------

@pytest.mark.slow
def test_approval_with_the_long_answer(server, capsys):
    code, result = pay(server, "-a", "12,50", capsys=capsys)
    assert code == 0 and result["status"] == "approved"
    assert result["fields"]["AE"] == "10" and result["fields"]["CB"] == "1250"
    assert re.fullmatch(r"\d{6}#+\d{4}", result["fields"]["AA"])
    assert result["request"] == concert.frame(REQUEST.encode()).decode()
    answer = result["answer"].encode("latin-1")
    assert answer.startswith(ACK + ACK + ENQ) and len(answer[answer.index(STX):]) == 83
    transaction = last_transaction(server)
    assert transaction["protocol"] == "concert-e+" and transaction["status"] == "approved"
    assert transaction["peer"] == f"serial:{server.link}"
    exchange = transaction["exchange"]
    assert exchange["request_frame"] == concert.describe_frame(concert.frame(REQUEST.encode()))
    assert ["amount", "00001250", ""] in exchange["request"]
    assert ["status", "0", "opération effectuée"] in exchange["answer"]


@pytest.mark.slow
def test_refusal(server, capsys):
    queue(server, "refused")
    code, result = pay(server, "-a", "3", capsys=capsys)
    assert code == client_cli.EXIT_DECLINED and result["status"] == "declined"
    assert result["fields"]["AE"] == "01" and result["reason"] is None  # E+ has no reason code
    transaction = last_transaction(server)
    assert transaction["reason"]["code"] == "04" and transaction["decided_by"] == "queue"
    assert ["status", "7", "opération non effectuée"] in transaction["exchange"]["answer"]


@pytest.mark.slow
def test_cheque(server, capsys):
    code, result = pay(server, "-a", "40", "-ck", capsys=capsys)
    assert code == 0 and result["fields"]["CC"] == "00C"
    assert result["request"][1:].startswith("0100004000" + "1C0978")
    assert last_transaction(server)["request"][6] == ["CC", "00C"]


@pytest.mark.slow
def test_refund_in_another_currency_with_the_short_answer(server, capsys):
    code, result = pay(server, "-a", "-7,25", "-c", "USD", "--short-answer", capsys=capsys)
    assert code == 0 and result["action"] == "refund" and result["currency"] == "USD"
    assert result["fields"]["CE"] == "840" and "AA" not in result["fields"]
    assert result["request"][1:].startswith("0100000725" + "011840")
    answer = result["answer"].encode("latin-1")
    assert len(answer[answer.index(STX):]) == 28
    transaction = last_transaction(server)
    assert transaction["action"] == "refund" and transaction["currency"] == "USD"


@pytest.mark.slow
def test_immediate_answer(server, capsys):
    code, result = pay(server, "-a", "1", "--immediate", capsys=capsys)
    assert code == 0 and result["status"] == "accepted" and result["fields"]["AE"] == "11"


@pytest.mark.slow
def test_no_answer_is_an_unknown_outcome(server, capsys):
    queue(server, "no-answer")
    code = client_cli.main(["--serial", server.link, "--json", "--timeout", "0.5", "-a", "2"])
    result = json.loads(capsys.readouterr().out)
    assert code == client_cli.EXIT_UNKNOWN and "no answer within 0.5 s" in result["problem"]


@pytest.mark.slow
def test_the_script_prints_as_over_ip(server):
    done = subprocess.run([sys.executable, str(CLIENT_SCRIPT), "--serial", server.pty, "-a",
                           "5", "--raw"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("APPROVED  5.00 EUR")
    assert "AE 10" in done.stdout and "sent:     \\x02010000050011" in done.stdout


@pytest.mark.slow
def test_serial_and_ip_transactions_side_by_side(server, capsys):
    pay(server, "-a", "6", capsys=capsys)
    over_ip = client.pay(client.make_request("6"), *server.address, timeout=TIMEOUT)
    assert over_ip.status == "approved"
    recent = api(server, "GET", "/api/transactions?limit=2")["transactions"]
    assert [t["protocol"] for t in recent] == ["caisse-ap-ip", "concert-e+"]
    assert recent[0]["exchange"] is None and recent[0]["request_frame"].startswith("CZ")


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    # The option the user typed, not the library's field names (receipt_mode, CD=3).
    (["--receipt"], "--receipt: not possible with --serial"),
    (["--duplicate"], "--duplicate: not possible with --serial"),
    (["-a", "1000000"], "at most 8 digits"),
])
def test_what_e_plus_cannot_carry_is_a_usage_error(server, capsys, args, words):
    assert client_cli.main(["--serial", server.link, *args]) == client_cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert words in captured.err and captured.err.count("\n") == 1 and not captured.out


def test_missing_device_nothing_sent(tmp_path, capsys):
    code = client_cli.main(["--serial", str(tmp_path / "none"), "--json", "-a", "1"])
    result = json.loads(capsys.readouterr().out)
    assert code == client_cli.EXIT_NOT_SENT and "No such file" in result["problem"]


# --- a real peer: pyTeliumManager -------------------------------------------------------------

@pytest.mark.slow
def test_pytelium_manager_reads_approval_and_refusal(server):
    device = telium.Telium(server.link, timeout=3)
    try:
        assert device.is_ok()
        ask = telium.TeliumAsk.new_payment(12.5, "debit", "EUR")
        assert device.ask(ask)
        answer = device.verify(ask, waiting_timeout=TIMEOUT)
        assert answer.has_succeeded and answer.transaction_result == 0 and answer.amount == 12.5
        assert re.fullmatch(r"\d{6}#+\d{4}", answer.card_id.strip())
        queue(server, "refused")
        ask = telium.TeliumAsk.new_payment(3.0, "debit", "USD",
                                           collect_payment_source_info=False)
        assert device.ask(ask)
        answer = device.verify(ask, waiting_timeout=TIMEOUT)
        assert not answer.has_succeeded and answer.transaction_result == 7
        assert answer.currency_numeric == "840"
    finally:
        device.close()
    assert last_transaction(server)["status"] == "declined"


# --- a raw POS writing bad bytes --------------------------------------------------------------

class RawPos:
    """The pty opened by hand: bytes written as given, each read waited for on the fd."""

    def __init__(self, path: str):
        from caisse_ap.concert_pos import configure

        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        configure(self.fd)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read(self, size: int = 1, wait: float = TIMEOUT) -> bytes:
        data = b""
        deadline = time.monotonic() + wait
        while len(data) < size:
            ready, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            data += os.read(self.fd, size - len(data))
        return data

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def raw_pos(server):
    pos = RawPos(server.link)
    yield pos
    pos.close()


def send_request(pos: RawPos, request: ConcertRequest = REQUEST) -> None:
    pos.write(ENQ + concert.frame(request.encode()) + EOT)
    assert pos.read(2) == ACK + ACK


def take_answer(pos: RawPos) -> bytes:
    """The terminal's answer frame, taken as a POS does (a long answer: 83 bytes)."""
    assert pos.read() == ENQ
    pos.write(ACK)
    answer = pos.read(83)
    pos.write(ACK)
    assert pos.read() == EOT
    return answer


def pay_raw(pos: RawPos) -> bytes:
    """A whole good exchange, each step waited for; the answer frame."""
    pos.write(ENQ)
    assert pos.read() == ACK
    pos.write(concert.frame(REQUEST.encode()))
    assert pos.read() == ACK
    pos.write(EOT)
    return take_answer(pos)


@pytest.mark.slow
def test_bytes_without_enq_get_no_answer(server, raw_pos):
    raw_pos.write(b"garbage\r\n" + concert.frame(REQUEST.encode()) + ACK + NAK)
    raw_pos.write(ENQ)
    assert raw_pos.read() == ACK  # the first byte back: nothing answered the garbage
    raw_pos.write(EOT)
    server.wait_for("ignored")
    assert pay_raw(raw_pos)[:4] == STX + b"010"


@pytest.mark.slow
def test_wrong_lrc_gets_nak_and_the_retry_is_served(server, raw_pos):
    raw_pos.write(ENQ)
    assert raw_pos.read() == ACK
    good = concert.frame(REQUEST.encode())
    raw_pos.write(good[:-1] + bytes([good[-1] ^ 0x01]))
    assert raw_pos.read() == NAK
    raw_pos.write(good)
    assert raw_pos.read() == ACK
    raw_pos.write(EOT)
    assert take_answer(raw_pos)[:4] == STX + b"010"


@pytest.mark.slow
def test_cut_frame_and_wrong_size_get_nak(server, raw_pos):
    raw_pos.write(ENQ)
    assert raw_pos.read() == ACK
    raw_pos.write(STX + b"01000")  # cut: the next STX starts again
    raw_pos.write(concert.frame(b"0100001250"))  # whole, but not 34 characters
    assert raw_pos.read(2) == NAK + NAK
    raw_pos.write(STX + b"0100")  # cut, and nothing more: NAK once the frame time-out passes
    assert raw_pos.read(1, wait=concert.LinkTimings().frame + TIMEOUT) == NAK
    raw_pos.write(EOT)
    assert pay_raw(raw_pos)[-15:-2] == b"978" + b" " * 10


@pytest.mark.slow
def test_a_pos_that_left_does_not_block_the_next(server, raw_pos):
    raw_pos.write(ENQ + concert.frame(REQUEST.encode()) + EOT)
    assert raw_pos.read(3) == ACK + ACK + ENQ  # the answer is offered; this POS never takes it
    # The next POS starts a new exchange: the terminal gives up the old answer for it.
    assert pay_raw(raw_pos)[:4] == STX + b"010"
    server.wait_for("answer not delivered: the POS sent ENQ instead of ACK")


@pytest.mark.slow
def test_non_numeric_amount_is_refused_with_status_7(server, raw_pos):
    send_request(raw_pos, ConcertRequest(amount="0000A250"))
    answer = take_answer(raw_pos)
    assert answer[3:4] == b"7" and answer[4:12] == b"0000A250"
    assert last_transaction(server)["reason"]["code"] == "09"


@pytest.mark.slow
def test_any_byte_in_a_field_is_refused_and_the_line_goes_on(server, raw_pos):
    """A frame of the right size and LRC whose private field holds an é (0xE9), another
    whose amount holds a NUL: Caisse-AP values are printable ASCII, so each is refused
    (status 7, the fields echoed as sent) and the line serves the next POS."""
    for request in (ConcertRequest(amount="00000500", private="caf\u00e9      "),
                    ConcertRequest(amount="0000\x00500")):
        send_request(raw_pos, request)
        answer = take_answer(raw_pos)
        assert answer[3:4] == b"7" and answer[-15:-2] == request.encode()[-21:-8]
        transaction = last_transaction(server)
        assert transaction["reason"]["code"] == "09" and transaction["status"] == "error"
        assert transaction["protocol"] == "concert-e+"
        assert ["private", request.private, ""] in transaction["exchange"]["request"]
    assert pay_raw(raw_pos)[3:4] == b"0"
    assert "Unhandled Error" not in server.output() and "Traceback" not in server.output()


# --- the server's command line ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--serial-link", "/tmp/x"], "--serial-link needs --serial pty"),
    (["--serial", "/nonexistent/tty"], "cannot open /nonexistent/tty"),
    (["--serial", "/dev/null"], "/dev/null is not a serial device"),
])
def test_bad_serial_options(args, words):
    done = run_server("--host", "127.0.0.1", "-p", "0", "--no-web", *args)
    assert done.returncode == 2 and words in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_serial_link_refuses_to_replace_a_file(tmp_path: Path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    done = run_server("--host", "127.0.0.1", "-p", "0", "--no-web", "--serial", "pty",
                      "--serial-link", str(taken))
    assert done.returncode == 2 and "exists and is not a symlink" in done.stderr
    assert taken.read_text() == "mine"


# --- the serial link in this process, on the test reactor --------------------------------------

class Finished:
    """An observer of the Terminal: the transactions finished, in order."""

    def __init__(self) -> None:
        import queue

        self.queue: queue.Queue = queue.Queue()

    def transaction_finished(self, transaction) -> None:
        self.queue.put(transaction)

    def next(self):
        return self.queue.get(timeout=TIMEOUT)


@pytest.fixture
def serial_terminal(start_terminal, reactor_thread):
    """serial_terminal(settings) -> (terminal, its Finished observer, a RawPos on its pty)."""
    from caisse_ap.terminal.serial import SerialDevice, SerialTerminalLink

    started = []

    def start(settings: dict):
        terminal = start_terminal(settings)
        finished = Finished()
        terminal.observers.append(finished)
        link = SerialTerminalLink(terminal, SerialDevice.open_pty())
        reactor_thread.call(link.start)
        pos = RawPos(link.device.path)
        started.append((link, pos))
        return terminal, finished, pos

    yield start
    for link, pos in started:
        pos.close()
        reactor_thread.call(link.stop)


def test_a_new_request_drops_the_one_being_decided(serial_terminal, reactor_thread):
    terminal, finished, pos = serial_terminal({"duration": 60})
    send_request(pos)
    reactor_thread.call(terminal.update_settings, {"duration": 0})
    send_request(pos)
    dropped, approved = finished.next(), finished.next()
    assert (dropped.status, dropped.protocol) == ("dropped", "concert-e+")
    assert approved.status == "approved" and approved.id == dropped.id + 1
    assert take_answer(pos)[3:4] == b"0"


def test_hang_up_answers_nothing_and_the_line_stays_open(serial_terminal, reactor_thread):
    terminal, finished, pos = serial_terminal({"mode": "hang-up", "duration": 0})
    send_request(pos)
    assert finished.next().status == "hang-up"
    reactor_thread.call(terminal.update_settings, {"mode": "failure", "failure_type": "timeout"})
    send_request(pos)  # its ACKs are the first bytes back: nothing was written for the hang-up
    answer = take_answer(pos)
    assert answer[3:4] == b"7" and finished.next().reason == "08"


def test_unsupported_currency_and_unknown_type_are_refused(serial_terminal):
    terminal, finished, pos = serial_terminal({"currencies": "978", "duration": 0})
    send_request(pos, ConcertRequest(amount="00000100", currency="840"))
    assert take_answer(pos)[3:4] == b"7" and finished.next().reason == "13"
    send_request(pos, ConcertRequest(amount="00000100", transaction_type="4"))
    assert take_answer(pos)[3:4] == b"7" and finished.next().reason == "12"


# --- our POS side against a scripted terminal ---------------------------------------------------

@pytest.fixture
def fake_terminal_pty():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


FAST = concert.LinkTimings(ack=0.2, frame=0.2, eot=0.2, retries=1)


def test_a_terminal_that_never_acknowledges_means_nothing_sent(fake_terminal_pty):
    from caisse_ap import concert_pos

    master, path = fake_terminal_pty
    with pytest.raises(TerminalUnreachable, match="no answer to ENQ"):
        concert_pos.pay(client.make_request("1"), path, timings=FAST)
    written = b""
    while not written.endswith(EOT) and select.select([master], [], [], TIMEOUT)[0]:
        written += os.read(master, 100)  # a pty hands bytes over asynchronously
    assert written == ENQ + ENQ + EOT  # one retry, then the end


def test_a_frame_always_refused_means_unknown_outcome(fake_terminal_pty):
    import threading

    from caisse_ap import concert_pos

    master, path = fake_terminal_pty

    def terminal() -> None:  # ACK to ENQ, NAK to every frame, until the POS's EOT
        while True:
            data = os.read(master, 100)
            if ENQ in data:
                os.write(master, ACK)
            if concert.ETX in data:
                os.write(master, NAK)
            if EOT in data:
                return

    thread = threading.Thread(target=terminal, daemon=True)
    thread.start()
    result = concert_pos.pay(client.make_request("1"), path, timings=FAST)
    thread.join(TIMEOUT)
    assert result.outcome is Outcome.UNKNOWN and "NAK to the frame" in result.problem


@pytest.mark.slow
def test_the_library_pays_over_the_serial_link(server):
    """SerialPaymentTerminal: the library's actions and results, over Concert E+."""
    from caisse_ap import Outcome, SerialPaymentTerminal

    terminal = SerialPaymentTerminal(server.link, timeout=TIMEOUT)
    result = terminal.pay("7.50")
    assert result.outcome is Outcome.APPROVED and result.amount == Decimal("7.50")
    assert result.card_number and result.request_frame.startswith(STX)
    queue(server, "refused")
    refused = terminal.refund("2")
    assert refused.outcome is Outcome.DECLINED
    assert last_transaction(server)["protocol"] == "concert-e+"
    with pytest.raises(InvalidRequest):  # E+ has no receipt
        terminal.pay("1", receipt=True)
