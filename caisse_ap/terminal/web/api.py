"""The control API of the simulated terminal: twisted.web resources (docs/api.md).

One leaf resource under /api routes each (method, path) to a handler. A
handler returns a `Reply` or a Deferred firing with one; errors are raised as
`ApiError` and always reach the client as JSON, never as a stack trace or an
HTML page. Everything runs on the reactor thread, the test payment too
(caisse_ap.twisted's client).

Access (docs/api.md, security model): with a token, every route but
/api/status needs it, as 'Authorization: Bearer TOKEN'. An EventSource cannot
send that header, so POST /api/session trades the header for a cookie
(HttpOnly, SameSite=Strict) that authenticates reads only: a write always
needs the header, which no other site can make a browser send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.web import resource, server

from ... import __version__, payment, tags
from ...errors import CaisseApError, InvalidRequest, TerminalUnreachable
from ...messages import ACTION_NAMES, PaymentRequest
from ...twisted import PaymentTerminal
from ..behaviour import (
    FAILURE_TYPES,
    FORWARDED,
    MODES,
    OUTCOMES,
    PAYMENT_TYPES,
    STATUSES,
    OutcomeSpec,
    SettingsError,
)
from ..journal import MAX_LIMIT, Rows
from ..outcomes import ManualDecisions, OutcomeQueue, QueueFull
from ..profiles import available as profiles_in_use
from ..rules import AmountRules
from ..service import Terminal
from .control import EventHub, TransactionFeed
from .rawlog import RecentLog
from .transactions import TransactionJson, complete

log = logging.getLogger("caisse_ap.terminal.web")

MAX_BODY = 64 * 1024
KEEP_ALIVE = 15.0  # seconds between event-stream comments, so proxies keep it open
MAX_TEST_PAYMENTS = 8  # test payments in flight at once
MAX_STREAM_UNSENT = 256 * 1024  # bytes a stream client may leave unread before it is cut
# ...and all of them together: 200 clients that never read cost at most 32 MiB, where
# 256 KiB each would be 50 (Twisted copies what a transport holds into its own buffer).
MAX_STREAMS_UNSENT = 24 * 1024 * 1024
MUTATING = (b"PUT", b"POST", b"DELETE")
READING = (b"GET", b"HEAD")
OPEN_ROUTES = {("status",)}  # answered without the token: health checks
SESSION_COOKIE = b"caisse-ap-ip-session"
MAX_ID = 2**63 - 1  # SQLite's largest integer: a bigger id is no transaction
TEST_PAYMENT_KEYS = {"amount", "currency", "action", "cheque", "host", "port", "timeout",
                     "partial", "immediate", "receipt", "reference", "confirm_real_payment"}
# What a tester may say the POS showed (POST /api/conformance/answer).
CONFORMANCE_SHOWN = ("approved", "refused", "unknown", "failure")
# Where a test payment goes when the terminal listens on every address.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


# Every error's machine `code` (docs/api.md): stable, for programs and for the
# console, which shows its own French sentence for each one. The message
# beside it is English, for people reading the API by hand.
ERROR_CODES = {
    # The request as a whole.
    "not_found": "no such endpoint",
    "unknown_transaction": "no transaction with this id",
    "method_not_allowed": "the endpoint does not take this method",
    "cross_origin": "a request from a page of another site",
    "host_not_allowed": "the Host header names a host the server does not answer to",
    "token_required": "the call needs the server's --web-token",
    "body_required": "the call needs a JSON body",
    "body_too_large": "the body is over the size limit",
    "json_required": "the body is not sent as application/json",
    "invalid_json": "the body is not valid JSON",
    "object_required": "the body (or an outcome) must be a JSON object",
    "unknown_field": "a field the call does not know (`field` names it)",
    "empty_list": "an empty list of outcomes",
    "queue_full": "the outcome queue is full",
    "not_waiting": "the transaction is not waiting for a decision",
    "not_listening": "the terminal is not listening",
    "no_raw_log": "the server keeps no raw log (started from code, not the command line)",
    # The terminal farm (farm.py).
    "unknown_terminal": "no terminal with this id in the farm",
    "too_many_terminals": "the farm runs --max-terminals terminals already (`limits.max`)",
    "port_in_use": "the POS port asked for is taken on the farm's address",
    "terminal_deleted": "the farm terminal is deleted: its routes only read",
    "too_many_test_payments": "too many test payments in progress",
    "confirmation_required": "behind --proxy, a test payment to the real terminal needs "
                             "`confirm_real_payment` naming it as HOST:PORT",
    "real_terminal_required": "this outcome forwards a real terminal's answer: only "
                              "behind --proxy or --replay, never for a manual decision",
    "internal_error": "a bug; the server log says more",
    # One value (`field` names it; `limits` gives the bounds when there are some).
    "required": "the value is missing",
    "empty": "the value is empty or blank",
    "not_a_number": "the value is not a number",
    "out_of_range": "the number is outside `limits` (min or above, max)",
    "not_boolean": "the value must be true or false",
    "not_text": "the value must be text",
    "too_long": "the text is longer than `limits.max_length`",
    "not_printable_ascii": "the text must be printable ASCII",
    "invalid_format": "the text does not have the expected form",
    "unknown_choice": "the value is none of the accepted names",
    "unknown_currency": "not an ISO 4217 currency (or not accepted)",
    "invalid_amount": "not an amount: digits with at most one '.' or ',' before the decimals",
    "amount_zero": "the amount is zero",
    "amount_negative": "a negative amount, which only a refund may have",
    "amount_too_large": "the amount is above `limits.max` (12 digits of minor units)",
    "amount_too_precise": "more decimals than the currency has (`limits.decimals`)",
    "invalid_value": "any other bad value",
}
# The code of an error raised without one, by HTTP status.
STATUS_CODES = {400: "invalid_value", 401: "token_required", 403: "cross_origin",
                404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                415: "json_required", 421: "host_not_allowed", 429: "too_many_test_payments",
                500: "internal_error"}
# The code of a test payment's request error (errors.InvalidRequest), by its field...
OPTION_CODES = {"amount": "invalid_amount", "currency": "unknown_currency",
                "action": "unknown_choice", "reference": "too_long"}
# ...and for an amount, by what the library's check found wrong (money.AmountError.reason).
AMOUNT_CODES = {"empty": "empty", "zero": "amount_zero", "negative": "amount_negative",
                "too_large": "amount_too_large", "too_many_decimals": "amount_too_precise"}


class ApiError(CaisseApError):
    """An error answered as {"error": message, "code": code, "field": field} with `status`
    (and "limits" when there are some)."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, *, code: str | None = None,
                 limits: Mapping[str, object] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.code = code or STATUS_CODES.get(status, "invalid_value")
        self.limits = limits

    @classmethod
    def bad_value(cls, error: SettingsError, where: str = "") -> ApiError:
        """A 400 for a settings value or outcome the terminal refused."""
        return cls(400, error.message + where, error.field, code=error.code,
                   limits=error.limits)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"error": self.message, "code": self.code, "field": self.field}
        if self.limits is not None:
            data["limits"] = self.limits
        return data


