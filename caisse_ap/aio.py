"""The asyncio client: every action is awaited and gives a PaymentResult.

    from caisse_ap.aio import PaymentTerminal
    result = await PaymentTerminal("192.168.1.50").pay("12.50", currency="EUR")

On asyncio streams. TerminalUnreachable is raised when the connection could
not be made (nothing was sent); once the request went out, every ending is a
PaymentResult (UNKNOWN when the outcome cannot be known). The task may be
cancelled at any point, directly or by `asyncio.wait_for`: the connection is
closed on the way out (a request already sent is then of unknown outcome).
This module only moves bytes and waits: `payment.Exchange` decides the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

from .i18n import N_, said
from .messages import PaymentRequest
from .payment import (
    Actions,
    Exchange,
    PaymentResult,
    os_error_reason,
    unreachable,
)

__all__ = ["PaymentTerminal"]

RECV_SIZE = 4096


class PaymentTerminal(Actions[Coroutine[object, object, PaymentResult]]):
    """A payment terminal at `host`:`port`, spoken to over asyncio streams.

    Arguments are checked when an action is called, before it is awaited.
    """

    def send(self, request: PaymentRequest) -> Coroutine[object, object, PaymentResult]:
        """Send `request` and read the answer (see the module's docstring)."""
        return self._send(request)

    async def _send(self, request: PaymentRequest) -> PaymentResult:
        exchange = Exchange(request, self.timeout, trailing_grace=self.trailing_grace)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout)
        except asyncio.TimeoutError as error:
            raise unreachable(self.host, self.port, TimeoutError(),
                              self.connect_timeout) from error
        except OSError as error:
            raise unreachable(self.host, self.port, error, self.connect_timeout) from None
        try:
            writer.write(exchange.frame)
            try:
                await writer.drain()
            except OSError as error:
                # Part of the request may have gone out: the outcome is not known.
                return exchange.result(
                    problem=said(N_("connection lost while sending: %s"),
                                 (os_error_reason(error),)))
            return await _read_answer(reader, exchange)
        finally:
            writer.close()  # closes the socket at once, cancelled or not


async def _read_answer(reader: asyncio.StreamReader, exchange: Exchange) -> PaymentResult:
    while True:
        step = exchange.step()
        if isinstance(step, PaymentResult):
            return step
        try:
            data = await asyncio.wait_for(reader.read(RECV_SIZE), step)
        except asyncio.TimeoutError:
            continue  # step() knows whether the grace or the time-out is over
        except OSError as error:
            return exchange.lost(os_error_reason(error))
        exchange.receive(data)
