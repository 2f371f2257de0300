"""Putting a point of sale through the catalogue: a POS command or a Python callable.

For each scenario the runner starts a terminal that plays it (wire.py, on the
shared reactor's thread), makes the POS pay the scenario's amount on it,
waits for the POS's conclusion (at most `pos_timeout` plus a margin, then
stops it), waits for it to close its connection, and judges. Scenarios are
independent (each has its own port), so they run side by side: a POS that
waits 177 s for an answer costs about 177 s for the whole catalogue, not for
each of its "no answer" scenarios.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from .. import testing
from ..i18n import _
from .catalogue import Scenario
from .judge import PosRun, Verdict, WireRecord, judge
from .wire import ScenarioFactory

HOST = "127.0.0.1"
STOP_MARGIN = 3.0  # seconds a POS gets beyond --pos-timeout before it is stopped
CLOSE_GRACE = 1.0  # seconds a POS has, after concluding, to close its connection
OUTPUT_KEPT = 2000  # characters of a POS's output kept for the report
DEFAULT_JOBS = 8

PosCall = Callable[[str, int, str, float], PosRun]
# pay(host, port, amount): an Outcome, or its name (anything else is a failure).
Pay = Callable[[str, int, str], object]


def command_pos(command: str) -> PosCall:
    """A POS run as a shell command with {host}, {port} and {amount} (quoted) replaced;
    its exit status says what it concluded."""

    def run(host: str, port: int, amount: str, limit: float) -> PosRun:
        line = command.format(host=shlex.quote(host), port=port, amount=shlex.quote(amount))
        started = time.monotonic()
        child = subprocess.Popen(line, shell=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # its own group: stopped whole
        try:
            output, _ = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
                os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
            return PosRun(None, time.monotonic() - started, _tail(output), limit)
        return PosRun(child.returncode, time.monotonic() - started, _tail(output))

    return run


def _tail(output: bytes | None) -> str:
    return (output or b"").decode("utf-8", errors="replace")[-OUTPUT_KEPT:]


def callable_pos(pay: Pay) -> PosCall:
    """A POS in this process: `pay(host, port, amount)` returns an Outcome (or its
    name: "approved", "declined", "accepted", "unknown"); an exception is a failure."""

    def run(host: str, port: int, amount: str, limit: float) -> PosRun:
        started = time.monotonic()
        box: dict[str, str] = {}  # "outcome" or "error", as text

        worker = threading.Thread(target=_call_into, args=(box, pay, host, port, amount),
                                  daemon=True)
        worker.start()
        worker.join(limit)
        elapsed = time.monotonic() - started
        if worker.is_alive():  # a thread cannot be stopped: it is left to finish alone
            return PosRun(None, elapsed, "", limit)
        if "error" in box:
            return PosRun(None, elapsed, box["error"],
                          failure=_("pay() raised %s") % box["error"])
        outcome = box.get("outcome", "")
        status = {"approved": 0, "accepted": 0, "declined": 1, "refused": 1,
                  "unknown": 3}.get(outcome)
        if status is None:
            return PosRun(None, elapsed, "", failure=_(
                "pay() returned %r, neither approved, declined nor unknown") % (outcome,))
        return PosRun(status, elapsed, f"outcome {outcome!r}")

    return run


def _call_into(box: dict[str, str], pay: Pay, host: str, port: int, amount: str) -> None:
    try:
        outcome = pay(host, port, amount)
        box["outcome"] = str(getattr(outcome, "value", outcome))
    except BaseException as error:  # reported in the verdict, never raised in the kit
        box["error"] = f"{type(error).__name__}: {error}"


def run_scenario(scenario: Scenario, pos: PosCall, pos_timeout: float,
                 host: str = HOST) -> Verdict:
    """Play one scenario for the POS and judge it; its terminal listens on `host` (the
    address the POS is given) and a free port."""
    reactor = testing.shared_reactor()
    factory = ScenarioFactory(scenario, pos_timeout, reactor)
    port = testing.call_in_reactor(factory.listen, host)
    try:
        run = pos(host, port, scenario.amount, pos_timeout + STOP_MARGIN)
        testing.call_in_reactor(factory.when_closed, CLOSE_GRACE)
        record = testing.call_in_reactor(snapshot, factory.record)
    finally:
        testing.call_in_reactor(factory.stop)
    return judge(scenario, run, record)


def snapshot(record: WireRecord) -> WireRecord:
    """A copy of what the wire edge recorded so far (the edge keeps writing in its own)."""
    return WireRecord(record.connections, list(record.requests), list(record.malformed),
                      record.sent, record.open_connections, record.closed_by_pos)


def run_all(scenarios: Iterable[Scenario], pos: PosCall, pos_timeout: float,
            jobs: int = DEFAULT_JOBS,
            on_verdict: Callable[[Verdict], None] | None = None,
            host: str = HOST) -> list[Verdict]:
    """Every scenario, `jobs` at a time; the verdicts in the catalogue's order."""
    scenarios = list(scenarios)
    lock = threading.Lock()

    def one(scenario: Scenario) -> Verdict:
        verdict = run_scenario(scenario, pos, pos_timeout, host)
        if on_verdict is not None:
            with lock:
                on_verdict(verdict)
        return verdict

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, scenarios))


__all__ = ["DEFAULT_JOBS", "callable_pos", "command_pos", "run_all", "run_scenario", "snapshot"]
