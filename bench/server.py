"""The simulated terminal under load, against baselines measured in the same run.

Figures (issue 3):
- concurrency: C POS pay at once against `-d 1`; wall time / 1 s
  (C = 10, 100, 500; target <= 1.3 at 500);
- throughput with `-d 0`: transactions per second from one client loop
  (connect, send, read the answer, close) against our terminal and against a
  bare Twisted server that answers a fixed frame, written here; same client,
  interleaved rounds, a ratio being the median of the rounds' ratios (target
  ratio >= 0.7). Also, without a target: the terminal as a user starts it by
  default (web API, journal in memory), a bare server that only decodes the
  request with caisse_ap.tlv and encodes an approval echoing it (the least
  any terminal does), and the CPU time each server spends per transaction
  (the client loop waits on the server, so this is what the ratio measures).
  No server closes the connection (the client does, as a POS does), so every
  one does the same socket work;
- memory: resident size of the terminal process with 1000 idle connections
  open (target <= 64 MiB).

Each server runs in a child process (`python3 bench/server.py --serve KIND`)
that prints its port; the measuring client is this process. Loopback only,
bounded in connections and time.

Adding a figure: write `def measure_x(args) -> list[Figure]` and add it to
SECTIONS; start servers with `Child(kind, *options)` (KIND is one of
SERVERS, which `serve()` knows how to start). The journal-in-a-file figure
plugs in that way.

Usage: python3 bench/server.py [--seconds S] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a plain clone

from caisse_ap import tlv  # noqa: E402

REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
# What the baseline answers to anything: an approval of REQUEST, same size as ours.
FIXED_ANSWER = tlv.encode([
    ("CZ", "0300"), ("CJ", "012345678901"), ("AE", "10"), ("CA", "01"), ("CB", "11245"),
    ("CD", "0"), ("CE", "978"), ("CC", "001"), ("CI", "1"), ("AC", "123456"),
    ("AA", "497010######0123"), ("AB", "2812"), ("AI", "A0000000421010"), ("CG", "424242"),
])
CONCURRENCY = (10, 100, 500)
CONCURRENCY_TARGET = 1.3
THROUGHPUT_TARGET = 0.7
IDLE_CONNECTIONS = 1000
MEMORY_TARGET_MIB = 64
TIMEOUT = 30.0
FD_LIMIT = 4096


@dataclass
class Figure:
    name: str
    value: float
    unit: str = ""
    target: str = ""
    ok: bool | None = None

    def line(self) -> str:
        verdict = "" if self.ok is None else ("  OK" if self.ok else "  MISSED")
        target = f"  (target {self.target})" if self.target else ""
        return f"{self.name:<48} {self.value:>12.3f} {self.unit:<8}{target}{verdict}"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# --- Servers, each in a child process -----------------------------------------


def serve_terminal(options: list[str]) -> None:
    """Our terminal (no web console, warnings only), as the command line builds it."""
    import logging

    from twisted.internet import reactor

    from caisse_ap.terminal import cli
    from caisse_ap.terminal.server import start_terminal

    args = cli.build_parser([]).parse_args(["-l", "warn", *options])
    logging.basicConfig(level=logging.WARNING)
    settings = cli.settings_from_args(args)
    terminal = start_terminal(reactor, settings, "127.0.0.1", 0,
                              max_connections=args.max_connections,
                              idle_timeout=args.idle_timeout)
    print(terminal.address[1], flush=True)
    reactor.run()


def serve_baseline(options: list[str]) -> None:
    """The baseline: a bare Twisted server writing a fixed frame for any data received."""
    from twisted.internet import protocol, reactor

    class Fixed(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(FIXED_ANSWER)

    factory = protocol.Factory.forProtocol(Fixed)
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


def serve_default(options: list[str]) -> None:
    """Our terminal as `caisse-ap-ip-server.py` starts it: web API and console (on a free
    loopback port), journal in memory, amount rules loaded; warnings only."""
    from twisted.internet import reactor

    from caisse_ap.terminal import cli

    modules = cli.extensions()
    args = cli.build_parser(modules).parse_args(
        ["-l", "warn", "--host", "127.0.0.1", "-p", "0", "--web-port", "0", *options])
    terminal = cli.start(args, reactor, modules)
    print(terminal.address[1], flush=True)
    reactor.run()


# What the codec floor adds to the echoes: the card fields of an approval.
CARD_FIELDS = [(tag, value) for tag, value in tlv.decode(FIXED_ANSWER)
               if tag in ("CC", "CI", "AC", "AA", "AB", "AI", "CG")]


def serve_codec(options: list[str]) -> None:
    """A bare Twisted server that decodes each request with caisse_ap.tlv and encodes an
    approval echoing it: the least work any terminal does, for comparison."""
    from twisted.internet import protocol, reactor

    class Codec(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            values = dict(tlv.decode(data))
            answer = [("CZ", values["CZ"]), ("CJ", values["CJ"]), ("AE", "10"),
                      *((tag, values[tag]) for tag in ("CA", "CB", "CD", "CE")), *CARD_FIELDS]
            self.transport.write(tlv.encode(answer))

    factory = protocol.Factory.forProtocol(Codec)
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


SERVERS: dict[str, Callable[[list[str]], None]] = {
    "terminal": serve_terminal,
    "default": serve_default,
    "codec": serve_codec,
    "baseline": serve_baseline,
}


class Child:
    """A server in a child process; `port` once it listens."""

    def __init__(self, kind: str, *options: str):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--", *options],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.port = int(line)
        self.address = ("127.0.0.1", self.port)

    def cpu_seconds(self) -> float:
        """User and system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Clients ------------------------------------------------------------------


