"""The simulated terminal as a service: settings, transactions, outcome sources, observers.

`Terminal` is what the TCP protocol (server.py) and the control API both talk
to. It gives every request a `Transaction`, asks the outcome sources then the
settings what to answer, waits the delay on the reactor (never blocking), and
hands the answer to the connection. It knows nothing about bytes on a socket:
a connection is anything with the small `Connection` interface below, which
lets tests drive it with a fake connection and `twisted.internet.task.Clock`.

Seams for the control API (docs/api.md):

- `observers`: objects with `request_received(txn)`, `transaction_finished(txn)`
  and `settings_changed(settings)`, each optional; called on the reactor thread.
- `outcome_sources`: callables `source(txn, request)` consulted in order before
  the settings; each returns a `Decision`, a Deferred firing with a `Decision`
  (manual mode: the Terminal cancels it when the POS leaves or at shutdown),
  or None to pass. A Deferred decision is answered after `spec.delay` (0 if
  None): the person already took their time.
- `update_settings(changes)`: validated, takes effect for the next transaction.
- `next_id`: the id the next transaction gets (a journal in a file sets it
  past its last id); `numbering` holds it, and the terminals of a process
  share one (web/farm.py), so that one journal holds them all.
"""

from __future__ import annotations

import functools
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from .. import money, tags, tlv
from ..connection import REQUEST_TIMEOUT
from ..messages import ACTION_NAMES, FORMAT_ERROR, PaymentRequest, RequestError
from ..tlv import Field, FrameError
from . import behaviour
from .behaviour import Decision, OutcomeSpec, TerminalReply, TerminalSettings
from .journal import Record
from .words import DecidedBy, TransactionMode, TransactionStatus

if TYPE_CHECKING:
    from ..twisted import IReactorTCPTime
    from .edge import PosEdge

log = logging.getLogger("caisse_ap.terminal")

FINAL_STATUSES = tuple(status for status in TransactionStatus
                       if status != TransactionStatus.PENDING)
CAISSE_AP = "caisse-ap-ip"  # a transaction's protocol when it came over IP


class Connection(Protocol):
    """What the Terminal needs of a POS connection (server.TerminalProtocol is one)."""

    peer: str

    def send(self, data: bytes) -> None:
        """Write one answer, in one write."""

    def hang_up(self) -> None:
        """Close the connection without answering."""

    def transaction_done(self, transaction: Transaction) -> None:
        """The transaction is over: the connection may go on with its next request."""


class Exchange(Protocol):
    """A request and its answer in another protocol than Caisse-AP (concert.ConcertExchange)."""

    @property
    def protocol(self) -> str: ...

    def to_json(self) -> dict[str, object]: ...


# What the Terminal asks before its settings: a Decision, one to come, or None to pass.
OutcomeSource = Callable[["Transaction", PaymentRequest],
                         "Decision | defer.Deferred[Decision] | None"]


