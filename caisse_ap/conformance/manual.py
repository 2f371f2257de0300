"""`caisse-ap-ip-server --conformance`: the conformance kit for a POS driven by hand.

Options of the server's command line (terminal/cli.py wires them): with
`--conformance`, the terminal answers each payment with the next scenario of
the catalogue (the same plans as the runner's, carried out by wire.py), and a
SessionDriver shows the tester the scenario and what the POS did on the wire,
and asks what the POS showed: on the server's console (its standard input and
output, in the language of the messages: French under a French locale,
English otherwise) and in the web console's page (/conformance.html, through
GET /api/conformance and POST /api/conformance/answer). After the last
scenario (or `q`) it writes the HTML report, and stops without the web console.

The session's payments are the terminal's transactions as any other: each
request is journaled and shown in the main console as soon as it arrives,
answered by its scenario (mode "conformance", decided by "scenario", the
scenario's name as `scenario`), through the Terminal's seam for requests
answered elsewhere (receive_forwarded and finish_forwarded, as the proxy's).
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypedDict

from twisted.internet import defer, stdio
from twisted.internet.interfaces import IAddress, IReactorCore, IReactorFDSet
from twisted.protocols.basic import LineReceiver

from ..i18n import _, language
from ..terminal.words import DecidedBy, TransactionMode, TransactionStatus
from ..tlv import Field
from .catalogue import Scenario
from .judge import Verdict, word
from .options import ConformanceOptions
from .plan import Plan
from .report import html_report
from .runner import CLOSE_GRACE, snapshot
from .session import SHOWN, ConformanceSession, Step, shown_word
from .wire import ScenarioFactory, ScenarioProtocol

if TYPE_CHECKING:
    from ..terminal.app import RunningTerminal
    from ..terminal.server import IdleWatch
    from ..terminal.service import Terminal, Transaction
    from ..twisted import IReactorTCPTime

log = logging.getLogger("caisse_ap.conformance")

MAX_CONNECTIONS = 16  # a session serves one POS; a few resends or probes at most


# The session as the web console reads it (GET /api/conformance, docs/api.md).


class ScenarioJson(TypedDict):
    name: str
    title: str
    description: str
    amount: str
    paid: bool
    played: bool
    requests: int
    malformed: int
    connections: int


class VerdictJson(TypedDict):
    name: str
    title: str
    passed: bool
    expected: str
    concluded: str
    problems: list[str]
    fact: str
    fix: str
    requests: int


class SessionJson(TypedDict):
    index: int
    total: int
    finished: bool
    current: ScenarioJson | None
    answers: dict[str, str]
    verdicts: list[VerdictJson]
    report: str | None


class SessionFactory(ScenarioFactory):
    """The terminal's connections during a session: each takes the current scenario."""

    def __init__(self, session: ConformanceSession, pos_timeout: float,
                 reactor: IReactorTCPTime, idle_watch: IdleWatch,
                 terminal: Terminal | None = None) -> None:
        step = session.current
        assert step is not None  # a session starts with at least one scenario
        super().__init__(step.scenario, pos_timeout, reactor)
        self.session = session
        self.idle_watch = idle_watch  # stop_terminal stops it
        self.driver: SessionDriver | None = None
        self.terminal = terminal  # journals and shows the payments (None: nothing does)
        # Each connection's transactions still waiting for their plan to be carried out.
        self.waiting: dict[ScenarioProtocol, deque[Transaction]] = {}

    def free_slots(self) -> int:
        """The server's port asks before accepting: a session is one POS at a time."""
        return MAX_CONNECTIONS - len(self.protocols)

    def buildProtocol(self, addr: IAddress | None) -> ScenarioProtocol:
        if self.session.finished:
            return None  # type: ignore[return-value]  # Twisted closes the connection
        step = self.session.connection_started(self.reactor.seconds())
        self.scenario, self.record = step.scenario, step.record
        connection = super().buildProtocol(addr)
        from ..terminal.server import peer_of

        connection.peer = peer_of(addr)
        return connection

    def request_received(self, connection: ScenarioProtocol, fields: list[Field]) -> None:
        if self.terminal is None:
            return
        txn = self.terminal.receive_forwarded(connection, fields, None,
                                              TransactionMode.CONFORMANCE, DecidedBy.SCENARIO)
        txn.scenario = connection.scenario.name
        self.waiting.setdefault(connection, deque()).append(txn)

    def plan_done(self, connection: ScenarioProtocol, plan: Plan) -> None:
        waiting = self.waiting.get(connection)
        if self.terminal is not None and waiting:
            status, answer, reason = transaction_outcome(connection.scenario, plan)
            self.terminal.finish_forwarded(waiting.popleft(), status, answer,
                                           bytes(connection.written) or None, reason)
        if self.driver is not None and connection.record is self.record:
            self.driver.ask()

    def connection_lost(self, connection: ScenarioProtocol) -> None:
        """The POS left before its answer was all written: its transactions are dropped."""
        for txn in self.waiting.pop(connection, ()):
            if self.terminal is not None:
                self.terminal.finish_forwarded(txn, TransactionStatus.DROPPED)