def one_transaction(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(REQUEST)
        return sock.recv(1024)


def loop(address: tuple[str, int], seconds: float) -> tuple[int, float]:
    """Transactions from one client loop, one connection each, and the seconds it took."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        if b"AE00210" not in one_transaction(address):
            raise RuntimeError("not an approval")
        count += 1
    return count, elapsed


def loop_rate(address: tuple[str, int], seconds: float) -> float:
    """Transactions per second from one client loop."""
    count, elapsed = loop(address, seconds)
    return count / elapsed


async def _pay(address: tuple[str, int]) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(REQUEST)
    await writer.drain()
    answer = await reader.read(1024)
    writer.close()
    return answer


async def _pay_all(address: tuple[str, int], count: int) -> float:
    start = time.perf_counter()
    answers = await asyncio.wait_for(
        asyncio.gather(*(_pay(address) for _ in range(count))), TIMEOUT)
    elapsed = time.perf_counter() - start
    approved = sum(b"AE00210" in answer for answer in answers)
    if approved != count:
        raise RuntimeError(f"{approved} approvals out of {count}")
    return elapsed


# --- Sections -------------------------------------------------------------------


def measure_concurrency(args: argparse.Namespace) -> list[Figure]:
    figures = []
    with Child("terminal", "-d", "1") as server:
        for count in CONCURRENCY:
            wall = asyncio.run(_pay_all(server.address, count))
            ratio = wall / 1.0
            ok = ratio <= CONCURRENCY_TARGET if count == max(CONCURRENCY) else None
            figures.append(Figure(f"concurrency C={count}, -d 1: wall / 1 s", ratio, "x",
                                  f"<= {CONCURRENCY_TARGET}" if ok is not None else "", ok))
    return figures


THROUGHPUT_SERVERS = {  # name: the Child's arguments
    "ours": ("terminal", "-d", "0"),
    "default": ("default", "-d", "0"),
    "codec": ("codec",),
    "bare": ("baseline",),
}


def measure_throughput(args: argparse.Namespace) -> list[Figure]:
    rounds = 12
    per_round = args.seconds / (2 * rounds)  # per server and round
    rates: dict[str, list[float]] = {name: [] for name in THROUGHPUT_SERVERS}
    cpu: dict[str, float] = {name: 0.0 for name in THROUGHPUT_SERVERS}
    count: dict[str, int] = {name: 0 for name in THROUGHPUT_SERVERS}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(Child(*child))
                   for name, child in THROUGHPUT_SERVERS.items()}
        for server in servers.values():
            loop_rate(server.address, 0.2)  # warm up
        for _ in range(rounds):  # interleaved: noise hits every server alike
            for name, server in servers.items():
                before = server.cpu_seconds()
                done, elapsed = loop(server.address, per_round)
                cpu[name] += server.cpu_seconds() - before
                count[name] += done
                rates[name].append(done / elapsed)

    def ratio(name: str) -> float:
        """The median of each round's ratio: a slow moment of the machine hits both sides."""
        pairs = zip(rates[name], rates["bare"], strict=True)
        return statistics.median(ours / bare for ours, bare in pairs)

    def cpu_per_transaction(name: str) -> float:
        return cpu[name] / count[name] * 1e6

    ours = ratio("ours")
    return [
        Figure("throughput -d 0, our terminal", statistics.median(rates["ours"]), "tx/s"),
        Figure("throughput -d 0, default start (web, journal)",
               statistics.median(rates["default"]), "tx/s"),
        Figure("throughput, bare server + tlv decode/encode",
               statistics.median(rates["codec"]), "tx/s"),
        Figure("throughput, bare Twisted fixed-frame server",
               statistics.median(rates["bare"]), "tx/s"),
        Figure("server CPU per transaction, our terminal", cpu_per_transaction("ours"), "us"),
        Figure("server CPU per transaction, bare server", cpu_per_transaction("bare"), "us"),
        Figure("throughput ratio ours / bare", ours, "x", f">= {THROUGHPUT_TARGET}",
               ours >= THROUGHPUT_TARGET),
        Figure("throughput ratio default start / bare", ratio("default"), "x"),
        Figure("throughput ratio tlv decode/encode / bare", ratio("codec"), "x"),
    ]


def measure_memory(args: argparse.Namespace) -> list[Figure]:
    with Child("terminal", "-d", "0", "--max-connections", str(IDLE_CONNECTIONS + 1)) as server:
        before = server.rss_mib()
        idle = [socket.create_connection(server.address, timeout=TIMEOUT)
                for _ in range(IDLE_CONNECTIONS)]
        try:
            # Accepts are in order: once this one is answered, all idle ones are in.
            if b"AE00210" not in one_transaction(server.address):
                raise RuntimeError("not an approval")
            rss = server.rss_mib()
        finally:
            for sock in idle:
                sock.close()
    return [
        Figure("terminal RSS, no connection", before, "MiB"),
        Figure(f"terminal RSS, {IDLE_CONNECTIONS} idle connections", rss, "MiB",
               f"<= {MEMORY_TARGET_MIB}", rss <= MEMORY_TARGET_MIB),
    ]


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Figure]]] = {
    "concurrency": measure_concurrency,
    "throughput": measure_throughput,
    "memory": measure_memory,
}