@dataclass
class Reply:
    data: object  # JSON
    status: int = 200


def _send_json(request: server.Request, status: int, data: object) -> bytes:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def error_response(request: server.Request, error: ApiError) -> bytes:
    """The one place an error becomes a response (API and site): its status, its headers
    and the body {"error": message, "code": code, "field": field}."""
    for name, value in error.headers.items():
        request.setHeader(name.encode(), value.encode())
    return _send_json(request, error.status, error.to_json())


# An API route's handler: a reply now or later, or bytes written by hand (the raw log,
# the event stream's NOT_DONE_YET).
Handler = Callable[..., "Reply | defer.Deferred[Reply] | bytes | int"]
Result = TypeVar("Result")


class ControlApi(resource.Resource):
    """Everything under /api/ (docs/api.md)."""

    isLeaf = True

    def __init__(self, terminal: Terminal, journal: Rows, rules: AmountRules, *,
                 token: str | None = None, web_address: Callable[[], tuple[str, int] | None]
                 = lambda: None, keep_alive: float = KEEP_ALIVE,
                 recent_log: RecentLog | None = None, queue: OutcomeQueue | None = None,
                 manual: ManualDecisions | None = None):
        super().__init__()
        self.terminal = terminal
        self.reactor = terminal.reactor
        self.journal = journal
        self.rules = rules
        self.token = token
        self.web_address = web_address
        self.recent_log = recent_log
        # The terminal's (app.py registers them), or the API's own when built alone.
        self.queue = queue if queue is not None else OutcomeQueue()
        self.manual = manual if manual is not None else ManualDecisions(terminal)
        self.hub = EventHub(self.manual)
        self.feed = TransactionFeed(journal, self.hub)
        self._streams: set[_EventStream] = set()
        self.streams_unsent = 0  # the sum of the streams' `unsent`
        self._test_payments = 0
        self._keep_alive = task.LoopingCall(self._send_keep_alive)
        self._keep_alive.clock = self.reactor
        self._keep_alive_interval = keep_alive
        self._routes: dict[tuple[str, ...], dict[bytes, Handler]] = {
            ("status",): {b"GET": self.get_status},
            ("settings",): {b"GET": self.get_settings, b"PUT": self.put_settings},
            ("next",): {b"GET": self.get_next, b"POST": self.post_next,
                        b"DELETE": self.delete_next},
            ("transactions",): {b"GET": self.get_transactions},
            ("transactions", "*"): {b"GET": self.get_transaction},
            ("transactions", "*", "decision"): {b"POST": self.post_decision},
            ("amount-rules",): {b"GET": self.get_amount_rules},
            ("test-payment",): {b"POST": self.post_test_payment},
            ("events",): {b"GET": self.get_events},
            ("log",): {b"GET": self.get_log},
            ("session",): {b"POST": self.post_session, b"DELETE": self.delete_session},
            ("conformance",): {b"GET": self.get_conformance},
            ("conformance", "answer"): {b"POST": self.post_conformance_answer},
        }
        # The conformance session (caisse-ap-ip-server --conformance): its SessionDriver,
        # set by the web extension's start; None otherwise.
        self.conformance: Any = None
        # The cookie's value: derived from the token, so that it is not the token itself
        # and stops working when the server restarts with another token.
        self._session = None if token is None else hmac.new(
            token.encode(), b"caisse-ap-ip event stream", hashlib.sha256).hexdigest().encode()

    # --- Wiring into the terminal ---------------------------------------------

    def attach(self) -> None:
        """Put the feed of the journal and the event stream first among the terminal's
        observers, in the journal's place (app.py registers the outcome sources)."""
        observers = self.terminal.observers
        if self.journal in observers:
            observers.remove(self.journal)  # the feed writes it, then sends the events
        observers.insert(0, self.feed)
        self._keep_alive.start(self._keep_alive_interval, now=False)

    def detach(self) -> None:
        """Stop the keep-alive and end every event stream (at shutdown)."""
        if self._keep_alive.running:
            self._keep_alive.stop()
        for stream in list(self._streams):
            stream.close()
        if self.feed in self.terminal.observers:
            self.terminal.observers.remove(self.feed)
        self.feed.close()

    # --- Dispatch -------------------------------------------------------------

    def render(self, request: server.Request) -> bytes | int:
        try:
            key, handler, arguments = self._route(request)
            self._check_access(request, key)
            result = handler(request, *arguments)
        except ApiError as error:
            return error_response(request, error)
        except Exception:
            log.exception("error in %s %s", request.method.decode(), request.path.decode())
            return error_response(request, ApiError(500, "Internal error; see the server log."))
        if isinstance(result, (bytes, int)):  # written by hand, or NOT_DONE_YET
            return result
        if isinstance(result, defer.Deferred):
            self._finish_later(request, result)
            return server.NOT_DONE_YET
        return _send_json(request, result.status, result.data)

    def _route(self, request: server.Request
               ) -> tuple[tuple[str, ...], Handler, list[str]]:
        try:
            parts = [part.decode("utf-8") for part in request.postpath or ()]
        except UnicodeDecodeError:
            raise ApiError(404, "No such API endpoint.") from None
        if parts and parts[-1] == "":
            parts.pop()  # a trailing slash
        arguments = []
        key = tuple(parts)
        if len(parts) >= 2 and parts[0] == "transactions":
            arguments.append(parts[1])
            key = ("transactions", "*", *parts[2:])
        methods = self._routes.get(key)
        if methods is None:
            raise ApiError(404, f"No such API endpoint: /api/{'/'.join(parts)[:80]}.")
        method = b"GET" if request.method == b"HEAD" else request.method
        if method not in methods:
            allowed = ", ".join(m.decode() for m in methods)
            raise ApiError(405, f"Method {request.method.decode(errors='replace')} is not "
                                f"allowed here; use {allowed}.", headers={"Allow": allowed})
        return key, methods[method], arguments

    def _check_access(self, request: server.Request, key: tuple[str, ...]) -> None:
        if request.method in MUTATING:
            # A page of another site may POST here from the user's browser; a
            # browser always says where such a request comes from ("null" if
            # hidden). The Host itself was checked against the allowlist (site.py).
            origin = _header(request, "origin")
            if origin is not None and not _same_origin(request, origin):
                raise ApiError(403, "Cross-origin requests are refused.")
        if key in OPEN_ROUTES or self.authenticated(request):
            return
        raise ApiError(401, "This call needs the header 'Authorization: Bearer <token>' "
                            "with the server's --web-token.",
                       headers={"WWW-Authenticate": 'Bearer realm="caisse-ap-ip"'})

    def authenticated(self, request: server.Request) -> bool:
        """No token, the token in the Authorization header, or (reads only) the session
        cookie of POST /api/session."""
        if self.token is None:
            return True
        given = _header(request, "authorization") or ""
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), self.token.encode()):
            return True
        cookie = request.getCookie(SESSION_COOKIE)
        return (request.method in READING and cookie is not None
                and hmac.compare_digest(cookie, self._session))

    def _finish_later(self, request: server.Request, result: defer.Deferred[Reply]) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(reply: Reply) -> None:
            if not gone:
                request.write(_send_json(request, reply.status, reply.data))
                request.finish()

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, ApiError):
                error = failure.value
            else:
                log.error("error in %s %s: %s", request.method.decode(),
                          request.path.decode(), failure.getTraceback())
                error = ApiError(500, "Internal error; see the server log.")
            if not gone:
                request.write(error_response(request, error))
                request.finish()

        result.addCallbacks(done, failed)

    # --- Session (the event stream's credentials) ------------------------------

    def post_session(self, request: server.Request) -> Reply:
        """Trade the token (already checked) for the cookie an EventSource sends."""
        if self._session is not None:
            request.addCookie(SESSION_COOKIE, self._session, path=b"/api/",
                              httpOnly=True, sameSite="strict")
        return Reply({"token_required": self.token is not None})

    def delete_session(self, request: server.Request) -> Reply:
        request.addCookie(SESSION_COOKIE, b"", path=b"/api/", max_age=b"0",
                          httpOnly=True, sameSite="strict")
        return Reply({"token_required": self.token is not None})

    # --- Body -----------------------------------------------------------------

    def _body(self, request: server.Request) -> object:
        """The JSON body (ApiError 400 or 415 when it is not acceptable).

        A body over MAX_BODY never gets here: LimitedRequest (site.py) answers 413.
        """
        raw = request.content.read() if request.content is not None else b""
        if not raw.strip():
            raise ApiError(400, "The request needs a JSON body.", code="body_required")
        kind = (_header(request, "content-type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, "The body must be JSON, sent with 'Content-Type: "
                                "application/json'.")
        try:
            body: object = json.loads(raw.decode("utf-8"))
            # JSON may escape half a UTF-16 pair ("\\ud800"): no text of ours can hold it.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # before ValueError, of which it is one
            raise ApiError(400, "The body holds text that is not valid Unicode "
                                "(a lone surrogate).", code="invalid_json") from None
        except (UnicodeDecodeError, ValueError) as error:
            raise ApiError(400, f"The body is not valid JSON: {error}.",
                           code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "The body is nested too deeply.", code="invalid_json") from None
        return body

    @staticmethod
    def _object(body: object) -> dict[str, object]:
        if not isinstance(body, dict):
            raise ApiError(400, "The body must be a JSON object.", code="object_required")
        return body

    # --- Status and settings --------------------------------------------------

    def get_status(self, request: server.Request) -> Reply:
        journal = self.journal.health()
        if not self.authenticated(request):
            # Open for health checks: whether the server works, nothing more.
            return Reply({"token_required": True, "journal": {"state": journal["state"]}})
        address = self.terminal.address
        web = self.web_address()
        return Reply({
            "version": __version__,
            "token_required": self.token is not None,
            "journal": journal,
            "terminal": {"host": address[0], "port": address[1]} if address else None,
            "web": {"host": web[0], "port": web[1]} if web else None,
            "upstream": self.upstream(),
            "settings": self.terminal.settings.to_dict(),
            "counters": self.terminal.counters(),
            "queue": self.queue.to_json(),
            "choices": _choices(),
        })

    def upstream(self) -> dict[str, Any] | None:
        """What answers the POS in the simulator's place: the real terminal behind --proxy
        ({"mode": "proxied", "host", "port"}), a recording (--replay: {"mode": "replayed",
        "file", "in_order"}), or None (this simulator)."""
        port = self.terminal.listening_port
        upstream = getattr(getattr(port, "factory", None), "upstream", None)
        if upstream is None:
            return None
        if upstream.mode == "proxied":
            return {"mode": "proxied", "host": upstream.host, "port": upstream.port}
        book = getattr(upstream, "book", None)
        return {"mode": "replayed", "file": getattr(upstream, "source", None),
                "in_order": bool(getattr(book, "in_order", False))}

    def _check_forwarded(self, spec: OutcomeSpec, manual: bool = False) -> None:
        """The outcomes that pass on the upstream's answer need one, and a transaction
        answered by this simulator (a manual decision) has none."""
        if spec.outcome in FORWARDED and (manual or self.upstream() is None):
            where = ("a transaction waiting for a decision is answered by this simulator"
                     if manual else "this server has no real terminal behind it (--proxy)")
            raise ApiError(400, f"Outcome {spec.outcome!r} forwards the real terminal's answer; "
                                f"{where}.", "outcome", code="real_terminal_required")

    def get_settings(self, request: server.Request) -> Reply:
        return Reply(self.terminal.settings.to_dict())

    def put_settings(self, request: server.Request) -> Reply:
        changes = self._object(self._body(request))
        try:
            settings = self.terminal.update_settings(changes)
        except SettingsError as error:
            raise ApiError.bad_value(error) from None
        log.info("settings changed through the API: %s",
                 ", ".join(f"{name}={value!r}" for name, value in changes.items()))
        return Reply(settings.to_dict())

    # --- Queue ------------------------------------------------------------------

    def get_next(self, request: server.Request) -> Reply:
        return Reply({"queue": self.queue.to_json()})

    def post_next(self, request: server.Request) -> Reply:
        body = self._body(request)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise ApiError(400, "The list of outcomes is empty.", "outcome", code="empty_list")
        specs = []
        for index, item in enumerate(items):
            try:
                specs.append(OutcomeSpec.from_dict(item))
            except SettingsError as error:
                where = f" (item {index + 1})" if isinstance(body, list) else ""
                raise ApiError.bad_value(error, where) from None
            self._check_forwarded(specs[-1])
        try:
            self.queue.extend(specs)
        except QueueFull as error:
            raise ApiError(409, f"{error}; clear it with DELETE /api/next.", "outcome",
                           code="queue_full") from None
        return Reply({"queue": self.queue.to_json()}, 201)

    def delete_next(self, request: server.Request) -> Reply:
        self.queue.clear()
        return Reply({"queue": []})

    # --- Transactions -----------------------------------------------------------

    def get_transactions(self, request: server.Request) -> Reply:
        limit = _int_argument(request, "limit", 100, 1, MAX_LIMIT)
        assert limit is not None  # it has a default
        after = _int_argument(request, "after", None, 0, MAX_ID)
        before = _int_argument(request, "before", None, 1, MAX_ID)  # an export's next page
        status = _text_argument(request, "status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.",
                           "status", code="unknown_choice")
        # ?terminal=: one terminal's rows ("main": the command line's; ApiRoot checked it).
        terminal = _text_argument(request, "terminal") or None
        found = self.journal.transactions(limit, after, status, before, terminal)
        return Reply({"transactions": [self.hub.with_deadline(complete(record))
                                       for record in found]})

    @staticmethod
    def _transaction_id(text: str) -> int:
        txn_id = whole_number(text, MAX_ID)
        if txn_id is None:
            raise ApiError(404, f"No transaction {text[:40]!r}.", code="unknown_transaction")
        return txn_id

    def _transaction(self, text: str) -> TransactionJson:
        txn_id = self._transaction_id(text)
        record = self.journal.get(txn_id)
        if record is None:
            raise ApiError(404, f"No transaction {txn_id}.", code="unknown_transaction")
        return complete(record)

    def get_transaction(self, request: server.Request, text: str) -> Reply:
        return Reply(self.hub.with_deadline(self._transaction(text)))

    def post_decision(self, request: server.Request, text: str) -> defer.Deferred[Reply]:
        # Decided from memory: a waiting transaction needs no journal (which may be failing).
        txn_id = self._transaction_id(text)
        if not self.manual.is_waiting(txn_id):
            data = self._transaction(text)
            raise ApiError(409, f"Transaction {txn_id} is not waiting for a decision "
                                f"(status {data['status']}).", code="not_waiting")
        try:
            spec = OutcomeSpec.from_dict(self._body(request))
        except SettingsError as error:
            raise ApiError.bad_value(error) from None
        self._check_forwarded(spec, manual=True)
        finished = self.hub.when_finished(txn_id)
        self.manual.decide(txn_id, spec)
        log.info("transaction %d decided through the API: %s", txn_id, spec.outcome)
        return finished.addCallback(Reply)

    # --- Conformance session (caisse-ap-ip-server --conformance) ---------------

    def _session_driver(self) -> Any:
        if self.conformance is None:
            raise ApiError(404, "No conformance session: start the server with --conformance.")
        return self.conformance

    def get_conformance(self, request: server.Request) -> Reply:
        return Reply(self._session_driver().state())

    def post_conformance_answer(self, request: server.Request) -> defer.Deferred[Any]:
        """What the POS showed for the scenario just played: {"shown": "approved",
        "refused", "unknown" or "failure"}; answers the scenario's verdict."""
        driver = self._session_driver()
        shown = self._object(self._body(request)).get("shown")
        if shown not in CONFORMANCE_SHOWN:
            raise ApiError(400, "shown must be approved, refused, unknown or failure.",
                           "shown")
        try:
            judged: defer.Deferred[Any] = driver.answer(shown)
        except ValueError as error:  # no payment yet, or the session is over
            raise ApiError(409, str(error), code="not_waiting") from None
        return judged.addCallback(lambda verdict: Reply(driver.state()["verdicts"][-1]))

    def get_amount_rules(self, request: server.Request) -> Reply:
        return Reply({"enabled": self.terminal.settings.amount_rules,
                      "source": self.rules.source, "rules": self.rules.to_json()})

    # --- Test payment -------------------------------------------------------------

    def post_test_payment(self, request: server.Request) -> defer.Deferred[Reply]:
        body = self._object(self._body(request))
        unknown = sorted(set(body) - TEST_PAYMENT_KEYS)
        if unknown:
            raise ApiError(400, f"Unknown field {unknown[0]!r}.", unknown[0], code="unknown_field")
        request_sent = _test_request(body)
        host, port = self._test_target(body)
        self._check_confirmation(body, host, port)
        timeout = _seconds(body.get("timeout"), payment.DEFAULT_TIMEOUT, "timeout")
        if self._test_payments >= MAX_TEST_PAYMENTS:
            raise ApiError(429, f"{MAX_TEST_PAYMENTS} test payments are already in progress; "
                                "try again when one is over.")
        self._test_payments += 1
        log.info("test payment of %s %s to %s:%d", body.get("amount"),
                 body.get("currency", "EUR"), host, port)

        def over(result: Result) -> Result:
            self._test_payments -= 1
            return result

        started = self.reactor.seconds()

        def unreachable(failure: Failure) -> dict[str, object] | Failure:
            if not isinstance(failure.value, TerminalUnreachable):
                return failure
            return payment.unreachable_json(request_sent, failure.value,
                                                  self.reactor.seconds() - started)

        paid = PaymentTerminal(self.reactor, host, port, timeout=timeout).send(request_sent)
        paid.addCallback(payment.result_json).addErrback(unreachable)
        return paid.addBoth(over).addCallback(Reply)

    def _test_target(self, body: dict[str, object]) -> tuple[str, int]:
        host, port = body.get("host"), body.get("port")
        own = self.terminal.address
        if host is None:
            if own is None:
                raise ApiError(409, "The terminal is not listening.", code="not_listening")
            host = WILDCARDS.get(own[0], own[0])
        elif not isinstance(host, str) or not host.strip() or len(host) > 255:
            raise ApiError(400, "host must be a host name or an IP address.", "host",
                           code="invalid_format")
        if port is None:
            if own is None:
                raise ApiError(409, "The terminal is not listening.", code="not_listening")
            port = own[1]
        elif isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ApiError(400, "port must be a whole number from 1 to 65535.", "port",
                           code="out_of_range", limits={"min": 1, "max": 65535})
        return host.strip(), port

    def _check_confirmation(self, body: dict[str, Any], host: str, port: int) -> None:
        """Behind --proxy, a test payment to the proxy or to the terminal behind it is a real
        payment: it needs `confirm_real_payment` naming that terminal as HOST:PORT."""
        upstream = self.upstream()
        if upstream is None or upstream["mode"] != "proxied":
            return
        real = (upstream["host"], upstream["port"])
        own = self.terminal.address
        to_proxy = own is not None and port == own[1] and (
            host in LOCAL_NAMES or host == own[0] or host == WILDCARDS.get(own[0]))
        if not to_proxy and (host, port) != real:
            return
        names = {f"{real[0]}:{real[1]}", f"[{real[0]}]:{real[1]}"}
        given = body.get("confirm_real_payment")
        if given in names:
            return
        name = f"[{real[0]}]:{real[1]}" if ":" in real[0] else f"{real[0]}:{real[1]}"
        why = ("is missing" if given is None
               else f"names {str(given)[:80]!r}, not the terminal behind the proxy")
        raise ApiError(400, f"This payment goes to the real terminal at {name}: "
                            f"confirm_real_payment {why}; send it as {name!r} to confirm.",
                       "confirm_real_payment", code="confirmation_required")

    # --- Raw log ----------------------------------------------------------------------

    def get_log(self, request: server.Request) -> bytes:
        """The raw log of a time range (?since=&until=, ISO 8601), as text to download."""
        if self.recent_log is None:
            raise ApiError(404, "This server keeps no raw log (it was not started from the "
                                "command line).", code="no_raw_log")
        since = _time_argument(request, "since")
        until = _time_argument(request, "until")
        body = self.recent_log.text(since, until).encode("utf-8")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Disposition",
                          b'attachment; filename="caisse-ap-ip-server.log"')
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return b"" if request.method == b"HEAD" else body

    # --- Event stream -----------------------------------------------------------------

    def get_events(self, request: server.Request) -> int | bytes:
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        if request.method == b"HEAD":
            return b""  # no stream to keep open for a HEAD
        request.setHeader(b"X-Accel-Buffering", b"no")  # reverse proxies: do not buffer
        stream = _EventStream(request, self)
        self._streams.add(stream)
        last = _header(request, "last-event-id")
        last_id = whole_number(last, MAX_ID) if last else None
        stream.write(b"retry: 2000\n: connected\n\n")
        self.hub.subscribe(stream.write, last_id)
        return server.NOT_DONE_YET

    def _send_keep_alive(self) -> None:
        for stream in list(self._streams):
            stream.write(b": keep-alive\n\n")

    def _stream_closed(self, stream: _EventStream) -> None:
        self._streams.discard(stream)
        self.hub.unsubscribe(stream.write)