def iso_time(timestamp: float | None) -> str | None:
    """A reactor timestamp as the API writes times: ISO 8601, UTC, to the millisecond."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Transaction:
    """One request and what became of it (docs/api.md, transaction object)."""

    id: int
    peer: str
    received_at: float
    request_fields: list[Field]
    request: PaymentRequest | None = None
    status: TransactionStatus = TransactionStatus.PENDING
    decided_by: DecidedBy | None = None
    outcome: OutcomeSpec | None = None
    answer: tuple[Field, ...] | None = None
    reason: str | None = None
    answered_at: float | None = None
    finished_at: float | None = None
    problem: str | None = None  # why the request was refused, for the log
    sent: bytes | None = None  # the answer as written to the POS (the Terminal sets it)
    protocol: str = CAISSE_AP
    # The request and answer in the POS's own protocol when it is not Caisse-AP
    # (a serial link's Concert E+ frames): anything with `protocol` and
    # `to_json()`, set when the request arrives; request_fields and answer are
    # then their Caisse-AP equivalents.
    exchange: Exchange | None = None
    # "simulated", or "proxied" when a real terminal answered through the proxy
    # (proxy.py); deviations: what the exchange did against the protocol or
    # the profile (deviations.py), as JSON objects.
    mode: TransactionMode = TransactionMode.SIMULATED
    deviations: tuple[dict[str, str], ...] = ()
    terminal: str | None = None  # the farm's id of its terminal; None: the command line's
    scenario: str | None = None  # the conformance kit's scenario that answered, if one did

    @property
    def pending(self) -> bool:
        return self.status is TransactionStatus.PENDING

    def value(self, tag: str) -> str | None:
        return dict(self.request_fields).get(tag)

    def record(self) -> Record:
        """What a journal keeps: the facts of to_json(), not what complete() derives.

        Cheap to build and to serialise (its field lists are tuples, JSON
        arrays): it is written for every transaction, read for few.
        """
        duration = None
        if self.finished_at is not None:
            duration = round(self.finished_at - self.received_at, 3)
        reason = None
        if self.reason is not None:
            reason = {"code": self.reason, "label": tags.label(tags.FAILURE_REASONS, self.reason)}
        facts: Record = {
            "id": self.id,
            "received_at": iso_time(self.received_at),
            "answered_at": iso_time(self.answered_at),
            "duration_s": duration,
            "peer": self.peer,
            "protocol": self.protocol,
            "request": self.request_fields,
            "answer": self.answer,
            "status": self.status,
            "reason": reason,
            "decided_by": self.decided_by,
            "exchange": self.exchange.to_json() if self.exchange is not None else None,
            "mode": self.mode,
            "deviations": list(self.deviations),
            "terminal": self.terminal,
        }
        if self.scenario is not None:
            facts["scenario"] = self.scenario
        return facts


@functools.lru_cache(maxsize=1024)
def _amount_text(units: str, code: str) -> str:
    """An amount as the log line shows it: a POS sends the same few amounts again and
    again, and building the Decimal cost a tenth of the line."""
    try:
        return money.format_amount(units, code, "en")
    except (money.AmountError, money.CurrencyError):
        return f"CB={units} CE={code}"


class Numbering:
    """The ids of transactions: one numbering for every terminal that shares it."""

    __slots__ = ("next_id",)

    def __init__(self, next_id: int = 1):
        self.next_id = next_id


@dataclass(slots=True)
class _Run:
    """A transaction waiting for its decision or its delay."""

    transaction: Transaction
    connection: Connection
    settings: TerminalSettings
    decision: Decision | None = None
    timer: IDelayedCall | None = None
    waiting: defer.Deferred[Decision] | None = None


class TerminalTuning(TypedDict, total=False):
    """Terminal's keyword arguments but its settings and reactor (server.start_terminal)."""

    seed: str | int | None
    idle_timeout: float
    max_connections: int
    request_timeout: float


