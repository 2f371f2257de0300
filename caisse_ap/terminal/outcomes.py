"""What the terminal's own outcome sources are: the outcome queue and manual decisions.

Outcome sources are consulted in this order (docs/api.md): the queue, then
the amount rules (rules.py), then manual mode; a request none of them takes
gets the settings' outcome. The composition root (app.py) registers them;
the control API (web/) fills the queue and takes the decisions, and the
proxy (proxy.py) reads the queue. Driven by the reactor's clock, so tests can
use `twisted.internet.task.Clock`.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..errors import CaisseApError
from ..messages import PaymentRequest
from .behaviour import MANUAL_TIMEOUT, Decision, OutcomeSpec
from .service import Terminal, Transaction
from .words import DecidedBy, Mode

MAX_QUEUE = 1000  # one-shot outcomes waiting; more is surely a runaway test


class QueueFull(CaisseApError, ValueError):
    """The queue already holds MAX_QUEUE outcomes."""


class OutcomeQueue:
    """One-shot outcomes for the next transactions, in order (POST /api/next)."""

    def __init__(self) -> None:
        self._items: deque[OutcomeSpec] = deque()

    def __call__(self, transaction: Transaction, request: PaymentRequest) -> Decision | None:
        if not self._items:
            return None
        return Decision(self._items.popleft(), DecidedBy.QUEUE)

    def extend(self, specs: list[OutcomeSpec]) -> None:
        if len(self._items) + len(specs) > MAX_QUEUE:
            raise QueueFull(f"the queue holds at most {MAX_QUEUE} outcomes")
        self._items.extend(specs)

    def clear(self) -> None:
        self._items.clear()

    def next_outcome(self) -> OutcomeSpec | None:
        """The outcome the next transaction gets, left on the queue (None: empty)."""
        return self._items[0] if self._items else None

    def take(self) -> OutcomeSpec | None:
        """The next outcome, taken off the queue, whatever the transaction."""
        return self._items.popleft() if self._items else None

    def to_json(self) -> list[dict[str, object]]:
        return [spec.to_dict() for spec in self._items]


class _Waiting:
    """A request held in manual mode until a person decides or the time runs out."""

    def __init__(self, deferred: defer.Deferred[Decision], timer: IDelayedCall,
                 deadline: float):
        self.deferred = deferred
        self.timer = timer
        self.deadline = deadline


class ManualDecisions:
    """Manual mode: hold each request until POST /api/transactions/ID/decision.

    Undecided after the settings' manual_timeout, the customer "did not type
    anything": the terminal answers AF=08 (input time-out).
    """

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.reactor: IReactorTime = terminal.reactor
        self._waiting: dict[int, _Waiting] = {}

    def __call__(self, transaction: Transaction,
                 request: PaymentRequest) -> defer.Deferred[Decision] | None:
        settings = self.terminal.settings
        if settings.mode != Mode.MANUAL:
            return None
        txn_id = transaction.id

        def cancelled(_: defer.Deferred[Decision]) -> None:
            # The POS left, or the server stops: forget the request quietly.
            waiting = self._waiting.pop(txn_id, None)
            if waiting is not None and waiting.timer.active():
                waiting.timer.cancel()

        # The Terminal cancels it when the POS leaves or the server stops.
        deferred: defer.Deferred[Decision] = defer.Deferred(cancelled)
        timeout = settings.manual_timeout
        timer = self.reactor.callLater(timeout, self._time_out, txn_id)
        self._waiting[txn_id] = _Waiting(deferred, timer, self.reactor.seconds() + timeout)
        return deferred

    def _time_out(self, txn_id: int) -> None:
        waiting = self._waiting.pop(txn_id, None)
        if waiting is not None:
            waiting.deferred.callback(MANUAL_TIMEOUT)

    def is_waiting(self, txn_id: int) -> bool:
        return txn_id in self._waiting

    def deadline(self, txn_id: int) -> float | None:
        waiting = self._waiting.get(txn_id)
        return None if waiting is None else waiting.deadline

    def decide(self, txn_id: int, spec: OutcomeSpec) -> bool:
        """Answer a waiting request with `spec`; False if it is not waiting."""
        waiting = self._waiting.pop(txn_id, None)
        if waiting is None:
            return False
        if waiting.timer.active():
            waiting.timer.cancel()
        waiting.deferred.callback(Decision(spec, DecidedBy.MANUAL))
        return True
