"""A conformance session for a point of sale driven by hand: one scenario per payment.

The server (`caisse-ap-ip-server --conformance`) answers each payment the
tester makes on the POS with the next scenario's plan; once the POS has shown
its outcome, the tester says what it showed, and the session judges it as the
runner judges a POS command's exit status. Pure: the Twisted edge and the
tester's console (manual.py) feed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..i18n import N_, _
from .catalogue import EXIT_BY_CONCLUSION, Scenario
from .judge import PosRun, Verdict, WireRecord, judge

# What the tester answers, by key: what the POS showed.
SHOWN = {"a": "approved", "r": "refused", "i": "unknown", "e": "failure"}
# What the POS showed, in words (marked for the catalog; shown_word() translates).
SHOWN_WORDS = {"approved": N_("payment approved"), "refused": N_("payment refused"),
               "unknown": N_("unknown outcome, to be checked"),
               "failure": N_("an error, or nothing")}


def shown_word(conclusion: str) -> str:
    """What the POS showed ("approved"...), in the user's language."""
    return _(SHOWN_WORDS[conclusion])


@dataclass
class Step:
    """One scenario of the session and what the POS did on the wire during it."""

    scenario: Scenario
    record: WireRecord = field(default_factory=WireRecord)
    started_at: float | None = None  # clock time of its first connection
    verdict: Verdict | None = None


class ConformanceSession:
    """The scenarios in order; the current one is played until the tester answers."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        if not scenarios:
            raise ValueError("a session needs at least one scenario")
        self.steps = [Step(scenario) for scenario in scenarios]
        self.index = 0

    @property
    def current(self) -> Step | None:
        return self.steps[self.index] if self.index < len(self.steps) else None

    @property
    def finished(self) -> bool:
        return self.index >= len(self.steps)

    @property
    def verdicts(self) -> list[Verdict]:
        return [step.verdict for step in self.steps if step.verdict is not None]

    def connection_started(self, now: float) -> Step:
        """A POS connection opens: it belongs to the current scenario."""
        step = self.current
        if step is None:
            raise RuntimeError("the session is over")
        if step.started_at is None:
            step.started_at = now
        return step

    def tester_says(self, shown: str, now: float, record: WireRecord) -> Verdict:
        """The tester's answer (a key of SHOWN, or its word) for the current scenario,
        judged with `record` (a snapshot of the step's); then the next scenario."""
        step = self.current
        if step is None:
            raise RuntimeError("the session is over")
        if step.started_at is None:
            raise ValueError("no payment reached the terminal for this scenario yet")
        conclusion = SHOWN.get(shown, shown)
        if conclusion not in SHOWN_WORDS:
            raise ValueError(f"unknown answer {shown!r}")
        failure = (_("it showed an error, or nothing (says the tester)")
                   if conclusion == "failure" else None)
        run = PosRun(EXIT_BY_CONCLUSION.get(conclusion), now - step.started_at,
                     failure=failure)
        step.verdict = judge(step.scenario, run, record)
        self.index += 1
        return step.verdict


__all__ = ["SHOWN", "SHOWN_WORDS", "ConformanceSession", "Step", "shown_word"]
