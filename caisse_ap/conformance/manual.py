"""`caisse-ap-ip-server --conformance`: the conformance kit for a POS driven by hand.

An extension of the server's command line (terminal/cli.py): with
`--conformance`, the terminal answers each payment with the next scenario of
the catalogue (the same plans as the runner's, carried out by wire.py), and
the server's console (its standard input and output, in French) shows the
scenario, what the POS did on the wire, and asks the tester what the POS
showed. After the last scenario (or `q`) it writes the HTML report and stops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver

from ..terminal.cli import UsageError
from .catalogue import select
from .judge import WORDS, Verdict
from .report import html_report
from .runner import CLOSE_GRACE, snapshot
from .session import SHOWN_WORDS, ConformanceSession
from .wire import ScenarioFactory, ScenarioProtocol

DEFAULT_REPORT = "conformite.html"
DEFAULT_POS_TIMEOUT = 180.0  # what POS integrations usually wait
MAX_CONNECTIONS = 16  # a session serves one POS; a few resends or probes at most


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("conformance kit for a POS driven by hand")
    add = group.add_argument
    add("--conformance", action="store_true",
        help="answer each payment with the next scenario of the conformance kit and ask, "
             "on this console, what the POS showed; then write the report and stop")
    add("--conformance-only", default=None, metavar="NAMES",
        help="with --conformance: these scenarios only (commas)")
    add("--conformance-skip", default=None, metavar="NAMES",
        help="with --conformance: skip these scenarios (commas)")
    add("--conformance-report", default=DEFAULT_REPORT, metavar="FILE.html",
        help=f"with --conformance: the HTML report (default {DEFAULT_REPORT})")
    add("--conformance-pos-timeout", type=float, default=DEFAULT_POS_TIMEOUT,
        metavar="SECONDS",
        help="with --conformance: how long the POS waits for an answer (the late answer "
             f"comes 1 s after it; default {DEFAULT_POS_TIMEOUT:g})")


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    """No setting changes; checks the options and chooses the scenarios."""
    args.conformance_session = None
    if not args.conformance:
        for option in ("only", "skip"):
            if getattr(args, f"conformance_{option}"):
                raise UsageError(f"--conformance-{option} needs --conformance")
        return {}
    if not 0 < args.conformance_pos_timeout <= 3600:
        raise UsageError("--conformance-pos-timeout must be between 0 and 3600 seconds")
    try:
        scenarios = select(_names(args.conformance_only), _names(args.conformance_skip))
        args.conformance_session = ConformanceSession(scenarios)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return {}


class SessionFactory(ScenarioFactory):
    """The terminal's connections during a session: each takes the current scenario."""

    def __init__(self, session: ConformanceSession, pos_timeout: float, reactor: Any,
                 idle_watch: Any) -> None:
        step = session.current
        assert step is not None  # a session starts with at least one scenario
        super().__init__(step.scenario, pos_timeout, reactor)
        self.session = session
        self.idle_watch = idle_watch  # stop_terminal stops it
        self.console: TesterConsole | None = None

    def free_slots(self) -> int:
        """The server's port asks before accepting: a session is one POS at a time."""
        return MAX_CONNECTIONS - len(self.protocols)

    def buildProtocol(self, addr: Any) -> ScenarioProtocol:
        if self.session.finished:
            return None  # type: ignore[return-value]  # Twisted closes the connection
        step = self.session.connection_started(self.reactor.seconds())
        self.scenario, self.record = step.scenario, step.record
        return super().buildProtocol(addr)

    def plan_done(self, connection: ScenarioProtocol) -> None:
        if self.console is not None and connection.record is self.record:
            self.console.ask()


