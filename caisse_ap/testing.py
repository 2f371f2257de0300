"""A simulated terminal for the tests of a point-of-sale project.

    from caisse_ap.testing import simulated_terminal

    def test_refused_payment():
        with simulated_terminal() as terminal:
            terminal.next("refused")
            result = my_pos.pay("12.50", host=terminal.host, port=terminal.port)
            assert result.declined
            assert terminal.transactions()[0].reason_code == "04"

or, with pytest, the `simulated_terminal` fixture, which installing the
package provides (a `pytest11` entry point: caisse_ap.pytest_plugin):

    def test_refused_payment(simulated_terminal):
        simulated_terminal.next("refused")
        ...

The terminal and its control API listen on 127.0.0.1, on ports the OS
chooses, in this process: the Twisted reactor runs in a background thread
(started on first use, shared by every simulated terminal of the process, and
reused if something else already runs it in another thread). A project's
own tests that need the reactor share that thread through `shared_reactor()`
and `call_in_reactor()`. The test talks to the terminal through the JSON API
of docs/api.md, as any client would, and gets typed objects back
(`Transaction`, `Event`), which also read as the API's JSON objects
(`transaction["status"]`). Unless told otherwise the terminal answers at
once (duration 0). Importing this module imports neither pytest nor Twisted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, overload
from urllib.parse import urlencode

from .errors import CaisseApError
from .terminal.words import DecidedBy, TransactionStatus
from .tlv import Field

HOST = "127.0.0.1"
HTTP_TIMEOUT = 30.0  # seconds; a control call answers in milliseconds

__all__ = ["Event", "EventStream", "FarmTerminal", "SimulatedTerminal", "SimulatedTerminalError",
           "TerminalFarm", "Transaction", "call_in_reactor", "shared_reactor",
           "simulated_terminal", "start_simulated_terminal"]


class SimulatedTerminalError(CaisseApError, RuntimeError):
    """The control API refused a call: `status`, `message` and the `field` at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(f"{status}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.message = message
        self.field = field


if TYPE_CHECKING:  # Twisted is imported once a terminal starts
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorFromThreads

    from .terminal.app import RunningTerminal
    from .twisted import IGlobalReactor

P = ParamSpec("P")
R = TypeVar("R")


# --- What the API gives back, typed -----------------------------------------------------

# A JSON object the control API gave back, as docs/api.md describes it (its values are
# whatever JSON holds: the object's shape is the API's, not checked here).
JsonObject = dict[str, Any]


class _QueuedOutcome(TypedDict):
    outcome: str


class QueuedOutcome(_QueuedOutcome, total=False):
    """An outcome queued for a next transaction (POST /api/next), as the queue gives it."""

    delay: float
    payment_type: str



@dataclass(frozen=True, eq=False)
class Transaction(Mapping[str, Any]):
    """A transaction of the terminal's journal (docs/api.md, transaction object).

    Typed attributes, and the whole JSON object in `data`; the transaction is
    also that object, read-only (`transaction["status"]`, `==` a dict).
    Amounts are Decimal in major units; `request` and `answer` the fields.
    """

    id: int
    status: TransactionStatus
    decided_by: DecidedBy | None
    action: str | None
    amount: Decimal | None
    currency: str | None
    reason_code: str | None
    reason_label: str | None
    request: list[Field]
    answer: list[Field] | None
    peer: str
    duration_s: float | None
    data: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transaction:
        reason = data.get("reason") or {}
        decided_by = data.get("decided_by")
        amount = data.get("amount")
        answer = data.get("answer")
        return cls(
            id=int(data["id"]),
            status=TransactionStatus(data["status"]),
            decided_by=DecidedBy(decided_by) if decided_by is not None else None,
            action=data.get("action"),
            amount=Decimal(amount) if amount is not None else None,
            currency=data.get("currency"),
            reason_code=reason.get("code"),
            reason_label=reason.get("label"),
            request=[(tag, value) for tag, value in data.get("request") or []],
            answer=[(tag, value) for tag, value in answer] if answer is not None else None,
            peer=str(data.get("peer", "")),
            duration_s=data.get("duration_s"),
            data=data,
        )

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True, eq=False)
class Event(Mapping[str, Any]):
    """One event of the stream: `event` is its kind ("request", "answer", "settings"),
    `data` its JSON object; `transaction` reads it for the transaction events. Also
    the mapping {"id", "event", "data"}, as the stream's earlier versions gave."""

    id: int | None
    event: str
    data: Any

    @property
    def transaction(self) -> Transaction:
        return Transaction.from_json(self.data)

    def __getitem__(self, key: str) -> Any:
        if key not in _EVENT_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_EVENT_KEYS)

    def __len__(self) -> int:
        return len(_EVENT_KEYS)