# --- Journal (issue 5): throughput with the journal in a file vs in memory -----
#
# The terminal with its journal attached as the command line does (no web
# console, which the figures must not include): in memory, and in a SQLite file
# in WAL mode. Also: the cost of one journal write as the reactor pays it, and,
# under the concurrency load, that the file holds every transaction.

JOURNAL_CONCURRENCY = 500
JOURNAL_WRITES = 5000


def serve_journal(options: list[str]) -> None:
    """Our terminal with a journal; options: PATH (":memory:" for memory), then the terminal's."""
    import logging

    from twisted.internet import reactor

    from caisse_ap.terminal import cli
    from caisse_ap.terminal.journal import Journal
    from caisse_ap.terminal.server import start_terminal
    from caisse_ap.terminal.web import start_services

    path, *options = options
    args = cli.build_parser([]).parse_args(["-l", "warn", *options])
    logging.basicConfig(level=logging.WARNING)
    terminal = start_terminal(reactor, cli.settings_from_args(args), "127.0.0.1", 0,
                              max_connections=args.max_connections)
    services = start_services(reactor, terminal, web=False,
                              journal=Journal(None if path == ":memory:" else path))
    # SIGTERM: the journal is closed (checkpointed) once the reactor has stopped.
    reactor.addSystemEventTrigger("after", "shutdown", services.close_journal)
    print(terminal.address[1], flush=True)
    reactor.run()


