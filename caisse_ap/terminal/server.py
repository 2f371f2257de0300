"""The Twisted edge of the simulated terminal: bytes in, answers out, timers, flow control.

One `TerminalProtocol` per POS connection moves bytes and timers for a
`connection.TerminalConnection`, which decides where requests end, when late
fields join them, what is dropped and when to stop reading; whole requests
go, in order, to the `Terminal` (service.py), which decides what to answer
and when. Nothing here blocks: delays are the Terminal's `callLater`s, and
each answer goes out in one write, because some POS read it with a single
recv(1024).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, interfaces, protocol, tcp
from zope.interface import implementer

from ..connection import (
    BytesDropped,
    CloseConnection,
    MalformedRequest,
    NeedData,
    RequestExtended,
    RequestReceived,
    TerminalConnection,
)
from .behaviour import TerminalSettings
from .service import Terminal, Transaction

log = logging.getLogger("caisse_ap.terminal")

# After an oversized frame or a flood, how long to swallow what the POS still
# sends before closing: closing with unread bytes would reset the connection
# and could destroy our answer before the POS reads it.
LINGER = 2.0
SHUTDOWN_GRACE = 1.0  # then connections still open are aborted
# Many POS connecting at once wait here, not in SYN retries (a second each); the
# kernel caps it at net.core.somaxconn (4096 by default since Linux 5.4).
BACKLOG = 4096


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class TerminalProtocol(protocol.Protocol):
    """One POS connection: requests answered in turn, one at a time.

    It is also the producer of its answers (IPushProducer): Twisted pauses it
    when answers pile up unsent, and the connection then stops reading.
    """

    transport: tcp.Server  # set by Twisted before connectionMade

    def __init__(self, terminal: Terminal, idle_watch: IdleWatch, peer: str = "?"):
        self.terminal = terminal
        self.peer = peer  # "host:port", for transactions and logs
        self.connection = TerminalConnection(terminal.reactor.seconds,
                                             request_timeout=terminal.request_timeout)
        self.current: Transaction | None = None
        self.closing = False
        self.notify_closed: defer.Deferred[Any] | None = None  # fired by connectionLost
        self.on_closed: Callable[[], None] | None = None  # the factory's: accept again
        self.idle_watch = idle_watch
        self.last_active = 0.0  # when the POS last sent something or got its answer
        self._blocked_since: float | None = None  # when answers began to pile up unsent
        self._reading = True
        self._pumping = False
        self._timer: Any = None  # the connection's next deadline
        # Whether to log raw frames, decided once per connection: a disabled
        # log.debug() still costs a call per frame.
        self._debug = False

    # --- Twisted callbacks ---------------------------------------------------

    def connectionMade(self) -> None:
        terminal = self.terminal
        terminal.connections.add(self)
        self.last_active = terminal.reactor.seconds()
        self.idle_watch.watch()
        self.transport.registerProducer(self, True)
        self._debug = log.isEnabledFor(logging.DEBUG)
        if self._debug:
            log.debug("%s connected", self.peer)

    def dataReceived(self, data: bytes) -> None:
        if self._debug:
            log.debug("%s sent %r", self.peer, data)
        self.last_active = self.terminal.reactor.seconds()
        self.connection.receive_data(data)
        self._pump()

    def readConnectionLost(self) -> None:
        """The POS shut its sending side: answer what it sent, then close."""
        if self._debug:
            log.debug("%s closed its side", self.peer)
        self.connection.receive_data(b"")
        self._pump()

    def writeConnectionLost(self) -> None:
        """Our side was shut after an oversized message: nothing to do but linger."""

    def connectionLost(self, reason: Any = None) -> None:
        self.closing = True
        self._stop_timer()
        self.terminal.connections.discard(self)
        if self.current is not None:
            current, self.current = self.current, None
            self.terminal.drop(current)
        if self._debug:
            log.debug("%s disconnected", self.peer)
        if self.on_closed is not None:
            self.on_closed()
        if self.notify_closed is not None:
            notify, self.notify_closed = self.notify_closed, None
            notify.callback(None)

    # --- Producer of answers (Twisted calls these) ----------------------------

    def pauseProducing(self) -> None:
        self._blocked_since = self.terminal.reactor.seconds()
        self.connection.block_answers(True)
        self._update_reading()

    def resumeProducing(self) -> None:
        self._blocked_since = None
        self.connection.block_answers(False)
        self._pump()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    # --- Idle time-out (IdleWatch calls these) ------------------------------

    def idle_since(self, now: float) -> float:
        """Since when the connection has been idle: `now` while the POS waits for an answer.

        A POS that does not read its answers is idle since they began to pile up.
        """
        if self._blocked_since is not None:
            return self._blocked_since
        if self.current is not None or self.connection.waiting or self.closing:
            return now  # waiting for its answer, or already closing: not idle
        return self.last_active

    def close_idle(self, timeout: float) -> None:
        if self._blocked_since is not None:
            log.info("%s read no answer for %g s: aborting the connection", self.peer, timeout)
            self.transport.abortConnection()
            return
        log.info("%s sent nothing for %g s: closing", self.peer, timeout)
        self._close()

    # --- Connection interface used by the Terminal ---------------------------

    def send(self, data: bytes) -> None:
        if self._debug:
            log.debug("%s answered %r", self.peer, data)
        self.transport.write(data)

    def hang_up(self) -> None:
        self._close()

    def transaction_done(self, transaction: Transaction) -> None:
        if self.current is not transaction:
            return
        self.current = None
        self.last_active = self.terminal.reactor.seconds()  # idle time counts from the answer
        self.connection.request_finished()
        self._pump()

    # --- Moving events between the connection and the Terminal ---------------

    def _pump(self) -> None:
        """Hand the connection's events to the Terminal until it needs more bytes or time."""
        if self._pumping:
            return  # a transaction finished within receive(): the loop below goes on
        self._pumping = True
        try:
            while not self.closing:
                event = self.connection.next_event()
                if isinstance(event, NeedData):
                    self._set_timer(event.deadline)
                    break
                self._handle(event)
        finally:
            self._pumping = False
        self._update_reading()

    def _handle(self, event: Any) -> None:
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
                self._close()
            else:
                self._linger()

    def _started(self, transaction: Transaction) -> None:
        self.current = transaction
        if not transaction.pending:  # answered (or hung up) within receive()
            self.current = None
            self.connection.request_finished()

    def _set_timer(self, deadline: float | None) -> None:
        if self._timer is not None and self._timer.active():
            if deadline is not None and self._timer.getTime() == deadline:
                return
            self._timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self.terminal.reactor.seconds())
            self._timer = self.terminal.reactor.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._pump()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _update_reading(self) -> None:
        """Stop reading while enough requests wait or answers pile up; read again after."""
        if self.closing:
            return
        wanted = self.connection.wants_data
        if wanted != self._reading:
            self._reading = wanted
            if wanted:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def _close(self) -> None:
        """Close once the answers written are sent."""
        if self.closing:
            return
        self.closing = True
        self._stop_timer()
        # A paused producer would keep Twisted from closing once the answers are out.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _linger(self) -> None:
        """Answered an oversized message or a flood: stop writing, swallow what still comes,
        then abort."""
        if self.closing:
            return
        self.closing = True
        self._stop_timer()
        self.transport.unregisterProducer()
        if hasattr(self.transport, "loseWriteConnection"):
            self.transport.resumeProducing()  # read, and drop, what the POS still sends
            self.transport.loseWriteConnection()
            self.terminal.reactor.callLater(LINGER, self.transport.abortConnection)
        else:
            self.transport.loseConnection()