_EVENT_KEYS = ("id", "event", "data")


# --- The reactor thread ------------------------------------------------------------

_reactor_lock = threading.Lock()
_reactor_thread: threading.Thread | None = None


def shared_reactor() -> IGlobalReactor:
    """The global reactor, running in a background thread (started if need be).

    One per process: a project's tests that need the reactor use this one
    (with `call_in_reactor`) rather than start a thread of their own.
    """
    global _reactor_thread
    from twisted.python import threadable

    from .twisted import global_reactor

    reactor = global_reactor()

    with _reactor_lock:
        if reactor.running:
            if threadable.isInIOThread():
                raise RuntimeError("simulated_terminal() waits on the reactor thread: call it "
                                   "from a test thread, not from Twisted code")
            return reactor
        if _reactor_thread is None:
            if getattr(reactor, "_startedBefore", False):
                raise RuntimeError("the Twisted reactor of this process was stopped and cannot "
                                   "start again")
            _reactor_thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False},
                name="caisse-ap-reactor", daemon=True)
            _reactor_thread.start()
    _call(reactor, lambda: None)  # returns once the reactor runs
    return reactor


@overload
def call_in_reactor(function: Callable[P, Deferred[R]], *args: P.args,
                    **kwargs: P.kwargs) -> R: ...


@overload
def call_in_reactor(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...


def call_in_reactor(function: Callable[P, R] | Callable[P, Deferred[R]], *args: P.args,
                    **kwargs: P.kwargs) -> R:
    """Run `function` on the shared reactor's thread and return its result, once its
    Deferred (if it returns one) has fired; its exception is raised here."""
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(shared_reactor(), function, *args, **kwargs)


# As call_in_reactor, on `reactor`.
@overload
def _call(reactor: IReactorFromThreads, function: Callable[P, Deferred[R]], *args: P.args,
          **kwargs: P.kwargs) -> R: ...


@overload
def _call(reactor: IReactorFromThreads, function: Callable[P, R], *args: P.args,
          **kwargs: P.kwargs) -> R: ...


def _call(reactor: IReactorFromThreads, function: Callable[P, R] | Callable[P, Deferred[R]],
          *args: P.args, **kwargs: P.kwargs) -> R:
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(reactor, function, *args, **kwargs)


# --- The terminal ----------------------------------------------------------------------


class SimulatedTerminal:
    """A running simulated terminal: where it listens, and its control API as methods."""

    def __init__(self, reactor: IReactorFromThreads, running: RunningTerminal,
                 token: str | None = None):
        address, web_url = running.address, running.web_url
        web_address = running.console.web_address if running.console is not None else None
        # Started, with its console: each is known.
        assert address is not None and web_url is not None and web_address is not None
        self._reactor = reactor
        self._terminal = running.terminal
        self._services = running
        self._token = token
        self.host, self.port = address
        self.web_url = web_url.rstrip("/")
        self.web_port = web_address[1]
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) for the POS to connect to."""
        return self.host, self.port

    # The control API -------------------------------------------------------------

    def api(self, method: str, path: str, body: object = None) -> JsonObject:
        """Call the control API (docs/api.md); SimulatedTerminalError on an error status."""
        return _api_call(self.web_url + path, method, body, self._token)

    def next(self, outcome: str, **options: object) -> list[QueuedOutcome]:
        """Queue the outcome of the next transaction ("approved", "refused", "no-answer"...).

        `options`: `payment_type` ("cbcontactless"...), `delay` (seconds).
        Calls queue up in order. Returns the queue.
        """
        queued: list[QueuedOutcome] = self.api("POST", "/api/next",
                                               {"outcome": outcome, **options})["queue"]
        return queued

    def clear_next(self) -> None:
        self.api("DELETE", "/api/next")

    def settings(self, **changes: object) -> JsonObject:
        """Change settings for the next transactions (mode="failure", duration=1...);
        without arguments, read them. Returns the whole settings."""
        settings: JsonObject = (self.api("PUT", "/api/settings", changes) if changes
                                else self.api("GET", "/api/settings"))
        return settings

    def transactions(self, limit: int = 100, after: int | None = None,
                     status: TransactionStatus | str | None = None) -> list[Transaction]:
        """The journal, newest first (docs/api.md, transaction objects)."""
        query: dict[str, str | int] = {"limit": limit}
        if after is not None:
            query["after"] = after
        if status is not None:
            query["status"] = str(status)
        found = self.api("GET", f"/api/transactions?{urlencode(query)}")["transactions"]
        return [Transaction.from_json(data) for data in found]

    def transaction(self, transaction_id: int) -> Transaction:
        return Transaction.from_json(self.api("GET", f"/api/transactions/{transaction_id}"))

    def decide(self, transaction_id: int, outcome: str, **options: object) -> Transaction:
        """Manual mode: answer a waiting transaction; returns it once answered."""
        return Transaction.from_json(self.api(
            "POST", f"/api/transactions/{transaction_id}/decision",
            {"outcome": outcome, **options}))

    def status(self) -> JsonObject:
        """The status object of docs/api.md (version, settings, counters...)."""
        status: JsonObject = self.api("GET", "/api/status")
        return status

    def events(self, last_event_id: int | None = None) -> EventStream:
        """The event stream (use as a context manager); open it before the payment."""
        return EventStream(self.web_url, last_event_id, self._token)

    # Life -------------------------------------------------------------------------

    def stop(self) -> None:
        """Answer what is in flight, close every connection, stop listening. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _call(self._reactor, self._services.stop)

    def __enter__(self) -> SimulatedTerminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulated_terminal(*, journal: str | os.PathLike[str] | None = None,
                             amount_rules: bool | str | os.PathLike[str] = False,
                             token: str | None = None, seed: str | int | None = None,
                             **settings: object) -> SimulatedTerminal:
    """Start a simulated terminal; stop it with `.stop()` (or use `simulated_terminal()`).

    `settings` are those of docs/api.md (mode, failure_type, duration,
    payment_type, ...); duration defaults to 0 here. `amount_rules` is True
    for the default table or the path of a TOML rules file. `journal` is a
    SQLite file to keep the journal in (default: memory).
    """
    from caisse_ap.terminal import app
    from caisse_ap.terminal.behaviour import TerminalSettings
    from caisse_ap.terminal.journal import Journal
    from caisse_ap.terminal.rules import AmountRules, load_rules
    from caisse_ap.terminal.web import WebOptions

    settings.setdefault("duration", 0)
    if amount_rules is not False:
        settings["amount_rules"] = True
    rules = (load_rules(Path(amount_rules)) if not isinstance(amount_rules, bool)
             else AmountRules())
    checked = TerminalSettings.from_dict(settings)  # SettingsError before anything starts
    reactor = shared_reactor()

    def start() -> RunningTerminal:
        options = app.TerminalOptions(checked, HOST, 0, seed=seed, rules=rules,
                                      journal=Journal(journal) if journal else None,
                                      web=WebOptions(HOST, 0, token))
        return app.start(reactor, options)

    running = _call(reactor, start)
    return SimulatedTerminal(reactor, running, token)


