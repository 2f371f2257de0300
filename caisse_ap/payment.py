"""What every client of the library shares: building a request, and what came of it.

The three clients (blocking `caisse_ap.PaymentTerminal`, `caisse_ap.aio`,
`caisse_ap.twisted`) differ only in how they move bytes and wait; the
actions they offer (`pay`, `refund`, `cancel`, `duplicate`, `send`), the
checks on their arguments and the `PaymentResult` they give back are
decided here, once. Reading the answer is the core's job
(`messages.TerminalAnswer`): this module only copies what it says into a
typed result.

Amounts are given in major units, as text ("12.50" or "12,50") or as a
`Decimal`; never as an int or a float, which would be ambiguous (1250 cents
or 1250 euros?) or inexact.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

from . import money, tags
from ._compat import StrEnum
from .errors import InvalidRequest, TerminalUnreachable
from .i18n import N_, Said, gettext, said
from .messages import ACTION_BY_NAME, ACTION_NAMES, Action, PaymentRequest, TerminalAnswer
from .messages import Outcome as AnswerOutcome
from .tlv import Field, FrameError

DEFAULT_PORT = 8888
DEFAULT_TIMEOUT = 180.0  # a customer may take minutes; POS integrations wait about this long
DEFAULT_CONNECT_TIMEOUT = 5.0

Amount = str | Decimal


class Outcome(StrEnum):
    """What came of a request, for the POS."""

    APPROVED = "approved"  # AE=10: done (perhaps for less: see partial_amount)
    DECLINED = "declined"  # AE=01: not done; refusal_code says why
    ACCEPTED = "accepted"  # AE=11: an immediate answer (BA=1), taken into account
    UNKNOWN = "unknown"  # the request may have reached the terminal: check it, never resend


@dataclass(frozen=True)
class PaymentResult:
    """What came of one request that was sent (see `Outcome`).

    `amount` and `currency` (alphabetic code) are what was asked;
    `partial_amount` is what was approved when the terminal approved less.
    `refusal_code` and `refusal_label` come from AF; `problem` says why an
    outcome is UNKNOWN, in English (for programs and `--json`), and `problem_local`
    says the same in the user's language (caisse_ap.i18n), for a command to show, as
    errors carry `local`. `request` and `answer` (None when nothing readable
    came back) are the core's objects, with every field; `request_frame` and
    `answer_frame` the bytes sent and received. `elapsed_s` counts from the
    connection attempt. `dropped_bytes` are bytes the terminal wrote after
    its answer that could not be read as part of it (a second message, a
    broken field): they were ignored, and a POS should log them.
    """

    outcome: Outcome
    action: Action
    amount: Decimal
    currency: str
    partial_amount: Decimal | None
    refusal_code: str | None
    refusal_label: str | None
    card_number: str | None  # masked by the terminal
    authorisation_number: str | None
    payment_type: str | None  # CC, the card application: tags.APPLICATIONS has its labels
    receipt: str | None
    problem: str | None
    request: PaymentRequest
    answer: TerminalAnswer | None
    request_frame: bytes
    answer_frame: bytes
    elapsed_s: float
    dropped_bytes: bytes = b""
    problem_local: str | None = None  # `problem` in the user's language; `problem` if None

    def __post_init__(self) -> None:
        if self.problem_local is None and self.problem is not None:
            object.__setattr__(self, "problem_local", self.problem)

    @property
    def approved(self) -> bool:
        return self.outcome is Outcome.APPROVED

    @property
    def status(self) -> Outcome:
        """The outcome under its 1.0 name (`pay(...).status == "approved"` still holds)."""
        return self.outcome


def make_request(amount: Amount, currency: str = "EUR", action: str | Action | None = None, *,
                 cheque: bool = False, register: str = "01", pos_id: str = "012345678901",
                 protocol_version: str = "0300", immediate: bool = False, partial: bool = False,
                 reference: str | None = None, receipt: bool = False,
                 extra_fields: Iterable[Field] = ()) -> PaymentRequest:
    """A PaymentRequest, or InvalidRequest naming the argument at fault.

    `amount` is text ("12,50", "12.50") or a Decimal, in major units; a
    negative amount is a refund. `action` is an Action or its name ("debit",
    "refund", "cancellation", "duplicate"); None means debit, or refund for
    a negative amount. `extra_fields` add or override raw request fields.
    """
    if not isinstance(amount, (str, Decimal)):
        raise InvalidRequest(f"amount {amount!r} must be text such as \"12.50\" or a Decimal, "
                             "in major units", "amount")
    try:
        info = money.currency(currency)
        units = money.to_minor_units(amount, info, allow_negative=True)
    except money.CurrencyError as error:
        raise InvalidRequest(str(error), "currency", local=error.local) from None
    except money.AmountError as error:
        raise InvalidRequest(str(error), "amount", error.reason, error.limits,
                             local=error.local) from None
    if isinstance(action, str) and not isinstance(action, Action):
        if action not in ACTION_BY_NAME:
            raise InvalidRequest(
                f"unknown action {action!r}; use one of {', '.join(ACTION_BY_NAME)}", "action")
        action = ACTION_BY_NAME[action]
    if units < 0:
        if action is not None and action is not Action.REFUND:
            template = N_("a negative amount is a refund; it cannot be a %s")
            name = action.name.lower()  # debit, cancellation, duplicate: in the catalog
            raise InvalidRequest(template % name, "amount", "negative",
                                 local=gettext(template) % gettext(name))
        action, units = Action.REFUND, -units
    _check_reference(reference)
    request = PaymentRequest(
        amount=units,
        currency=info.numeric,
        action=action or Action.DEBIT,
        register=_digits(register, "CA", N_("register number"), "register"),
        pos_id=_digits(pos_id, "CJ", N_("POS identifier"), "pos_id"),
        version=_digits(protocol_version, "CZ", N_("protocol version"), "protocol_version"),
        immediate=immediate,
        partial=partial,
        cheque=cheque,
        reference=reference,
        receipt=receipt,
        extra=tuple(extra_fields),
    )
    try:
        request.encode()  # refuse now what could not be sent (a non-ASCII reference...)
    except FrameError as error:
        raise InvalidRequest(f"cannot build the request: {error}") from None
    return request


def _digits(value: str, tag: str, what: str, field: str) -> str:
    """`value` if it is as many digits as the tag's largest size (tags.py), else
    InvalidRequest: strict on output, whatever a terminal tolerates in requests."""
    size = tags.tag(tag).max_size
    if not (len(value) == size and value.isascii() and value.isdigit()):
        template = N_("%(what)s %(value)r must be %(size)d digits (extra_fields can send "
                      "anything else)")
        values = {"value": value, "size": size}
        raise InvalidRequest(template % {**values, "what": what}, field,
                             local=gettext(template) % {**values, "what": gettext(what)})
    return value


def _check_reference(reference: str | None) -> None:
    longest = tags.PORTABLE_REFERENCE_SIZE  # strict on output: what every terminal echoes
    if reference is not None and not 1 <= len(reference) <= longest:
        raise InvalidRequest(**said("the reference (CF) must be 1 to %d characters", (longest,)),
                             field="reference")


# --- what came of it ---------------------------------------------------------------------


Problem = str | Said  # an outcome's problem: English, or English and the user's language


def payment_result(request: PaymentRequest, request_frame: bytes, answer: TerminalAnswer | None,
                   answer_frame: bytes, problem: Problem | None, elapsed_s: float,
                   dropped_bytes: bytes = b"") -> PaymentResult:
    """The result of a request that was sent: `problem` (a time-out, an early close...)
    makes it UNKNOWN, whatever the answer says; so does an unreadable answer or one
    that does not match the request. `problem` is English text, or i18n.said()'s pair
    (English and the user's language)."""
    outcome = Outcome.UNKNOWN
    if problem is None:
        outcome, problem = _judge(request, answer)
    english, local = ((problem, problem) if problem is None or isinstance(problem, str)
                      else (problem["message"], problem["local"]))
    info = money.currency(request.currency)
    granted = answer.amount if answer is not None and outcome is Outcome.APPROVED else None
    reason = answer.reason if answer is not None else None
    return PaymentResult(
        outcome=outcome,
        action=request.action,
        amount=money.from_minor_units(request.amount, info),
        currency=info.alpha,
        partial_amount=(money.from_minor_units(granted, info)
                        if granted is not None and granted < request.amount else None),
        refusal_code=reason.code if reason else None,
        refusal_label=reason.label if reason else None,
        card_number=answer.card_number if answer else None,
        authorisation_number=answer.authorisation_number if answer else None,
        payment_type=answer.application if answer else None,
        receipt=answer.receipt if answer else None,
        problem=english,
        problem_local=local,
        request=request,
        answer=answer,
        request_frame=request_frame,
        answer_frame=answer_frame,
        elapsed_s=elapsed_s,
        dropped_bytes=dropped_bytes,
    )


def _judge(request: PaymentRequest, answer: TerminalAnswer | None
           ) -> tuple[Outcome, Said | None]:
    if answer is None:
        return Outcome.UNKNOWN, said(N_("no answer"))
    if answer.outcome is AnswerOutcome.UNREADABLE:
        # The reader's own words (a frame's fault) are technical and stay as they are.
        return Outcome.UNKNOWN, said(N_("unreadable answer: %s"), (answer.problem,))
    differences = answer.echo_differences(request)
    if differences:
        return Outcome.UNKNOWN, _mismatch(differences)
    outcome = Outcome(answer.outcome_for(request).value)
    if outcome is Outcome.ACCEPTED and request.value("BA") != "1":
        # "Taken into account" answers an immediate request only: to one that waited for
        # the end of the transaction, it says nothing of the payment.
        return Outcome.UNKNOWN, said(N_(
            "the terminal answered an immediate answer (AE=11) to a request that did not "
            "ask for one (BA=1): the payment's outcome is not known"))
    return outcome, None


ECHO_MISMATCH = N_("%(tag)s echoed as %(got)r, sent %(sent)r")
MISMATCH = N_("the answer does not match the request (%s)")


def _mismatch(differences: list[tuple[str, str, str]]) -> Said:
    def worded(template: str) -> str:
        return "; ".join(template % {"tag": tag, "got": got, "sent": sent}
                         for tag, got, sent in differences)

    return {"message": MISMATCH % worded(ECHO_MISMATCH),
            "local": gettext(MISMATCH) % worded(gettext(ECHO_MISMATCH))}


# --- the actions every client offers -------------------------------------------------------

Sent = TypeVar("Sent")  # what send() gives: a PaymentResult, a coroutine or a Deferred of one


class Actions(Generic[Sent]):
    """pay, refund, cancel and duplicate, built once over each client's own `send()`.

    Arguments are checked when the method is called, before anything is sent
    (InvalidRequest). The register, POS identifier and protocol version are
    the terminal's, given once to the constructor.

    `trailing_grace` is how long an answer already whole (its AE read) still
    takes optional fields in later segments, when the terminal keeps the
    connection open without a line end: None is `connection.TRAILING_GRACE`
    (0.4 s, enough for one lost TCP segment to be sent again). Every such
    answer costs that wait. Lengthen it over a link that loses more; shorten
    it only where no segment is lost or late, as on 127.0.0.1 against a
    simulated terminal (a test suite).
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 register: str = "01", pos_id: str = "012345678901",
                 protocol_version: str = "0300",
                 trailing_grace: float | None = None) -> None:
        for name, seconds in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not seconds > 0:
                raise InvalidRequest(f"{name} must be above zero seconds, not {seconds!r}", name)
        if trailing_grace is not None and not trailing_grace >= 0:  # NaN too
            raise InvalidRequest(f"trailing_grace must be zero or more seconds, not "
                                 f"{trailing_grace!r}", "trailing_grace")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.trailing_grace = trailing_grace
        self.register = _digits(register, "CA", "register number", "register")
        self.pos_id = _digits(pos_id, "CJ", "POS identifier", "pos_id")
        self.protocol_version = _digits(protocol_version, "CZ", "protocol version",
                                        "protocol_version")

    def send(self, request: PaymentRequest) -> Sent:
        """Send any request (see make_request) and read the answer."""
        raise NotImplementedError

    def request(self, amount: Amount, currency: str = "EUR", action: Action = Action.DEBIT, *,
                cheque: bool = False, immediate: bool = False, partial: bool = False,
                reference: str | None = None, receipt: bool = False,
                extra_fields: Iterable[Field] = ()) -> PaymentRequest:
        """The request an action sends, built but not sent; InvalidRequest if it cannot be."""
        if (isinstance(amount, str) and amount.strip().startswith("-")) or (
                isinstance(amount, Decimal) and amount < 0):
            raise InvalidRequest(f"amount {amount} is negative: use refund() with a positive "
                                 "amount", "amount")
        return make_request(amount, currency, action, cheque=cheque, register=self.register,
                            pos_id=self.pos_id, protocol_version=self.protocol_version,
                            immediate=immediate, partial=partial, reference=reference,
                            receipt=receipt, extra_fields=extra_fields)

    def pay(self, amount: Amount, currency: str = "EUR", *, cheque: bool = False,
            immediate: bool = False, partial: bool = False, reference: str | None = None,
            receipt: bool = False, extra_fields: Iterable[Field] = ()) -> Sent:
        """Debit `amount` (CD=0). `partial` accepts a partial approval (BF=1), `immediate`
        asks for an answer before the card (BA=1), `receipt` for the customer receipt."""
        return self.send(self.request(
            amount, currency, Action.DEBIT, cheque=cheque, immediate=immediate, partial=partial,
            reference=reference, receipt=receipt, extra_fields=extra_fields))

    def refund(self, amount: Amount, currency: str = "EUR", *, reference: str | None = None,
               receipt: bool = False, extra_fields: Iterable[Field] = ()) -> Sent:
        """Credit `amount` back to the card (CD=1)."""
        return self.send(self.request(amount, currency, Action.REFUND, reference=reference,
                                      receipt=receipt, extra_fields=extra_fields))

    def cancel(self, amount: Amount, currency: str = "EUR", *, reference: str | None = None,
               receipt: bool = False, extra_fields: Iterable[Field] = ()) -> Sent:
        """Cancel a previous transaction of `amount` (CD=2)."""
        return self.send(self.request(amount, currency, Action.CANCELLATION,
                                      reference=reference, receipt=receipt,
                                      extra_fields=extra_fields))

    def duplicate(self, amount: Amount, currency: str = "EUR", *,
                  extra_fields: Iterable[Field] = ()) -> Sent:
        """Ask the terminal to print the last receipt again (CD=3)."""
        return self.send(self.request(amount, currency, Action.DUPLICATE,
                                      extra_fields=extra_fields))


# --- one exchange, for the clients that drive it from an event loop -------------------------


class Exchange:
    """One request and its answer, fed bytes and a clock: the three clients move bytes
    and wait (blocking sockets, asyncio, Twisted timers), `connection.PosConnection` says
    when the answer is whole, and this turns its events into a PaymentResult.

    Made before connecting: `timeout` and the result's `elapsed_s` count from then.
    After `frame` is written, call `step()`: it gives either the PaymentResult or
    the seconds to wait at most for more bytes (`receive()` them, b"" for a close),
    after which `step()` is called again, whether bytes came or not.
    """

    def __init__(self, request: PaymentRequest, timeout: float,
                 clock: Callable[[], float] = time.monotonic,
                 trailing_grace: float | None = None) -> None:
        from .connection import PosConnection

        self.request = request
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + timeout
        self.received = bytearray()
        self.connection = (PosConnection(clock) if trailing_grace is None
                           else PosConnection(clock, trailing_grace))
        self.frame = self.connection.send(request.encode())  # what the edge writes

    @property
    def awaiting_answer(self) -> bool:
        """True until the action status (AE) is read, and while a field after it is cut;
        otherwise a wait is only the short grace for late optional fields."""
        from .connection import PosState

        return self.connection.state is PosState.AWAITING_ANSWER or self.connection.field_cut

    def receive(self, data: bytes) -> None:
        self.received += data
        self.connection.receive_data(data)

    def step(self) -> PaymentResult | float:
        from .connection import AnswerReceived, AnswerUnreadable, ConnectionClosed

        while True:
            event = self.connection.next_event()
            if isinstance(event, AnswerReceived):
                if event.dropped:
                    _log("warning", "ignored %d bytes after the answer: %s",
                         len(event.dropped), event.dropped_reason)
                return self.result(TerminalAnswer.parse(event.fields), dropped=event.dropped)
            if isinstance(event, AnswerUnreadable):
                return self.result(TerminalAnswer.unreadable(event.error))
            if isinstance(event, ConnectionClosed):
                return self.result(problem=said(
                    N_("the terminal closed the connection without answering")))
            now = self.clock()
            if event.deadline is not None:  # the trailing grace, always before the time-out
                if event.deadline <= now:
                    continue  # over: the answer is whole
                return event.deadline - now
            if self.deadline <= now:
                cut = self.connection.timed_out()  # AE read, then a field never finished
                if cut is not None:
                    return self.result(TerminalAnswer.unreadable(cut.error))
                size = len(self.received)
                if size:
                    return self.result(problem=said(
                        N_("no answer within %(seconds)g s (%(size)d bytes, not a whole "
                           "answer)"), {"seconds": self.timeout, "size": size}))
                return self.result(problem=said(N_("no answer within %g s"), (self.timeout,)))
            return self.deadline - now

    def lost(self, reason: str) -> PaymentResult:
        """The connection broke after the request went out: the outcome is unknown."""
        return self.result(problem=said(N_("connection lost while waiting for the answer: %s"),
                                        (reason,)))

    def result(self, answer: TerminalAnswer | None = None, problem: Problem | None = None,
               dropped: bytes = b"") -> PaymentResult:
        return payment_result(self.request, self.frame, answer, bytes(self.received), problem,
                              self.clock() - self.started, dropped)


def os_error_reason(error: OSError) -> str:
    """An OSError in a few words ("Connection refused")."""
    return error.strerror or str(error) or type(error).__name__


def unreachable(host: str, port: int, error: OSError,
                connect_timeout: float) -> TerminalUnreachable:
    """The TerminalUnreachable for a connection attempt that failed with `error`."""
    import socket

    if isinstance(error, socket.gaierror):
        reason = f"cannot find the address of {host!r}: {os_error_reason(error)}"
    elif isinstance(error, TimeoutError):
        reason = f"cannot connect to {host}:{port}: no answer within {connect_timeout:g} s"
    else:
        # By errno: asyncio words its errors its own way ("Connect call failed...").
        said = os.strerror(error.errno) if error.errno else os_error_reason(error)
        reason = f"cannot connect to {host}:{port}: {said}"
    return TerminalUnreachable(host, port, reason)


def _log(level: str, message: str, *args: object) -> None:
    import logging

    getattr(logging.getLogger("caisse_ap.client"), level)(message, *args)


# --- the JSON form of a result (the client's --json, the console's test payment) ------------

# A JSON result's "status" is the Outcome's word, or this one when nothing was sent.
NOT_SENT = "error"


def amount_parts(request: PaymentRequest, lang: str = "en"
                 ) -> tuple[str, str, str | None, str]:
    """(amount, currency code, its symbol, text for people in `lang`) of what was sent,
    even if --tag broke it."""
    return amount_text(request.value("CB") or "", request.value("CE") or "", lang)


def amount_text(units: str, code: str, lang: str = "en"
                ) -> tuple[str, str, str | None, str]:
    try:
        info = money.currency(code)
        amount = format(money.from_minor_units(units, info), "f")
        return amount, info.alpha, info.symbol, money.format_amount(units, info, lang)
    except (money.AmountError, money.CurrencyError):
        return units, code, None, (gettext("%(units)s (minor units) of currency %(code)s")
                                   % {"units": units, "code": code})


def action_word(request: PaymentRequest) -> str:
    code = request.value("CD") or ""
    return ACTION_NAMES.get(code, code)


def result_json(result: PaymentResult) -> dict[str, object]:
    """The result as a JSON-ready dict: the object `--json` prints."""
    amount, currency, symbol, _ = amount_parts(result.request)
    answer = result.answer
    reason = answer.reason if answer else None
    document: dict[str, object] = {
        "status": str(result.outcome),
        "amount": amount,
        "currency": currency,
        "currency_symbol": symbol,
        "action": action_word(result.request),
        "reason": {"code": reason.code, "label": reason.label, "details": reason.details}
        if reason else None,
        "fields": dict(answer.fields) if answer else {},
        "labels": ({tag: tags.field_label(tag, value) for tag, value in answer.fields}
                   if answer else {}),
        "receipt": answer.receipt if answer else None,
        "elapsed_s": round(result.elapsed_s, 3),
        "request": result.request_frame.decode("latin-1"),
        "answer": result.answer_frame.decode("latin-1") if result.answer_frame else None,
        "problem": result.problem,
    }
    if result.dropped_bytes:  # written by the terminal after its answer, not part of it
        document["dropped_after_answer"] = result.dropped_bytes.decode("latin-1")
    return document


def unreachable_json(request: PaymentRequest, error: TerminalUnreachable,
                     elapsed_s: float) -> dict[str, object]:
    """What `--json` prints when nothing was sent: status "error", no answer."""
    amount, currency, symbol, _ = amount_parts(request)
    return {
        "status": NOT_SENT, "amount": amount, "currency": currency, "currency_symbol": symbol,
        "action": action_word(request), "reason": None, "fields": {}, "labels": {},
        "receipt": None, "elapsed_s": round(elapsed_s, 3),
        "request": request.encode().decode("latin-1"), "answer": None, "problem": str(error),
    }