class Terminal:
    """The simulated terminal: settings, counters, connections and transactions in flight.

    `reactor` speaks TCP and keeps time (IReactorTCP, IReactorTime); the Terminal
    alone needs only `callLater` and `seconds` (a `task.Clock` in tests).
    `seed` makes card data reproducible: each transaction draws from its own
    generator seeded with (seed, transaction id), whatever the timing.
    """

    def __init__(self, settings: TerminalSettings | None = None, *,
                 reactor: IReactorTCPTime | None = None, seed: str | int | None = None,
                 idle_timeout: float = 300.0, max_connections: int = 1000,
                 request_timeout: float = REQUEST_TIMEOUT):
        if reactor is None:
            from ..twisted import global_reactor

            reactor = global_reactor()
        self.reactor = reactor
        self.settings = settings or TerminalSettings()
        self.seed = seed
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout  # silence that ends an unfinished request
        self.max_connections = max_connections
        self.observers: list[object] = []  # each with any of the methods _notify() calls
        self.outcome_sources: list[OutcomeSource] = []
        self.numbering = Numbering()
        self.connections: set[PosEdge] = set()
        self.counts: Counter[str] = Counter()
        self.listening_port: Any = None  # set by server.start_terminal
        self.name: str | None = None  # a farm terminal's id (web/farm.py), in its transactions
        self._runs: dict[int, _Run] = {}
        self._rng = random.Random()
        self._last_card: behaviour.Card | None = None
        self._now_second, self._now_value = -1, datetime.fromtimestamp(0)

    # --- State for the API ---------------------------------------------------

    @property
    def next_id(self) -> int:
        return self.numbering.next_id

    @next_id.setter
    def next_id(self, value: int) -> None:
        self.numbering.next_id = value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) the terminal listens on, once listening."""
        if self.listening_port is None:
            return None
        host = self.listening_port.getHost()
        return host.host, host.port

    @property
    def pending(self) -> list[Transaction]:
        return [run.transaction for run in self._runs.values()]

    def counters(self) -> dict[str, int]:
        """Transactions by final status, pending ones, open connections, total (docs/api.md)."""
        counters: dict[str, int] = {status: self.counts[status] for status in FINAL_STATUSES}
        counters["pending"] = len(self._runs)
        counters["open_connections"] = len(self.connections)
        counters["total"] = self.counts["total"]
        return counters

    def update_settings(self, changes: Mapping[str, object]) -> TerminalSettings:
        """Apply a partial settings change (SettingsError, nothing changed, if invalid)."""
        self.settings = self.settings.updated(changes)
        self._notify("settings_changed", self.settings)
        return self.settings

    def find(self, transaction_id: int) -> Transaction | None:
        """A transaction still in flight, by id."""
        run = self._runs.get(transaction_id)
        return run.transaction if run else None

    # --- Requests ------------------------------------------------------------

    def receive(self, connection: Connection, fields: list[Field],
                received_at: float | None = None,
                exchange: Exchange | None = None) -> Transaction:
        """A whole message from a POS: answer it now, later, or never, as decided.

        `received_at`: when its first byte came (default: now). `exchange`:
        the request in another protocol, when `fields` are its Caisse-AP
        equivalent (Transaction.exchange).
        """
        settings = self.settings
        txn = self._new_transaction(connection, fields, received_at)
        if exchange is not None:
            txn.protocol, txn.exchange = exchange.protocol, exchange
        try:
            request = PaymentRequest.parse(fields, settings.accepted_currencies,
                                           settings.accepted_actions)
            behaviour.check_request(request, settings)  # what this terminal refuses
        except RequestError as error:
            txn.problem = str(error)
            self._notify("request_received", txn)
            reply = behaviour.error_reply(error.fields or fields, error.reason, settings)
            self._finish(txn, connection, reply, DecidedBy.REQUEST_ERROR)
            return txn
        txn.request = request
        if self.observers:
            self._notify("request_received", txn)
        if request.immediate:
            self._answer_immediate(txn, connection, request, settings)
            return txn
        # In _runs (pending) only while it waits for a decision or a delay.
        self._decide(_Run(txn, connection, settings), request)
        return txn

    def receive_error(self, connection: Connection, error: FrameError,
                      received_at: float | None = None,
                      exchange: Exchange | None = None) -> Transaction:
        """A message that breaks the framing: AE=01 AF=09 with what could be read, at once.

        `exchange`: as for receive()."""
        txn = self._new_transaction(connection, error.fields, received_at)
        if exchange is not None:
            txn.protocol, txn.exchange = exchange.protocol, exchange
        txn.problem = str(error)
        self._notify("request_received", txn)
        reply = behaviour.error_reply(error.fields, FORMAT_ERROR, self.settings)
        self._finish(txn, connection, reply, DecidedBy.REQUEST_ERROR)
        return txn

    def extend_request(self, txn: Transaction, fields: list[Field]) -> None:
        """More fields of a request still in flight arrived (a later TCP segment)."""
        run = self._runs.get(txn.id)
        if run is None:
            return
        try:
            request = PaymentRequest.parse(fields, run.settings.accepted_currencies,
                                           run.settings.accepted_actions)
            behaviour.check_request(request, run.settings)
        except RequestError:
            return  # keep answering what was read first
        txn.request_fields = list(fields)
        txn.request = request

    def receive_forwarded(self, connection: Connection, fields: list[Field],
                          received_at: float | None = None,
                          mode: str = TransactionMode.PROXIED,
                          decided_by: str = DecidedBy.TERMINAL) -> Transaction:
        """A request passed on to a real terminal or a recording (proxy.py): journaled and
        shown here, answered there. `finish_forwarded` ends it."""
        txn = self._new_transaction(connection, fields, received_at)
        # The edge's words, as enums from here on.
        txn.mode, txn.decided_by = TransactionMode(mode), DecidedBy(decided_by)
        try:
            txn.request = PaymentRequest.parse(fields)
        except RequestError as error:
            txn.problem = str(error)
        self._notify("request_received", txn)
        return txn

    def finish_forwarded(self, txn: Transaction, status: str, answer: list[Field] | None = None,
                         sent: bytes | None = None, reason: str | None = None) -> None:
        """What became of a forwarded request: `answer` (card numbers masked) and the bytes
        `sent` to the POS, or none (no answer, hang-up, dropped)."""
        now = self.reactor.seconds()
        txn.status, txn.reason, txn.finished_at = TransactionStatus(status), reason, now
        if answer is not None:
            txn.answer, txn.sent, txn.answered_at = tuple(answer), sent, now
        self.counts[status] += 1
        self._log(txn)
        self._notify("transaction_finished", txn)

    def drop(self, txn: Transaction) -> None:
        """The POS left before the answer: cancel it cleanly."""
        run = self._runs.pop(txn.id, None)
        if run is None:
            return
        self._cancel(run)
        txn.status = TransactionStatus.DROPPED
        txn.finished_at = self.reactor.seconds()
        self.counts[TransactionStatus.DROPPED] += 1
        log.info("%s %s -> dropped: the POS closed before the answer (%.3f s)",
                 txn.peer, self._describe(txn), txn.finished_at - txn.received_at)
        self._notify("transaction_finished", txn)

    def stop_transactions(self) -> None:
        """Shutdown: answer every transaction in flight at once, with its outcome.

        One still waiting for a decision gets the settings' outcome, or AF=08
        (time-out) in manual mode.
        """
        runs, self._runs = list(self._runs.values()), {}
        for run in runs:
            self._cancel(run)
            if run.decision is None:
                fallback, _ = behaviour.decide_from_settings(run.settings)
                run.decision = Decision(fallback.spec, DecidedBy.SHUTDOWN)
            self._reply(run)

    # --- Internals -----------------------------------------------------------

    def _new_transaction(self, connection: Connection, fields: list[Field],
                         received_at: float | None) -> Transaction:
        if received_at is None:
            received_at = self.reactor.seconds()
        numbering = self.numbering
        txn = Transaction(numbering.next_id, connection.peer, received_at, list(fields),
                          terminal=self.name)
        numbering.next_id += 1
        self.counts["total"] += 1
        return txn

    def _answer_immediate(self, txn: Transaction, connection: Connection,
                          request: PaymentRequest, settings: TerminalSettings) -> None:
        """BA=1: AE=11 at once, without delay; only no-answer and hang-up modes apply.

        Busy (the profile's answer) while another transaction is in progress.
        """
        decision, _ = behaviour.decide_from_settings(settings)
        reply = behaviour.immediate_reply(request, settings, decision.spec, self._rng_for(txn),
                                          self._now(), busy=bool(self._runs))
        txn.outcome = decision.spec
        self._finish(txn, connection, reply, DecidedBy.SETTINGS)

    def _decide(self, run: _Run, request: PaymentRequest) -> None:
        for source in list(self.outcome_sources):
            try:
                result = source(run.transaction, request)
            except Exception:
                log.exception("outcome source %r failed; trying the next one", source)
                continue
            if result is None:
                continue
            if not isinstance(result, (Decision, defer.Deferred)):
                log.error("outcome source %r returned %r, not a Decision; ignored", source, result)
                continue
            if isinstance(result, defer.Deferred):
                self._runs[run.transaction.id] = run
                run.waiting = result
                result.addCallbacks(self._decided_late, self._decision_failed,
                                    callbackArgs=(run,), errbackArgs=(run,))
                return
            self._schedule(run, result, self._delay(result, run.settings.duration))
            return
        decision, delay = behaviour.decide_from_settings(run.settings)
        self._schedule(run, decision, self._delay(decision, delay))

    @staticmethod
    def _delay(decision: Decision, default: float) -> float:
        return default if decision.spec.delay is None else decision.spec.delay

    def _decided_late(self, decision: Decision, run: _Run) -> None:
        run.waiting = None
        if self._runs.get(run.transaction.id) is not run:
            return None  # dropped or answered at shutdown meanwhile
        if not isinstance(decision, Decision):
            return self._decision_failed(Failure(TypeError(f"{decision!r} is not a Decision")), run)
        self._schedule(run, decision, self._delay(decision, 0.0))
        return None

    def _decision_failed(self, failure: Failure, run: _Run) -> None:
        run.waiting = None
        if self._runs.get(run.transaction.id) is not run or failure.check(defer.CancelledError):
            return None  # cancelled by drop() or shutdown: nothing to do
        log.error("deciding transaction %d failed: %s; using the settings",
                  run.transaction.id, failure.getErrorMessage())
        decision, delay = behaviour.decide_from_settings(run.settings)
        self._schedule(run, decision, self._delay(decision, delay))
        return None

    def _schedule(self, run: _Run, decision: Decision, delay: float) -> None:
        run.decision = decision
        run.transaction.outcome = decision.spec
        run.transaction.decided_by = decision.decided_by
        if delay <= 0:
            # No reactor round trip when there is nothing to wait for.
            self._runs.pop(run.transaction.id, None)
            self._reply(run)
        else:
            self._runs[run.transaction.id] = run
            run.timer = self.reactor.callLater(delay, self._answer, run)

    def _cancel(self, run: _Run) -> None:
        if run.timer is not None and run.timer.active():
            run.timer.cancel()
        run.timer = None
        if run.waiting is not None:
            waiting, run.waiting = run.waiting, None
            waiting.cancel()

    def _answer(self, run: _Run) -> None:
        if self._runs.pop(run.transaction.id, None) is not None:
            run.timer = None
            self._reply(run)

    def _reply(self, run: _Run) -> None:
        txn = run.transaction
        assert run.decision is not None and txn.request is not None
        reply = behaviour.reply(txn.request, run.decision.spec, run.settings, self._rng_for(txn),
                                self._now(), self._last_card)
        if reply.card is not None:  # a duplicate's card is the last one already
            self._last_card = reply.card
        txn.outcome = run.decision.spec
        self._finish(txn, run.connection, reply, run.decision.decided_by)

    def _finish(self, txn: Transaction, connection: Connection, reply: TerminalReply,
                decided_by: DecidedBy) -> None:
        now = self.reactor.seconds()
        txn.decided_by = decided_by
        txn.status = reply.status
        txn.reason = reply.reason
        txn.finished_at = now
        if reply.fields is not None:
            # Valid by construction (behaviour.py builds answers from decoded
            # fields and checked settings), so not checked again.
            frame = tlv.encode_unchecked(reply.fields)
            txn.answer, txn.sent, txn.answered_at = reply.fields, frame, now
            connection.send(frame)
        self.counts[reply.status] += 1
        self._log(txn)
        if self.observers:
            self._notify("transaction_finished", txn)
        if reply.hang_up:
            connection.hang_up()
        connection.transaction_done(txn)

    def _rng_for(self, txn: Transaction) -> random.Random:
        return self._rng if self.seed is None else random.Random(f"{self.seed}:{txn.id}")

    def _now(self) -> datetime:
        """The local time to the second (what receipts print), one datetime per second."""
        second = int(self.reactor.seconds())
        if second != self._now_second:
            self._now_second, self._now_value = second, datetime.fromtimestamp(second)
        return self._now_value

    def _describe(self, txn: Transaction) -> str:
        request = dict(txn.request_fields)
        action = ACTION_NAMES.get(request.get("CD") or "", "request")
        units, code = request.get("CB"), request.get("CE")
        if units and code:
            return f"{action} {_amount_text(units, code)}"
        return action

    def _log(self, txn: Transaction) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # building the line costs more than the rest of a transaction
        outcome = str(txn.status)
        if txn.answer is not None:
            status = dict(txn.answer).get("AE", "")
            outcome += f" AE={status}"
            if txn.reason:
                label = tags.label(tags.FAILURE_REASONS, txn.reason, "en")
                outcome += f" AF={txn.reason} ({label})"
            else:
                outcome += f" ({tags.label(tags.ACTION_STATUS, status, 'en')})"
        problem = f": {txn.problem}" if txn.problem else ""
        took = (txn.finished_at or txn.received_at) - txn.received_at
        # Formatted once here, not by each handler (stderr, the console's raw log): a
        # message without arguments is not formatted again.
        log.info(f"{txn.peer} {self._describe(txn)} -> {outcome} in {took:.3f} s, "
                 f"decided by {txn.decided_by}{problem}")

    def _notify(self, event: str, subject: object) -> None:
        for observer in list(self.observers):
            method = getattr(observer, event, None)
            if method is None:
                continue
            try:
                method(subject)
            except Exception:
                # An observer (journal, event stream) must never stop the terminal.
                log.exception("observer %r failed on %s", observer, event)