class IdleWatch:
    """Closes the connections of a terminal that sent nothing for its idle_timeout.

    One timer for all of them, set for the earliest time one may have been
    idle long enough: connections only note when they were last active.
    A timer per connection would be set and cancelled for each POS that
    connects, which cost 6 % of the instructions of a whole transaction.
    """

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self._timer: Any = None

    def watch(self) -> None:
        """A connection opened: make sure a check is due within the idle timeout."""
        if self._timer is None:
            self._timer = self.terminal.reactor.callLater(self.terminal.idle_timeout, self._check)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _check(self) -> None:
        terminal = self.terminal
        now, timeout = terminal.reactor.seconds(), terminal.idle_timeout
        earliest = None  # the next time a connection may have been idle long enough
        for connection in list(terminal.connections):
            due = connection.idle_since(now) + timeout
            if due <= now:
                connection.close_idle(timeout)
            elif earliest is None or due < earliest:
                earliest = due
        # Connections opened later are due after the timeout from now: the
        # next one to open sets the timer again if there is none.
        self._timer = None if earliest is None else terminal.reactor.callLater(
            earliest - now, self._check)


def peer_of(addr: Any) -> str:
    """"host:port" of a POS, from the address Twisted has already built for buildProtocol."""
    return f"{addr.host}:{addr.port}" if hasattr(addr, "port") else "?"


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

    def buildProtocol(self, addr: Any) -> TerminalProtocol:
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


