"""What the control API adds to the Terminal: the outcome queue, manual decisions, events.

No HTTP here (api.py is the HTTP edge): these are Terminal outcome sources
and an observer, driven by the reactor's clock, so tests can use
`twisted.internet.task.Clock`.

Outcome sources are consulted in this order (docs/api.md): the queue, then
the amount rules (rules.py), then manual mode; a request none of them takes
gets the settings' outcome.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from ...messages import PaymentRequest
from ..behaviour import MANUAL_TIMEOUT, Decision, OutcomeSpec
from ..journal import Journal, to_text
from ..service import Terminal, Transaction, iso_time
from ..words import DecidedBy

log = logging.getLogger("caisse_ap.terminal.web")

MAX_QUEUE = 1000  # one-shot outcomes waiting; more is surely a runaway test
REPLAY_EVENTS = 256  # events kept for an event-stream client that reconnects


class QueueFull(ValueError):
    pass


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

    def to_json(self) -> list[dict[str, Any]]:
        return [spec.to_dict() for spec in self._items]


class _Waiting:
    """A request held in manual mode until a person decides or the time runs out."""

    def __init__(self, deferred: defer.Deferred[Any], timer: Any, deadline: float):
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
        self.reactor = terminal.reactor
        self._waiting: dict[int, _Waiting] = {}

    def __call__(self, transaction: Transaction,
                 request: PaymentRequest) -> defer.Deferred[Any] | None:
        settings = self.terminal.settings
        if settings.mode != "manual":
            return None
        txn_id = transaction.id

        def cancelled(_: defer.Deferred[Any]) -> None:
            # The POS left, or the server stops: forget the request quietly.
            waiting = self._waiting.pop(txn_id, None)
            if waiting is not None and waiting.timer.active():
                waiting.timer.cancel()

        # The Terminal cancels it when the POS leaves or the server stops.
        deferred: defer.Deferred[Any] = defer.Deferred(cancelled)
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


class _Event:
    """One event of the stream. Its message is built the first time it is sent: most
    events are sent to nobody (no console open), only kept for a replay."""

    __slots__ = ("id", "name", "_data", "_message")

    def __init__(self, event_id: int, name: str, data: Callable[[], Any]):
        self.id = event_id
        self.name = name
        self._data: Callable[[], Any] | None = data  # builds the event's JSON data
        self._message: bytes | None = None

    def message(self) -> bytes:
        if self._message is None:
            assert self._data is not None  # dropped only once the message is built
            text = to_text(self._data())
            self._message = f"id: {self.id}\nevent: {self.name}\ndata: {text}\n\n".encode()
            self._data = None  # what it held may be large; the message is all we need now
        return self._message


class EventHub:
    """The event stream's side of the Terminal: its events and the decision callers' waits.

    `subscribe(write)` registers a callable taking one encoded SSE event
    (bytes); the last REPLAY_EVENTS events are kept so that a client that
    reconnects with Last-Event-ID misses nothing. Transactions reach it
    through a TransactionFeed.
    """

    def __init__(self, manual: ManualDecisions):
        self.manual = manual
        self.last_id = 0
        self._recent: deque[_Event] = deque(maxlen=REPLAY_EVENTS)
        self._subscribers: list[Callable[[bytes], None]] = []
        self._finish_waiters: dict[int, list[defer.Deferred[Any]]] = {}

    def transaction_event(self, event: str, txn: Transaction) -> None:
        """A transaction arrived ("request", `txn` as it arrived) or is over ("answer")."""
        self.publish(event, txn.to_json)  # neither changes any more
        if event != "answer":
            return
        waiters = self._finish_waiters.pop(txn.id, None)
        if waiters:
            data = txn.to_json()
            for waiter in waiters:
                waiter.callback(data)

    def settings_changed(self, settings: Any) -> None:
        self.publish("settings", settings.to_dict)

    def with_deadline(self, data: dict[str, Any]) -> dict[str, Any]:
        """A transaction's JSON plus, while it waits for a manual decision, its deadline."""
        deadline = None
        if data.get("status") == "pending":
            deadline = self.manual.deadline(data["id"])
        if deadline is not None:
            data = {**data, "decision_deadline": iso_time(deadline)}
        return data

    def when_finished(self, txn_id: int) -> defer.Deferred[Any]:
        """Fires with the transaction's final JSON once it is finished."""
        waiter: defer.Deferred[Any] = defer.Deferred()
        self._finish_waiters.setdefault(txn_id, []).append(waiter)
        return waiter

    def publish(self, name: str, data: Callable[[], Any]) -> None:
        """A new event; `data` builds its JSON data, when it is first sent."""
        self.last_id += 1
        event = _Event(self.last_id, name, data)
        self._recent.append(event)
        if not self._subscribers:
            return
        message = event.message()
        for write in list(self._subscribers):
            try:
                write(message)
            except Exception:
                log.exception("event stream client failed; dropping it")
                self.unsubscribe(write)

    def subscribe(self, write: Callable[[bytes], None], last_event_id: int | None = None) -> None:
        if last_event_id is not None:
            for event in list(self._recent):
                if event.id > last_event_id:
                    write(event.message())
        self._subscribers.append(write)

    def unsubscribe(self, write: Callable[[bytes], None]) -> None:
        if write in self._subscribers:
            self._subscribers.remove(write)


def _as_received(txn: Transaction) -> Transaction:
    """A copy of a transaction as its request arrived (pending, no answer yet)."""
    return Transaction(txn.id, txn.peer, txn.received_at, txn.request_fields, txn.request)


class TransactionFeed:
    """Observer of the Terminal: each transaction event goes to the journal, then the stream.

    An event is sent once the journal has written its group (journal.py): so
    whoever hears of a transaction can read it back, and a transaction the
    console saw arrive is in the file even if the server is killed then.
    Neither builds the transaction's JSON form now: the journal builds its
    record when it writes, the stream the JSON when someone reads the event.
    """

    def __init__(self, journal: Journal, hub: EventHub):
        self.journal = journal
        self.hub = hub
        self._unsent: list[tuple[str, Transaction]] = []
        journal.after_write.append(self._send)

    def request_received(self, txn: Transaction) -> None:
        self._unsent.append(("request", _as_received(txn)))
        self.journal.keep(txn)

    def transaction_finished(self, txn: Transaction) -> None:
        self._unsent.append(("answer", txn))
        self.journal.keep(txn)

    def _send(self) -> None:
        unsent, self._unsent = self._unsent, []
        for event, txn in unsent:
            self.hub.transaction_event(event, txn)

    def settings_changed(self, settings: Any) -> None:
        self.hub.settings_changed(settings)
