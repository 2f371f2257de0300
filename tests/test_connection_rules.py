"""The terminal's connection rules (docs/protocol.md).

Where the sockets are the point (half-close, resets, floods, a POS that never
reads, one recv, many connections), a real terminal on 127.0.0.1 (port 0) in
the session's reactor thread, POS on blocking sockets: pauses between sends
only force separate TCP segments; nothing waits for readiness by sleeping:
reads block until the terminal writes, with conftest.TIMEOUT as the failure
bound. Where only the rule is, the same TerminalProtocol built by its factory
on Twisted's StringTransport, with a fake clock: each dataReceived is a segment.
"""

from __future__ import annotations

import socket
import struct

import pytest
from conftest import TIMEOUT
from server_process import ServerProcess
from test_server import Finished, written
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from caisse_ap import tags, tlv
from caisse_ap.messages import PaymentRequest, TerminalAnswer
from caisse_ap.terminal.behaviour import TerminalSettings
from caisse_ap.terminal.server import TerminalFactory
from caisse_ap.terminal.service import Terminal

DEBIT = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
MANDATORY_ONLY = "CZ0040300CJ012247300123456CA00201CB00512345CD0010CE003978"
# The frame Odoo's production module (OCA l10n_fr_pos_caisse_ap_ip, 19.0.1.0.0) sends for
# 0.05 EUR: CZ first, then CJ, CA, CE, CD and CB unpadded; it reads the answer with one
# recv(1024). (Its pip package needs Odoo itself, so its code cannot be the peer here.)
ODOO_FIVE_CENTS = "CZ0040300CJ012012345678901CA00201CE003978CD0010CB0015"


def with_ref(frame: str, ref: str) -> str:
    return frame + f"CF{len(ref):03d}{ref}"


def answer_of(connection) -> dict[str, str]:
    return dict(tlv.decode(connection.read_answer()))


def assert_fits_the_tag_table(answer: dict[str, str]) -> None:
    for tag, value in answer.items():
        assert tags.fits(tag, value), (tag, len(value))
    if "ZT" in answer:
        for tag, value in tlv.nested(answer["ZT"]):
            assert tags.fits(tag, value), (tag, len(value))


def on_a_clock(settings: dict, **options):
    """A terminal on a fake clock and one POS connection to it on a StringTransport, built
    by the terminal's factory as Twisted builds it: (terminal, clock, protocol, transport)."""
    clock = Clock()
    terminal = Terminal(TerminalSettings.from_dict(settings), reactor=clock, **options)
    protocol = TerminalFactory(terminal).buildProtocol(None)
    transport = StringTransportWithDisconnection()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return terminal, clock, protocol, transport


class Statuses(list):
    """Observer: the status of each transaction as it finishes."""

    def transaction_finished(self, txn) -> None:
        self.append(txn.status)


def answer_on_a_clock(frame: str, settings: dict | None = None) -> dict[str, str]:
    """The one answer to `frame` read in one segment by a new connection (on_a_clock)."""
    _, clock, protocol, transport = on_a_clock(settings or {"duration": 0})
    protocol.dataReceived(frame.encode("latin-1"))
    clock.advance(0)
    [answer] = written(transport)
    return answer


def only_connection(reactor_thread, terminal):
    [connection] = reactor_thread.call(lambda: list(terminal.connections))
    return connection


def wait_closed(reactor_thread, connection) -> None:
    """Until the terminal's side of `connection` is closed (TimeoutError after TIMEOUT)."""
    reactor = reactor_thread.reactor

    def closed():  # on the reactor thread
        if connection not in connection.terminal.connections:
            return defer.succeed(None)
        connection.notify_closed = defer.Deferred()
        return connection.notify_closed.addTimeout(TIMEOUT, reactor)

    reactor_thread.call(closed)


# --- rule 1: never more answers than requests -----------------------------------------


def test_rule1_bytes_after_an_answer_are_dropped_and_logged_never_answered(caplog):
    terminal, clock, protocol, transport = on_a_clock({"duration": 0})
    with caplog.at_level("INFO", logger="caisse_ap.terminal"):
        protocol.dataReceived(DEBIT.encode())
        clock.advance(0)
        assert [answer["AE"] for answer in written(transport)] == ["10"]
        protocol.dataReceived(b"CF003XYZ")  # a late optional field, after the answer
        clock.advance(0.05)
        protocol.dataReceived(b"\r\n\r\nCB00")  # stray line ends, a fragment
        clock.advance(0.05)
        protocol.dataReceived(("\r\n" + with_ref(DEBIT, "NEXT")).encode())
        clock.advance(0)
    _, answer = written(transport)
    assert (answer["AE"], answer["CF"]) == ("10", "NEXT")  # not an AF=09 for the fragments
    assert terminal.counters()["total"] == 2
    assert "bytes dropped, not answered (b'CF003XYZ')" in caplog.text


