"""The blocking payment terminal client: `caisse_ap.PaymentTerminal`.

    from caisse_ap import PaymentTerminal, Outcome
    terminal = PaymentTerminal("192.168.1.50")
    result = terminal.pay("12.50", currency="EUR")

A blocking-socket edge around the protocol core: `messages.PaymentRequest`
builds the request, `connection.PosConnection` finds the end of the answer and
`messages.TerminalAnswer` reads it; `payment` turns that into a
PaymentResult. Safe to use from several threads at once (each request has
its own connection).

The client never resends a payment by itself: a time-out, an early close or
an answer it cannot trust is an UNKNOWN outcome, to be checked on the
terminal. A connection that fails before anything was sent raises
TerminalUnreachable. Twisted is never imported here, and iso4217 only for a
currency other than EUR, so that the command line starts fast on the
standard library.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from .messages import PaymentRequest, TerminalAnswer
from .payment import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    Actions,
    PaymentResult,
    make_request,
    os_error_reason,
    payment_result,
    unreachable,
)
from .tlv import Field, FrameError

WAIT_TICK = 1.0  # how often a waiting caller hears the elapsed time
# Once the answer holds AE at a field boundary it is complete, but a terminal
# that writes it in two segments split right after AE would lose its last
# fields: connection.PosConnection keeps whole fields that come until the
# terminal is silent this long (it stops early at CR/LF or a close, so only a
# terminal that keeps the connection open silently costs these 50 ms).
TRAILING_GRACE = 0.05
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
                 on_wait: Callable[[float], None] | None = None) -> None:
        super().__init__(host, port, timeout=timeout, connect_timeout=connect_timeout,
                         register=register, pos_id=pos_id, protocol_version=protocol_version)
        self.on_wait = on_wait

    def send(self, request: PaymentRequest) -> PaymentResult:
        """Send `request` and read the answer; TerminalUnreachable if nothing could be sent."""
        frame = request.encode()
        started = time.monotonic()

        def result(answer: TerminalAnswer | None = None, received: bytes = b"",
                   problem: str | None = None) -> PaymentResult:
            return payment_result(request, frame, answer, received, problem,
                                  time.monotonic() - started)

        _log("debug", "connecting to %s:%d", self.host, self.port)
        sock = _connect(self.host, self.port, self.connect_timeout)
        with sock:
            try:
                sock.sendall(frame)
            except OSError as error:
                # Part of the request may have gone out: the outcome is not known.
                return result(problem=f"connection lost while sending: {_reason(error)}")
            _log("debug", "sent %d bytes", len(frame))
            try:
                reception = _receive_answer(sock, self.timeout, started, self.on_wait)
            except KeyboardInterrupt:
                return result(problem="interrupted while waiting for the answer")
        received = bytes(reception.received)
        _log("debug", "received %d bytes", len(received))
        if reception.error is not None:
            answer: TerminalAnswer | None = TerminalAnswer.unreadable(reception.error)
        else:
            answer = TerminalAnswer.parse(reception.message) if reception.message else None
        return result(answer, received, reception.problem)


def _connect(host: str, port: int, connect_timeout: float) -> socket.socket:
    """A connected socket, or TerminalUnreachable saying why there is none."""
    try:
        return socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as error:
        raise unreachable(host, port, error, connect_timeout) from None


# --- reading the answer ------------------------------------------------------------------


class _Reception:
    """What _receive_answer got: the bytes, and a message, a problem or a FrameError."""

    def __init__(self, received: bytearray):
        self.received = received
        self.message: list[Field] | None = None
        self.problem: str | None = None
        self.error: FrameError | None = None


def _receive_answer(sock: socket.socket, timeout: float, started: float,
                    on_wait: Callable[[float], None] | None) -> _Reception:
    """Read until the answer is whole, the peer closes, or time runs out.

    connection.PosConnection decides when the answer is whole, trailing
    optional fields included; this only moves bytes and waits.
    """
    from .connection import AnswerReceived, ConnectionClosed, PosConnection, ProtocolError

    connection = PosConnection(trailing_grace=TRAILING_GRACE)
    reception = _Reception(bytearray())
    deadline = time.monotonic() + timeout
    while True:
        event = connection.next_event()
        if isinstance(event, AnswerReceived):
            reception.message = event.fields
            if event.dropped:
                _log("warning", "ignored %d bytes after the answer: %s",
                     len(event.dropped), event.dropped_reason)
            return reception
        if isinstance(event, ProtocolError):
            # Garbage, a cut field or no AE: nothing after it can be trusted.
            reception.error = event.error
            return reception
        if isinstance(event, ConnectionClosed):
            reception.problem = "the terminal closed the connection without answering"
            return reception
        # NeedData: its deadline (the trailing grace) comes before the time-out.
        waiting = event.deadline is None
        remaining = (deadline if event.deadline is None else event.deadline) - time.monotonic()
        if remaining <= 0:
            if not waiting:
                continue  # the grace is over: the answer is whole
            size = len(reception.received)
            got = f" ({size} bytes, not a whole answer)" if size else ""
            reception.problem = f"no answer within {timeout:g} s{got}"
            return reception
        sock.settimeout(min(remaining, WAIT_TICK) if on_wait and waiting else remaining)
        try:
            chunk = sock.recv(RECV_SIZE)
        except TimeoutError:
            if on_wait and waiting:
                on_wait(time.monotonic() - started)
            continue
        except OSError as error:
            reception.problem = f"connection lost while waiting for the answer: {_reason(error)}"
            return reception
        reception.received += chunk
        connection.receive_data(chunk)


_reason = os_error_reason


def _log(level: str, message: str, *args: object) -> None:
    # logging costs startup time: import it on first use.
    import logging

    getattr(logging.getLogger(__name__), level)(message, *args)


def pay(request: PaymentRequest, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> PaymentResult:
    """Send a request built by make_request to host:port: PaymentTerminal(...).send(request)."""
    return PaymentTerminal(host, port, timeout=timeout,
                           connect_timeout=connect_timeout).send(request)
