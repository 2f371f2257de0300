"""The conformance kit: put a point of sale through what real terminals and networks do.

    caisse-ap-ip-conformance --pos "python3 pay.py {host} {port} {amount}"

or, from Python (docs/conformance.md):

    from caisse_ap import conformance
    verdicts = conformance.check(pay)  # pay(host, port, amount) -> Outcome

The catalogue is data (scenarios/*.toml, read by catalogue.py); plan.py
computes what the terminal writes for a scenario and a request, without I/O;
wire.py carries plans out over Twisted; judge.py says whether the POS
passed; runner.py runs a POS command or a callable through the catalogue.
"""

from __future__ import annotations

from .catalogue import CONCLUSIONS, Scenario, ScenarioError, builtins, load, parse, select
from .judge import PosRun, Verdict, WireRecord, judge
from .runner import DEFAULT_JOBS, Pay, callable_pos, command_pos, run_all, run_scenario

DEFAULT_POS_TIMEOUT = 30.0


def check(pay: Pay, scenarios: list[Scenario] | None = None,
          pos_timeout: float = DEFAULT_POS_TIMEOUT, jobs: int = DEFAULT_JOBS) -> list[Verdict]:
    """Run `pay(host, port, amount) -> Outcome` through the catalogue (or `scenarios`)."""
    chosen = list(builtins().values()) if scenarios is None else scenarios
    return run_all(chosen, callable_pos(pay), pos_timeout, jobs)


def check_one(pay: Pay, scenario: Scenario,
              pos_timeout: float = DEFAULT_POS_TIMEOUT) -> Verdict:
    """One scenario for `pay`: for a pytest test per scenario (docs/conformance.md)."""
    return run_scenario(scenario, callable_pos(pay), pos_timeout)


__all__ = ["CONCLUSIONS", "DEFAULT_POS_TIMEOUT", "PosRun", "Scenario", "ScenarioError",
           "Verdict", "WireRecord", "builtins", "check", "check_one", "command_pos", "judge",
           "load", "parse", "run_all", "select"]