@contextmanager
def simulated_terminal(*, journal: str | os.PathLike[str] | None = None,
                       amount_rules: bool | str | os.PathLike[str] = False,
                       token: str | None = None, seed: str | int | None = None,
                       **settings: object) -> Iterator[SimulatedTerminal]:
    """A simulated terminal for the `with` block; see start_simulated_terminal()."""
    terminal = start_simulated_terminal(journal=journal, amount_rules=amount_rules,
                                        token=token, seed=seed, **settings)
    try:
        yield terminal
    finally:
        terminal.stop()


def _api_call(url: str, method: str, body: object, token: str | None) -> JsonObject:
    """One call of the control API; its JSON, or SimulatedTerminalError on an error status."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            answer: JsonObject = json.loads(response.read())  # each answer is an object
            return answer
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read())
        except ValueError:
            detail = {"error": error.reason}
        raise SimulatedTerminalError(error.code, detail.get("error", ""),
                                     detail.get("field")) from None


# --- A farm of terminals -------------------------------------------------------------

# Where the simulated_terminal fixture finds a running farm (caisse_ap.pytest_plugin).
FARM_URL_VARIABLE = "CAISSE_AP_FARM_URL"
FARM_TOKEN_VARIABLE = "CAISSE_AP_FARM_TOKEN"


class TerminalFarm:
    """A client of a running farm (a caisse-ap-ip-server, docs/api.md "terminal farm"):
    each test gets a fresh terminal of its own, in parallel with the others.

        farm = TerminalFarm("http://127.0.0.1:5000", token)
        with farm.terminal(profile="ingenico", label="test_refund") as terminal:
            terminal.next("refused")
            my_pos.pay("12.50", host=terminal.host, port=terminal.port)
    """

    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.token = token
        # The farm's terminals listen on its address: the one the URL reaches.
        self.host = urllib.parse.urlsplit(self.url).hostname or HOST

    def api(self, method: str, path: str, body: object = None) -> JsonObject:
        return _api_call(self.url + path, method, body, self.token)

    def create(self, *, profile: str | None = None, label: str | None = None,
               port: int | None = None, **settings: object) -> FarmTerminal:
        """A new terminal (duration 0 unless told); delete it with `.stop()`."""
        settings.setdefault("duration", 0)
        body: dict[str, object] = {"settings": settings}
        for name, value in (("profile", profile), ("label", label), ("port", port)):
            if value is not None:
                body[name] = value
        return FarmTerminal(self, self.api("POST", "/api/terminals", body))

    @contextmanager
    def terminal(self, *, profile: str | None = None, label: str | None = None,
                 port: int | None = None, **settings: object) -> Iterator[FarmTerminal]:
        """A fresh terminal for the `with` block, deleted after it; see create()."""
        terminal = self.create(profile=profile, label=label, port=port, **settings)
        try:
            yield terminal
        finally:
            terminal.stop()

    def terminals(self) -> list[JsonObject]:
        """Every terminal of the farm, as GET /api/terminals gives them."""
        found: list[JsonObject] = self.api("GET", "/api/terminals")["terminals"]
        return found


class FarmTerminal(SimulatedTerminal):
    """A terminal of a farm: the methods of SimulatedTerminal, on its routes
    /api/terminals/{id}/...; `stop()` deletes it (its rows stay readable)."""

    def __init__(self, farm: TerminalFarm, data: JsonObject):
        # Not SimulatedTerminal.__init__: this terminal runs in the farm's process.
        self._farm = farm
        self._token = farm.token
        self.id: str = data["id"]
        self.label: str = data["label"]
        self.host, self.port = farm.host, int(data["port"])
        self.web_url = farm.url
        self.web_port = urllib.parse.urlsplit(farm.url).port or 80
        self.console_url: str | None = data.get("console_url")
        self._stopped = False

    def api(self, method: str, path: str, body: object = None) -> JsonObject:
        if not path.startswith("/api/"):
            raise ValueError(f"not an API path: {path!r}")
        return self._farm.api(method, f"/api/terminals/{self.id}/{path[len('/api/'):]}", body)

    def events(self, last_event_id: int | None = None) -> EventStream:
        return EventStream(self.web_url, last_event_id, self._token,
                           f"/api/terminals/{self.id}/events")

    def stop(self) -> None:
        """Delete it from the farm: what is in flight is answered first. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._farm.api("DELETE", f"/api/terminals/{self.id}")


