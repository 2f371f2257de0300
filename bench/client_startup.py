#!/usr/bin/env python3
"""Start-up time of the command-line client against a bare Python baseline.

Measures the wall time of `python3 caisse-ap-ip-client.py --help` and of
`python3 -c "import argparse, socket, decimal"` (what any such client needs
anyway), interleaved run by run so that a busy machine slows both alike, and
prints the medians and their ratio. Target: ratio <= 1.5.

Two set-ups are measured. "cached" is how the client runs once installed:
its modules' bytecode is compiled once (here into a temporary
PYTHONPYCACHEPREFIX, so the checkout is left untouched). "compiled" sets
PYTHONDONTWRITEBYTECODE=1, so the package is compiled from source on every
run, as in a checkout whose environment forbids bytecode files.

Usage: python3 bench/client_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = [sys.executable, str(ROOT / "caisse-ap-ip-client.py"), "--help"]
BASELINE = [sys.executable, "-c", "import argparse, socket, decimal"]
TARGET = 1.5


def wall_time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall times (client, baseline) over interleaved runs, after a warm-up."""
    for command in (CLIENT, BASELINE):
        wall_time(command, env)
    client, baseline = [], []
    for _ in range(runs):
        client.append(wall_time(CLIENT, env))
        baseline.append(wall_time(BASELINE, env))
    return statistics.median(client), statistics.median(baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (default: 30)")
    runs = max(1, parser.parse_args().runs)
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    print(f"{runs} interleaved runs each, {sys.executable} {sys.version.split()[0]}")
    print(f"{'set-up':<10} {'client --help':>14} {'baseline':>10} {'ratio':>7}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as cache:
        setups = {
            "cached": {**base_env, "PYTHONPYCACHEPREFIX": cache},
            "compiled": {**base_env, "PYTHONDONTWRITEBYTECODE": "1"},
        }
        for name, env in setups.items():
            client, baseline = measure(env, runs)
            ratio = client / baseline
            worst = max(worst, ratio) if name == "cached" else worst
            print(f"{name:<10} {client * 1000:>11.1f} ms {baseline * 1000:>7.1f} ms {ratio:>7.2f}")
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"target ratio <= {TARGET} (cached, as installed): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
