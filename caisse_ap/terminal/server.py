"""The Twisted edge of the simulated terminal: bytes in, answers out, limits.

One `TerminalProtocol` per POS connection feeds a `FrameDecoder` and hands
whole requests, in order, to the `Terminal` (service.py), which decides what
to answer and when. Nothing here blocks: delays are the Terminal's
`callLater`s, and each answer goes out in one write, because some POS read it
with a single recv(1024).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol

from .. import tlv
from ..messages import has_mandatory_fields
from ..tlv import Field, FrameDecoder, FrameError
from .behaviour import TerminalSettings
from .service import Terminal, Transaction

log = logging.getLogger("caisse_ap.terminal")

# After an oversized frame, how long to swallow what the POS still sends
# before closing: closing with unread bytes would reset the connection and
# could destroy our answer before the POS reads it.
LINGER = 2.0
SHUTDOWN_GRACE = 1.0  # then connections still open are aborted
BACKLOG = 1024  # many POS connecting at once must not wait for SYN retries
# A request without all its mandatory fields never looks whole: once the POS
# has sent nothing more for this long, it is taken as it is (and refused).
SETTLE = 0.5


@dataclass
class _Message:
    """A request read from the POS, waiting for its turn or in progress.

    `received_at`: when its first byte came, so that the time a POS waited
    counts the segments it took and, for a request that never came whole,
    the settle time. `error`: why it could not be read (answered AF=09).
    """

    fields: list[Field]
    received_at: float
    transaction: Transaction | None = None
    error: FrameError | None = None


class TerminalProtocol(protocol.Protocol):
    """One POS connection: requests answered in turn, one at a time."""

    def __init__(self, terminal: Terminal, idle_watch: IdleWatch, peer: str = "?"):
        self.terminal = terminal
        self.peer = peer  # "host:port", for transactions and logs
        # Created for the first request that does not come whole in one
        # segment: most never need one.
        self.decoder: FrameDecoder | None = None
        self.inbox: deque[_Message] = deque()
        self.current: Transaction | None = None
        # The last request read, while more of its fields may still arrive.
        self.open_message: _Message | None = None
        self.closing = False
        self._processing = False
        self.notify_closed: defer.Deferred | None = None  # fired by connectionLost
        self._settle: Any = None  # timer taking an incomplete request as it is
        self.idle_watch = idle_watch
        self.last_active = 0.0  # when the POS last sent something or got its answer
        self._held_since = 0.0  # when the bytes the decoder holds began to arrive
        # Whether to log raw frames, decided once per connection: a disabled
        # log.debug() still costs a call per frame.
        self._debug = False

    # --- Twisted callbacks ---------------------------------------------------

    def connectionMade(self) -> None:
        terminal = self.terminal
        terminal.connections.add(self)
        self.last_active = terminal.reactor.seconds()
        self.idle_watch.watch()
        self._debug = log.isEnabledFor(logging.DEBUG)
        if self._debug:
            log.debug("%s connected", self.peer)

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        if self._debug:
            log.debug("%s sent %r", self.peer, data)
        self.last_active = self.terminal.reactor.seconds()
        if self._whole_request(data):
            self._next()
            return
        if self.decoder is None:
            self.decoder = FrameDecoder(has_mandatory_fields)
        if not self.decoder.buffered:
            self._held_since = self.last_active
        # Feed no more than the decoder holds, reading fields in between, so
        # that an oversized request is refused with the fields read echoed.
        while data:
            room = max(self.decoder.max_buffer - self.decoder.buffered, 1)
            chunk, data = data[:room], data[room:]
            try:
                self.decoder.feed(chunk)
            except FrameError as error:
                self._oversized(error)
                return
            self._read_messages()
        self._watch_incomplete()
        self._next()

    def connectionLost(self, reason: Any = None) -> None:
        if self._settle is not None:
            self._stop_settle()
        self.terminal.connections.discard(self)
        self.inbox.clear()
        if self.current is not None:
            current, self.current = self.current, None
            self.terminal.drop(current)
        if self._debug:
            log.debug("%s disconnected", self.peer)
        if self.notify_closed is not None:
            notify, self.notify_closed = self.notify_closed, None
            notify.callback(None)

    # --- Idle time-out (IdleWatch calls these) ------------------------------

    def idle_since(self, now: float) -> float:
        """Since when the connection has been idle: `now` while the POS waits for an answer."""
        if self.current is not None or self.inbox or self.closing:
            return now  # waiting for its answer, or already closing: not idle
        return self.last_active

    def close_idle(self, timeout: float) -> None:
        log.info("%s sent nothing for %g s: closing", self.peer, timeout)
        self.closing = True  # once: a POS slow to read its last bytes is not closed again
        self.transport.loseConnection()

    # --- Connection interface used by the Terminal ---------------------------

    def send(self, data: bytes) -> None:
        if self._debug:
            log.debug("%s answered %r", self.peer, data)
        self.transport.write(data)

    def hang_up(self) -> None:
        self.closing = True
        self.transport.loseConnection()

    def transaction_done(self, transaction: Transaction) -> None:
        if self.current is not transaction:
            return
        self.current = None
        self.last_active = self.terminal.reactor.seconds()  # idle time counts from the answer
        if self.open_message is not None and self.open_message.transaction is transaction:
            # Answered: later bytes start a new request, even those that
            # were on their way to join it.
            self.open_message = None
            if self.decoder is not None:
                self.decoder.close_message()
        if not self._processing:
            self._next()

    # --- Reading -------------------------------------------------------------

    def _whole_request(self, data: bytes) -> bool:
        """The common case, taken fast: one whole request in one segment, nothing held.

        Same result as the streaming decoder (the same core rules, through
        tlv.decode), at a third of its cost; anything else goes the long way.
        """
        if self.open_message is not None or (self.decoder is not None and self.decoder.buffered):
            return False
        try:
            fields = tlv.decode(data)
        except FrameError:
            return False
        if not has_mandatory_fields(fields):
            return False
        message = _Message(fields, self.last_active)
        self.inbox.append(message)
        if not data.endswith((b"\r", b"\n")):  # a line end closes a request
            self.open_message = message
        return True

    def _watch_incomplete(self) -> None:
        """(Re)start the settle timer while bytes of an unfinished request are held."""
        self._stop_settle()
        if self.decoder is not None and self.decoder.buffered and not self.closing:
            self._settle = self.terminal.reactor.callLater(SETTLE, self._settled)

    def _stop_settle(self) -> None:
        if self._settle is not None and self._settle.active():
            self._settle.cancel()
        self._settle = None

    def _settled(self) -> None:
        """The POS stopped sending in the middle of a request: take what came."""
        self._settle = None
        self._read_messages(final=True)
        self._next()

    def _read_messages(self, final: bool = False) -> None:
        """Take every whole message out of the decoder, merging late optional fields.

        `final`: the POS went quiet, so what is held is all there is of it.
        """
        assert self.decoder is not None  # dataReceived creates it before anything is held
        while True:
            if self.open_message is not None and not self.decoder.continuing:
                state = self.decoder.continue_message(self.open_message.fields)
                if state is None:
                    return
                if not state:
                    self.open_message = None
            continued = self.decoder.continuing
            received_at = self._held_since
            try:
                message = self.decoder.finish() if final else self.decoder.next_message()
            except FrameError as error:
                self.open_message = None
                self.inbox.append(_Message(error.fields, received_at, error=error))
                self._held_since = self.last_active  # what is left came with the last bytes
                if final:
                    return
                continue
            if message is None:
                return
            self._held_since = self.last_active
            if continued:
                self._extend(message)
            else:
                self.open_message = _Message(message, received_at)
                self.inbox.append(self.open_message)

    def _extend(self, fields: list[Field]) -> None:
        assert self.open_message is not None
        self.open_message.fields = fields
        if self.open_message.transaction is not None:
            self.terminal.extend_request(self.open_message.transaction, fields)

    def _next(self) -> None:
        """Start the next request when none is in progress."""
        self._processing = True
        try:
            while self.current is None and self.inbox and not self.closing:
                item = self.inbox.popleft()
                if item.error is not None:
                    self.current = self.terminal.receive_error(self, item.error, item.received_at)
                else:
                    item.transaction = self.current = self.terminal.receive(
                        self, item.fields, item.received_at)
                if self.current is not None and not self.current.pending:
                    self.transaction_done(self.current)
        finally:
            self._processing = False

    def _oversized(self, error: FrameError) -> None:
        """Past 64 KiB: answer AF=09, then close, swallowing what is still coming."""
        self.closing = True
        self.inbox.clear()
        self.terminal.receive_error(self, error, self._held_since)
        if hasattr(self.transport, "loseWriteConnection"):
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


class TerminalFactory(protocol.Factory):
    """Builds one TerminalProtocol per POS, refusing connections past max_connections."""

    noisy = False

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.idle_watch = IdleWatch(terminal)

    def buildProtocol(self, addr: Any) -> TerminalProtocol | None:
        if len(self.terminal.connections) >= self.terminal.max_connections:
            log.warning("refusing %s: %d connections already open (--max-connections)",
                        getattr(addr, "host", addr), len(self.terminal.connections))
            return None
        # The peer's address, which Twisted has already built for this call.
        peer = f"{addr.host}:{addr.port}" if hasattr(addr, "port") else "?"
        return TerminalProtocol(self.terminal, self.idle_watch, peer)


def start_terminal(reactor: Any, settings: TerminalSettings | None = None,
                   host: str = "127.0.0.1", port: int = 0, *,
                   factory: Callable[[Terminal], protocol.Factory] = TerminalFactory,
                   **options: Any) -> Terminal:
    """Listen for POS on host:port (0: a free port) and return the Terminal.

    `options` go to Terminal (seed, idle_timeout, max_connections). The bound
    address is `terminal.address`. `factory` builds the connections' factory
    (the proxy's, proxy.py; it has an `idle_watch` too). Raises twisted's
    CannotListenError.
    """
    terminal = Terminal(settings, reactor=reactor, **options)
    terminal.listening_port = reactor.listenTCP(port, factory(terminal),
                                                backlog=BACKLOG, interface=host)
    return terminal


def stop_terminal(terminal: Terminal, grace: float = SHUTDOWN_GRACE) -> defer.Deferred:
    """Stop listening, answer transactions in flight at once, close every connection.

    Fires once every connection is closed; those still open after `grace`
    seconds (a POS that does not read) are aborted.
    """
    reactor = terminal.reactor
    port = terminal.listening_port
    stopped = defer.succeed(None)
    if port is not None:
        stopped = defer.maybeDeferred(port.stopListening)
        stopped.addCallback(lambda _: port.factory.idle_watch.stop())
    for connection in terminal.connections:
        connection.closing = True  # no new request starts now
    terminal.stop_transactions()
    closing = []
    for connection in list(terminal.connections):
        closed: defer.Deferred = defer.Deferred()
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
