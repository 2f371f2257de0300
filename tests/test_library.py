"""The library's three clients (blocking, asyncio, Twisted) against real terminals.

Every scenario runs once per client style: the simulated terminal of
caisse_ap.testing for what a real terminal does, and the scripted fake
terminals of test_client for answers cut, padded or never finished.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from test_client import KEEP_OPEN, FakeTerminal, answer

import caisse_ap
from caisse_ap import (
    Action,
    CaisseApError,
    InvalidRequest,
    Outcome,
    PaymentResult,
    PaymentTerminal,
    TerminalUnreachable,
    aio,
    tlv,
)
from caisse_ap import twisted as twisted_client
from caisse_ap.payment import Exchange, make_request
from caisse_ap.testing import SimulatedTerminal, simulated_terminal

STYLES = ["blocking", "asyncio", "twisted"]


class Client:
    """One client style, driven to its result from the test's thread.

    `client.pay(...)` (or any action) builds that style's PaymentTerminal and
    returns the PaymentResult, or raises what the client raised.
    """

    def __init__(self, style: str, reactor_thread: Any, address: tuple[str, int],
                 **options: Any) -> None:
        self.style = style
        self.reactor_thread = reactor_thread
        self.address = address
        self.options = options

    def __getattr__(self, action: str) -> Callable[..., PaymentResult]:
        host, port = self.address

        def run(*args: Any, **kwargs: Any) -> PaymentResult:
            if self.style == "blocking":
                return getattr(PaymentTerminal(host, port, **self.options), action)(
                    *args, **kwargs)
            if self.style == "asyncio":
                terminal = aio.PaymentTerminal(host, port, **self.options)

                async def main() -> PaymentResult:
                    return await getattr(terminal, action)(*args, **kwargs)

                return asyncio.run(main())
            reactor = self.reactor_thread.reactor
            return self.reactor_thread.call(lambda: getattr(
                twisted_client.PaymentTerminal(reactor, host, port, **self.options), action)(
                    *args, **kwargs))

        return run


@pytest.fixture(scope="module")
def terminal(reactor_thread: Any) -> Iterator[SimulatedTerminal]:
    with simulated_terminal() as running:
        yield running


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def connect(style: str, reactor_thread: Any,
            trailing_grace: float | None) -> Callable[..., Client]:
    def make(address: tuple[str, int], **options: Any) -> Client:
        options.setdefault("trailing_grace", trailing_grace)  # conftest.QUICK_GRACE, or None
        return Client(style, reactor_thread, address, **options)

    return make


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


# --- against the simulated terminal -------------------------------------------------------


def test_approval(terminal: SimulatedTerminal, connect: Callable[..., Client]) -> None:
    result = connect(terminal.address).pay("12.50", currency="EUR", reference="R-7")
    assert result.outcome is Outcome.APPROVED and result.approved
    assert (result.amount, result.currency, result.action) == (Decimal("12.50"), "EUR",
                                                               Action.DEBIT)
    assert result.partial_amount is None and result.refusal_code is None
    assert result.payment_type == "001" and result.card_number
    assert result.authorisation_number and result.problem is None
    assert result.answer is not None and result.answer.reference == "R-7"
    assert result.request_frame == result.request.encode()
    assert dict(tlv.decode(result.answer_frame))["AE"] == "10"
    assert result.elapsed_s > 0


def test_refusal(terminal: SimulatedTerminal, connect: Callable[..., Client]) -> None:
    terminal.next("refused")
    result = connect(terminal.address).pay(Decimal("3.10"))
    assert result.outcome is Outcome.DECLINED and not result.approved
    assert (result.refusal_code, result.refusal_label) == ("04", "Refusée")


def test_immediate_answer(terminal: SimulatedTerminal, connect: Callable[..., Client]) -> None:
    result = connect(terminal.address).pay("5", immediate=True)
    assert result.outcome is Outcome.ACCEPTED
    assert result.request.value("BA") == "1"


def test_partial_payment(terminal: SimulatedTerminal, connect: Callable[..., Client]) -> None:
    terminal.next("partial")
    result = connect(terminal.address).pay("10.58", partial=True)
    assert result.outcome is Outcome.APPROVED
    assert result.partial_amount == Decimal("5.29")


def test_receipt(terminal: SimulatedTerminal, connect: Callable[..., Client]) -> None:
    result = connect(terminal.address).pay("12,50", receipt=True)
    assert result.receipt is not None and "12,50 EUR" in result.receipt


def test_refund_cancel_duplicate_and_cheque(terminal: SimulatedTerminal,
                                            connect: Callable[..., Client]) -> None:
    client = connect(terminal.address)
    assert client.refund("4.00").request.value("CD") == "1"
    assert client.cancel("4.00").action is Action.CANCELLATION
    assert client.duplicate("4.00").request.value("CD") == "3"
    cheque = client.pay("4.00", cheque=True)
    assert cheque.payment_type == "00C" and cheque.approved


def test_no_answer_is_unknown(terminal: SimulatedTerminal,
                              connect: Callable[..., Client]) -> None:
    terminal.next("no-answer")
    result = connect(terminal.address, timeout=0.3).pay("1.00")
    assert result.outcome is Outcome.UNKNOWN
    assert result.problem == "no answer within 0.3 s"
    assert result.answer is None and result.answer_frame == b""


def test_hang_up_is_unknown(terminal: SimulatedTerminal, connect: Callable[..., Client]) -> None:
    terminal.next("hang-up")
    result = connect(terminal.address).pay("1.00")
    assert result.outcome is Outcome.UNKNOWN
    assert result.problem == "the terminal closed the connection without answering"


def test_padded_amount(connect: Callable[..., Client], reactor_thread: Any) -> None:
    with simulated_terminal(pad_amount=True) as padded:
        result = connect(padded.address).pay("12.50")
    assert result.outcome is Outcome.APPROVED and result.partial_amount is None
    assert result.answer is not None and result.answer.value("CB") == "000000001250"


# --- against scripted terminals -----------------------------------------------------------


def test_unreachable_raises_and_sends_nothing(connect: Callable[..., Client]) -> None:
    port = _closed_port()
    with pytest.raises(TerminalUnreachable) as caught:
        connect(("127.0.0.1", port), connect_timeout=2).pay("1.00")
    assert isinstance(caught.value, CaisseApError)
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
    assert str(caught.value) == (f"cannot connect to 127.0.0.1:{port}: Connection refused; "
                                 "nothing was sent")  # the same words from every client


def test_answer_split_in_segments(connect: Callable[..., Client]) -> None:
    def script(request: list[tuple[str, str]]) -> list[Any]:
        frame = answer(request, AC="123456")
        return [frame[:3], 0.05, frame[3:12], 0.05, frame[12:]]  # cut in CZ, then in AE

    fake = FakeTerminal(script)
    result = connect(("127.0.0.1", fake.port)).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.APPROVED
    assert result.authorisation_number == "123456"


@pytest.mark.trailing_grace
def test_fields_after_ae_in_a_later_segment_are_kept(connect: Callable[..., Client]) -> None:
    receipt = base64.b64encode(b"TICKET").decode()
    block = tlv.encode([("AK", receipt)], bare=True).decode()

    def script(request: list[tuple[str, str]]) -> list[Any]:
        return [answer(request), 0.01, tlv.encode([("ZT", block)], bare=True), KEEP_OPEN]

    fake = FakeTerminal(script)
    result = connect(("127.0.0.1", fake.port)).pay("1.00", receipt=True)
    fake.join()
    assert result.receipt == "TICKET"


def test_close_in_the_middle_of_the_answer(connect: Callable[..., Client]) -> None:
    fake = FakeTerminal(lambda request: [answer(request)[:12]])
    result = connect(("127.0.0.1", fake.port)).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.UNKNOWN
    assert result.problem is not None and result.problem.startswith("unreadable answer")


def test_echo_mismatch_is_unknown(connect: Callable[..., Client]) -> None:
    fake = FakeTerminal(lambda request: [answer(request, CB="9999")])
    result = connect(("127.0.0.1", fake.port)).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.UNKNOWN
    assert result.problem is not None and "does not match the request" in result.problem


# --- a real network's segmentation: one lost segment is sent again after >= 200 ms ---------


def _rich_answer(request: list[tuple[str, str]]) -> bytes:
    return answer(request, CC="001", AC="123456", AA="497010######0123", CI="1")


@pytest.mark.slow  # real network pauses, 3 clients; the quick loop keeps test_client's
@pytest.mark.trailing_grace
def test_an_approval_in_four_segments_200_ms_apart_is_read_whole(
        connect: Callable[..., Client]) -> None:
    """What one lost TCP segment per write does (Linux's minimum retransmission time-out
    is 200 ms), the connection kept open: cut in a field before AE, in a field after
    it, and at a field boundary after it. The approval is read whole, nothing dropped."""
    def script(request: list[tuple[str, str]]) -> list[Any]:
        frame = _rich_answer(request)
        boundary = frame.index(b"AA016")
        cuts = [12, 37, boundary, boundary + 9]
        pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]
        steps: list[Any] = [pieces[0]]
        for piece in pieces[1:]:
            steps += [0.2, piece]
        return [*steps, KEEP_OPEN]

    fake = FakeTerminal(script)
    result = connect(("127.0.0.1", fake.port), timeout=20).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.APPROVED, result.problem
    assert result.answer_frame == _rich_answer(fake.requests[0])
    assert result.card_number == "497010######0123"
    assert result.dropped_bytes == b""


@pytest.mark.slow  # real network pauses, 3 clients; the quick loop keeps test_client's
@pytest.mark.trailing_grace
def test_optional_fields_held_back_250_ms_join_the_answer(
        connect: Callable[..., Client]) -> None:
    """A segment of optional fields (AA, AC) held back 250 ms after a complete answer, the
    connection kept open: within the grace, so the card number is not lost."""
    def script(request: list[tuple[str, str]]) -> list[Any]:
        frame = _rich_answer(request)
        cut = frame.index(b"AC006")
        return [frame[:cut], 0.25, frame[cut:], KEEP_OPEN]

    fake = FakeTerminal(script)
    result = connect(("127.0.0.1", fake.port), timeout=20).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.APPROVED
    assert (result.authorisation_number, result.card_number) == ("123456", "497010######0123")
    assert result.dropped_bytes == b""


@pytest.mark.trailing_grace
def test_trailing_bytes_that_cannot_join_are_reported_dropped(
        connect: Callable[..., Client]) -> None:
    """Held back 250 ms, bytes that break the framing after AE do not spoil the approval,
    and the result says they were dropped."""
    def script(request: list[tuple[str, str]]) -> list[Any]:
        return [answer(request), 0.25, b"AC006123456CA00202", KEEP_OPEN]

    fake = FakeTerminal(script)
    result = connect(("127.0.0.1", fake.port), timeout=20).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.APPROVED
    assert result.authorisation_number == "123456"
    assert result.dropped_bytes == b"CA00202"


@pytest.mark.slow  # real network pauses, 3 clients; the quick loop keeps test_client's
def test_a_field_left_cut_waits_for_the_exchange_time_out(
        connect: Callable[..., Client]) -> None:
    """A field cut after AE is never the end of the answer: the time-out gives the error.
    With the tests' short grace (conftest.QUICK_GRACE), the time-out is ten of them."""
    def script(request: list[tuple[str, str]]) -> list[Any]:
        frame = _rich_answer(request)
        return [frame[:frame.index(b"AA016") + 8], KEEP_OPEN]

    timeout = 0.5
    fake = FakeTerminal(script)
    result = connect(("127.0.0.1", fake.port), timeout=timeout).pay("1.00")
    fake.join()
    assert result.outcome is Outcome.UNKNOWN
    assert result.problem is not None and "truncated" in result.problem
    assert result.elapsed_s >= timeout