class _EventStream:
    """One event-stream client, cut off once it leaves MAX_STREAM_UNSENT bytes unread,
    or when all lagging clients together leave MAX_STREAMS_UNSENT.

    The transport pauses us when its buffer passes its bufferSize; what is
    written while paused adds to that. Past the limit the connection is
    aborted, not closed: a close would wait, buffer held, for the client to
    read what it never will.
    """

    def __init__(self, request: server.Request, api: ControlApi):
        self.request = request
        self.api = api
        self.open = True
        self.paused = False
        self.unsent = 0  # at least, while paused
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)

    # IPushProducer: twisted.web pauses us when the client's buffer is full, and again
    # at each write while it stays full.
    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            transport: Any = self.request.transport  # a TCP transport: it has a bufferSize
            self._count_unsent(transport.bufferSize)

    def resumeProducing(self) -> None:
        self.paused = False
        self._count_unsent(0)

    def _count_unsent(self, unsent: int) -> None:
        self.api.streams_unsent += unsent - self.unsent
        self.unsent = unsent

    def stopProducing(self) -> None:
        self._gone(None)

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        if self.paused:
            self._count_unsent(self.unsent + len(data))
            if self.unsent > MAX_STREAM_UNSENT or self.api.streams_unsent > MAX_STREAMS_UNSENT:
                log.warning("event stream client %s left %d KiB unread (lagging clients: "
                            "%d KiB); cutting it off", _peer(self.request),
                            self.unsent // 1024, self.api.streams_unsent // 1024)
                self._gone(None)
                transport: Any = self.request.transport  # a TCP transport: it can abort
                transport.abortConnection()
                return
        self.request.write(data)

    def close(self) -> None:
        if self.open:
            self._gone(None)
            self.request.unregisterProducer()
            self.request.finish()

    def _gone(self, _: object) -> None:
        self.open = False
        self._count_unsent(0)
        self.api._stream_closed(self)


# --- Helpers ------------------------------------------------------------------------


def _choices() -> dict[str, object]:
    return {
        "modes": list(MODES),
        "failure_types": [{"name": name, "code": code,
                           "label": tags.label(tags.FAILURE_REASONS, code)}
                          for name, code in FAILURE_TYPES.items()],
        "payment_types": [{"name": kind.name, "code": kind.application, "label": kind.label,
                           "scheme": kind.scheme.name, "read_mode": kind.read_mode,
                           "read_mode_label": tags.label(tags.READ_MODES, kind.read_mode)}
                          for kind in PAYMENT_TYPES.values()],
        "outcomes": list(OUTCOMES),
        "forwarded_outcomes": list(FORWARDED),  # only behind --proxy or --replay
        "actions": list(ACTION_NAMES.values()),
        "statuses": list(STATUSES),
        "profiles": [profile.to_json() for profile in profiles_in_use().values()],
    }


def _peer(request: server.Request) -> str:
    address = request.getClientAddress()  # TCP: an IPv4Address or IPv6Address
    return f"{address.host}:{address.port}"


def _same_origin(request: server.Request, origin: str) -> bool:
    """Whether `origin` is this console's own: its scheme and the Host of the request
    (RFC 6454: scheme, host and port; an https page is another origin than http)."""
    scheme = "https" if request.isSecure() else "http"
    try:
        parts = urlsplit(origin)
    except ValueError:  # an unclosed "[" and the like
        return False
    host = _header(request, "host") or ""
    return parts.scheme.lower() == scheme and parts.netloc.lower() == host.strip().lower() \
        and not (parts.path or parts.query or parts.fragment)


def _header(request: server.Request, name: str) -> str | None:
    value = request.getHeader(name.encode())
    return None if value is None else value.decode("latin-1")


def _text_argument(request: server.Request, name: str) -> str | None:
    values: list[bytes] | None = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"{name} is not UTF-8 text.", name, code="not_text") from None


