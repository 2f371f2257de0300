"""The bytes of each connection, segment by segment, for `--record`: the Twisted side.

`TapFactory` wraps the simulated terminal's connection factory: each
connection's reads and writes pass unchanged and are noted, with the
reactor's time, in a `SegmentLog`. The proxy (proxy.py) keeps a SegmentLog
of its own. `Recorder`, an observer of the Terminal, writes each finished
transaction with the segments its connection noted since the last one
(recording.py: the format, card numbers masked).
"""

from __future__ import annotations

import logging

from twisted.internet import interfaces, protocol
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.protocols import policies
from twisted.python import failure
from zope.interface import implementer

from .recording import POS, TERMINAL, RecordFile, Segment, masked_segments, transaction_entry
from .server import TerminalFactory, TerminalProtocol
from .service import Terminal, Transaction, iso_time

log = logging.getLogger("caisse_ap.terminal")


class SegmentLog:
    """The segments of one connection not yet given to a transaction, timed by the reactor."""

    def __init__(self, reactor: IReactorTime):
        self.reactor = reactor
        self._noted: list[Segment] = []

    def note(self, direction: str, data: bytes) -> None:
        self._noted.append(Segment(self.reactor.seconds(), direction, data))

    def mask(self, numbers: list[str]) -> None:
        """Mask these full card numbers in what is noted, before anyone writes it down."""
        self._noted = masked_segments(self._noted, numbers)

    def take(self, since: float) -> list[Segment]:
        """The segments noted so far, timed from `since`; the log starts again empty."""
        noted, self._noted = self._noted, []
        return [Segment(max(s.at - since, 0.0), s.direction, s.data) for s in noted]


@implementer(interfaces.IHalfCloseableProtocol)
class _Tap(policies.ProtocolWrapper):
    """One connection of the simulated terminal, its bytes noted on the way.

    Half-closing passes through, as the terminal's protocol handles it.
    (ProtocolWrapper's methods are called by name, not through super(): mypy
    then sees them as Twisted's, whose annotations are missing.)
    """

    factory: TapFactory

    def __init__(self, factory: TapFactory, wrapped: TerminalProtocol):
        policies.ProtocolWrapper.__init__(self, factory, wrapped)
        self.segments = SegmentLog(factory.reactor)
        self.peer = wrapped.peer

    def connectionMade(self) -> None:
        self.factory.logs[self.peer] = self.segments

    def dataReceived(self, data: bytes) -> None:
        self.segments.note(POS, data)
        policies.ProtocolWrapper.dataReceived(self, data)

    def write(self, data: bytes) -> None:
        self.segments.note(TERMINAL, data)
        policies.ProtocolWrapper.write(self, data)

    def readConnectionLost(self) -> None:
        interfaces.IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()

    def writeConnectionLost(self) -> None:
        interfaces.IHalfCloseableProtocol(self.wrappedProtocol).writeConnectionLost()

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        policies.ProtocolWrapper.connectionLost(self, reason)  # the POS's transaction first
        self.factory.logs.pop(self.peer, None)


class TapFactory(policies.WrappingFactory[_Tap]):
    """Wraps the terminal's factory; `logs` holds each open connection's SegmentLog by peer."""

    noisy = False

    def __init__(self, wrapped: TerminalFactory, reactor: IReactorTime):
        super().__init__(wrapped)  # type: ignore[no-untyped-call]  # Twisted: no annotations
        self.terminal_factory = wrapped
        self.reactor = reactor
        self.idle_watch = wrapped.idle_watch  # stop_terminal stops it
        self.free_slots = wrapped.free_slots  # the listening port asks
        self.logs: dict[str, SegmentLog] = {}

    def buildProtocol(self, addr: IAddress | None) -> _Tap:
        return _Tap(self, self.terminal_factory.buildProtocol(addr))


class Recorder:
    """Observer of the Terminal: each finished transaction, as a line of the recording.

    `logs` maps a peer to its connection's SegmentLog (the TapFactory's or
    the proxy's).
    """

    def __init__(self, record: RecordFile, logs: dict[str, SegmentLog]):
        self.record = record
        self.logs = logs

    def transaction_finished(self, txn: Transaction) -> None:
        segments = self.logs.get(txn.peer)
        outcome = txn.outcome.to_dict() if txn.outcome is not None else None
        latency = None if txn.answered_at is None else txn.answered_at - txn.received_at
        self.record.write(transaction_entry(
            txn_id=txn.id, mode=txn.mode, peer=txn.peer, received_at=iso_time(txn.received_at),
            request=txn.request_fields, answer=txn.answer, status=txn.status,
            reason=txn.reason, decided_by=txn.decided_by, outcome=outcome, latency=latency,
            segments=segments.take(txn.received_at) if segments is not None else [],
            deviations=txn.deviations))


def start_recording(terminal: Terminal, record: RecordFile | str, logs: dict[str, SegmentLog],
                    header: dict[str, object]) -> Recorder:
    """Write the recording's header and record the terminal's transactions from now on.

    `record`: a RecordFile already open, or the path of one to open.
    """
    if not isinstance(record, RecordFile):
        record = RecordFile(record)
    record.start(header)
    recorder = Recorder(record, logs)
    terminal.observers.append(recorder)
    return recorder