def test_exchange_waits_for_the_answer_then_only_the_grace() -> None:
    """The one reading path of the three clients, on an injected clock: until AE the wait
    is what is left of the time-out; after it, only the trailing grace."""
    now = [100.0]
    exchange = Exchange(make_request("1.00"), timeout=30, clock=lambda: now[0],
                        trailing_grace=0.5)
    now[0] += 10
    assert exchange.step() == 20 and exchange.awaiting_answer
    frame = answer(tlv.decode(exchange.frame))
    exchange.receive(frame)
    assert exchange.step() == 0.5 and not exchange.awaiting_answer
    now[0] += 0.5
    result = exchange.step()
    assert isinstance(result, PaymentResult) and result.outcome is Outcome.APPROVED
    assert result.answer_frame == frame and result.elapsed_s == 10.5


def test_exchange_time_out_counts_from_its_start() -> None:
    now = [0.0]
    exchange = Exchange(make_request("1.00"), timeout=2, clock=lambda: now[0])
    exchange.receive(b"CZ0040300")
    now[0] = 2.0
    result = exchange.step()
    assert isinstance(result, PaymentResult) and result.outcome is Outcome.UNKNOWN
    assert result.problem == "no answer within 2 s (9 bytes, not a whole answer)"


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("call, field", [
    (lambda t: t.pay(1250), "amount"),
    (lambda t: t.pay(12.5), "amount"),
    (lambda t: t.pay("-3"), "amount"),
    (lambda t: t.refund("-3"), "amount"),
    (lambda t: t.pay("1", currency="ZZZ"), "currency"),
    (lambda t: t.pay("1", reference="x" * 33), "reference"),
    (lambda t: PaymentTerminal("h", register="1"), "register"),
    (lambda t: PaymentTerminal("h", connect_timeout=0), "connect_timeout"),
    (lambda t: PaymentTerminal("h", trailing_grace=-0.1), "trailing_grace"),
])
def test_bad_arguments_raise_before_anything_is_sent(call: Callable[[PaymentTerminal], Any],
                                                     field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        call(PaymentTerminal("127.0.0.1", _closed_port()))
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, CaisseApError)
    assert "--" not in str(caught.value)  # the library's words, not the command line's