def test_rule1_a_late_field_before_the_answer_joins_the_request():
    _, clock, protocol, transport = on_a_clock({"duration": 0.5})
    protocol.dataReceived(MANDATORY_ONLY.encode())
    clock.advance(0.05)  # a separate segment
    protocol.dataReceived(b"CF003XYZCK003100")
    clock.advance(0.5)
    [answer] = written(transport)
    assert (answer["AE"], answer["CF"]) == ("10", "XYZ") and "ZT" in answer


# --- rule 2: an unfinished request is refused once, after the request timeout ---------


def test_rule2_an_unfinished_request_is_refused_once():
    terminal, clock, protocol, transport = on_a_clock({"duration": 0}, request_timeout=0.3)
    finished = Statuses()
    terminal.observers.append(finished)
    protocol.dataReceived(DEBIT[:-3].encode())
    clock.advance(0.299)
    assert transport.value() == b""  # not before the time-out
    clock.advance(0.001)
    [answer] = written(transport)
    assert (answer["AE"], answer["AF"], answer["CJ"]) == ("01", "09", "012345678901")
    assert finished == ["error"]
    protocol.dataReceived(DEBIT[-3:].encode())  # its end, too late: dropped, not answered
    protocol.dataReceived(with_ref(DEBIT, "NEXT").encode())
    clock.advance(0)
    assert [answer.get("CF") for answer in written(transport)] == [None, "NEXT"]
    assert terminal.counters()["error"] == 1


def test_rule2_the_request_timeout_option_takes_decimals():
    from caisse_ap.terminal import cli

    assert cli.build_parser([]).parse_args(["--request-timeout", "0.25"]).request_timeout == 0.25
    assert cli.build_parser([]).parse_args([]).request_timeout == 2.0


def test_rule2_silence_counts_from_the_last_byte():
    _, clock, protocol, transport = on_a_clock({"duration": 0}, request_timeout=1.0)
    frame = with_ref(DEBIT, "SLOW").encode()
    started = clock.seconds()
    for start in range(0, len(frame), 16):  # 5 pieces, 0.3 s apart: 1.2 s in all
        if start:
            clock.advance(0.3)
        assert transport.value() == b""  # not refused while the POS keeps sending
        protocol.dataReceived(frame[start:start + 16])
    clock.advance(0)
    [answer] = written(transport)
    assert clock.seconds() - started > 1.0  # longer than the time-out, never silent as long
    assert (answer["AE"], answer["CF"]) == ("10", "SLOW")


# --- rule 3: half-close -----------------------------------------------------------------


@pytest.mark.parametrize("duration", [0, 0.3])  # answered at once, or after the half-close
def test_rule3_a_pos_that_half_closes_gets_its_answer_then_the_close(
        start_terminal, pos, reactor_thread, duration):
    terminal = start_terminal({"duration": duration})
    finished = Finished(reactor_thread, terminal)
    connection = pos(terminal)
    connection.send(with_ref(DEBIT, "HALF"))
    connection.sock.shutdown(socket.SHUT_WR)  # as nc -N or Java's shutdownOutput()
    answer = answer_of(connection)
    assert (answer["AE"], answer["CF"]) == ("10", "HALF")
    assert connection.closed_by_peer()
    assert finished.next() == "approved"


def test_rule3_a_pos_gone_before_its_answer_is_dropped_not_approved(
        start_terminal, pos, reactor_thread):
    terminal = start_terminal({"duration": 30})
    finished = Finished(reactor_thread, terminal)
    connection = pos(terminal)
    connection.send(DEBIT)
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()  # a reset: the POS is gone
    assert finished.next() == "dropped"


# --- rule 4: resynchronisation ------------------------------------------------------------


