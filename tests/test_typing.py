"""The types serve users: mypy --strict on a small POS program that uses the public API.

The program must pass, and a deliberate mistake in the same program must be
caught, so that the check cannot pass by seeing only Any.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")
pytestmark = pytest.mark.slow  # mypy in a process of its own

ROOT = Path(__file__).resolve().parent.parent

POS_PROGRAM = textwrap.dedent('''\
    import asyncio
    from decimal import Decimal

    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTCP

    from caisse_ap import (CaisseApError, InvalidRequest, Outcome, PaymentResult,
                           PaymentTerminal, TerminalUnreachable)
    from caisse_ap import aio, twisted
    from caisse_ap.testing import SimulatedTerminal, Transaction
    from caisse_ap.terminal.words import TransactionStatus


    def pay(host: str, amount: Decimal) -> Decimal | None:
        try:
            result: PaymentResult = PaymentTerminal(host).pay(amount, currency="EUR")
        except TerminalUnreachable:
            return None
        if result.outcome is Outcome.APPROVED:
            return result.partial_amount or result.amount
        refused: str | None = result.refusal_code
        print(refused, result.elapsed_s + 1.0, result.answer_frame.hex())
        return None


    async def pay_async(host: str) -> bool:
        result = await aio.PaymentTerminal(host, 8888, timeout=60).refund("4.00")
        return result.approved


    def pay_twisted(reactor: IReactorTCP, host: str) -> Deferred[PaymentResult]:
        return twisted.PaymentTerminal(reactor, host).pay("1.00", immediate=True)


    def journal(terminal: SimulatedTerminal) -> list[TransactionStatus]:
        found: list[Transaction] = terminal.transactions(limit=5)
        return [transaction.status for transaction in found]


    def bad_argument() -> str | None:
        try:
            PaymentTerminal("h").pay("x")
        except InvalidRequest as error:
            return error.field
        except CaisseApError:
            raise
        return None


    asyncio.run(pay_async("127.0.0.1")) if False else None
    ''')

MISTAKE = """\
from caisse_ap import PaymentTerminal

count: int = PaymentTerminal("h").pay("1").amount
"""


def test_a_pos_program_passes_mypy_strict_and_a_mistake_is_caught(tmp_path: Path) -> None:
    (tmp_path / "pos.py").write_text(POS_PROGRAM, encoding="utf-8")
    (tmp_path / "mistake.py").write_text(MISTAKE, encoding="utf-8")
    # MYPYPATH: the editable install's import hook is invisible to mypy.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "pos.py", "mistake.py"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)})
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout + done.stderr
    assert errors[0].startswith("mistake.py:3: error: Incompatible types in assignment "
                                '(expression has type "Decimal", variable has type "int")')
