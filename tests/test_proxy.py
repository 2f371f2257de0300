"""The proxy between our client and a terminal upstream: real sockets, real reactor.

The upstream is our own simulated terminal on another port, or `FakeTerminal`,
a terminal of the test's own that answers with the pieces a test gives it:
padded, split, with unknown tags or a full card number.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from conftest import TIMEOUT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor

from caisse_ap import client, tlv
from caisse_ap.messages import PaymentRequest, has_mandatory_fields
from caisse_ap.payment import Outcome
from caisse_ap.terminal import profiles, proxy, taps
from caisse_ap.terminal.journal import Journal
from caisse_ap.terminal.outcomes import OutcomeQueue
from caisse_ap.terminal.web.transactions import transaction_json

DEBIT = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
CLEAN_ANSWER = (b"CZ0040300CJ012012345678901AE00210CA00201CB00511245CD0010CE003978"
                b"CC003001CI0011AC006123456AA016497010######0123AB0042812CG006424242")
FULL_PAN = "4970101234560123"


class FakeTerminal(protocol.Factory):
    """A terminal of the test's own: reads whole requests, answers each with `pieces(fields)`,
    one write per piece. `received`: every byte it got; `held`: pieces kept back until
    `release()`, when the answer says so."""

    noisy = False

    def __init__(self, pieces: Callable[[list[tlv.Field]], list[bytes]], hold_after: int = 0):
        self.pieces = pieces
        self.hold_after = hold_after  # pieces written at once; the rest wait for release()
        self.received = bytearray()
        self.requests: list[list[tlv.Field]] = []
        self.held: list[bytes] = []
        self.connection: Any = None
        self.first_request: defer.Deferred = defer.Deferred()  # fires when one came

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        fake = self

        class Connection(protocol.Protocol):
            def connectionMade(self) -> None:
                self.transport.setTcpNoDelay(True)
                self.decoder = tlv.FrameDecoder(has_mandatory_fields)
                fake.connection = self

            def dataReceived(self, data: bytes) -> None:
                fake.received += data
                self.decoder.feed(data)
                while (fields := self.decoder.next_message()) is not None:
                    fake.requests.append(fields)
                    if not fake.first_request.called:
                        fake.first_request.callback(fields)
                    pieces = fake.pieces(fields)
                    now = pieces if not fake.hold_after else pieces[:fake.hold_after]
                    fake.held = [] if not fake.hold_after else pieces[fake.hold_after:]
                    for piece in now:
                        self.transport.write(piece)

        return Connection()

    def release(self) -> None:
        for piece in self.held:
            self.connection.transport.write(piece)
        self.held = []


@pytest.fixture
def upstream(reactor_thread):
    """upstream(factory) -> (host, port) of it listening on 127.0.0.1."""
    ports = []

    def listen(factory: protocol.Factory) -> tuple[str, int]:
        port = reactor_thread.call(reactor_thread.reactor.listenTCP, 0, factory,
                                   interface="127.0.0.1")
        ports.append(port)
        return "127.0.0.1", port.getHost().port

    yield listen
    for port in ports:
        reactor_thread.call(port.stopListening)


@pytest.fixture
def start_proxy(start_terminal):
    """start_proxy((host, port), queue=False, settings=None) -> the proxy's Terminal, expecting
    a terminal of those settings (its finished transactions: `seen`)."""

    def start(address: tuple[str, int], queue: bool = False,
              settings: dict[str, Any] | None = None) -> Any:
        terminal = start_terminal(
            settings,
            factory=lambda t: proxy.ProxyFactory(t, proxy.TerminalUpstream(*address)))
        terminal.seen = Seen()
        terminal.observers.append(terminal.seen)
        if queue:
            terminal.queue = OutcomeQueue()
            terminal.outcome_sources.insert(0, terminal.queue)
        return terminal

    return start


class Seen:
    """Observer: every finished transaction's JSON, as the journal and console get it."""

    def __init__(self) -> None:
        self.finished: list[dict[str, Any]] = []
        self._waiting: list[tuple[int, defer.Deferred]] = []

    def transaction_finished(self, txn: Any) -> None:
        self.finished.append(transaction_json(txn))
        for waiting in [w for w in self._waiting if w[0] <= len(self.finished)]:
            self._waiting.remove(waiting)
            waiting[1].callback(self.finished)

    def wait(self, count: int) -> defer.Deferred:
        """Fires with the finished transactions once there are `count` (on the reactor)."""
        if len(self.finished) >= count:
            return defer.succeed(self.finished)
        waiting: defer.Deferred = defer.Deferred()
        self._waiting.append((count, waiting))
        return waiting.addTimeout(TIMEOUT, reactor)


