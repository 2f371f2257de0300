"""The terminal farm as users start it: `caisse-ap-ip-server.py` in a subprocess, terminals
created over its API, against baselines measured in the same run.

Figures, each with its target (OK/MISSED, exit status 1 when one is missed):
- creation: the time of `POST /api/terminals` seen by a client, for each of 64
  terminals created one after the other (median, p95, max; target: max < 50 ms),
  beside the time of `GET /api/status` on the same server (a call that creates
  nothing): the ratio says what the creation itself costs;
- memory: the server's resident size before and after the 64 terminals, idle,
  divided by 64 (target < 1 MiB per terminal), beside the resident size of the
  server alone;
- 64 terminals paying at once: one POS per terminal, all sending together
  (`-d 0`): the wall time, all answers approved, against one POS paying one
  terminal alone (baseline); the ratio is what 64 at once cost.

With `--journal`, the server keeps its one journal in a file (every terminal's
transactions go there): the same figures, and the rows the file holds after
the server's stop, by terminal (target: every payment, each with its terminal).

Loopback only; the server's ports are chosen by the OS.

Usage: python3 bench/farm.py [--terminals N] [--journal]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caisse_ap import client  # noqa: E402 - after the path above, for a checkout

SERVER = ROOT / "caisse-ap-ip-server.py"
WEB_LINE = re.compile(r"web console and control API on http://127\.0\.0\.1:(\d+)/")
TERMINAL_LINE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
CREATION_TARGET_S = 0.050
IDLE_TARGET_BYTES = 1024 * 1024


def start_server(terminals: int, journal: Path | None) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--host", "127.0.0.1", "-p", "0", "--web-port", "0",
         "-d", "0", "--max-terminals", str(terminals),
         *(["--journal", str(journal)] if journal is not None else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert process.stdout is not None
    web = None
    for line in process.stdout:
        if match := WEB_LINE.search(line):
            web = int(match[1])
        if TERMINAL_LINE.search(line):
            break
    if web is None:
        process.kill()
        raise SystemExit("the server did not start")
    # Keep reading its output, so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    return process, web


def timed_call(web: int, method: str, path: str, body: object = None) -> tuple[float, object]:
    connection = http.client.HTTPConnection("127.0.0.1", web, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data else {}
        connection.connect()  # the connection itself is not what is measured
        started = time.perf_counter()
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        elapsed = time.perf_counter() - started
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {answer}")
        return elapsed, answer
    finally:
        connection.close()


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS in /proc")


def pay_all(ports: list[int]) -> tuple[float, list[str]]:
    """One POS per port, all sending together; the wall time and the statuses."""
    statuses: list[str] = [""] * len(ports)
    ready = threading.Barrier(len(ports) + 1)

    def pay(index: int, port: int) -> None:
        request = client.make_request("12.50")
        ready.wait()
        statuses[index] = client.pay(request, "127.0.0.1", port, timeout=60).status

    threads = [threading.Thread(target=pay, args=(index, port))
               for index, port in enumerate(ports)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=64)
    parser.add_argument("--journal", action="store_true",
                        help="keep the server's journal in a file (a temporary directory)")
    arguments = parser.parse_args()
    count = arguments.terminals
    directory = tempfile.TemporaryDirectory() if arguments.journal else None
    journal = None if directory is None else Path(directory.name) / "journal.sqlite"
    process, web = start_server(count, journal)
    try:
        for _ in range(5):  # warm up: imports, first allocations
            timed_call(web, "GET", "/api/status")
        alone = resident_bytes(process.pid)
        status_times = [timed_call(web, "GET", "/api/status")[0] for _ in range(count)]
        creation_times, ports = [], []
        for _ in range(count):
            elapsed, made = timed_call(web, "POST", "/api/terminals",
                                       {"settings": {"duration": 0}})
            assert isinstance(made, dict)
            creation_times.append(elapsed)
            ports.append(int(made["port"]))
        with_farm = resident_bytes(process.pid)
        per_terminal = (with_farm - alone) / count

        single, [status] = pay_all(ports[:1])
        assert status == "approved", status
        single = min([single] + [pay_all(ports[:1])[0] for _ in range(4)])
        together, statuses = pay_all(ports)
    finally:
        process.terminate()
        process.wait(30)
    rows_by_terminal: dict[str | None, int] = {}
    if journal is not None:
        db = sqlite3.connect(journal)
        rows_by_terminal = dict(db.execute(
            "SELECT terminal, COUNT(*) FROM transactions GROUP BY terminal").fetchall())
        db.close()
    if directory is not None:
        directory.cleanup()

    ms = 1000
    median_status = statistics.median(status_times)
    creation_sorted = sorted(creation_times)
    p95 = creation_sorted[int(0.95 * (count - 1))]
    worst = creation_sorted[-1]
    print(f"terminal farm, {count} terminals, server started with --host 127.0.0.1 -d 0 "
          f"--max-terminals {count}{' --journal FILE' if journal is not None else ''}")
    print(f"creation: median {statistics.median(creation_times) * ms:.1f} ms, "
          f"p95 {p95 * ms:.1f} ms, max {worst * ms:.1f} ms "
          f"(GET /api/status: median {median_status * ms:.1f} ms; ratio "
          f"{statistics.median(creation_times) / median_status:.1f}x); "
          f"target max < {CREATION_TARGET_S * ms:.0f} ms: {verdict(worst < CREATION_TARGET_S)}")
    print(f"memory: server alone {alone / 2**20:.1f} MiB, with {count} idle terminals "
          f"{with_farm / 2**20:.1f} MiB: {per_terminal / 1024:.0f} KiB per terminal; "
          f"target < 1 MiB: {verdict(per_terminal < IDLE_TARGET_BYTES)}")
    approved = statuses.count("approved")
    print(f"{count} terminals paying at once: {together * ms:.1f} ms wall, {approved}/{count} "
          f"approved (one terminal alone: {single * ms:.1f} ms; ratio "
          f"{together / single:.1f}x for {count}x the payments): "
          f"{verdict(approved == count)}")
    missed = worst >= CREATION_TARGET_S or per_terminal >= IDLE_TARGET_BYTES or approved != count
    if journal is not None:
        # Each farm terminal paid by pay_all() 1 time, the first 5 more (the baseline).
        expected = {f"t{number}": 1 for number in range(1, count + 1)}
        expected["t1"] += 5
        kept = sum(rows_by_terminal.values())
        print(f"journal file after the stop: {kept} rows, "
              f"{len([name for name in rows_by_terminal if name])} terminals named; "
              f"every payment with its terminal: {verdict(rows_by_terminal == expected)}")
        missed = missed or rows_by_terminal != expected
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
