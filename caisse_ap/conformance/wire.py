"""The Twisted edge of the conformance kit: a terminal that plays one scenario.

It reads the POS's requests through the core's `TerminalConnection`, asks
`plan.make_plan` what to write, and carries the plan out with `callLater`
(never a sleep: the reactor keeps serving the other scenarios), recording
what the POS did on the wire in a `WireRecord`. Nothing here decides. A
factory hears of each request, each plan carried out and each connection lost
(hooks a session of scenarios uses to journal its payments, manual.py).
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    ITCPTransport,
)
from twisted.python.failure import Failure

from .. import tlv
from ..connection import (
    CloseConnection,
    MalformedRequest,
    NeedData,
    RequestReceived,
    TerminalConnection,
)
from ..terminal import behaviour
from ..tlv import Field
from .catalogue import Scenario
from .judge import WireRecord
from .plan import Plan, make_plan, settings_for

if TYPE_CHECKING:
    from ..twisted import IReactorTCPTime

LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class ScenarioProtocol(protocol.Protocol):
    """One POS connection: every request it sends gets the scenario's plan."""

    transport: ITCPTransport | None  # abortConnection; getHandle too, on a socket

    def __init__(self, kit: ScenarioFactory) -> None:
        self.kit = kit
        self.timers: list[IDelayedCall] = []
        self.closing = False  # the terminal closes (or resets) this connection itself
        self.written = bytearray()  # what the terminal wrote on this connection
        self.peer = "?"  # "host:port" of the POS (the factory sets it)

    def connectionMade(self) -> None:
        reactor = self.kit.reactor
        self.connection = TerminalConnection(reactor.seconds)
        # This connection's scenario and record (a session moves on to the next scenario
        # for the next connections).
        self.scenario, self.record = self.kit.scenario, self.kit.record
        self.record.connections += 1
        self.record.open_connections += 1
        self.kit.protocols.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.connection.receive_data(data)
        self.pump()

    def pump(self) -> None:
        record = self.record
        while True:
            event = self.connection.next_event()
            if isinstance(event, RequestReceived):
                record.requests.append(tlv.encode_unchecked(event.fields))
                self.kit.request_received(self, list(event.fields))
                self.play(make_plan(self.scenario, list(event.fields), self.kit.pos_timeout))
            elif isinstance(event, MalformedRequest):
                record.malformed.append(str(event.error))
                settings = settings_for(self.scenario)
                reply = behaviour.error_reply(event.error.fields, "09", settings)
                self.write(tlv.encode_unchecked(reply.fields or ()))
                self.connection.request_finished()
            elif isinstance(event, CloseConnection):
                if not self.closing and self.transport is not None:
                    self.transport.loseConnection()
                return
            elif isinstance(event, NeedData):
                if event.deadline is not None:
                    delay = max(0.0, event.deadline - self.kit.reactor.seconds())
                    self.timers.append(self.kit.reactor.callLater(delay, self.pump))
                return
            # RequestExtended, BytesDropped: late optional fields or noise; nothing to do

    def play(self, plan: Plan) -> None:
        """Write the plan's bytes, each after its pause, then end as it says."""
        elapsed = 0.0
        for write in plan.writes:
            elapsed += write.after
            self.timers.append(self.kit.reactor.callLater(elapsed, self.write, write.data))
        self.timers.append(self.kit.reactor.callLater(elapsed, self.finish, plan))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.record.sent += data
            self.written += data
            self.transport.write(data)

    # What the Terminal needs of a POS connection (service.Connection), for a session
    # that journals its payments: the plan writes and ends the answer itself.

    def send(self, data: bytes) -> None:
        self.write(data)

    def hang_up(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.loseConnection()

    def transaction_done(self, transaction: object) -> None:
        """Nothing to do: the connection reads the POS's next request as it comes."""

    def finish(self, plan: Plan) -> None:
        then = plan.then
        self.connection.request_finished()
        self.kit.plan_done(self, plan)
        if self.transport is None or self.closing:
            return
        if then == "close":
            self.closing = True
            self.transport.loseConnection()
        elif then == "reset":
            self.closing = True
            handle = getattr(self.transport, "getHandle", None)
            if handle is not None:
                handle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self.transport.abortConnection()
        else:
            self.pump()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        record = self.record
        record.open_connections -= 1
        if not self.closing:
            record.closed_by_pos += 1
        for timer in self.timers:
            if timer.active():
                timer.cancel()
        self.kit.protocols.discard(self)
        self.kit.connection_lost(self)
        if not self.kit.protocols and self.kit.all_closed is not None:
            waiting, self.kit.all_closed = self.kit.all_closed, None
            waiting.callback(None)


class ScenarioFactory(protocol.ServerFactory):
    def __init__(self, scenario: Scenario, pos_timeout: float,
                 reactor: IReactorTCPTime) -> None:
        self.scenario = scenario
        self.pos_timeout = pos_timeout
        self.reactor = reactor
        self.record = WireRecord()
        self.protocols: set[ScenarioProtocol] = set()
        self.all_closed: defer.Deferred[None] | None = None
        self.port: IListeningPort | None = None

    # Hooks for a session of scenarios (manual.py); the runner needs none.

    def request_received(self, connection: ScenarioProtocol, fields: list[Field]) -> None:
        """A whole request came on `connection`; its plan is played next."""

    def plan_done(self, connection: ScenarioProtocol, plan: Plan) -> None:
        """`plan` was carried out on `connection`."""

    def connection_lost(self, connection: ScenarioProtocol) -> None:
        """`connection` is closed (its plans left unfinished will not be carried out)."""

    def buildProtocol(self, addr: IAddress | None) -> ScenarioProtocol:
        return ScenarioProtocol(self)

    def listen(self, host: str = "127.0.0.1") -> int:
        self.port = self.reactor.listenTCP(0, self, interface=host)
        address = self.port.getHost()
        assert isinstance(address, (IPv4Address, IPv6Address))  # a TCP port's
        return address.port

    def when_closed(self, grace: float) -> defer.Deferred[None]:
        """Fires once the POS closed every connection, or after `grace` seconds."""
        if not self.protocols:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self.all_closed = waiting

        def give_up() -> None:
            if not waiting.called:
                self.all_closed = None
                waiting.callback(None)

        timer = self.reactor.callLater(grace, give_up)

        def stop_timer(result: None | Failure) -> None | Failure:
            if timer.active():
                timer.cancel()
            return result

        waiting.addBoth(stop_timer)
        return waiting

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and drop whatever is still open."""
        for proto in list(self.protocols):
            proto.closing = True
            if proto.transport is not None:
                proto.transport.abortConnection()
        port = self.port
        assert port is not None  # listen() came first

        def stop_listening() -> defer.Deferred[None]:
            return port.stopListening() or defer.succeed(None)  # None: stopped already

        return defer.maybeDeferred(stop_listening)


__all__ = ["ScenarioFactory", "ScenarioProtocol"]