def start_terminal(reactor: Any, settings: TerminalSettings | None = None,
                   host: str = "127.0.0.1", port: int = 0, *,
                   factory: Callable[[Terminal], protocol.Factory] = TerminalFactory,
                   **options: Any) -> Terminal:
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


def stop_terminal(terminal: Terminal, grace: float = SHUTDOWN_GRACE) -> defer.Deferred[Any]:
    """Stop listening, answer transactions in flight at once, close every connection.

    Fires once every connection is closed; those still open after `grace`
    seconds (a POS that does not read) are aborted.
    """
    stopped = _stop_accepting(terminal)
    terminal.stop_transactions()
    return _close_connections(terminal, stopped, grace)


def drain_terminal(terminal: Terminal, grace: float = SHUTDOWN_GRACE
                   ) -> tuple[defer.Deferred[Any], defer.Deferred[Any]]:
    """Stop accepting at once, let every transaction in flight finish as it would (its
    delay, a manual decision up to its time-out), then close every connection: a farm
    terminal deleted (web/farm.py). `terminal.stop_transactions()` hurries it (shutdown).

    Two Deferreds: the first fires once the port is closed (no connection is accepted),
    the second once every connection is closed, as stop_terminal's does.
    """
    stopped = _stop_accepting(terminal)
    refusing: defer.Deferred[Any] = defer.Deferred()

    def port_closed(result: object) -> object:
        refusing.callback(None)
        return result

    stopped.addBoth(port_closed)
    done: defer.Deferred[Any] = defer.Deferred()

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


def _stop_accepting(terminal: Terminal) -> defer.Deferred[Any]:
    """No new connection, and no new request on the connections open."""
    port = terminal.listening_port
    stopped: defer.Deferred[Any] = defer.succeed(None)
    if port is not None:
        stopped = defer.maybeDeferred(port.stopListening)
        stopped.addCallback(lambda _: port.factory.idle_watch.stop())
    for connection in terminal.connections:
        connection.closing = True  # no new request starts now
    return stopped


def _close_connections(terminal: Terminal, stopped: defer.Deferred[Any],
                       grace: float) -> defer.Deferred[Any]:
    reactor = terminal.reactor
    closing = []
    for connection in list(terminal.connections):
        closed: defer.Deferred[Any] = defer.Deferred()
        connection.notify_closed = closed
        closing.append(closed)
        connection.transport.loseConnection()
    if not closing:
        return stopped

    def abort_stragglers() -> None:
        for connection in list(terminal.connections):
            connection.transport.abortConnection()

    timer = reactor.callLater(grace, abort_stragglers)

    def done(_: Any) -> None:
        if timer.active():
            timer.cancel()

    return defer.gatherResults([stopped, *closing]).addBoth(done)