def transaction_outcome(scenario: Scenario, plan: Plan
                        ) -> tuple[str, list[Field] | None, str | None]:
    """What the journal says a carried-out plan answered: the status, the answer's fields
    (None when no whole answer was written) and the refusal's reason (AF's code)."""
    if not scenario.answers:
        return scenario.terminal.outcome, None, None  # "no-answer" or "hang-up"
    if scenario.network.hang_up_inside is not None:
        return TransactionStatus.HANG_UP, None, None
    values = dict(plan.fields)
    status = {"10": TransactionStatus.APPROVED, "01": TransactionStatus.DECLINED,
              "11": TransactionStatus.ACCEPTED}.get(values.get("AE", ""))
    if status is None:  # unreadable bytes: what the scenario's terminal had decided
        status = (TransactionStatus.APPROVED if scenario.terminal.outcome == "approved"
                  else TransactionStatus.DECLINED)
    reason = (values.get("AF") or "")[:2] or None
    return status, (list(plan.fields) or None), reason if status == "declined" else None


class SessionDriver:
    """What the tester can see and do during a session, for every console (the server's
    standard input and output, the web console's page): the scenario to play, "what did
    the POS show?", the verdicts, the report at the end."""

    def __init__(self, factory: SessionFactory, report: Path, stop_when_done: bool) -> None:
        self.factory = factory
        self.session = factory.session
        self.report = report
        self.stop_when_done = stop_when_done
        self.asked = False  # the current scenario was played: the tester may answer
        self.report_written: str | None = None
        self.listeners: list[Callable[[str], None]] = []  # each gets every line said

    def say(self, text: str) -> None:
        for listener in self.listeners:
            listener(text)

    def begin(self) -> None:
        self.say(_("Conformance kit: %d scenarios, one per payment.") % len(self.session.steps))
        self.announce()

    def announce(self) -> None:
        step = self.session.current
        self.asked = False
        if step is None:
            return
        number = self.session.index + 1
        scenario = step.scenario
        self.say("\n" + _("Scenario %(number)d/%(count)d: %(title)s (%(name)s)")
                 % {"number": number, "count": len(self.session.steps),
                    "title": scenario.text("title"), "name": scenario.name}
                 + f"\n  {scenario.text('description')}\n  "
                 + _("Pay %s EUR from the POS.") % (scenario.amount.replace(".", ",")
                                                     if language() == "fr" else scenario.amount))

    def ask(self) -> None:
        if self.asked:
            return
        self.asked = True
        keys = ", ".join(f"{key} = {shown_word(shown)}" for key, shown in SHOWN.items())
        self.say("  " + _("The terminal played the scenario. When the POS shows its outcome, "
                          "type what it shows (%s; q to finish):") % keys)

    def answer(self, shown: str) -> defer.Deferred[Verdict]:
        """The tester's answer (a key of SHOWN or its word): judged once the POS closed its
        connection (or CLOSE_GRACE later). ValueError, in the user's language, when it
        cannot be."""
        step = self.session.current
        if step is None:
            raise ValueError(_("the session is over"))
        if step.started_at is None:
            raise ValueError(_("no payment has reached the terminal for this scenario yet"))
        conclusion = SHOWN.get(shown, shown)
        if conclusion not in SHOWN.values():
            raise ValueError(_("answer a, r, i, e or q"))
        waiting = self.factory.when_closed(CLOSE_GRACE)
        return waiting.addCallback(lambda _: self._judged(step, conclusion))

    def _judged(self, step: Step, conclusion: str) -> Verdict:
        if self.session.current is not step:  # answered twice meanwhile: the first counts
            assert step.verdict is not None
            return step.verdict
        verdict = self.session.tester_says(conclusion, self.factory.reactor.seconds(),
                                           snapshot(step.record))
        self.say(_verdict_text(verdict))
        if self.session.finished:
            self.finish()
        else:
            self.announce()
        return verdict

    def finish(self) -> None:
        verdicts = self.session.verdicts
        passed = sum(v.passed for v in verdicts)
        self.say("\n" + _("%(passed)d / %(count)d scenarios passed (%(left)d not played)")
                 % {"passed": passed, "count": len(verdicts),
                    "left": len(self.session.steps) - len(verdicts)})
        try:
            self.report.write_text(html_report(verdicts, _("POS driven by hand"),
                                               self.factory.pos_timeout), encoding="utf-8")
            self.report_written = str(self.report)
            self.say(_("report: %s") % self.report)
        except OSError as error:
            self.say(_("cannot write the report: %s") % error)
        self.session.index = len(self.session.steps)  # q: the rest is not played
        if self.stop_when_done:
            # The command line's reactor: Twisted's own, which is one (IReactorCore).
            IReactorCore(self.factory.reactor).stop()

    def state(self) -> SessionJson:
        """The session as JSON, for the web console (the expected conclusion of the
        scenario being played is not given: the tester says what the POS showed)."""
        step = self.session.current
        current: ScenarioJson | None = None
        if step is not None:
            record = step.record
            current = {"name": step.scenario.name, "title": step.scenario.text("title"),
                       "description": step.scenario.text("description"),
                       "amount": step.scenario.amount, "paid": step.started_at is not None,
                       "played": self.asked, "requests": len(record.requests),
                       "malformed": len(record.malformed), "connections": record.connections}
        return {"index": self.session.index, "total": len(self.session.steps),
                "finished": self.session.finished, "current": current,
                "answers": {key: shown_word(shown) for key, shown in SHOWN.items()},
                "verdicts": [_verdict_json(v) for v in self.session.verdicts],
                "report": self.report_written}