def test_result_is_frozen_and_outcome_is_its_word(terminal: SimulatedTerminal) -> None:
    result = PaymentTerminal(*terminal.address).pay("2.00")
    with pytest.raises(AttributeError):
        result.outcome = Outcome.DECLINED  # type: ignore[misc]
    assert result.outcome == "approved" and str(result.outcome) == "approved"
    assert f"{result.outcome}" == "approved"


@pytest.mark.slow
def test_import_caisse_ap_stays_light() -> None:
    import subprocess
    import sys

    probe = ("import sys, caisse_ap; "
             "print(sorted(m for m in sys.modules if m.startswith(('caisse_ap.', 'twisted', "
             "'asyncio', 'dataclasses'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "['caisse_ap.errors', 'caisse_ap.tlv']"
    assert caisse_ap.PaymentTerminal is PaymentTerminal


# --- cancellation -----------------------------------------------------------------------


def test_asyncio_wait_for_closes_the_connection() -> None:
    fake = FakeTerminal(lambda request: [KEEP_OPEN])

    async def main() -> None:
        terminal = aio.PaymentTerminal("127.0.0.1", fake.port)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(terminal.pay("1.00"), 0.2)

    asyncio.run(main())
    assert fake.client_closed.wait(10)  # the terminal saw the POS close its side
    fake.join()


def _silent_terminal() -> tuple[FakeTerminal, threading.Event]:
    """A fake terminal that reads the request and never answers; the event is set once
    the request is read."""
    request_read = threading.Event()

    def script(request: list[tuple[str, str]]) -> list[Any]:
        request_read.set()
        return [KEEP_OPEN]

    return FakeTerminal(script), request_read


def test_asyncio_cancelled_task_closes_the_connection() -> None:
    fake, request_read = _silent_terminal()

    async def main() -> None:
        task = asyncio.ensure_future(aio.PaymentTerminal("127.0.0.1", fake.port).pay("1.00"))
        assert await asyncio.get_running_loop().run_in_executor(None, request_read.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert fake.client_closed.wait(10)
    fake.join()


def test_twisted_cancelled_deferred_closes_the_connection(reactor_thread: Any) -> None:
    from twisted.internet import defer

    fake, request_read = _silent_terminal()
    terminal = twisted_client.PaymentTerminal(reactor_thread.reactor, "127.0.0.1", fake.port)
    paid = reactor_thread.call(lambda: [terminal.pay("1.00")])[0]  # a list: not waited for
    assert request_read.wait(10)
    reactor_thread.call(paid.cancel)
    with pytest.raises(defer.CancelledError):
        reactor_thread.call(lambda: paid)
    assert fake.client_closed.wait(10)
    fake.join()
