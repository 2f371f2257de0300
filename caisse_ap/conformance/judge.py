"""Whether a point of sale passed a scenario: what it concluded and what it did on the wire.

Pure: it reads what the wire edge recorded (WireRecord) and what the POS
concluded (PosRun), and says, for the people who read the report, what went
wrong and why it matters, in the language of the messages (caisse_ap.i18n:
French under a French locale, English otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..i18n import N_, _
from .catalogue import CONCLUSION_BY_EXIT, Scenario

# A conclusion in words (marked for the catalog; word() says it in the user's language).
WORDS = {"approved": N_("approved"), "refused": N_("refused"),
         "unknown": N_("unknown outcome"), "failure": N_("POS failure")}


def word(conclusion: str) -> str:
    """A conclusion ("approved"...) in words, in the user's language."""
    return _(WORDS[conclusion])


# Why a wrong conclusion matters, by (expected, concluded).
CONSEQUENCES = {
    ("approved", "refused"): N_("the terminal charged the card: the POS will have the "
                                "customer pay a second time"),
    ("approved", "unknown"): N_("the terminal charged the card: the POS has the cashier "
                                "check a payment that was made (the queue waits, the "
                                "customer may pay twice)"),
    ("refused", "approved"): N_("the terminal charged nothing: the goods leave unpaid"),
    ("refused", "unknown"): N_("the terminal says clearly that nothing was done: the POS "
                               "could have offered to try again"),
    ("unknown", "approved"): N_("nothing proves this payment was made: the goods may leave "
                                "unpaid"),
    ("unknown", "refused"): N_("the payment may have been made: trying again may have the "
                               "customer pay twice"),
}


@dataclass
class WireRecord:
    """What the POS did on the wire during one scenario (filled by the wire edge)."""

    connections: int = 0
    requests: list[bytes] = field(default_factory=list)  # each whole request, as received
    malformed: list[str] = field(default_factory=list)  # why each broken message broke
    sent: bytes = b""  # what the terminal wrote, on every connection
    open_connections: int = 0
    closed_by_pos: int = 0  # connections the POS closed (before the terminal did)


@dataclass(frozen=True)
class PosRun:
    """What the POS concluded: its exit status (None when it had to be stopped)."""

    exit_status: int | None
    elapsed: float
    output: str = ""  # the end of what it printed, to explain a failure
    stopped_after: float | None = None  # set when the kit stopped it after this long
    failure: str | None = None  # what the POS showed instead of an outcome (told by a tester)

    @property
    def conclusion(self) -> str:
        if self.exit_status is None:
            return "failure"
        return CONCLUSION_BY_EXIT.get(self.exit_status, "failure")


@dataclass(frozen=True)
class Verdict:
    scenario: Scenario
    run: PosRun
    wire: WireRecord
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def concluded(self) -> str:
        return self.run.conclusion


def judge(scenario: Scenario, run: PosRun, wire: WireRecord) -> Verdict:
    """The scenario's verdict: every problem, in the user's language, or none."""
    problems = []
    expected, concluded = scenario.expect, run.conclusion
    if run.stopped_after is not None:
        problems.append(_("the POS concluded nothing in %g s (--pos-timeout and the margin): "
                          "stopped. A POS that waits for ever blocks the sale; past its own "
                          "time-out, it must conclude \"unknown outcome\"")
                        % run.stopped_after)
    elif concluded == "failure" and run.failure is not None:
        problems.append(_("the POS did not conclude: %s") % run.failure)
    elif concluded == "failure":
        problems.append(_("the POS command exited with status %s, neither 0 (approved), 1 "
                          "(refused) nor 3 (unknown): it probably crashed on this answer")
                        % run.exit_status + _last_line(run.output))
    elif concluded != expected:
        problems.append(_("the POS concluded \"%(concluded)s\" instead of \"%(expected)s\": "
                          "%(consequence)s")
                        % {"concluded": word(concluded), "expected": word(expected),
                           "consequence": _(CONSEQUENCES[expected, concluded])})
    problems.extend(_wire_problems(wire))
    return Verdict(scenario, run, wire, tuple(problems))


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return f" ({lines[-1][:200]})" if lines else ""


def _wire_problems(wire: WireRecord) -> list[str]:
    problems = []
    if not wire.requests and not wire.malformed:
        problems.append(_("no request reached the terminal"))
    sent = len(wire.requests) + len(wire.malformed)
    if sent > 1:
        problems.append(_("the POS sent %d requests for one sale: a POS never sends a "
                          "payment again by itself (the first may have been made; the "
                          "customer would pay twice)") % sent)
    for reason in wire.malformed:
        problems.append(_("malformed request (%s): the terminal answers AF=09") % reason)
    if wire.open_connections:
        problems.append(_("%d connection(s) still open after the conclusion: the POS must "
                          "close its connection") % wire.open_connections)
    return problems


__all__ = ["PosRun", "Verdict", "WireRecord", "judge", "word"]