def test_rule4_after_a_framing_error_the_requests_in_the_same_read_are_answered():
    _, clock, protocol, transport = on_a_clock({"duration": 0})
    broken = DEBIT[:9] + "cj" + DEBIT[11:]
    protocol.dataReceived(
        (broken + with_ref(DEBIT, "A") + "\r\n@@@" + with_ref(DEBIT, "B") + "\r\n").encode())
    clock.advance(0)
    answers = written(transport)
    assert [(a["AE"], a.get("AF"), a.get("CF")) for a in answers] == [
        ("01", "09", None), ("10", None, "A"), ("10", None, "B")]


def test_rule4_a_pipelined_stream_with_corrupt_requests_keeps_its_sync():
    _, clock, protocol, transport = on_a_clock({"duration": 0})
    frames = []
    for n in range(300):
        frame = with_ref(DEBIT, f"R{n}")
        if n % 10 == 5:
            frame = frame[:30] + "\x00" + frame[31:]  # a byte that is not printable ASCII
        frames.append(frame)
    protocol.dataReceived("".join(frames).encode())
    clock.advance(0)
    answers = written(transport)
    expected = [("01", None) if n % 10 == 5 else ("10", f"R{n}") for n in range(300)]
    assert [(a["AE"], a.get("CF")) for a in answers] == expected


def test_rule4_a_corrupt_request_sent_byte_by_byte_gets_one_answer():
    _, clock, protocol, transport = on_a_clock({"duration": 0})
    for byte in (DEBIT[:20] + "\x7f" + DEBIT[21:]).encode():
        protocol.dataReceived(bytes([byte]))  # one segment each
    clock.advance(0)
    [answer] = written(transport)
    assert answer["AF"] == "09"
    # The next answer is this request's: no AF=09 per byte came in between.
    protocol.dataReceived(with_ref(DEBIT, "NEXT").encode())
    clock.advance(0)
    assert [answer.get("CF") for answer in written(transport)] == [None, "NEXT"]


# --- rule 5: junk floods, oversized messages ----------------------------------------------


def test_rule5_a_junk_flood_gets_one_answer_then_the_close(start_terminal, pos):
    terminal = start_terminal({"duration": 0})
    connection = pos(terminal)
    connection.send(b"x" * (70 * 1024))
    assert answer_of(connection)["AF"] == "09"
    assert connection.closed_by_peer()
    assert dict(pos(terminal).exchange(DEBIT))["AE"] == "10"


# --- rule 6: backpressure -------------------------------------------------------------------


def test_rule6_pipelined_requests_are_answered_in_order_16_at_most_waiting():
    _, clock, protocol, transport = on_a_clock({"duration": 0.02})
    protocol.dataReceived("".join(with_ref(DEBIT, f"P{n}") for n in range(60)).encode())
    clock.advance(0.02)
    [first] = written(transport)
    waiting = protocol.connection.waiting
    assert waiting <= 16
    clock.pump([0.02] * 60)
    answers = written(transport)
    assert [a["CF"] for a in answers] == [f"P{n}" for n in range(60)]


