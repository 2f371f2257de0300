"""The terminal farm: terminals created, changed and deleted over the API (docs/api.md).

A farm is the console's process serving more terminals than the one its
command line started: a test suite, a shop's lanes or a team asks for one
with `POST /api/terminals` and gets its id, its POS port and its console's
URL; it listens at once. Each farm terminal is a whole terminal as
app.start() builds it (its own port, settings, outcome queue, amount rules
and manual decisions) with a ControlApi of its own that no port serves:
`/api/terminals/{id}/...` hands the rest of the path to it, so every
per-terminal route of today exists there unchanged, and today's routes keep
addressing the command line's terminal.

One journal holds every terminal's transactions: the command line's
terminal's (`--journal FILE`, or memory). A farm terminal writes there and
reads its own rows through a journal.TerminalRows; the ids of transactions
come from one numbering, and the ids of terminals are numbered after the
highest the journal holds, so that a row names one terminal, across
restarts too.

A deleted terminal stops accepting at once (no new connection, no new
request), answers what it is answering as it would have (its delay, a
manual decision up to its time-out), then closes its connections (state
"deleting", then "deleted"). Its rows stay in the journal; the terminal
itself stays readable (its counters, its routes' reads) until
MAX_DELETED_KEPT newer ones were deleted after it: a farm shared by a test
suite creates and deletes thousands in a day.

The farm knows nothing of how a terminal is built: app.py gives it a
function that starts one (`Starter`), so that the console imports nothing
of the composition root.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.web import resource, server

from ..behaviour import SettingsError, TerminalSettings
from ..journal import MAIN_TERMINAL, Journal, TerminalRows
from ..outcomes import ManualDecisions, OutcomeQueue
from ..rules import AmountRules
from ..service import Terminal
from .api import READING, ApiError, ControlApi, Reply, _send_json, error_response
from .farm_file import LOWEST_PORT, MAX_LABEL

log = logging.getLogger("caisse_ap.terminal.web")

DEFAULT_MAX_TERMINALS = 64
MAX_DELETED_KEPT = 64  # deleted terminals still readable, the latest deleted
CREATE_KEYS = {"profile", "settings", "port", "label"}
CHANGE_KEYS = {"profile", "settings", "label"}
TERMINAL_ID = re.compile(r"t[1-9][0-9]{0,17}")


class Member(Protocol):
    """What the farm needs of a running terminal (app.RunningTerminal is one)."""

    terminal: Terminal
    rules: AmountRules
    queue: OutcomeQueue
    manual: ManualDecisions

    def retire(self) -> tuple[defer.Deferred[None], defer.Deferred[None]]: ...


# Starts a terminal with these settings on this port of the farm's address (0: a free
# one), numbering its transactions with the others; raises CannotListenError when the
# port is taken.
Starter = Callable[[TerminalSettings, int], Member]


@dataclass
class FarmTerminal:
    """One terminal of the farm, with the API that serves its routes."""

    id: str
    label: str
    member: Member
    api: ControlApi
    journal: TerminalRows
    port: int
    state: str = "listening"  # then "deleting", "deleted"
    stopped: defer.Deferred[None] | None = field(default=None, repr=False)
    refusing: defer.Deferred[None] | None = field(default=None, repr=False)  # port closed

    def to_json(self, console: str | None) -> dict[str, object]:
        terminal = self.member.terminal
        return {"id": self.id, "label": self.label, "state": self.state,
                "port": self.port,
                "console_url": None if console is None else f"{console}?terminal={self.id}",
                "settings": terminal.settings.to_dict(), "counters": terminal.counters()}


class Farm:
    """The terminals created over the API, by id, in the order they were created."""

    def __init__(self, start: Starter, host: str, journal: Journal, *,
                 max_terminals: int = DEFAULT_MAX_TERMINALS, token: str | None = None):
        self._start = start
        self.host = host
        self.journal = journal  # every terminal's transactions
        self.max_terminals = max_terminals
        self.token = token
        self.terminals: OrderedDict[str, FarmTerminal] = OrderedDict()
        self._deleted: list[str] = []
        # After the terminals the journal names (an earlier run's): an id names one.
        self._next_number = 1 + max((int(name[1:]) for name in journal.terminals()
                                     if TERMINAL_ID.fullmatch(name)), default=0)
        # Called with each terminal made, and each forgotten (the metrics watch them).
        self.created: list[Callable[[FarmTerminal], None]] = []
        self.forgotten: list[Callable[[FarmTerminal], None]] = []

    def named(self, terminal_id: str) -> bool:
        """Whether the journal may hold rows of this terminal: the command line's, or a
        farm terminal numbered already (in this run or an earlier one on the journal)."""
        return terminal_id == MAIN_TERMINAL or (
            TERMINAL_ID.fullmatch(terminal_id) is not None
            and int(terminal_id[1:]) < self._next_number)

    @property
    def listening(self) -> int:
        return sum(1 for kept in self.terminals.values() if kept.state == "listening")

    def create(self, body: dict[str, object], web_address: Callable[[], tuple[str, int] | None]
               ) -> FarmTerminal:
        """A new terminal as `body` says (ApiError 400 for a bad value, 409 at the limit
        or for a port in use); it listens when this returns."""
        _no_unknown(body, CREATE_KEYS)
        settings = _settings(body, TerminalSettings())
        label = _label(body.get("label"))
        port = _port(body.get("port"))
        if self.listening >= self.max_terminals:
            raise ApiError(409, f"The farm already runs {self.max_terminals} terminals "
                                "(--max-terminals); delete one first.",
                           code="too_many_terminals", limits={"max": self.max_terminals})
        try:
            member = self._start(settings, port)
        except CannotListenError as error:
            raise ApiError(409, f"Port {port} of {self.host} is in use "
                                f"({error.socketError}).", "port", code="port_in_use") from None
        address = member.terminal.address
        assert address is not None  # a started terminal listens
        terminal_id = f"t{self._next_number}"
        self._next_number += 1
        member.terminal.name = terminal_id  # before any request: the reactor runs this
        journal = TerminalRows(self.journal, terminal_id)
        api = ControlApi(member.terminal, journal, member.rules, token=self.token,
                         web_address=web_address, queue=member.queue, manual=member.manual)
        api.attach()
        kept = FarmTerminal(terminal_id, label or terminal_id, member, api, journal, address[1])
        self.terminals[terminal_id] = kept
        for hook in self.created:
            hook(kept)
        log.info("farm terminal %s (%s) listening on %s:%d, profile %s", terminal_id,
                 kept.label, address[0], address[1], settings.profile.name)
        return kept

    def change(self, kept: FarmTerminal, body: dict[str, object]) -> None:
        """Its label or settings as `body` says (nothing changes if a value is bad)."""
        _no_unknown(body, CHANGE_KEYS)
        label = _label(body.get("label"))
        _settings(body, kept.member.terminal.settings)  # a bad value: nothing changes
        if kept.state != "listening":
            raise ApiError(409, f"Terminal {kept.id} is deleted.", code="terminal_deleted")
        given = body.get("settings")
        changes: dict[str, object] = dict(given) if isinstance(given, dict) else {}
        if "profile" in body:
            changes["profile"] = body["profile"]  # applied first (TerminalSettings.updated)
        if changes:
            kept.member.terminal.update_settings(changes)
        if label:
            kept.label = label

    def delete(self, kept: FarmTerminal) -> defer.Deferred[None]:
        """Stop it: no new connection nor request at once, each transaction in flight
        answered as it would have been, then the connections closed; its transactions
        stay in the journal. Fires once it is all done."""
        if kept.stopped is not None:
            return _after(kept.stopped)
        kept.state = "deleting"
        log.info("farm terminal %s deleted: it accepts nothing more, and answers the %d "
                 "transactions in flight first", kept.id, len(kept.member.terminal.pending))

        def deleted(_: object) -> None:
            kept.api.detach()
            kept.state = "deleted"
            self._deleted.append(kept.id)
            while len(self._deleted) > MAX_DELETED_KEPT:
                forgotten = self.terminals.pop(self._deleted.pop(0))
                for hook in self.forgotten:
                    hook(forgotten)
            log.info("farm terminal %s released", kept.id)

        kept.refusing, kept.stopped = kept.member.retire()
        kept.stopped.addBoth(deleted)
        return _after(kept.stopped)

    def stop(self) -> defer.Deferred[Any]:
        """Stop every terminal (at shutdown): what is in flight is answered at once, as
        the command line's terminal does, deleted ones' too."""
        stopping = []
        for kept in list(self.terminals.values()):
            if kept.state == "deleted":
                continue
            stopping.append(self.delete(kept))
            kept.member.terminal.stop_transactions()  # hurries the deletion (drain_terminal)
        return defer.DeferredList(stopping)


def _after(stopped: defer.Deferred[None]) -> defer.Deferred[None]:
    """A Deferred firing when `stopped` has, without taking its result from others."""
    done: defer.Deferred[None] = defer.Deferred()

    def fire(result: object) -> object:
        done.callback(None)
        return result

    stopped.addBoth(fire)
    return done


def _no_unknown(body: dict[str, object], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"Unknown field {unknown[0]!r}; use {', '.join(sorted(known))}.",
                       unknown[0], code="unknown_field")


def _settings(body: dict[str, object], base: TerminalSettings) -> TerminalSettings:
    """`base` with the body's "settings" object, and its "profile" (given first, so that
    the settings the profile gives can be changed in the same body)."""
    changes = body.get("settings", {})
    if not isinstance(changes, dict):
        raise ApiError(400, "settings must be a JSON object of settings.", "settings",
                       code="object_required")
    try:
        if "profile" in body:
            base = base.updated({"profile": body["profile"]})
        return base.updated(changes)
    except SettingsError as error:
        raise ApiError.bad_value(error) from None


def _label(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "label must be text.", "label", code="not_text")
    if len(value) > MAX_LABEL:
        raise ApiError(400, f"label is longer than {MAX_LABEL} characters.", "label",
                       code="too_long", limits={"max_length": MAX_LABEL})
    if not value.isprintable():
        raise ApiError(400, "label must be one line of printable text.", "label",
                       code="invalid_format")
    return value.strip()


def _port(value: object) -> int:
    if value is None or (type(value) is int and value == 0):
        return 0  # a free port
    if isinstance(value, bool) or not isinstance(value, int) \
            or not LOWEST_PORT <= value <= 65535:
        raise ApiError(400, f"port must be 0 (a free port) or a whole number from "
                            f"{LOWEST_PORT} to 65535.", "port", code="out_of_range",
                       limits={"min": LOWEST_PORT, "max": 65535})
    return value


class ApiRoot(resource.Resource):
    """/api/: the farm's routes under /api/terminals, the rest to the command line's
    terminal's API, as before the farm."""

    isLeaf = True

    def __init__(self, api: ControlApi, farm: Farm,
                 openapi: Callable[[], dict[str, object]] | None = None):
        super().__init__()
        self.api = api
        self.farm = farm
        self.openapi = openapi  # the document /api/openapi.json serves (openapi.py)

    def render(self, request: server.Request) -> bytes | int:
        path = list(request.postpath or ())
        chosen = request.args.get(b"terminal")
        if path[:1] == [b"transactions"] and chosen and chosen[-1]:  # empty: every terminal
            # GET /api/transactions?terminal=t1: one terminal's rows of the journal (the
            # command line's terminal's API reads them all, get_transactions filters).
            name = chosen[-1].decode("utf-8", errors="replace")
            if not self.farm.named(name):
                try:
                    self.api._check_access(request, ("transactions",))  # before saying which
                except ApiError as error:
                    return error_response(request, error)
                return error_response(request, ApiError(
                    404, f"No terminal {name[:40]!r} in the farm.", code="unknown_terminal"))
            if len([part for part in path if part]) == 1 or name not in self.farm.terminals:
                return self.api.render(request)
            # One transaction, or its decision: that terminal's routes answer.
            path = [b"terminals", chosen[-1], *path]
        elif path in ([b"openapi.json"], [b"openapi.json", b""]) and self.openapi is not None:
            if request.method not in READING:  # open to all: it says nothing of the state
                request.setHeader(b"Allow", b"GET, HEAD")
                return error_response(request, ApiError(405, "Use GET.",
                                                        headers={"Allow": "GET, HEAD"}))
            return _send_json(request, 200, self.openapi())
        elif not path or path[0] != b"terminals":
            return self.api.render(request)
        rest = path[1:]
        if rest and rest[-1] == b"":
            rest.pop()  # a trailing slash
        try:
            if len(rest) >= 2:
                return self._terminal_route(request, rest)
            result = self._farm_route(request, rest)
        except ApiError as error:
            return error_response(request, error)
        except Exception:
            log.exception("error in %s %s", request.method.decode(), request.path.decode())
            return error_response(request, ApiError(500, "Internal error; see the server log."))
        if isinstance(result, defer.Deferred):
            self.api._finish_later(request, result)
            return server.NOT_DONE_YET
        return _send_json(request, result.status, result.data)

    def _find(self, raw: bytes) -> FarmTerminal:
        text = raw.decode("utf-8", errors="replace")
        kept = self.farm.terminals.get(text) if TERMINAL_ID.fullmatch(text) else None
        if kept is None:
            raise ApiError(404, f"No terminal {text[:40]!r} in the farm.",
                           code="unknown_terminal")
        return kept

    def _console(self, request: server.Request) -> str | None:
        host = request.getHeader(b"host")  # one the site allows (site.HostAllowlist)
        return None if host is None else f"http://{host.decode('latin-1')}/"

    def _farm_route(self, request: server.Request, rest: list[bytes]
                    ) -> Reply | defer.Deferred[Reply]:
        method = b"GET" if request.method == b"HEAD" else request.method
        allowed = ("GET, POST" if not rest else "GET, PATCH, DELETE")
        if method.decode("latin-1") not in allowed.split(", "):
            self.api._check_access(request, ("terminals",))
            raise ApiError(405, f"Method {request.method.decode(errors='replace')} is not "
                                f"allowed here; use {allowed}.", headers={"Allow": allowed})
        # PATCH writes too: the same Origin check as PUT, POST and DELETE.
        self.api._check_access(request, ("terminals",))
        if method == b"PATCH":
            self._check_origin(request)
        if not rest:
            if method == b"GET":
                return Reply({"max_terminals": self.farm.max_terminals,
                              "terminals": [kept.to_json(self._console(request))
                                            for kept in self.farm.terminals.values()]})
            body = self.api._object(self.api._body(request))
            kept = self.farm.create(body, self.api.web_address)
            return Reply(kept.to_json(self._console(request)), 201)
        kept = self._find(rest[0])
        if method == b"GET":
            return Reply(kept.to_json(self._console(request)))
        if method == b"PATCH":
            self.farm.change(kept, self.api._object(self.api._body(request)))
            return Reply(kept.to_json(self._console(request)))
        return self._delete(kept, self._console(request))

    def _delete(self, kept: FarmTerminal, console: str | None
                ) -> Reply | defer.Deferred[Reply]:
        """202 at once while it still answers transactions (state "deleting", its counters'
        `pending` says how many), else 200 once it is released (state "deleted")."""
        deleted = self.farm.delete(kept)
        if kept.state == "deleting" and kept.member.terminal.pending:
            assert kept.refusing is not None  # set by delete()
            # Once its port is closed: whoever reads this answer cannot connect any more.
            return _after(kept.refusing).addCallback(
                lambda _: Reply(kept.to_json(console), 202))
        return deleted.addCallback(lambda _: Reply(kept.to_json(console)))

    def _check_origin(self, request: server.Request) -> None:
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        if origin is not None and origin.split(b"://", 1)[-1] != host:
            raise ApiError(403, "Cross-origin requests are refused.")

    def _terminal_route(self, request: server.Request, rest: list[bytes]) -> bytes | int:
        """/api/terminals/{id}/...: the terminal's own API answers, with the rest of the
        path; a deleted terminal answers reads only, and one being deleted reads and the
        decisions of the transactions it still answers."""
        self.api._check_access(request, ("terminals",))  # before saying which ids exist
        kept = self._find(rest[0])
        deciding = len(rest) == 4 and rest[1] == b"transactions" and rest[3] == b"decision"
        if request.method not in READING and not (
                kept.state == "listening" or (kept.state == "deleting" and deciding)):
            raise ApiError(409, f"Terminal {kept.id} is deleted: its routes only read.",
                           code="terminal_deleted")
        request.postpath = rest[1:]
        return kept.api.render(request)