def raw_exchange(address: tuple[str, int], pieces: list[bytes], answer_size: int,
                 after_first: Callable[[], None] | None = None) -> list[bytes]:
    """Send the request in `pieces`; read `answer_size` bytes (calling `after_first` once
    the first bytes came); what each recv gave."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
        reads: list[bytes] = []
        while sum(map(len, reads)) < answer_size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reads.append(chunk)
            if after_first is not None and len(reads) == 1:
                after_first()
        return reads


def codes(transaction: dict[str, Any]) -> list[str]:
    return [d["code"] for d in transaction["deviations"]]


# --- Passing through --------------------------------------------------------------------


BUILT_IN = list(profiles.builtins())


@pytest.mark.parametrize("upstream_settings, expected_settings, expected", [
    *[({"profile": name}, {"profile": name}, set()) for name in BUILT_IN],
    ({"profile": "ingenico"}, {}, {"amount-padded", "version-changed"}),
    ({"mode": "failure", "failure_type": "refused"}, {}, set()),
    ({"payment_type": "amexcontactless", "seller_contract": "7654321"}, {}, set()),
    ({"profile": "payxpert"}, {}, {"field-order"}),
])
def test_our_client_gets_the_upstreams_bytes(reactor_thread, start_terminal, start_proxy,
                                            upstream_settings, expected_settings, expected):
    """Under each built-in profile; deviations against the profile the proxy expects."""
    real = start_terminal({"duration": 0, **upstream_settings}, seed="proxy")
    sent: list[bytes] = []
    real.observers.append(type("Sent", (), {"transaction_finished":
                                            lambda self, txn: sent.append(txn.sent)})())
    middle = start_proxy(real.address, settings=expected_settings)
    request = PaymentRequest(1250, reference="REF-1", receipt=True, partial=True)
    result = client.pay(request, *middle.address, timeout=TIMEOUT)
    assert result.answer_frame == sent[0]
    assert result.outcome in (Outcome.APPROVED, Outcome.DECLINED)
    (seen,) = wait_finished(reactor_thread, middle)
    assert seen["mode"] == "proxied" and seen["decided_by"] == "terminal"
    assert seen["answer_frame"].encode() == sent[0]
    assert seen["request_frame"].encode() == request.encode()
    assert set(codes(seen)) == expected


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_cuts=st.lists(st.integers(1, len(DEBIT) - 1), max_size=4, unique=True),
       answer_cuts=st.lists(st.integers(1, len(CLEAN_ANSWER) - 1), max_size=4, unique=True))
def test_random_segmentations_pass_unchanged(upstream, start_proxy, request_cuts, answer_cuts):
    fake = FakeTerminal(lambda fields: cut(CLEAN_ANSWER, answer_cuts))
    middle = start_proxy(upstream(fake))
    reads = raw_exchange(middle.address, cut(DEBIT, request_cuts), len(CLEAN_ANSWER))
    assert b"".join(reads) == CLEAN_ANSWER
    assert bytes(fake.received) == DEBIT


def cut(data: bytes, places: list[int]) -> list[bytes]:
    bounds = [0, *sorted(places), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def test_an_answer_split_by_the_terminal_reaches_the_pos_split(reactor_thread, upstream,
                                                               start_proxy):
    first, rest = CLEAN_ANSWER[:30], CLEAN_ANSWER[30:]
    fake = FakeTerminal(lambda fields: [first, rest], hold_after=1)
    middle = start_proxy(upstream(fake))
    reads = raw_exchange(middle.address, [DEBIT], len(CLEAN_ANSWER),
                         after_first=lambda: reactor_thread.call(fake.release))
    assert reads[0] == first and b"".join(reads[1:]) == rest
    (seen,) = wait_finished(reactor_thread, middle)
    assert codes(seen) == ["answer-split"]


def wait_finished(reactor_thread, terminal, count: int = 1) -> list[dict[str, Any]]:
    """The finished transactions, once `count` are (an answer is finished after its
    trailing grace, a little after the POS has it)."""
    return reactor_thread.call(terminal.seen.wait, count)


# --- Deviations -------------------------------------------------------------------------


def answer_to(fields: list[tlv.Field], **changes: str | None) -> bytes:
    """A standard approval of `fields`, with `changes` (None drops a tag, a new tag is added)."""
    values = dict(fields)
    answer = {"CZ": values["CZ"], "CJ": values["CJ"], "AE": "10", "CA": values["CA"],
              "CB": values["CB"], "CD": values["CD"], "CE": values["CE"], "CC": "001",
              "CI": "1", "AC": "123456", "AA": "497010######0123", "AB": "2812",
              "CG": "424242"}
    for tag, value in changes.items():
        if value is None:
            del answer[tag]
        else:
            answer[tag] = value
    return tlv.encode(list(answer.items()))


@pytest.mark.parametrize("changes, expected", [
    ({}, []),
    ({"CB": "000000011245"}, ["amount-padded"]),
    ({"CA": None}, ["echo-missing"]),
    ({"ZX": "1"}, ["unknown-tag"]),
    ({"CA": "02"}, ["echo-changed"]),
])
def test_each_deviation_is_flagged_once(reactor_thread, upstream, start_proxy, changes,
                                        expected):
    fake = FakeTerminal(lambda fields: [answer_to(fields, **changes)])
    middle = start_proxy(upstream(fake))
    expected_answer = answer_to(tlv.decode(DEBIT), **changes)
    reads = raw_exchange(middle.address, [DEBIT], len(expected_answer))
    assert b"".join(reads) == expected_answer
    (seen,) = wait_finished(reactor_thread, middle)
    assert codes(seen) == expected


def test_fields_after_the_answer_are_flagged(reactor_thread, upstream, start_proxy):
    answer = answer_to(tlv.decode(DEBIT)) + b"\r\nXX"
    fake = FakeTerminal(lambda fields: [answer])
    middle = start_proxy(upstream(fake))
    assert b"".join(raw_exchange(middle.address, [DEBIT], len(answer))) == answer
    (seen,) = wait_finished(reactor_thread, middle)
    assert codes(seen) == ["after-answer"]


# --- Fault injection ----------------------------------------------------------------------


def test_an_injected_refusal_never_reaches_the_terminal(reactor_thread, start_terminal,
                                                        start_proxy):
    real = start_terminal({"duration": 0})
    # An outcome of the queue answers after the settings' duration: 0, not the default 3 s.
    middle = start_proxy(real.address, queue=True, settings={"duration": 0})
    middle.queue.extend([proxy_outcome("refused")])
    refused = client.pay(PaymentRequest(1000), *middle.address, timeout=TIMEOUT)
    assert refused.outcome is Outcome.DECLINED and refused.answer.reason.code == "04"
    assert real.counts["total"] == 0  # the upstream's journal is unchanged
    assert middle.seen.finished[0]["mode"] == "simulated"
    assert middle.seen.finished[0]["decided_by"] == "queue"
    approved = client.pay(PaymentRequest(1000), *middle.address, timeout=TIMEOUT)
    assert approved.outcome is Outcome.APPROVED
    assert real.counts["total"] == 1
    assert wait_finished(reactor_thread, middle, 2)[1]["mode"] == "proxied"


def test_injected_delay_and_hang_up(start_terminal, start_proxy):
    real = start_terminal({"duration": 0})
    middle = start_proxy(real.address, queue=True, settings={"duration": 0})
    middle.queue.extend([proxy_outcome("abandon", delay=0.3), proxy_outcome("hang-up")])
    late = client.pay(PaymentRequest(1000), *middle.address, timeout=TIMEOUT)
    assert late.answer.reason.code == "11" and late.elapsed_s >= 0.3
    hung = client.pay(PaymentRequest(1000), *middle.address, timeout=TIMEOUT)
    assert hung.outcome is Outcome.UNKNOWN and "closed" in hung.problem
    assert real.counts["total"] == 0
    assert [t["status"] for t in middle.seen.finished] == ["declined", "hang-up"]


def proxy_outcome(name: str, **options: Any) -> Any:
    from caisse_ap.terminal.behaviour import OutcomeSpec

    return OutcomeSpec.parse(name, options.get("delay"))


# --- The terminal out of reach, masking ---------------------------------------------------


def test_an_unreachable_terminal_closes_the_pos_connection(reactor_thread, start_proxy):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    middle = start_proxy(address)
    result = client.pay(PaymentRequest(1000), *middle.address, timeout=TIMEOUT)
    assert result.outcome is Outcome.UNKNOWN and result.answer is None
    (seen,) = wait_finished(reactor_thread, middle)
    assert seen["status"] == "hang-up"
    assert codes(seen) == ["terminal-unreachable"]
    assert "refused" in seen["deviations"][0]["detail"].lower()
    # The console's words: French, the terminal's address kept.
    assert seen["deviations"][0]["detail_fr"] == (
        f"127.0.0.1:{address[1]} : connexion refusée (rien n'écoute à cette adresse)")


def test_each_deviation_has_french_words_for_the_console():
    from caisse_ap.deviations import Exchange, Expectations, find_deviations

    asked = [("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"), ("CB", "1000"),
             ("CD", "0"), ("CE", "978")]
    answered = [("CZ", "0301"), ("CJ", "012345678901"), ("AE", "10"), ("CA", "02"),
                ("CB", "0000001000"), ("CD", "0"), ("CE", "978")]
    found = {d.code: d.to_json() for d in find_deviations(Exchange(asked, answered),
                                                          Expectations())}
    french = {code: found[code]["detail_fr"] for code in found}
    assert french == {
        "amount-padded": "CB=0000001000 pour 1000 envoyé",
        "echo-changed": "CA='02' pour '01' envoyé",
        "version-changed": "CZ=0301 au lieu de 0300",
    }
    assert found["version-changed"]["detail"] == "CZ=0301, expected 0300"  # for the log


def test_a_full_card_number_is_masked_everywhere_but_on_the_wire(reactor_thread, upstream,
                                                                 start_proxy, caplog,
                                                                 tmp_path):
    caplog.set_level(logging.DEBUG)
    fake = FakeTerminal(lambda fields: [answer_to(fields, AA=FULL_PAN)])
    middle = start_proxy(upstream(fake))
    journal = Journal(tmp_path / "journal.sqlite")
    middle.observers.insert(0, journal)
    recording = tmp_path / "session.jsonl"
    recorder = taps.start_recording(middle, recording, middle.listening_port.factory.logs,
                                    {"mode": "proxied"})
    result = client.pay(PaymentRequest(11245), *middle.address, timeout=TIMEOUT)
    assert FULL_PAN.encode() in result.answer_frame  # the POS gets what the terminal sent
    (seen,) = wait_finished(reactor_thread, middle)  # what the console and the API show
    recorder.record.close()
    journal.close()
    assert dict(seen["answer"])["AA"] == "497010######0123"
    assert "497010######0123" in seen["answer_frame"]
    written = {"console": str(seen), "log": caplog.text, "record": recording.read_text(),
               "journal": (tmp_path / "journal.sqlite").read_bytes().decode("latin-1")}
    for where, text in written.items():
        assert FULL_PAN not in text, where
    assert "497010######0123" in written["record"]


# The POS's close comes after the default grace: sooner, the proxy, which notes the
# answer delivered only once its own read ends when the queue delays it, would take the
# next identical request on another connection for a resend.
@pytest.mark.trailing_grace
def test_the_terminals_answer_delayed_or_cut_by_the_queue(reactor_thread, upstream,
                                                          start_proxy):
    answer = answer_to(tlv.decode(DEBIT))
    fake = FakeTerminal(lambda fields: [answer])
    middle = start_proxy(upstream(fake), queue=True)
    middle.queue.extend([proxy_outcome("terminal", delay=0.3),
                         proxy_outcome("terminal-split", delay=0.2)])
    late = client.pay(PaymentRequest(11245), *middle.address, timeout=TIMEOUT)
    assert late.answer_frame == answer and late.elapsed_s >= 0.3
    reads = raw_exchange(middle.address, [DEBIT], len(answer))
    assert b"".join(reads) == answer and len(reads) == 3  # 0.2 s apart: three reads
    assert len(fake.requests) == 2  # both reached the terminal
    finished = wait_finished(reactor_thread, middle, 2)
    assert [t["mode"] for t in finished] == ["proxied", "proxied"]
    assert [codes(t) for t in finished] == [[], []]  # the terminal itself answered cleanly


def test_a_pos_sending_again_what_got_no_answer_is_flagged(reactor_thread, upstream,
                                                           start_proxy):
    fake = FakeTerminal(lambda fields: [] if len(fake.requests) == 1 else [answer_to(fields)])
    middle = start_proxy(upstream(fake))
    with socket.create_connection(middle.address, timeout=TIMEOUT) as sock:
        sock.sendall(DEBIT)
        reactor_thread.call(lambda: fake.first_request)  # the terminal has it, and is silent
    # The POS gave up and closed; it sends the same payment again.
    expected = answer_to(tlv.decode(DEBIT))
    assert b"".join(raw_exchange(middle.address, [DEBIT], len(expected))) == expected
    gave_up, again = wait_finished(reactor_thread, middle, 2)
    assert gave_up["status"] == "dropped" and codes(gave_up) == []
    assert codes(again) == ["pos-resend"]


def test_a_malformed_request_goes_through_and_the_terminal_answers_it(reactor_thread,
                                                                      start_terminal,
                                                                      start_proxy):
    real = start_terminal({"duration": 0})
    middle = start_proxy(real.address)
    broken = b"CZ0040300CJ01x012345678901CA00201"
    with socket.create_connection(real.address, timeout=TIMEOUT) as direct:
        direct.sendall(broken)
        expected = direct.recv(65536)
    assert b"AF00209" in expected
    reads = raw_exchange(middle.address, [broken], len(expected))
    assert b"".join(reads) == expected
    (seen,) = wait_finished(reactor_thread, middle)
    assert seen["status"] == "declined" and seen["reason"]["code"] == "09"
    assert codes(seen) == ["unreadable-request"]


def test_a_pos_that_shuts_its_side_still_gets_the_answer(reactor_thread, start_terminal,
                                                         start_proxy):
    real = start_terminal({"duration": 0})
    middle = start_proxy(real.address)
    with socket.create_connection(middle.address, timeout=TIMEOUT) as sock:
        sock.sendall(DEBIT)
        sock.shutdown(socket.SHUT_WR)  # as some POS do once their request is sent
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert tlv.decode(received)[2] == ("AE", "10")
    (seen,) = wait_finished(reactor_thread, middle)
    assert seen["status"] == "approved" and seen["answer_frame"].encode() == received


# --- What waits for the terminal is bounded ----------------------------------------------


class _HoldingProxy:
    """Stands for the ProxyProtocol: notes when the link asks it to stop reading the POS."""

    def __init__(self) -> None:
        self.held: list[bool] = []

    def hold_reading(self, held: bool) -> None:
        self.held.append(held)


def test_the_link_stops_the_pos_past_64_kib_for_the_terminal_and_while_it_does_not_read():
    from twisted.internet.testing import StringTransport

    holding = _HoldingProxy()
    link = proxy._TerminalLink(holding)  # type: ignore[arg-type]
    link.send(b"x" * proxy.MAX_PENDING)  # the terminal is not connected yet
    assert holding.held == []
    link.send(b"y")
    assert holding.held == [True]  # past the bound: the POS is no longer read
    transport = StringTransport()
    transport.setTcpNoDelay = lambda enabled: None
    link.makeConnection(transport)
    assert transport.value() == b"x" * proxy.MAX_PENDING + b"y"  # passed on, in order
    assert holding.held == [True, False] and transport.producer is link
    link.pauseProducing()  # Twisted: the terminal does not read what is written
    link.resumeProducing()
    assert holding.held == [True, False, True, False]
    link.hold_reading(True)  # the POS reads no answer: the terminal is not read either
    assert transport.producerState == "paused"
    link.hold_reading(False)
    assert transport.producerState == "producing"


def test_the_same_payment_twice_on_two_connections_is_no_resend(reactor_thread, upstream,
                                                                 start_proxy):
    """Two customers paying the same amount: the first answer was delivered, the second
    payment comes on a new connection while the first one is still open (its answer still
    in the trailing grace for optional fields). Not a resend."""
    fake = FakeTerminal(lambda fields: [answer_to(fields)])
    middle = start_proxy(upstream(fake))
    expected = answer_to(tlv.decode(DEBIT))
    with socket.create_connection(middle.address, timeout=TIMEOUT) as first:
        first.sendall(DEBIT)
        received = b""
        while len(received) < len(expected):
            received += first.recv(65536)
        assert b"".join(raw_exchange(middle.address, [DEBIT], len(expected))) == expected
    finished = wait_finished(reactor_thread, middle, 2)
    assert [t["status"] for t in finished] == ["approved", "approved"]
    assert [codes(t) for t in finished] == [[], []]


def test_the_same_request_again_on_the_same_connection_is_a_resend(reactor_thread, upstream,
                                                                  start_proxy):
    fake = FakeTerminal(lambda fields: [answer_to(fields)])
    middle = start_proxy(upstream(fake))
    expected = answer_to(tlv.decode(DEBIT))
    with socket.create_connection(middle.address, timeout=TIMEOUT) as sock:
        for count in (1, 2):
            sock.sendall(DEBIT)
            received = b""
            while len(received) < len(expected):
                received += sock.recv(65536)
            wait_finished(reactor_thread, middle, count)  # the first exchange is over
    first, again = wait_finished(reactor_thread, middle, 2)
    assert codes(first) == [] and codes(again) == ["pos-resend"]