class TesterConsole(LineReceiver):
    """The tester's side: the scenario to play, then "what did the POS show?"."""

    delimiter = b"\n"

    def __init__(self, factory: SessionFactory, report: Path, pos: str,
                 out: TextIO = sys.stdout) -> None:
        self.factory = factory
        self.session = factory.session
        self.report = report
        self.pos = pos
        self.out = out
        self.asked = False

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def connectionMade(self) -> None:
        self.say(f"Kit de conformité : {len(self.session.steps)} scénarios, un par paiement.")
        self.announce()

    def announce(self) -> None:
        step = self.session.current
        if step is None:
            return
        number = self.session.index + 1
        self.say(f"\nScénario {number}/{len(self.session.steps)} : {step.scenario.title} "
                 f"({step.scenario.name})\n  {step.scenario.description}\n"
                 f"  Payez {step.scenario.amount.replace('.', ',')} € depuis la caisse.")
        self.asked = False

    def ask(self) -> None:
        if self.asked:
            return
        self.asked = True
        keys = ", ".join(f"{key} = {SHOWN_WORDS[word]}" for key, word in
                         (("a", "approved"), ("r", "refused"), ("i", "unknown"),
                          ("e", "failure")))
        self.say(f"  Le terminal a joué le scénario. Quand la caisse affiche son issue, "
                 f"tapez ce qu'elle montre ({keys} ; q pour finir) :")

    def lineReceived(self, line: bytes) -> None:
        answer = line.decode("utf-8", errors="replace").strip().lower()
        if not answer:
            return
        if answer == "q":
            self.finish()
            return
        try:
            if self.session.current is None or self.session.current.started_at is None:
                raise ValueError("aucun paiement n'est encore arrivé pour ce scénario")
            if answer[:1] not in "arie":
                raise ValueError("répondez a, r, i, e ou q")
        except ValueError as error:
            self.say(f"  {error}")
            return
        waiting = self.factory.when_closed(CLOSE_GRACE)
        waiting.addCallback(lambda _: self.judged(answer[:1]))

    def judged(self, answer: str) -> None:
        step = self.session.current
        if step is None:
            return
        verdict = self.session.tester_says(answer, self.factory.reactor.seconds(),
                                           snapshot(step.record))
        self.say(_verdict_text(verdict))
        if self.session.finished:
            self.finish()
        else:
            self.announce()

    def finish(self) -> None:
        verdicts = self.session.verdicts
        passed = sum(v.passed for v in verdicts)
        self.say(f"\n{passed} / {len(verdicts)} scénarios réussis "
                 f"({len(self.session.steps) - len(verdicts)} non joués)")
        try:
            self.report.write_text(html_report(verdicts, self.pos, self.factory.pos_timeout),
                                   encoding="utf-8")
            self.say(f"rapport : {self.report}")
        except OSError as error:
            self.say(f"impossible d'écrire le rapport : {error}")
        self.factory.reactor.stop()


def _verdict_text(verdict: Verdict) -> str:
    wire = verdict.wire
    head = ("  réussi" if verdict.passed else "  ÉCHEC") + (
        f" : attendu {WORDS[verdict.scenario.expect]}, la caisse a montré "
        f"{WORDS[verdict.concluded]} ; {len(wire.requests)} demande(s), "
        f"{wire.connections} connexion(s)")
    return "\n".join([head, *(f"    - {problem}" for problem in verdict.problems)])


def terminal_factory(args: argparse.Namespace) -> Any:
    if args.conformance_session is None:
        return None
    from ..terminal.server import IdleWatch

    def build(terminal: Any) -> SessionFactory:
        factory = SessionFactory(args.conformance_session, args.conformance_pos_timeout,
                                 terminal.reactor, IdleWatch(terminal))
        args.conformance_factory = factory
        return factory

    return build


def describe_terminal(args: argparse.Namespace, settings: Any) -> str | None:
    if args.conformance_session is None:
        return None
    return (f"conformance kit: {len(args.conformance_session.steps)} scenarios, one per "
            "payment, the tester answering on this console")


def start(terminal: Any, args: argparse.Namespace, reactor: Any) -> None:
    if args.conformance_session is None:
        return
    factory = args.conformance_factory
    console = TesterConsole(factory, Path(args.conformance_report), "caisse pilotée à la main")
    factory.console = console
    stdio.StandardIO(console, reactor=reactor)


__all__ = ["add_arguments", "describe_terminal", "settings_changes", "start",
           "terminal_factory"]