def _verdict_json(verdict: Verdict) -> VerdictJson:
    return {"name": verdict.scenario.name, "title": verdict.scenario.text("title"),
            "passed": verdict.passed, "expected": word(verdict.scenario.expect),
            "concluded": word(verdict.concluded), "problems": list(verdict.problems),
            "fact": verdict.scenario.text("fact"), "fix": verdict.scenario.text("fix"),
            "requests": len(verdict.wire.requests)}


class TesterConsole(LineReceiver):
    """The server's standard input and output as the tester's console."""

    delimiter = b"\n"

    def __init__(self, driver: SessionDriver, out: TextIO = sys.stdout) -> None:
        self.driver = driver
        self.out = out

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def connectionMade(self) -> None:
        self.driver.listeners.append(self.say)
        self.driver.begin()

    def lineReceived(self, line: bytes) -> None:
        answer = line.decode("utf-8", errors="replace").strip().lower()
        if not answer:
            return
        if answer == "q":
            self.driver.finish()
            return
        try:
            self.driver.answer(answer[:1])
        except ValueError as error:
            self.say(f"  {error}")


def _verdict_text(verdict: Verdict) -> str:
    wire = verdict.wire
    head = "  " + (_("passed: expected %(expected)s, the POS showed %(concluded)s; "
                     "%(requests)d request(s), %(connections)d connection(s)")
                   if verdict.passed else
                   _("FAILED: expected %(expected)s, the POS showed %(concluded)s; "
                     "%(requests)d request(s), %(connections)d connection(s)")) % {
        "expected": word(verdict.scenario.expect), "concluded": word(verdict.concluded),
        "requests": len(wire.requests), "connections": wire.connections}
    return "\n".join([head, *(f"    - {problem}" for problem in verdict.problems)])


def terminal_factory(options: ConformanceOptions) -> Callable[[Terminal], SessionFactory]:
    """What builds the terminal's connections during the session (app.TerminalOptions)."""
    from ..terminal.server import IdleWatch

    def build(terminal: Terminal) -> SessionFactory:
        factory = SessionFactory(options.session, options.pos_timeout, terminal.reactor,
                                 IdleWatch(terminal), terminal)
        factory.driver = SessionDriver(factory, options.report, options.stop_when_done)
        return factory

    return build


def describe_terminal(options: ConformanceOptions) -> str:
    return (f"conformance kit: {len(options.session.steps)} scenarios, one per "
            "payment, the tester answering on this console")


def start(running: RunningTerminal, reactor: IReactorTCPTime) -> None:
    """Once the terminal serves: the tester's console on standard input and output, and
    the web console's page (GET /api/conformance) when the console is on."""
    driver: SessionDriver = running.terminal.listening_port.factory.driver
    # The command line's reactor: Twisted's own, which reads files too (IReactorFDSet).
    stdio.StandardIO(TesterConsole(driver), reactor=IReactorFDSet(reactor))
    if running.console is not None:
        running.console.api.conformance = driver
        log.info("conformance session in the web console: %sconformance.html",
                 running.console.web_url)


__all__ = ["describe_terminal", "start", "terminal_factory"]