def _int_argument(request: server.Request, name: str, default: int | None, minimum: int,
                  maximum: int | None) -> int | None:
    text = _text_argument(request, name)
    if text is None or text == "":
        return default
    value = whole_number(text, MAX_ID if maximum is None else maximum)
    if value is None or value < minimum:
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise ApiError(400, f"{name} must be a whole number from {minimum}{upper}, "
                            f"not {text[:40]!r}.",
                       name, code="out_of_range", limits={"min": minimum, "max": maximum})
    return value


def whole_number(text: str, maximum: int) -> int | None:
    """The whole number `text` spells (ASCII digits) if it is at most `maximum`, else None.

    The digits are counted before int() reads them: Python refuses strings over
    4,300 digits (ValueError), and a long one costs time for nothing.
    """
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(maximum)):
        return None
    value = int(text)
    return value if value <= maximum else None


def _time_argument(request: server.Request, name: str) -> float | None:
    """An ISO 8601 date and time argument as epoch seconds (UTC when it has no offset)."""
    text = _text_argument(request, name)
    if not text:
        return None
    try:
        # Python 3.10's fromisoformat does not read a final "Z".
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 date and time such as "
                            f"2026-12-01T20:30:00Z, not {text[:40]!r}.", name,
                       code="invalid_format") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _seconds(value: object, default: float, name: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
        raise ApiError(400, f"{name} must be a number of seconds above 0, at most 600.", name,
                       code="out_of_range", limits={"above": 0, "max": 600})
    return float(value)


def _test_request(body: dict[str, object]) -> PaymentRequest:
    """The PaymentRequest a test payment sends, built as the command-line client does."""
    amount = body.get("amount")
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        amount = repr(amount)  # 12.5 from a JSON number: its shortest form is what was typed
    if not isinstance(amount, str):
        raise ApiError(400, "amount is required, as text such as \"12,50\".", "amount",
                       code="required")
    text_fields = {"currency": "EUR", "action": None, "reference": None}
    values: dict[str, str | None] = {}  # checked: text or None
    for name, default in text_fields.items():
        value = body.get(name, default)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{name} must be text.", name, code="not_text")
        values[name] = value
    flags: dict[str, bool] = {}
    for name in ("cheque", "partial", "immediate", "receipt"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise ApiError(400, f"{name} must be true or false.", name, code="not_boolean")
        flags[name] = value
    try:
        currency = values["currency"]  # null: as if not given
        return payment.make_request(amount, "EUR" if currency is None else currency,
                                    values["action"],
                                    reference=values["reference"], cheque=flags["cheque"],
                                    partial=flags["partial"], immediate=flags["immediate"],
                                    receipt=flags["receipt"])
    except InvalidRequest as error:
        code = AMOUNT_CODES.get(error.reason or "") or OPTION_CODES.get(error.field or "",
                                                                         "invalid_value")
        raise ApiError(400, str(error), error.field, code=code, limits=error.limits) from None
