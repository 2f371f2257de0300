"""The blocking payment terminal client: `caisse_ap.PaymentTerminal`.

    from caisse_ap import PaymentTerminal, Outcome
    terminal = PaymentTerminal("192.168.1.50")
    result = terminal.pay("12.50", currency="EUR")

A blocking-socket edge around `payment.Exchange`, as the asyncio and Twisted
clients are: the Exchange (over `connection.PosConnection` and
`messages.TerminalAnswer`) decides when the answer is whole, when time is up
and what came of it; this module only connects, moves bytes with socket
time-outs and tells `on_wait` the time elapsed. Safe to use from several
threads at once (each request has its own connection).

The client never resends a payment by itself: a time-out, an early close or
an answer it cannot trust is an UNKNOWN outcome, to be checked on the
terminal. A connection that fails before anything was sent raises
TerminalUnreachable. Twisted is never imported here, and iso4217 only for a
currency other than EUR, so that the command line starts fast on the
standard library.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from .connection import TRAILING_GRACE
from .i18n import N_, said
from .messages import PaymentRequest
from .payment import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    Actions,
    Exchange,
    PaymentResult,
    make_request,
    os_error_reason,
    unreachable,
)

WAIT_TICK = 1.0  # how often a waiting caller hears the elapsed time
# TRAILING_GRACE (connection.py): how long optional fields may still join an answer
# after its AE, unless the PaymentTerminal is given its own `trailing_grace`; read at
# each send, so that tests of the command line (which gives none) can change it.
RECV_SIZE = 4096

__all__ = ["PaymentTerminal", "make_request", "pay"]


class PaymentTerminal(Actions[PaymentResult]):
    """A payment terminal at `host`:`port`, spoken to over blocking sockets.

    `timeout` is how long to wait for the answer (a customer may take
    minutes), `connect_timeout` for the connection. `on_wait`, if given, is
    called about every second with the seconds elapsed while the answer is
    awaited (a live "waiting..." line). Every action returns a PaymentResult;
    see `caisse_ap.payment.Actions` for them.
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 register: str = "01", pos_id: str = "012345678901",
                 protocol_version: str = "0300",
                 on_wait: Callable[[float], None] | None = None,
                 trailing_grace: float | None = None) -> None:
        super().__init__(host, port, timeout=timeout, connect_timeout=connect_timeout,
                         register=register, pos_id=pos_id, protocol_version=protocol_version,
                         trailing_grace=trailing_grace)
        self.on_wait = on_wait

    def send(self, request: PaymentRequest) -> PaymentResult:
        """Send `request` and read the answer; TerminalUnreachable if nothing could be sent."""
        grace = TRAILING_GRACE if self.trailing_grace is None else self.trailing_grace
        exchange = Exchange(request, self.timeout, trailing_grace=grace)
        _log("debug", "connecting to %s:%d", self.host, self.port)
        sock = _connect(self.host, self.port, self.connect_timeout)
        with sock:
            try:
                sock.sendall(exchange.frame)
            except OSError as error:
                # Part of the request may have gone out: the outcome is not known.
                return exchange.result(
                    problem=said(N_("connection lost while sending: %s"),
                                 (os_error_reason(error),)))
            _log("debug", "sent %d bytes", len(exchange.frame))
            try:
                result = _read_answer(sock, exchange, self.on_wait)
            except KeyboardInterrupt:
                return exchange.result(
                    problem=said(N_("interrupted while waiting for the answer")))
        _log("debug", "received %d bytes", len(result.answer_frame))
        return result


def _connect(host: str, port: int, connect_timeout: float) -> socket.socket:
    """A connected socket, or TerminalUnreachable saying why there is none."""
    try:
        return socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as error:
        raise unreachable(host, port, error, connect_timeout) from None


def _read_answer(sock: socket.socket, exchange: Exchange,
                 on_wait: Callable[[float], None] | None) -> PaymentResult:
    """Move bytes into `exchange` until it has a result: it decides when the answer is
    whole and when time is up; this only waits, telling `on_wait` every WAIT_TICK."""
    while True:
        step = exchange.step()
        if isinstance(step, PaymentResult):
            return step
        ticking = on_wait is not None and exchange.awaiting_answer  # not the trailing grace
        sock.settimeout(min(step, WAIT_TICK) if ticking else step)
        try:
            chunk = sock.recv(RECV_SIZE)
        except TimeoutError:
            if on_wait is not None and ticking:
                on_wait(exchange.clock() - exchange.started)
            continue
        except OSError as error:
            return exchange.lost(os_error_reason(error))
        exchange.receive(chunk)


def _log(level: str, message: str, *args: object) -> None:
    # logging costs startup time: import it on first use.
    import logging

    getattr(logging.getLogger(__name__), level)(message, *args)


def pay(request: PaymentRequest, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        trailing_grace: float | None = None) -> PaymentResult:
    """Send a request built by make_request to host:port: PaymentTerminal(...).send(request)."""
    return PaymentTerminal(host, port, timeout=timeout, connect_timeout=connect_timeout,
                           trailing_grace=trailing_grace).send(request)
