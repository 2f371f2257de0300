"""The event stream's side of the terminal: its events, and the feed that sends them.

No HTTP here (api.py is the HTTP edge): an observer of the Terminal, driven
by the reactor, so tests can use `twisted.internet.task.Clock`. The outcome
queue and manual decisions are the terminal's own (outcomes.py).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping

from twisted.internet import defer

from ..behaviour import TerminalSettings
from ..journal import Rows, to_text
from ..outcomes import ManualDecisions
from ..service import Transaction, iso_time
from .transactions import TransactionJson, transaction_json

log = logging.getLogger("caisse_ap.terminal.web")

REPLAY_EVENTS = 256  # events kept for an event-stream client that reconnects


class _Event:
    """One event of the stream. Its message is built the first time it is sent: most
    events are sent to nobody (no console open), only kept for a replay."""

    __slots__ = ("id", "name", "_data", "_message")

    def __init__(self, event_id: int, name: str, data: Callable[[], Mapping[str, object]]):
        self.id = event_id
        self.name = name
        self._data: Callable[[], Mapping[str, object]] | None = data  # builds its JSON data
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
        self._finish_waiters: dict[int, list[defer.Deferred[TransactionJson]]] = {}

    def transaction_event(self, event: str, txn: Transaction) -> None:
        """A transaction arrived ("request", `txn` as it arrived) or is over ("answer")."""
        self.publish(event, lambda: transaction_json(txn))  # neither changes any more
        if event != "answer":
            return
        waiters = self._finish_waiters.pop(txn.id, None)
        if waiters:
            data = transaction_json(txn)
            for waiter in waiters:
                waiter.callback(data)

    def settings_changed(self, settings: TerminalSettings) -> None:
        self.publish("settings", settings.to_dict)

    def with_deadline(self, data: TransactionJson) -> TransactionJson:
        """A transaction's JSON plus, while it waits for a manual decision, its deadline."""
        deadline, txn_id = None, data.get("id")
        if data.get("status") == "pending" and isinstance(txn_id, int):
            deadline = self.manual.deadline(txn_id)
        if deadline is not None:
            data = {**data, "decision_deadline": iso_time(deadline)}
        return data

    def when_finished(self, txn_id: int) -> defer.Deferred[TransactionJson]:
        """Fires with the transaction's final JSON once it is finished."""
        waiter: defer.Deferred[TransactionJson] = defer.Deferred()
        self._finish_waiters.setdefault(txn_id, []).append(waiter)
        return waiter

    def publish(self, name: str, data: Callable[[], Mapping[str, object]]) -> None:
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
    """A copy of a transaction as its request arrived (pending, no answer yet), with what
    the request already says of it: its terminal, protocol and mode."""
    return Transaction(txn.id, txn.peer, txn.received_at, txn.request_fields, txn.request,
                       protocol=txn.protocol, exchange=txn.exchange, mode=txn.mode,
                       terminal=txn.terminal)


class TransactionFeed:
    """Observer of the Terminal: each transaction event goes to the journal, then the stream.

    An event is sent once the journal has written its group (journal.py): so
    whoever hears of a transaction can read it back, and a transaction the
    console saw arrive is in the file even if the server is killed then.
    Neither builds the transaction's JSON form now: the journal builds its
    record when it writes, the stream the JSON when someone reads the event.
    """

    def __init__(self, journal: Rows, hub: EventHub):
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

    def close(self) -> None:
        """Send what is written, then hear no more of the journal (a farm terminal
        deleted: the journal, every terminal's, lives on)."""
        self.journal.flush()
        if self._send in self.journal.after_write:
            self.journal.after_write.remove(self._send)

    def _send(self) -> None:
        unsent, self._unsent = self._unsent, []
        for event, txn in unsent:
            self.hub.transaction_event(event, txn)

    def settings_changed(self, settings: TerminalSettings) -> None:
        self.hub.settings_changed(settings)