SERVERS["journal"] = serve_journal


def _write_costs(path: str | None) -> list[float]:
    """Seconds per Journal.record() of a realistic transaction, as the reactor pays them."""
    from caisse_ap.terminal.journal import Journal

    journal = Journal(path)
    answer = [list(field) for field in tlv.decode(FIXED_ANSWER)]
    costs = []
    for number in range(1, JOURNAL_WRITES + 1):
        data = {"id": number, "received_at": "2026-11-27T03:10:00.123+00:00", "status": "pending",
                "request": [list(field) for field in tlv.decode(REQUEST)],
                "request_frame": REQUEST.decode(), "answer": None, "labels": {}}
        for status in ("pending", "approved"):  # two writes per transaction, as served
            data = {**data, "status": status, "answer": answer if status != "pending" else None}
            start = time.perf_counter()
            journal.record(data)
            costs.append(time.perf_counter() - start)
        if number % 1000 == 0:
            journal.checkpoint()  # the server runs it in a thread; here between writes
    journal.close()
    return sorted(costs)


def _journal_rows(path: Path) -> dict[str, int]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT status, COUNT(*) FROM transactions GROUP BY status"))
    finally:
        db.close()


def measure_journal(args: argparse.Namespace) -> list[Figure]:
    import tempfile

    figures = []
    with tempfile.TemporaryDirectory() as directory:
        for name, path in (("memory", None), ("file", str(Path(directory) / "costs.sqlite"))):
            costs = _write_costs(path)
            mean = statistics.fmean(costs)
            figures += [
                Figure(f"journal write ({name}): mean", mean * 1e6, "us"),
                Figure(f"journal write ({name}): p99", costs[int(len(costs) * 0.99)] * 1e6, "us"),
                Figure(f"journal write ({name}): max", costs[-1] * 1e6, "us"),
            ]

        rounds = 6
        per_round = args.seconds / (2 * rounds)
        in_memory, in_file = [], []
        file_path = Path(directory) / "throughput.sqlite"
        with Child("journal", ":memory:", "-d", "0") as memory, \
                Child("journal", str(file_path), "-d", "0") as on_file:
            loop_rate(memory.address, 0.2)
            loop_rate(on_file.address, 0.2)
            for _ in range(rounds):  # interleaved, as the throughput section does
                in_memory.append(loop_rate(memory.address, per_round))
                in_file.append(loop_rate(on_file.address, per_round))
        memory_rate, file_rate = statistics.median(in_memory), statistics.median(in_file)
        figures += [
            Figure("throughput -d 0, journal in memory", memory_rate, "tx/s"),
            Figure("throughput -d 0, journal in a file (WAL)", file_rate, "tx/s"),
            Figure("throughput ratio file / memory journal", file_rate / memory_rate, "x"),
        ]

        load_path = Path(directory) / "load.sqlite"
        sent = 0
        with Child("journal", str(load_path), "-d", "1",
                   "--max-connections", str(JOURNAL_CONCURRENCY + 10)) as server:
            for count in CONCURRENCY:
                wall = asyncio.run(_pay_all(server.address, count))
                sent += count
                if count == JOURNAL_CONCURRENCY:
                    # Informative: compare with the concurrency section's figure.
                    figures.append(Figure(f"concurrency C={count}, -d 1, file journal: "
                                          "wall / 1 s", wall, "x"))
        rows = _journal_rows(load_path)  # after SIGTERM: the journal is closed
        recorded = sum(rows.values())
        figures.append(Figure(f"journal rows / transactions sent ({sent}) under load",
                              recorded / sent, "x", "= 1, all approved",
                              recorded == sent and rows.get("approved") == sent))
    return figures


SECTIONS["journal"] = measure_journal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="throughput section: each server gets the client loop for "
                             "half of it (default: 6)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("options", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.serve:
        SERVERS[args.serve](args.options)
        return 0
    missed = 0
    for name in args.only:
        for figure in SECTIONS[name](args):
            print(figure.line(), flush=True)
            missed += figure.ok is False
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
