"""One POS connection on Twisted: the edge the simulated terminal and the proxy share.

`PosEdge` moves bytes and timers for a `connection.TerminalConnection`,
which decides where requests end, when late fields join them, what is
dropped and when to stop reading. What becomes of each event is its
subclass's: the simulated terminal answers (server.TerminalProtocol), the
proxy passes requests on to a real terminal or a recording
(proxy.ProxyProtocol). Both thus get the same bounds: at most 16 requests
read ahead of their answers, reading stopped while answers pile up unsent
(Twisted pauses the edge, its producer, past 64 KiB), a POS that reads
nothing aborted at the idle time-out, an oversized message or a flood
closed after a linger.

Answers go straight to the socket while the kernel takes them whole: no
reactor turn, no copy in Twisted's buffer. From the first one it does not
take, they go through Twisted's buffer, in order, which is also when the
edge registers as its producer. After the POS's FIN, with nothing buffered,
the connection is closed at once.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import defer, interfaces, main, protocol, tcp
from twisted.internet.interfaces import IDelayedCall
from twisted.python import failure
from zope.interface import implementer

from ..connection import NeedData, TerminalConnection, TerminalEvent
from . import debuglines

if TYPE_CHECKING:
    from .service import Terminal

log = logging.getLogger("caisse_ap.terminal")

# After an oversized frame or a flood, how long to swallow what the POS still
# sends before closing: closing with unread bytes would reset the connection
# and could destroy our answer before the POS reads it.
LINGER = 2.0
# Why a connection closed after the POS's FIN, one for all (as Twisted's reactor does).
_CLOSED_CLEANLY = failure.Failure(main.CONNECTION_DONE)


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class PosEdge(protocol.Protocol):
    """One POS connection: bytes in to the TerminalConnection, its events to `handle()`,
    answers out with `write()`; the subclass says what each event does.

    It is the producer of what it writes (IPushProducer): Twisted pauses it
    when answers pile up unsent, and the connection then stops reading.
    """

    transport: tcp.Server  # set by Twisted before connectionMade

    def __init__(self, terminal: Terminal, idle_watch: IdleWatch, peer: str = "?"):
        self.terminal = terminal
        self.reactor = terminal.reactor
        self.peer = peer  # "host:port", for transactions and logs
        self.connection = TerminalConnection(self.reactor.seconds,
                                             request_timeout=terminal.request_timeout)
        self.closing = False
        self.notify_closed: defer.Deferred[None] | None = None  # fired by connectionLost
        self.on_closed: Callable[[], None] | None = None  # the factory's: accept again
        self.idle_watch = idle_watch
        self.last_active = 0.0  # when the POS last sent something or got its answer
        self._blocked_since: float | None = None  # when answers began to pile up unsent
        self._reading = True
        self._held = False  # reading held back by the subclass (its upstream is full)
        self._pumping = False
        self._timer: IDelayedCall | None = None  # the connection's next deadline
        # What writes the raw frames' debug lines, decided once per connection: a
        # disabled log.debug() still costs a call per frame (None: nobody reads them).
        self._debug: debuglines.Writer | None = None
        # Writes go straight to this socket until one is not taken whole (None: a
        # transport that is not a TCP socket, a wrapper's, always goes through write()).
        self._socket: socket.socket | None = None
        self._buffered = False

    # --- What a subclass does ------------------------------------------------------

    def handle(self, event: TerminalEvent) -> None:
        """An event of the connection (never NeedData: the edge waits for those)."""
        raise NotImplementedError

    def received(self, data: bytes) -> None:
        """Bytes from the POS, before the connection reads them."""

    def peer_shut(self) -> None:
        """The POS shut its sending side, before the connection learns it."""

    def lost(self) -> None:
        """The connection is gone (the edge's bookkeeping follows)."""

    def busy(self) -> bool:
        """Whether a request is in progress (the connection is then not idle)."""
        return False

    def answers_blocked(self, blocked: bool) -> None:
        """Whether what is written to the POS piles up unsent (it does not read)."""

    # --- Twisted callbacks ---------------------------------------------------

    def connectionMade(self) -> None:
        self.terminal.connections.add(self)
        self.last_active = self.reactor.seconds()
        self.idle_watch.watch()
        if isinstance(self.transport, tcp.Server):
            self._socket = self.transport.getHandle()
        else:
            self._use_buffer()
        self._debug = debuglines.writer(log)
        if self._debug is not None:
            self._debug("%s connected", self.peer)

    def dataReceived(self, data: bytes) -> None:
        if self._debug is not None:
            self._debug("%s sent %r", self.peer, data)
        if self.closing:
            return
        self.last_active = self.reactor.seconds()
        self.received(data)
        self.connection.receive_data(data)
        self._pump()

    def readConnectionLost(self) -> None:
        """The POS shut its sending side: answer what it sent, then close."""
        if self._debug is not None:
            self._debug("%s closed its side", self.peer)
        self.peer_shut()
        self.connection.receive_data(b"")
        self._pump()

    def writeConnectionLost(self) -> None:
        """Our side was shut after an oversized message: nothing to do but linger."""

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        self.closing = True
        self._stop_timer()
        self.terminal.connections.discard(self)
        self.lost()
        if self._debug is not None:
            self._debug("%s disconnected", self.peer)
        if self.on_closed is not None:
            self.on_closed()
        if self.notify_closed is not None:
            notify, self.notify_closed = self.notify_closed, None
            notify.callback(None)

    # --- Producer of what is written (Twisted calls these) ------------------------

    def pauseProducing(self) -> None:
        self._blocked_since = self.reactor.seconds()
        self.connection.block_answers(True)
        self.answers_blocked(True)
        self._update_reading()

    def resumeProducing(self) -> None:
        self._blocked_since = None
        self.connection.block_answers(False)
        self.answers_blocked(False)
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
        if self.busy() or self.connection.waiting or self.closing:
            return now  # waiting for its answer, or already closing: not idle
        return self.last_active

    def close_idle(self, timeout: float) -> None:
        if self._blocked_since is not None:
            log.info("%s read no answer for %g s: aborting the connection", self.peer, timeout)
            self.transport.abortConnection()
            return
        log.info("%s sent nothing for %g s: closing", self.peer, timeout)
        self.close()

    # --- For the subclass ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Bytes for the POS: to the socket if it takes them all, else through Twisted's
        buffer (and in order after that)."""
        if not self._buffered:
            assert self._socket is not None
            try:
                sent = self._socket.send(data)
            except OSError:  # full (EAGAIN), or broken: Twisted's write finds out which
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
            self._use_buffer()
        self.transport.write(data)

    def hold_reading(self, held: bool) -> None:
        """Stop reading from the POS (`held`) or read again: what the subclass passes on
        cannot go faster than its upstream takes it."""
        self._held = held
        self._update_reading()

    def close(self) -> None:
        """Close once what was written is sent."""
        if self.closing:
            return
        self.closing = True
        self._stop_timer()
        if self._socket is not None and not self._buffered and self.connection.peer_closed:
            # The POS sent its FIN (so nothing unread can turn the close into a reset) and
            # the kernel holds everything written (it sends it before our FIN): close now,
            # as the reactor does, instead of a turn and an empty write to learn the same.
            self.transport.connectionLost(_CLOSED_CLEANLY)
            return
        # A paused producer would keep Twisted from closing once the answers are out.
        if self._buffered:
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def linger(self) -> None:
        """Answered an oversized message or a flood: stop writing, swallow what still comes,
        then abort."""
        if self.closing:
            return
        self.closing = True
        self._stop_timer()
        if self._buffered:
            self.transport.unregisterProducer()
        if hasattr(self.transport, "loseWriteConnection"):
            self.transport.resumeProducing()  # read, and drop, what the POS still sends
            self.transport.loseWriteConnection()
            self.reactor.callLater(LINGER, self.transport.abortConnection)
        else:
            self.transport.loseConnection()

    def pump(self) -> None:
        """Hand the connection's events to handle() until it needs more bytes or time
        (the subclass calls it when a request is over)."""
        self._pump()

    # --- Moving events -------------------------------------------------------------

    def _use_buffer(self) -> None:
        """From now on writes go through Twisted's buffer, which pauses this producer when
        they pile up unsent (the POS does not read them)."""
        self._buffered = True
        self.transport.registerProducer(self, True)

    def _pump(self) -> None:
        if self._pumping:
            return  # a request finished within handle(): the loop below goes on
        self._pumping = True
        try:
            while not self.closing:
                event = self.connection.next_event()
                if isinstance(event, NeedData):
                    self._set_timer(event.deadline)
                    break
                self.handle(event)
        finally:
            self._pumping = False
        self._update_reading()

    def _set_timer(self, deadline: float | None) -> None:
        timer = self._timer
        if timer is not None and timer.active():
            if deadline is not None and timer.getTime() == deadline:
                return
            timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._pump()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _update_reading(self) -> None:
        """Stop reading while enough requests wait, answers pile up or the subclass holds
        reading; read again after."""
        if self.closing:
            return
        wanted = self.connection.wants_data and not self._held
        if wanted != self._reading:
            self._reading = wanted
            if wanted:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()


class IdleWatch:
    """Closes the connections of a terminal that sent nothing for its idle_timeout.

    One timer for all of them, set for the earliest time one may have been
    idle long enough: connections only note when they were last active.
    A timer per connection would be set and cancelled for each POS that
    connects, which cost 6 % of the instructions of a whole transaction.
    """

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self._timer: IDelayedCall | None = None

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