# --- Event stream ------------------------------------------------------------------------


class _EventLines(TypedDict, total=False):
    """The lines of one event of the stream, as read so far."""

    id: int
    event: str
    data: object  # JSON


class EventStream:
    """Read /api/events in a background thread; `get()` returns the next event.

    Each event is a dict {"id", "event", "data"}; comments (keep-alive) are
    counted in `comments`.
    """

    def __init__(self, web_url: str, last_event_id: int | None = None,
                 token: str | None = None, path: str = "/api/events"):
        address = web_url.split("//", 1)[1].rstrip("/")
        host, _, port = address.rpartition(":")
        self._connection = http.client.HTTPConnection(host.strip("[]"), int(port),
                                                      timeout=HTTP_TIMEOUT)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._connection.request("GET", path, headers=headers)
        self.response = self._connection.getresponse()
        if self.response.status != 200:
            raise SimulatedTerminalError(self.response.status, "the event stream was refused")
        self.comments: queue.Queue[str] = queue.Queue()
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="event-stream", daemon=True)
        self._reader.start()
        # The server writes ": connected" first: once read, no event can be missed.
        self.comments.get(timeout=HTTP_TIMEOUT)

    def _read(self) -> None:
        event: _EventLines = {}
        try:
            for raw in self.response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if "data" in event:
                        self._events.put(Event(event.get("id"), event.get("event", "message"),
                                               event["data"]))
                    event = {}
                elif line.startswith(":"):
                    self.comments.put(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "data":
                        event["data"] = json.loads(value)
                    elif name == "id":
                        event["id"] = int(value)
                    elif name == "event":
                        event["event"] = value
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed: get() says so
        finally:
            self._events.put(None)

    def get(self, event: str | None = None, timeout: float = HTTP_TIMEOUT) -> Event:
        """The next event (of kind `event` if given); TimeoutError if none comes in time."""
        while True:
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no {event or ''} event within {timeout:g} s") from None
            if item is None:
                self._events.put(None)
                raise ConnectionError("the event stream was closed")
            if event is None or item.event == event:
                return item

    def close(self) -> None:
        # End the reader with an end of file first: closing the connection
        # under a thread still reading from it would fail in that thread.
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(HTTP_TIMEOUT)
        self._connection.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
