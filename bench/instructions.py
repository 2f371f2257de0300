"""Instructions the server executes per payment, under valgrind's callgrind, against bare Twisted.

Wall-clock ratios (bench/server.py) move with the machine's load; the count of
instructions a server runs for one payment moves much less, which makes it
the measure for one change at a time on a shared machine. Each server runs
under `valgrind --tool=callgrind` with counting off; this script pays WARM_UP
times, turns counting on (callgrind_control), pays N times in a loop (one
connection per payment, as bench/server.py's throughput), turns it off and
divides. What it counts: the server process's own instructions (the kernel's
are not), its reactor turns included, so a few percent move from run to run
with how the client's bytes and FIN fall into reactor turns.

Servers: the command line as users start it (`-d 0`, then `--no-web`, then
`--journal FILE`) and bench/server.py's bare Twisted server answering a fixed
frame.

Usage: python3 bench/instructions.py [-n N] (valgrind on the PATH; about a minute per server)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import server as bench

WARM_UP = 30
STARTED = {"terminal": bench.EntryPoint.STARTED, "bare": re.compile(rb"^(\d+)$", re.M)}


def instructions_per_payment(kind: str, options: list[str], payments: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "callgrind.out"
        if kind == "bare":
            command = [str(Path(bench.__file__)), "--serve", "baseline", "--"]
        else:
            command = [str(bench.SERVER_SCRIPT), "--host", "127.0.0.1", "-p", "0",
                       "--web-port", "0", *options]
        with (Path(work) / "log").open("w+b") as log:
            process = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 f"--callgrind-out-file={out}", sys.executable, *command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=bench.ROOT)
            try:
                address = ("127.0.0.1", _port(process, log, STARTED[kind]))
                for _ in range(WARM_UP):
                    bench.one_transaction(address)
                _counting(process, "on")
                for _ in range(payments):
                    bench.one_transaction(address)
                _counting(process, "off")
            finally:
                process.terminate()
                process.wait(60)
        total = 0
        for dump in Path(work).glob("callgrind.out*"):
            for line in dump.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
    return total / payments


def _port(process: subprocess.Popen[bytes], log: object, started: re.Pattern[bytes]) -> int:
    deadline = time.monotonic() + 120  # valgrind starts Python slowly
    while time.monotonic() < deadline and process.poll() is None:
        log.seek(0)  # type: ignore[attr-defined]
        match = started.search(log.read())  # type: ignore[attr-defined]
        if match:
            return int(match[1])
        time.sleep(0.2)  # a benchmark, not a test: polling the log file is fine
    raise RuntimeError("the server did not start under valgrind")


def _counting(process: subprocess.Popen[bytes], state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(process.pid)], check=True,
                   capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="payments counted per server")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("instructions.py: error: valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        journal = str(Path(work) / "journal.db")
        servers = [("bare Twisted fixed-frame server", "bare", []),
                   ("default start -d 0", "terminal", ["-d", "0"]),
                   ("default start -d 0 --no-web", "terminal", ["-d", "0", "--no-web"]),
                   ("default start -d 0 --journal FILE", "terminal",
                    ["-d", "0", "--journal", journal])]
        bare = None
        for name, kind, options in servers:
            count = instructions_per_payment(kind, options, args.n)
            bare = bare or count
            print(f"instructions per payment, {name:<40} {count / 1000:>8,.0f} k"
                  f"   {count / bare:.2f}x bare's", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
