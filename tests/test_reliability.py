"""The reliability suite's short form (bench/reliability.py): every scenario, every check.

Each scenario runs the real server on 127.0.0.1 and free ports; every check is
required.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from server_process import ROOT

# Every scenario runs the server in a process of its own.
pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("reliability", ROOT / "bench" / "reliability.py")
reliability = importlib.util.module_from_spec(spec)
sys.modules["reliability"] = reliability
spec.loader.exec_module(reliability)


@pytest.mark.parametrize("name", list(reliability.SCENARIOS))
def test_scenario(name):
    if name == "full-disk" and os.geteuid() != 0:
        pytest.skip("full-disk mounts a small tmpfs that fills: it needs root")
    printed: list[str] = []
    checks = reliability.run_scenario(name, out=printed.append)
    report = "\n".join(printed)
    assert checks, report
    failed = [check.name for check in checks if not check.ok]
    assert failed == [], report

