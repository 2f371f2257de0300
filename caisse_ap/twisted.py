"""The Twisted client: every action returns a Deferred that fires with a PaymentResult.

    from caisse_ap.twisted import PaymentTerminal
    paid = PaymentTerminal(reactor, "192.168.1.50").pay("12.50", currency="EUR")
    paid.addCallback(lambda result: print(result.outcome))

The Deferred fails with TerminalUnreachable when the connection could not be
made (nothing was sent); once the request went out, every ending is a
PaymentResult (UNKNOWN when the outcome cannot be known). Cancelling the
Deferred closes the connection (a request already sent is then UNKNOWN: the
Deferred fails with CancelledError, as Twisted's do). This module only moves
bytes and sets timers: `payment.Exchange` decides the rest.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, cast

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
)
from twisted.python.failure import Failure

from .messages import PaymentRequest
from .payment import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    Actions,
    Exchange,
    PaymentResult,
    unreachable,
)

__all__ = ["PaymentTerminal"]

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorCore, IReactorFromThreads

    # Make-believe interfaces, for mypy only, as Twisted's own `_IReactorCommon`: a zope
    # interface cannot say "both IReactorTCP and IReactorTime", an interface that extends
    # both can. No reactor declares them: never ask `providedBy`.

    class IReactorTCPTime(IReactorTCP, IReactorTime):
        """A reactor that speaks TCP and keeps time, as each of Twisted's does: what the
        simulated terminal needs (a MemoryReactorClock in tests)."""

    class IGlobalReactor(IReactorCore, IReactorFromThreads, IReactorTCPTime):
        """Twisted's global reactor, as this package uses it (see `global_reactor`)."""


def global_reactor() -> IGlobalReactor:
    """Twisted's global reactor (installed on first use), typed as this package uses it.

    Twisted types it as the interfaces it always provides; IReactorFromThreads is among
    those it provides too, but not among those its type names.
    """
    from twisted.internet import reactor

    return cast("IGlobalReactor", reactor)


class PaymentTerminal(Actions[defer.Deferred[PaymentResult]]):
    """A payment terminal at `host`:`port`, spoken to from the Twisted `reactor`."""

    def __init__(self, reactor: IReactorTCP, host: str, port: int = DEFAULT_PORT, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 register: str = "01", pos_id: str = "012345678901",
                 protocol_version: str = "0300",
                 trailing_grace: float | None = None) -> None:
        super().__init__(host, port, timeout=timeout, connect_timeout=connect_timeout,
                         register=register, pos_id=pos_id, protocol_version=protocol_version,
                         trailing_grace=trailing_grace)
        self.reactor = reactor
        # It keeps time too, as every Twisted reactor does (IReactorTime); the parameter
        # names only IReactorTCP, as callers' own annotations often do.
        self.clock = cast(IReactorTime, reactor)

    def send(self, request: PaymentRequest) -> defer.Deferred[PaymentResult]:
        """Send `request` and read the answer (see the module's docstring)."""
        exchange = Exchange(request, self.timeout, self.clock.seconds,
                            trailing_grace=self.trailing_grace)
        connector: list[IConnector] = []

        def cancel(_: defer.Deferred[PaymentResult]) -> None:
            if connector:
                connector[0].disconnect()

        done: defer.Deferred[PaymentResult] = defer.Deferred(cancel)
        factory = _ExchangeFactory(self.clock, exchange, done, self.host, self.port,
                                   self.connect_timeout)
        connector.append(self.reactor.connectTCP(self.host, self.port, factory,
                                                 timeout=self.connect_timeout))
        return done


class _ExchangeProtocol(protocol.Protocol):
    """Writes the request, feeds what comes back to the Exchange, wakes it on time."""

    def __init__(self, reactor: IReactorTime, exchange: Exchange,
                 done: defer.Deferred[PaymentResult]) -> None:
        self.reactor = reactor
        self.exchange = exchange
        self.done = done
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.exchange.frame)
        self._step()

    def dataReceived(self, data: bytes) -> None:
        self.exchange.receive(data)
        self._step()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._stop_timer()
        if self.done.called:
            return
        if reason.check(error.ConnectionDone):
            self.exchange.receive(b"")
            self._step()
        else:
            self._finish(self.exchange.lost(reason.getErrorMessage()))

    def _step(self) -> None:
        self._stop_timer()
        if self.done.called:
            return
        step = self.exchange.step()
        if isinstance(step, PaymentResult):
            self._finish(step)
        else:
            self.timer = self.reactor.callLater(step, self._step)

    def _finish(self, result: PaymentResult) -> None:
        self._stop_timer()
        if self.transport is not None:
            self.transport.loseConnection()
        self.done.callback(result)

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class _ExchangeFactory(protocol.ClientFactory):
    def __init__(self, reactor: IReactorTime, exchange: Exchange,
                 done: defer.Deferred[PaymentResult], host: str, port: int,
                 connect_timeout: float) -> None:
        self.reactor = reactor
        self.exchange = exchange
        self.done = done
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout

    def buildProtocol(self, addr: IAddress | None) -> _ExchangeProtocol:
        return _ExchangeProtocol(self.reactor, self.exchange, self.done)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.done.called and not reason.check(error.UserError):  # UserError: cancelled
            self.done.errback(unreachable(self.host, self.port, _as_os_error(reason),
                                          self.connect_timeout))


def _as_os_error(reason: Failure) -> OSError:
    """Twisted's reason for a failed connection as the OSError a socket would raise, so
    that every client words TerminalUnreachable alike."""
    if reason.check(error.DNSLookupError):
        return socket.gaierror(reason.getErrorMessage())
    if reason.check(error.TimeoutError):
        return TimeoutError()
    if reason.check(error.ConnectionRefusedError):
        return ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    return OSError(reason.getErrorMessage())