def test_rule6_a_pos_that_never_reads_is_aborted_at_the_idle_timeout(
        start_terminal, reactor_thread):
    terminal = start_terminal({"duration": 0}, idle_timeout=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers pile up soon
    sock.connect(terminal.address)
    sock.settimeout(0.5)
    request = with_ref(DEBIT, "NEVER READ").encode() + b"CK003100"  # with a receipt: big answers
    sent = 0
    try:
        while sent < 20_000_000:
            sent += sock.send(request * 100)
    except TimeoutError:
        pass  # the terminal stopped reading: answers pile up unsent
    server_side = only_connection(reactor_thread, terminal)
    assert reactor_thread.call(lambda: server_side.connection.answers_blocked)
    wait_closed(reactor_thread, server_side)  # aborted by the idle time-out
    assert reactor_thread.call(lambda: len(terminal.connections)) == 0
    sock.close()


# --- rule 7: tolerant input, strict output -------------------------------------------------


def test_rule7_odoo_pays_five_cents(start_terminal):
    terminal = start_terminal({"duration": 0})
    with socket.create_connection(terminal.address, timeout=TIMEOUT) as sock:
        sock.send(ODOO_FIVE_CENTS.encode("ascii"))
        data = sock.recv(1024)  # one read, as Odoo does
    answer = TerminalAnswer.parse(data)
    assert answer.value("AE") == "10" and answer.amount == 5
    assert answer.echo_mismatches(PaymentRequest.parse(ODOO_FIVE_CENTS)) == []
    # Odoo compares CA, CD and CE exactly, and CB with its leading zeros stripped.
    assert [answer.value(tag) for tag in ("CA", "CD", "CE")] == ["01", "0", "978"]
    assert answer.value("CB").lstrip("0") == "5"


def test_rule7_tolerant_amounts_and_references():
    padded = DEBIT.replace("CB00511245", "CB012000000011245")
    assert answer_on_a_clock(padded)["AE"] == "10"
    long_reference = "R" * 99
    answer = answer_on_a_clock(with_ref(DEBIT, long_reference))
    assert (answer["AE"], answer["CF"]) == ("10", long_reference)


def test_rule7_a_field_outside_the_table_is_refused_echoing_only_valid_fields():
    long_version = DEBIT.replace("CZ0040300", "CZ033" + "0" * 33)
    answer = answer_on_a_clock(long_version)
    assert (answer["AE"], answer["AF"], answer["CZ"]) == ("01", "09", "0300")
    assert_fits_the_tag_table(answer)
    wide_partial = DEBIT + "BF999" + "1" * 999
    answer = answer_on_a_clock(wide_partial)
    assert (answer["AE"], answer["AF"], answer["CB"]) == ("01", "09", "11245")
    assert "BF" not in answer
    assert_fits_the_tag_table(answer)


# PayXpert's documented request: a one-character register number (CA0011).
PAYXPERT_DEBIT = "CZ0040320CJ012323540032810CA0011CB0042500CD0010CE003978CK003100"


@pytest.mark.parametrize("profile", ["standard", "payxpert"])
def test_rule7_a_one_character_register_is_accepted_and_echoed_as_received(
        start_terminal, profile):
    terminal = start_terminal({"profile": profile, "duration": 0})
    with socket.create_connection(terminal.address, timeout=TIMEOUT) as sock:
        sock.sendall(PAYXPERT_DEBIT.encode("ascii"))
        data = sock.recv(4096)
    answer = TerminalAnswer.parse(data)
    assert (answer.value("AE"), answer.value("CA")) == ("10", "1")
    assert answer.echo_mismatches(PaymentRequest.parse(PAYXPERT_DEBIT)) == []
    assert "CAISSE 1" in (answer.receipt or "")
    assert_fits_the_tag_table(dict(tlv.decode(data)))


def test_rule7_a_register_of_three_characters_is_still_refused():
    answer = answer_on_a_clock(DEBIT.replace("CA00201", "CA003001"))
    assert (answer["AE"], answer["AF"]) == ("01", "09")
    assert "CA" not in answer  # only valid fields are echoed
    assert_fits_the_tag_table(answer)


# --- rule 8: receipts never raise ------------------------------------------------------------


def test_rule8_a_request_with_a_receipt_and_a_huge_field_is_answered():
    _, clock, protocol, transport = on_a_clock({"duration": 1})
    frame = DEBIT.replace("CA00201", "CA600" + "7" * 600) + "CK003100"
    protocol.dataReceived(frame.encode())
    clock.advance(0)
    [answer] = written(transport)  # answered, not left pending
    assert (answer["AE"], answer["AF"]) == ("01", "09")
    assert_fits_the_tag_table(answer)
    protocol.dataReceived((with_ref(DEBIT, "Z" * 99) + "CK003100").encode())
    clock.advance(1)
    _, answer = written(transport)
    assert answer["AE"] == "10" and "ZT" in answer
    assert_fits_the_tag_table(answer)


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow  # the server in a process of its own, to measure its memory
def test_rule6_memory_stays_bounded_for_3_mb_pipelined_never_read():
    server = ServerProcess("-d", "3", "--no-web")
    try:
        with socket.create_connection(server.address, timeout=TIMEOUT) as warm_up:
            warm_up.sendall(DEBIT.encode())  # imports and caches in place before measuring
        before = resident_mib(server.process.pid)
        stream = with_ref(DEBIT, "PIPELINED").encode() * (3_000_000 // 80)
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.settimeout(1.0)
            view, sent = memoryview(stream), 0
            try:
                while sent < len(stream):
                    sent += sock.send(view[sent:sent + 65536])
            except TimeoutError:
                pass  # the terminal stopped reading: the rest stays with the POS
            grown = resident_mib(server.process.pid) - before
        print(f"3 MB pipelined, never read, -d 3: {sent} bytes taken, RSS grew {grown:.1f} MiB")
        assert grown <= 16  # it was 74 MiB when every byte was read and parsed at once
    finally:
        server.stop()
