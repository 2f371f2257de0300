"""The simulated terminal on Twisted: its POS connections, listening port and shutdown.

One `TerminalProtocol` per POS connection: the shared edge (edge.py) moves
bytes and timers for a `connection.TerminalConnection`, which decides where
requests end, when late fields join them, what is dropped and when to stop
reading; whole requests go, in order, to the `Terminal` (service.py), which
decides what to answer and when. Nothing here blocks: delays are the
Terminal's `callLater`s, and each answer goes out in one write, because
some POS read it with a single recv(1024).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, assert_never

from twisted.internet import defer, protocol, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

from ..connection import (
    BytesDropped,
    CloseConnection,
    MalformedRequest,
    NeedData,
    RequestExtended,
    RequestReceived,
    TerminalEvent,
)
from .behaviour import TerminalSettings
from .edge import LINGER, IdleWatch, PosEdge
from .service import Terminal, TerminalTuning, Transaction

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..twisted import IReactorTCPTime

__all__ = ["LINGER", "IdleWatch", "TerminalFactory", "TerminalProtocol", "peer_of",
           "start_terminal", "stop_terminal"]

log = logging.getLogger("caisse_ap.terminal")

SHUTDOWN_GRACE = 1.0  # then connections still open are aborted
# Many POS connecting at once wait here, not in SYN retries (a second each); the
# kernel caps it at net.core.somaxconn (4096 by default since Linux 5.4).
BACKLOG = 4096


class TerminalProtocol(PosEdge):
    """One POS connection of the simulated terminal: requests answered in turn, one at a
    time, by the Terminal (edge.py moves the bytes, timers and flow control)."""

    def __init__(self, terminal: Terminal, idle_watch: IdleWatch, peer: str = "?"):
        super().__init__(terminal, idle_watch, peer)
        self.current: Transaction | None = None

    # --- What the connection's events do -------------------------------------

    def handle(self, event: TerminalEvent) -> None:
        terminal = self.terminal
        if isinstance(event, RequestReceived):
            self._started(terminal.receive(self, event.fields, event.received_at))
        elif isinstance(event, MalformedRequest):
            self._started(terminal.receive_error(self, event.error, event.received_at))
        elif isinstance(event, RequestExtended):
            if self.current is not None:
                terminal.extend_request(self.current, event.fields)
        elif isinstance(event, BytesDropped):
            more = "..." if event.size > len(event.data) else ""
            log.info("%s: %d bytes dropped, not answered (%r%s): %s",
                     self.peer, event.size, event.data, more, event.reason)
        elif isinstance(event, CloseConnection):
            if event.peer_closed:
                self.close()
            else:
                self.linger()
        elif isinstance(event, NeedData):
            pass  # the edge waits for these
        else:
            assert_never(event)

    def lost(self) -> None:
        if self.current is not None:
            current, self.current = self.current, None
            self.terminal.drop(current)

    def busy(self) -> bool:
        return self.current is not None

    def _started(self, transaction: Transaction) -> None:
        self.current = transaction
        if not transaction.pending:  # answered (or hung up) within receive()
            self.current = None
            self.connection.request_finished()

    # --- Connection interface used by the Terminal ---------------------------

    def send(self, data: bytes) -> None:
        if self._debug is not None:
            self._debug("%s answered %r", self.peer, data)
        self.write(self.connection.send(data))

    def hang_up(self) -> None:
        self.close()

    def transaction_done(self, transaction: Transaction) -> None:
        if self.current is not transaction:
            return
        self.current = None
        self.last_active = self.reactor.seconds()  # idle time counts from the answer
        self.connection.request_finished()
        self.pump()


def peer_of(addr: IAddress | None) -> str:
    """"host:port" of a POS, from the address Twisted has already built for buildProtocol."""
    if isinstance(addr, (IPv4Address, IPv6Address)):
        return f"{addr.host}:{addr.port}"
    return "?"


class _Admitted(Protocol):
    """What TerminalFactory.admit needs of a connection: the hook its connectionLost calls."""

    on_closed: Callable[[], None] | None


class TerminalFactory(protocol.Factory):
    """Builds one TerminalProtocol per POS; stops accepting at max_connections.

    At the limit the listening port stops accepting: new POS wait in the
    kernel's backlog and are served once a connection closes, instead of
    being accepted and reset.
    """

    noisy = False

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.idle_watch = IdleWatch(terminal)
        self.full = False
        # One warning when the limit is reached, not one each time a slot frees and is
        # taken at once: warned again only after the load fell below half the limit.
        self._warned = False

    def free_slots(self) -> int:
        return self.terminal.max_connections - len(self.terminal.connections)

    def buildProtocol(self, addr: IAddress | None) -> TerminalProtocol:
        connection = TerminalProtocol(self.terminal, self.idle_watch, peer_of(addr))
        self.admit(connection)
        return connection

    def admit(self, connection: _Admitted) -> None:
        """A POS connection was built (here, or by a factory like this one: the proxy's):
        accept again once it closes; stop accepting if it took the last free slot."""
        connection.on_closed = self.connection_closed
        if self.free_slots() <= 1:
            self.stop_accepting()

    def stop_accepting(self) -> None:
        port = self.terminal.listening_port
        if self.full or port is None:
            return
        self.full = True
        port.stopReading()
        if not self._warned:
            self._warned = True
            log.warning("%d connections open (--max-connections): new POS wait until one "
                        "closes", self.terminal.max_connections)

    def connection_closed(self) -> None:
        port = self.terminal.listening_port
        if len(self.terminal.connections) * 2 < self.terminal.max_connections:
            self._warned = False
        if self.full and port is not None and self.free_slots() > 0 and port.connected:
            self.full = False
            port.startReading()
            log.info("a connection closed: accepting POS again")


class _Port(tcp.Port):
    """A listening port that accepts, in one go, no more POS than the terminal has room for
    (Twisted accepts up to a hundred at once)."""

    factory: TerminalFactory

    def doRead(self) -> None:
        free = self.factory.free_slots()
        if free <= 0:
            self.stopReading()
            return
        self.numberAccepts = min(self.numberAccepts, free)
        super().doRead()


def start_terminal(reactor: IReactorTCPTime, settings: TerminalSettings | None = None,
                   host: str = "127.0.0.1", port: int = 0, *,
                   factory: Callable[[Terminal], protocol.Factory] = TerminalFactory,
                   **options: Unpack[TerminalTuning]) -> Terminal:
    """Listen for POS on host:port (0: a free port) and return the Terminal.

    `options` go to Terminal (seed, idle_timeout, request_timeout,
    max_connections). The bound address is `terminal.address`. `factory`
    builds the connections' factory from the Terminal (a TerminalFactory or
    one like it: the proxy's, proxy.py). Raises twisted's CannotListenError.
    """
    terminal = Terminal(settings, reactor=reactor, **options)
    listening = _Port(port, factory(terminal), BACKLOG, host, reactor)
    listening.startListening()
    terminal.listening_port = listening
    return terminal


def stop_terminal(terminal: Terminal, grace: float = SHUTDOWN_GRACE) -> defer.Deferred[None]:
    """Stop listening, answer transactions in flight at once, close every connection.

    Fires once every connection is closed; those still open after `grace`
    seconds (a POS that does not read) are aborted.
    """
    stopped = _stop_accepting(terminal)
    terminal.stop_transactions()
    return _close_connections(terminal, stopped, grace)


def drain_terminal(terminal: Terminal, grace: float = SHUTDOWN_GRACE
                   ) -> tuple[defer.Deferred[None], defer.Deferred[None]]:
    """Stop accepting at once, let every transaction in flight finish as it would (its
    delay, a manual decision up to its time-out), then close every connection: a farm
    terminal deleted (web/farm.py). `terminal.stop_transactions()` hurries it (shutdown).

    Two Deferreds: the first fires once the port is closed (no connection is accepted),
    the second once every connection is closed, as stop_terminal's does.
    """
    stopped = _stop_accepting(terminal)
    refusing: defer.Deferred[None] = defer.Deferred()

    def port_closed(result: object) -> object:
        refusing.callback(None)
        return result

    stopped.addBoth(port_closed)
    done: defer.Deferred[None] = defer.Deferred()

    class _Watch:  # an observer of the terminal: the last answer closes everything
        def transaction_finished(self, _: object) -> None:
            if not terminal.pending and self in terminal.observers:
                terminal.observers.remove(self)
                # After this answer is written and its connection told (service._finish).
                terminal.reactor.callLater(0, close)

    def close() -> None:
        _close_connections(terminal, stopped, grace).chainDeferred(done)

    if terminal.pending:
        terminal.observers.append(_Watch())
    else:
        close()
    return refusing, done


def _stop_accepting(terminal: Terminal) -> defer.Deferred[None]:
    """No new connection, and no new request on the connections open."""
    port = terminal.listening_port
    stopped: defer.Deferred[None] = defer.succeed(None)
    if port is not None:
        stopped = defer.maybeDeferred(port.stopListening)
        stopped.addCallback(lambda _: port.factory.idle_watch.stop())
    for connection in terminal.connections:
        connection.closing = True  # no new request starts now
    return stopped


def _close_connections(terminal: Terminal, stopped: defer.Deferred[None],
                       grace: float) -> defer.Deferred[None]:
    reactor = terminal.reactor
    closing = []
    for connection in list(terminal.connections):
        closed: defer.Deferred[None] = defer.Deferred()
        connection.notify_closed = closed
        closing.append(closed)
        connection.transport.loseConnection()
    if not closing:
        return stopped

    def abort_stragglers() -> None:
        for connection in list(terminal.connections):
            connection.transport.abortConnection()

    timer = reactor.callLater(grace, abort_stragglers)

    def done(_: object) -> None:
        if timer.active():
            timer.cancel()

    return defer.gatherResults([stopped, *closing]).addBoth(done)
