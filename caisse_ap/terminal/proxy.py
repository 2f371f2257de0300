"""Between a real POS and a real terminal, or a recording: the proxy's Twisted edge.

`ProxyFactory` listens in the simulated terminal's place
(server.start_terminal's `factory`). Each POS connection gets a link to the
upstream: a TCP connection to the real terminal (`TerminalUpstream`,
--proxy) or a recording that answers in its place (`RecordingUpstream`,
--replay). Bytes pass unchanged, segment by segment, both ways. The POS's
requests are read with the core's TerminalConnection, the answers with its
PosConnection; each exchange becomes a Transaction of the Terminal, so the
journal, the console and --record see it, with the deviations the core finds
in it (deviations.py). Card numbers are masked before anything is written
down; the POS gets the terminal's bytes as they came.

The outcome queue (POST /api/next) answers in the terminal's place: while it
holds an outcome, the POS's next request is held back until it is whole,
then answered by the Terminal as a simulated one, and never reaches the
terminal; except the outcomes "terminal" (the terminal's answer, `delay`
seconds late) and "terminal-split" (its answer cut into segments). A
request a recording has no answer for is answered here too, flagged
`replay-unmatched`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import assert_never

from twisted.internet import endpoints, interfaces, protocol, tcp
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import masking
from ..connection import (
    AnswerReceived,
    AnswerUnreadable,
    BytesDropped,
    CloseConnection,
    ConnectionClosed,
    MalformedRequest,
    NeedData,
    PosConnection,
    PosState,
    RequestExtended,
    RequestReceived,
    TerminalEvent,
)
from ..deviations import (
    STANDARD_ORDER,
    Deviation,
    Exchange,
    Expectations,
    ResendWatch,
    find_deviations,
)
from ..messages import Outcome, TerminalAnswer
from ..tlv import Field, FrameError
from . import behaviour
from .behaviour import OutcomeSpec, TerminalSettings
from .edge import PosEdge
from .outcomes import OutcomeQueue
from .recording import POS, TERMINAL, Recording, ReplayBook, ReplayedAnswer
from .server import TerminalFactory, peer_of
from .service import Terminal, Transaction
from .taps import SegmentLog

log = logging.getLogger("caisse_ap.terminal")

CONNECT_TIMEOUT = 10.0  # seconds to reach the terminal before the POS connection is closed
# Bytes of the POS passed on before the terminal is connected, past which the POS is no
# longer read (once connected, Twisted's own 64 KiB buffer bounds them the same way).
MAX_PENDING = 64 * 1024
SPLIT_PIECES = 3  # segments of an answer cut by the queue's "terminal-split"
SPLIT_GAP = 0.05  # seconds between them, unless the outcome gives a delay
STATUS_BY_OUTCOME = {Outcome.APPROVED: "approved", Outcome.DECLINED: "declined",
                     Outcome.ACCEPTED: "accepted", Outcome.UNREADABLE: "error"}


@dataclass
class _Forwarded:
    """A request passed on, waiting for its answer."""

    transaction: Transaction
    reader: PosConnection
    resent: bool = False
    reads: int = 0  # how many reads carried the answer so far
    timer: IDelayedCall | None = None  # the answer reader's deadline (its trailing grace)
    problems: dict[str, str] = field(default_factory=dict)
    fault: OutcomeSpec | None = None  # the queue's "terminal" or "terminal-split"
    withheld: bytes = b""  # the answer kept back to be cut ("terminal-split")


class ProxyProtocol(PosEdge):
    """One POS connection and its link to the upstream, on the edge the simulated
    terminal uses (edge.py): its bounds toward a POS that floods or does not read, its
    timers and its close (a POS may shut its sending side and still read the answer:
    that passes through too). Reading from the POS stops too while the terminal takes
    no more of what is passed on."""

    link: _TerminalLink | _RecordingLink  # to the upstream, made by connectionMade

    def __init__(self, factory: ProxyFactory, peer: str):
        super().__init__(factory.terminal, factory.idle_watch, peer)
        self.factory = factory
        self.segments = SegmentLog(self.reactor)
        self.requests = self.connection  # what reads the POS's requests
        self.request_started: float | None = None  # first byte of the request being read
        self.held: list[bytes] | None = None  # its bytes, while the queue may answer it
        self.forwarded: _Forwarded | None = None
        self.local: Transaction | None = None  # answered here by the Terminal
        self.flags: tuple[dict[str, str], ...] = ()  # for the next transaction answered here
        self.upstream_gone = False
        self.pos_shut = False  # the POS shut its sending side (or closed: a FIN either way)
        self._delayed_writes = 0  # bytes for the POS waiting on a fault's delay
        self._close_when_written = False

    # --- The POS side --------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.opened(self)
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)  # segments go on as they came
        self.link = self.factory.upstream.connect(self)

    def received(self, data: bytes) -> None:
        now = self.reactor.seconds()
        self.segments.note(POS, data)
        if self.request_started is None:
            self.request_started = now
            if self.factory.queue_armed():
                self.held = []
        if self.held is not None:
            self.held.append(data)
        else:
            self.link.send(data)

    def peer_shut(self) -> None:
        """The POS shut its sending side: so does the proxy towards the terminal."""
        self.pos_shut = True
        self._pass_held()
        self.link.shut_sending()

    def lost(self) -> None:
        if self.forwarded is not None:
            # An answer already read to its action status is whole: the POS had it.
            self.forwarded.reader.receive_data(b"")
            self._read_answer(self.forwarded, ended="dropped")
        if self.local is not None:
            local, self.local = self.local, None
            self.terminal.drop(local)
        self.link.close()
        self.factory.closed(self)  # after the dropped transactions are recorded

    def busy(self) -> bool:
        return self.forwarded is not None or self.local is not None

    def answers_blocked(self, blocked: bool) -> None:
        """The POS reads nothing: the terminal's answers wait in its socket, not here."""
        self.link.hold_reading(blocked)

    def handle(self, event: TerminalEvent) -> None:
        """What the request reader makes of the POS's bytes."""
        if isinstance(event, RequestReceived):
            self._request(event.fields, event.received_at)
        elif isinstance(event, RequestExtended):
            self._extend(event.fields)
        elif isinstance(event, MalformedRequest):
            self._malformed(event.error, event.received_at)
        elif isinstance(event, (BytesDropped, CloseConnection, NeedData)):
            # No request: passed on all the same, the terminal judges them; nothing more
            # to read: the terminal decides when to close.
            pass
        else:
            assert_never(event)

    def _request(self, fields: list[Field], received_at: float) -> None:
        """A whole request: answered here if the queue holds an outcome, else passed on."""
        self.request_started = None
        held, self.held = self.held, None
        fault = None
        if held is not None and self.factory.queue_armed():
            fault = self.factory.take_forwarding()
            if fault is None:
                self._answer_here(fields, received_at)
                return
        for piece in held or ():
            self.link.send(piece)
        resent = self.factory.resends.sent(fields, received_at, self)
        if not self.link.request(fields):
            self.flags = (Deviation("replay-unmatched").to_json(),)
            self._answer_here(fields, received_at)
            return
        self._forward(fields, received_at, resent, fault=fault)

    def _forward(self, fields: list[Field], received_at: float, resent: bool = False,
                 problems: dict[str, str] | None = None,
                 fault: OutcomeSpec | None = None) -> None:
        upstream = self.factory.upstream
        txn = self.terminal.receive_forwarded(self, fields, received_at, upstream.mode,
                                              upstream.decided_by)
        txn.outcome = fault
        self.forwarded = _Forwarded(txn, PosConnection(clock=self.reactor.seconds), resent,
                                    problems=problems or {}, fault=fault)

    def _answer_here(self, fields: list[Field], received_at: float) -> None:
        txn = self.terminal.receive(self, fields, received_at)
        if txn.pending:
            self.local = txn

    def _extend(self, fields: list[Field]) -> None:
        """Late optional fields of the request in progress."""
        if self.local is not None:
            self.terminal.extend_request(self.local, fields)
        elif self.forwarded is not None:
            self.forwarded.transaction.request_fields = list(fields)

    def _malformed(self, error: FrameError, received_at: float) -> None:
        """A message that is no request: passed on all the same, the terminal answers it."""
        self.request_started = None
        self._pass_held()
        log.warning("%s sent a malformed request: %s", self.peer, error)
        self._forward(error.fields, received_at, problems={"unreadable-request": str(error)})

    def _pass_held(self) -> None:
        held, self.held = self.held, None
        for piece in held or ():
            self.link.send(piece)

    def _exchange_over(self) -> None:
        """The request in progress is over: the reader may hand out the next one."""
        self.requests.request_finished()
        if not self.closing:
            self.pump()

    # --- The Connection interface, for answers made here ---------------------------------

    def send(self, data: bytes) -> None:
        self.segments.note(TERMINAL, data)
        self.write(self.connection.send(data))

    def hang_up(self) -> None:
        self.close()

    def transaction_done(self, transaction: Transaction) -> None:
        if self.local is transaction:
            self.local = None
        self.last_active = self.reactor.seconds()
        if self.upstream_gone:
            self.close()
        self._exchange_over()

    # --- The upstream side -----------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the terminal: on to the POS at once, then read."""
        if self.closing:
            return
        self.last_active = self.reactor.seconds()
        self.segments.note(TERMINAL, data)
        forwarded = self.forwarded
        if forwarded is None:
            self.write(data)
            return  # nothing asked: passed on, with nothing to read it against
        self._to_pos(forwarded, data)
        forwarded.reads += 1
        forwarded.reader.receive_data(data)
        self._read_answer(forwarded)
        if self.forwarded is forwarded and forwarded.fault is None \
                and forwarded.reader.state is not PosState.AWAITING_ANSWER:
            # The answer is whole (its AE read) and written to the POS: delivered, though
            # optional fields may still join it.
            self.factory.resends.answered(forwarded.transaction.request_fields, self)

    def upstream_closed(self) -> None:
        """The terminal closed: the POS's connection closes too, as without the proxy
        (once the bytes a fault delays are written)."""
        self.upstream_gone = True
        if self.forwarded is not None:
            self.forwarded.reader.receive_data(b"")
            self._read_answer(self.forwarded)
        if self.local is None and not self.closing:
            if self._delayed_writes:
                self._close_when_written = True
            else:
                self.close()

    def _to_pos(self, forwarded: _Forwarded, data: bytes) -> None:
        """The terminal's bytes on to the POS: at once, unless the queue delays or cuts them."""
        fault = forwarded.fault
        if fault is not None and fault.outcome == behaviour.TERMINAL_SPLIT:
            forwarded.withheld += data  # cut once the answer is whole
        elif fault is not None and fault.outcome == behaviour.TERMINAL and fault.delay:
            self._write_later(fault.delay, data)
        else:
            self.write(data)

    def _write_later(self, delay: float, data: bytes) -> None:
        self._delayed_writes += 1
        self.reactor.callLater(delay, self._delayed_write, data)

    def _delayed_write(self, data: bytes) -> None:
        self._delayed_writes -= 1
        if self.closing:
            return
        self.write(data)
        if not self._delayed_writes and self._close_when_written:
            self.close()

    def _release_withheld(self, forwarded: _Forwarded) -> None:
        """The answer kept back for "terminal-split": written in SPLIT_PIECES segments."""
        data, forwarded.withheld = forwarded.withheld, b""
        if not data:
            return
        assert forwarded.fault is not None
        gap = forwarded.fault.delay or SPLIT_GAP
        size = -(-len(data) // SPLIT_PIECES)
        for index, start in enumerate(range(0, len(data), size)):
            self._write_later(gap * index, data[start:start + size])

    def upstream_failed(self, why: str) -> None:
        """The terminal cannot be reached: the POS sees its connection closed, the console why."""
        if self.closing:
            return
        detail = f"{self.factory.upstream.name}: {why}"
        log.warning("%s: the terminal at %s; closing the POS connection", self.peer, detail)
        unreachable = Deviation("terminal-unreachable", detail)
        if self.forwarded is not None:  # the request came before the failure
            self.forwarded.problems[unreachable.code] = detail
            self._finish(self.forwarded, "hang-up")
        else:
            txn = self.terminal.receive_forwarded(self, [], self.request_started)
            txn.deviations = (unreachable.to_json(),)
            self.terminal.finish_forwarded(txn, "hang-up")
        self.close()

    def _read_answer(self, forwarded: _Forwarded, ended: str = "hang-up") -> None:
        """Read what came of the answer; `ended`: the status if the connection ended
        without one (the terminal hung up, or the POS left)."""
        if forwarded.timer is not None and forwarded.timer.active():
            forwarded.timer.cancel()
        forwarded.timer = None
        if self.forwarded is not forwarded:
            return
        event = forwarded.reader.next_event()
        if isinstance(event, NeedData):
            if event.deadline is not None:
                delay = max(event.deadline - self.reactor.seconds(), 0.0)
                forwarded.timer = self.reactor.callLater(delay, self._read_answer, forwarded)
        elif isinstance(event, AnswerReceived):
            self._finish(forwarded, None, event.fields, event.frame, event.dropped)
        elif isinstance(event, ConnectionClosed):
            # The POS that shut its side first left before the answer, whatever came next.
            self._finish(forwarded, "dropped" if self.pos_shut else ended)
        elif isinstance(event, AnswerUnreadable):
            forwarded.problems["unreadable-answer"] = str(event.error)
            self._finish(forwarded, "dropped" if ended == "dropped" else "error", None,
                         event.frame)
        else:
            assert_never(event)

    def _finish(self, forwarded: _Forwarded, status: str | None,
                fields: list[Field] | None = None, frame: bytes = b"",
                after: bytes = b"") -> None:
        """The exchange is over: its transaction gets the answer (masked) and its deviations."""
        if forwarded.timer is not None and forwarded.timer.active():
            forwarded.timer.cancel()
        self.forwarded = None
        self._release_withheld(forwarded)
        txn = forwarded.transaction
        reason = None
        if fields is not None:
            answer = TerminalAnswer.parse(fields)
            status = STATUS_BY_OUTCOME[answer.outcome]
            reason = answer.reason.code if answer.reason else None
            self.factory.resends.answered(txn.request_fields, self)
        exchange = Exchange(txn.request_fields, fields, forwarded.reads, after, forwarded.resent,
                            problems=forwarded.problems)
        deviations = find_deviations(exchange, self.factory.expectations)
        txn.deviations = tuple(d.to_json() for d in deviations)
        if deviations:
            log.warning("%s transaction %d deviates: %s", self.peer, txn.id,
                        "; ".join(d.message() for d in deviations))
        numbers = masking.full_card_numbers(fields or ())
        self.segments.mask(numbers)
        answer_fields = None if fields is None else masking.mask_fields(fields)
        sent = masking.mask_bytes(frame, numbers) if fields is not None else None
        assert status is not None
        self.terminal.finish_forwarded(txn, status, answer_fields, sent, reason)
        self._exchange_over()


class ProxyFactory(protocol.Factory):
    """Builds one ProxyProtocol per POS, within max_connections (a TerminalFactory admits
    them); an observer of the Terminal, to flag the transactions it answers here.

    `logs`: each open connection's SegmentLog by peer, for the Recorder.
    """

    noisy = False

    def __init__(self, terminal: Terminal, upstream: TerminalUpstream | RecordingUpstream):
        self.terminal = terminal
        self.admission = TerminalFactory(terminal)
        self.idle_watch = self.admission.idle_watch  # stop_terminal stops it
        self.free_slots = self.admission.free_slots  # the listening port asks
        self.reactor = terminal.reactor
        self.upstream = upstream
        self._expected: tuple[TerminalSettings, Expectations] | None = None
        self.resends = ResendWatch()
        self.logs: dict[str, SegmentLog] = {}
        self._by_peer: dict[str, ProxyProtocol] = {}
        terminal.observers.insert(0, self)

    def buildProtocol(self, addr: IAddress | None) -> ProxyProtocol:
        connection = ProxyProtocol(self, peer_of(addr))
        self.admission.admit(connection)
        return connection

    def opened(self, connection: ProxyProtocol) -> None:
        self._by_peer[connection.peer] = connection
        self.logs[connection.peer] = connection.segments

    def closed(self, connection: ProxyProtocol) -> None:
        self._by_peer.pop(connection.peer, None)
        self.logs.pop(connection.peer, None)

    @property
    def expectations(self) -> Expectations:
        """What the terminal is expected to do: the settings' profile (it may change live)."""
        settings = self.terminal.settings
        if self._expected is None or self._expected[0] is not settings:
            self._expected = (settings, expectations_of(settings))
        return self._expected[1]

    def queue_armed(self) -> bool:
        """Whether the outcome queue holds an outcome for the next request."""
        return any(isinstance(source, OutcomeQueue) and source.to_json()
                   for source in self.terminal.outcome_sources)

    def take_forwarding(self) -> OutcomeSpec | None:
        """The queue's next outcome if it lets the terminal answer ("terminal",
        "terminal-split"), taken off the queue; None if it answers in its place."""
        for source in self.terminal.outcome_sources:
            if isinstance(source, OutcomeQueue) and source.to_json():
                if source.to_json()[0]["outcome"] not in behaviour.FORWARDED:
                    return None
                # The queue hands out its next outcome whatever the transaction.
                return source.take()
        return None

    def request_received(self, txn: Transaction) -> None:
        """Observer: a transaction answered here gets the flags its connection set."""
        connection = self._by_peer.get(txn.peer)
        if connection is not None and connection.flags:
            txn.deviations, connection.flags = connection.flags, ()


def expectations_of(settings: TerminalSettings) -> Expectations:
    """The deviations' expectations from the settings and their profile (its data)."""
    profile = settings.profile
    order: tuple[str, ...] = STANDARD_ORDER
    if profile.field_order:  # the profile's tags first, the others in the standard order
        order = profile.field_order + tuple(t for t in STANDARD_ORDER
                                            if t not in profile.field_order)
    return Expectations(pad_amount=settings.pad_amount, answer_version=settings.answer_version,
                        field_order=order,
                        extra_tags=frozenset(extra.tag for extra in profile.extra_tags))


# --- Upstreams ------------------------------------------------------------------------------


class TerminalUpstream:
    """The real terminal, one TCP connection per POS connection."""

    mode, decided_by = "proxied", "terminal"

    def __init__(self, host: str, port: int, timeout: float = CONNECT_TIMEOUT):
        self.host, self.port, self.timeout = host, port, timeout
        self.name = f"{host}:{port}"

    def connect(self, proxy: ProxyProtocol) -> _TerminalLink:
        link = _TerminalLink(proxy)
        endpoint = endpoints.HostnameEndpoint(proxy.reactor, self.host, self.port,
                                              timeout=self.timeout)
        factory = protocol.Factory.forProtocol(lambda: link)
        factory.noisy = False  # no log line per POS connection
        endpoint.connect(factory).addErrback(
            lambda failure: link.failed(failure.getErrorMessage()))
        return link


@implementer(interfaces.IPushProducer)
class _TerminalLink(protocol.Protocol):
    """The proxy's connection to the terminal for one POS connection.

    What waits for the terminal is bounded as what waits for the POS is: past
    MAX_PENDING bytes not yet connected, or while Twisted pauses this link
    (its producer) because the terminal does not read, the proxy stops
    reading the POS. While the POS reads no answer, the link stops reading
    the terminal: its answers then wait in the terminal's socket, not here.
    """

    transport: tcp.Client  # set by Twisted once connected

    def __init__(self, proxy: ProxyProtocol):
        self.proxy = proxy
        self.pending: list[bytes] | None = []  # POS bytes sent before it connected
        self.pending_size = 0
        self.closed = False
        self._full = False  # the proxy was told to stop reading the POS
        self._paused = False  # Twisted paused this producer: the terminal does not read
        self._reading_held = False  # the POS does not read: neither does the link

    def connectionMade(self) -> None:
        if self.closed:  # the POS left meanwhile
            self.transport.loseConnection()
            return
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        if self._reading_held:
            self.transport.pauseProducing()
        pending, self.pending = self.pending or [], None
        self.pending_size = 0
        for piece in pending:
            if piece:
                self.transport.write(piece)
            else:
                self._shut()
        self._update()

    def send(self, data: bytes) -> None:
        if self.pending is not None:
            self.pending.append(data)
            self.pending_size += len(data)
            self._update()
        else:
            self.transport.write(data)

    def request(self, fields: list[Field]) -> bool:
        return True  # the terminal answers every request

    def shut_sending(self) -> None:
        if self.pending is not None:
            self.pending.append(b"")  # shut once the POS's bytes are passed on
        elif self.transport is not None:
            self._shut()

    def hold_reading(self, held: bool) -> None:
        """Stop reading the terminal while the POS reads nothing, or read again."""
        self._reading_held = held
        if self.transport is not None and not self.closed and self.pending is None:
            if held:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # --- Producer of what goes to the terminal (Twisted calls these) -----------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._update()

    def resumeProducing(self) -> None:
        self._paused = False
        self._update()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    def _update(self) -> None:
        full = self._paused or self.pending_size > MAX_PENDING
        if full != self._full:
            self._full = full
            self.proxy.hold_reading(full)

    def _shut(self) -> None:
        self.transport.unregisterProducer()  # else Twisted waits for it to finish
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.proxy.upstream_data(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.closed:
            self.closed = True
            self.proxy.upstream_closed()

    def failed(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            self.proxy.upstream_failed(why)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.unregisterProducer()
            self.transport.loseConnection()


class RecordingUpstream:
    """A recording answering in the terminal's place (--replay)."""

    mode, decided_by = "replayed", "recording"

    def __init__(self, recording: Recording, in_order: bool = False):
        self.book = ReplayBook(recording, in_order)
        self.name = "recording"
        self.source = recording.source  # the file, for the console's status panel

    def connect(self, proxy: ProxyProtocol) -> _RecordingLink:
        return _RecordingLink(self.book, proxy)


class _RecordingLink:
    """Plays the recorded answer of each request, with its delays and segments."""

    def __init__(self, book: ReplayBook, proxy: ProxyProtocol):
        self.book = book
        self.proxy = proxy
        self.timer: IDelayedCall | None = None

    def send(self, data: bytes) -> None:
        pass  # the recording needs the whole request only

    def shut_sending(self) -> None:
        pass

    def hold_reading(self, held: bool) -> None:
        pass  # the recording's writes are bounded by the requests (16 at most waiting)

    def request(self, fields: list[Field]) -> bool:
        answer = self.book.answer_for(fields)
        if answer is None:
            return False
        self._next(answer, 0)
        return True

    def _next(self, answer: ReplayedAnswer, index: int) -> None:
        self.timer = None
        if index < len(answer.writes):
            delay, data = answer.writes[index]
            self.timer = self.proxy.reactor.callLater(delay, self._write, answer, index)
        elif answer.hang_up:
            delay = answer.delay if not answer.writes else 0.0
            self.timer = self.proxy.reactor.callLater(delay, self.proxy.upstream_closed)

    def _write(self, answer: ReplayedAnswer, index: int) -> None:
        self.proxy.upstream_data(answer.writes[index][1])
        self._next(answer, index + 1)

    def close(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
