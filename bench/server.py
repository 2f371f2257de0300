"""The simulated terminal as users start it, against baselines measured in the same run.

The headline is what users run: `caisse-ap-ip-server.py` started in a
subprocess with its default options and `-d 0` (web console and API, journal
in memory, log at info level written to a file), then with `--no-web`, then
with `--journal FILE`. Listening ports are the only options changed (`-p 0
--web-port 0`, on 127.0.0.1), plus `--max-connections` where a figure needs
more than 1000 connections.

Figures, each with its target (MET/MISSED, exit status 1 when one is missed):
- throughput with `-d 0`: transactions per second from one client loop
  (connect, send, read the answer, close), in interleaved rounds, against a
  bare Twisted server that answers a fixed frame and against the floor of any
  terminal (a bare server that decodes the request with caisse_ap.tlv and
  encodes an approval echoing it); a ratio is the median of the rounds'
  ratios, so a slow moment of the machine hits both sides. Targets: default
  start >= 0.60x bare, --no-web >= 0.70x, --journal FILE >= 0.50x. Also the
  server CPU time per transaction of each (from /proc; the client loop waits
  on the server, so this is what the ratios measure; a busy machine blurs it
  less): target default start <= 1.8x bare's. As a diagnostic only, the
  terminal without journal, events nor log, started by this script's own code;
- latency: p50 and p99 of the time a POS waits for its answer (from its
  request sent to its answer read) with `-d 0` while 200 others pay at once
  (bursts of 201 POS), the bare server's in the same run (bursts interleaved):
  target p99 <= 2x bare's p99;
- concurrency: C POS pay at once against `-d 1`; wall time / 1 s
  (C = 10, 100, 500; target: 500 at once within 1.3 s);
- scale: 5,000 POS pay at once against `-d 1` (the file limit raised here and
  inherited by the server) and against a bare Twisted server that answers
  after 1 s: wall times (target: ours <= 1.4x bare's) and the server's peak
  resident size (target <= 128 MiB);
- memory: resident size with 1000 idle connections open (target <= 64 MiB);
- journal: with `--journal FILE`, the rows in the file after a load and
  SIGTERM are the transactions answered, all approved;
- client start-up: bench/client_startup.py's ratio, cached (target <= 1.3).

The measuring clients are this process: one blocking loop for throughput,
non-blocking sockets on one selector for the bursts (cheaper than asyncio,
so the client's own cost weighs less in the figures). Loopback only, bounded
in connections and time.

Usage: python3 bench/server.py [--quick] [--seconds S] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import selectors
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a plain clone

from caisse_ap import tlv  # noqa: E402

SERVER_SCRIPT = ROOT / "caisse-ap-ip-server.py"
REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
APPROVED = b"AE00210"
# What the baseline answers to anything: an approval of REQUEST, same size as ours.
FIXED_ANSWER = tlv.encode([
    ("CZ", "0300"), ("CJ", "012345678901"), ("AE", "10"), ("CA", "01"), ("CB", "11245"),
    ("CD", "0"), ("CE", "978"), ("CC", "001"), ("CI", "1"), ("AC", "123456"),
    ("AA", "497010######0123"), ("AB", "2812"), ("AI", "A0000000421010"), ("CG", "424242"),
])
THROUGHPUT_TARGETS = {"default": 0.60, "no-web": 0.70, "journal": 0.50}
CPU_TARGET = 1.8  # default start's CPU per transaction / bare's, at most
LATENCY_OTHERS = 200
LATENCY_P99_TARGET = 2.0  # ours / bare's p99 in the same run, at most
CONCURRENCY = (10, 100, 500)
CONCURRENCY_TARGET = 1.3
SCALE = 5000
SCALE_WALL_TARGET = 1.4  # ours / bare's wall for the same burst, at most
CLIENT_STARTUP_TARGET = 1.3
SCALE_RSS_TARGET_MIB = 128
IDLE_CONNECTIONS = 1000
MEMORY_TARGET_MIB = 64
JOURNAL_LOAD = 500
TIMEOUT = 30.0
FD_LIMIT = 2 * SCALE + 1000  # the scale figure's sockets, on each side


@dataclass
class Figure:
    name: str
    value: float
    unit: str = ""
    target: str = ""
    ok: bool | None = None

    def line(self) -> str:
        verdict = "" if self.ok is None else ("  MET" if self.ok else "  MISSED")
        target = f"  (target {self.target})" if self.target else ""
        return f"{self.name:<60} {self.value:>10.3f} {self.unit:<8}{target}{verdict}"


def raise_fd_limit() -> None:
    """Children inherit the limit: the server subprocesses get it too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# --- Servers, each in a child process -----------------------------------------


class Server:
    """A server in a child process: its address, CPU time and resident size."""

    process: subprocess.Popen
    address: tuple[str, int]

    def _proc(self, name: str) -> str:
        return Path(f"/proc/{self.process.pid}/{name}").read_text()

    def cpu_seconds(self) -> float:
        """User and system CPU time the server has used so far."""
        fields = self._proc("stat").rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _status_mib(self, key: str) -> float:
        for line in self._proc("status").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {key} in /proc")

    def rss_mib(self) -> float:
        return self._status_mib("VmRSS")

    def peak_rss_mib(self) -> float:
        return self._status_mib("VmHWM")

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C or a service manager stops it; the exit status."""
        self.process.terminate()
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EntryPoint(Server):
    """`caisse-ap-ip-server.py OPTIONS` as a user starts it, on 127.0.0.1 and free ports.

    Its log (info level by default) goes to a file, as a service's log does;
    the terminal's port comes from its start-up line.
    """

    STARTED = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")

    def __init__(self, *options: str):
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--host", "127.0.0.1", "-p", "0",
             "--web-port", "0", *options],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + TIMEOUT
        while not (match := self._started()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self._log_text()
                self.stop()
                raise RuntimeError(f"the server did not start:\n{text}")
            time.sleep(0.02)  # a benchmark, not a test: polling the log file is fine
        self.address = ("127.0.0.1", int(match[1]))

    def _log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def _started(self) -> re.Match[bytes] | None:
        self.log.seek(0)
        return self.STARTED.search(self.log.read(64 * 1024))

    def stop(self) -> int:
        code = super().stop()
        self.log.close()
        return code


class Child(Server):
    """One of this script's own servers (SERVERS) in a child process that prints its port."""

    def __init__(self, kind: str, *options: str):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--", *options],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.address = ("127.0.0.1", int(line))

    def stop(self) -> int:
        code = super().stop()
        self.process.stdout.close()
        return code


def serve_baseline(options: list[str]) -> None:
    """The baseline: a bare Twisted server writing a fixed frame for any data received
    (after a delay in seconds, if given: the first option)."""
    from twisted.internet import protocol, reactor

    delay = float(options[0]) if options else 0.0

    class Fixed(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            if delay:
                reactor.callLater(delay, self.transport.write, FIXED_ANSWER)
            else:
                self.transport.write(FIXED_ANSWER)

    _listen(reactor, protocol.Factory.forProtocol(Fixed))


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

    _listen(reactor, protocol.Factory.forProtocol(Codec))


def _listen(reactor: object, factory: object) -> None:
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


def serve_terminal(options: list[str]) -> None:
    """Diagnostic only: the terminal without journal, events nor web, warnings only,
    started by this script's code (no user starts it this way)."""
    import logging

    from twisted.internet import reactor

    from caisse_ap.terminal import cli
    from caisse_ap.terminal.server import start_terminal

    args = cli.build_parser([]).parse_args(["-l", "warn", *options])
    logging.basicConfig(level=logging.WARNING)
    terminal = start_terminal(reactor, cli.settings_from_args(args), "127.0.0.1", 0,
                              max_connections=args.max_connections)
    print(terminal.address[1], flush=True)
    reactor.run()


SERVERS: dict[str, Callable[[list[str]], None]] = {
    "baseline": serve_baseline,
    "codec": serve_codec,
    "terminal": serve_terminal,
}


# --- Clients ------------------------------------------------------------------


def one_transaction(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(REQUEST)
        return sock.recv(1024)


def loop(address: tuple[str, int], seconds: float) -> tuple[int, float]:
    """Transactions from one client loop, one connection each, and the seconds it took."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        if APPROVED not in one_transaction(address):
            raise RuntimeError("not an approval")
        count += 1
    return count, elapsed


@dataclass
class Burst:
    """What `burst()` saw: when it began and, per POS, when it sent and got its answer."""

    started: float
    sent: list[float]
    answered: list[float]

    @property
    def wall(self) -> float:
        return max(self.answered) - self.started

    def waits(self) -> list[float]:
        return [answered - sent for sent, answered in zip(self.sent, self.answered, strict=True)]


def burst(address: tuple[str, int], count: int) -> Burst:
    """`count` POS pay at once: each connects, sends its request as soon as it is connected,
    reads its answer (one write, one read, as the server promises) and closes."""
    selector = selectors.DefaultSelector()
    sent: dict[socket.socket, float] = {}
    result = Burst(time.perf_counter(), [], [])
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(address)  # EINPROGRESS: writable once connected
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = result.started + TIMEOUT
        while len(result.answered) < count:
            events = selector.select(deadline - time.perf_counter())
            if not events and time.perf_counter() > deadline:
                raise RuntimeError(f"{len(result.answered)} answers out of {count} in time")
            now = time.perf_counter()
            for key, _ in events:
                sock = key.fileobj
                if sock not in sent:
                    if error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise RuntimeError(f"connection failed: {os.strerror(error)}")
                    sock.send(REQUEST)
                    sent[sock] = now
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                if APPROVED not in sock.recv(1024):
                    raise RuntimeError("not an approval")
                selector.unregister(sock)
                sock.close()
                result.sent.append(sent.pop(sock))
                result.answered.append(now)
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()
    return result


def default_start(*options: str) -> EntryPoint:
    return EntryPoint("-d", "0", *options)


# --- Sections -------------------------------------------------------------------


def measure_throughput(args: argparse.Namespace) -> list[Figure]:
    rounds = 4 if args.quick else 12
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {
            "default": stack.enter_context(default_start()),
            "no-web": stack.enter_context(default_start("--no-web")),
            "journal": stack.enter_context(
                default_start("--journal", str(Path(directory) / "journal.sqlite"))),
            "codec": stack.enter_context(Child("codec")),
            "bare": stack.enter_context(Child("baseline")),
            "private": stack.enter_context(Child("terminal", "-d", "0")),
        }
        per_round = args.seconds / (len(servers) * rounds)  # per server and round
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu = dict.fromkeys(servers, 0.0)
        count = dict.fromkeys(servers, 0)
        for server in servers.values():
            loop(server.address, 0.2)  # warm up
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

    labels = {
        "default": "default start -d 0",
        "no-web": "default start -d 0 --no-web",
        "journal": "default start -d 0 --journal FILE",
        "codec": "floor: bare server + tlv decode/encode",
        "bare": "bare Twisted fixed-frame server",
        "private": "diagnostic: no journal/events/log, own start",
    }
    figures = [Figure(f"throughput, {labels[name]}", statistics.median(rates[name]), "tx/s")
               for name in servers]
    figures += [Figure(f"server CPU per transaction, {labels[name]}",
                       cpu[name] / count[name] * 1e6, "us") for name in servers]
    for name in ("default", "no-web", "journal", "codec", "private"):
        value = ratio(name)
        target = THROUGHPUT_TARGETS.get(name)
        figures.append(Figure(f"ratio to bare, {labels[name]}", value, "x",
                              f">= {target}" if target else "",
                              None if target is None else value >= target))
    # The same comparison by CPU time, which a busy machine blurs less.
    bare_cpu = cpu["bare"] / count["bare"]
    for name in ("default", "no-web", "journal", "codec", "private"):
        value = cpu[name] / count[name] / bare_cpu
        ok = value <= CPU_TARGET if name == "default" else None
        figures.append(Figure(f"CPU per transaction / bare's, {labels[name]}", value, "x",
                              f"<= {CPU_TARGET}" if ok is not None else "", ok))
    return figures


def measure_latency(args: argparse.Namespace) -> list[Figure]:
    rounds = 3 if args.quick else 10
    waits: dict[str, list[float]] = {"ours": [], "bare": []}
    with default_start() as server, Child("baseline") as bare:
        servers = {"ours": server, "bare": bare}
        for each in servers.values():
            burst(each.address, LATENCY_OTHERS + 1)  # warm up
        for _ in range(rounds):  # interleaved: noise hits both alike
            for name, each in servers.items():
                waits[name] += burst(each.address, LATENCY_OTHERS + 1).waits()

    def percentile(name: str, share: float) -> float:
        ordered = sorted(waits[name])
        return ordered[int(len(ordered) * share)] * 1e3

    name = f"wait of a POS, {LATENCY_OTHERS} others at once"
    p99, bare_p99 = percentile("ours", 0.99), percentile("bare", 0.99)
    return [
        Figure(f"{name}, default start -d 0: p50", percentile("ours", 0.5), "ms"),
        Figure(f"{name}, default start -d 0: p99", p99, "ms"),
        Figure(f"{name}, bare Twisted: p50", percentile("bare", 0.5), "ms"),
        Figure(f"{name}, bare Twisted: p99", bare_p99, "ms"),
        Figure(f"{name}: p99 / bare's p99", p99 / bare_p99, "x",
               f"<= {LATENCY_P99_TARGET:g}", p99 / bare_p99 <= LATENCY_P99_TARGET),
    ]


def measure_concurrency(args: argparse.Namespace) -> list[Figure]:
    figures = []
    with EntryPoint("-d", "1") as server:
        for count in CONCURRENCY:
            wall = burst(server.address, count).wall
            ok = wall <= CONCURRENCY_TARGET if count == max(CONCURRENCY) else None
            figures.append(Figure(f"concurrency: {count} POS at once, -d 1: wall", wall, "s",
                                  f"<= {CONCURRENCY_TARGET}" if ok is not None else "", ok))
    return figures


def measure_scale(args: argparse.Namespace) -> list[Figure]:
    with Child("baseline", "1") as bare:
        burst(bare.address, 10)
        bare_wall = burst(bare.address, SCALE).wall
    with EntryPoint("-d", "1", "--max-connections", str(SCALE + 10)) as server:
        burst(server.address, 10)  # the first payment pays for imports, as in real life
        wall = burst(server.address, SCALE).wall
        peak = server.peak_rss_mib()
    return [
        Figure(f"scale: {SCALE} POS at once, -d 1: wall", wall, "s"),
        Figure(f"scale: {SCALE} POS at once, bare Twisted answering after 1 s: wall",
               bare_wall, "s"),
        Figure(f"scale: {SCALE} POS at once: wall / bare's", wall / bare_wall, "x",
               f"<= {SCALE_WALL_TARGET}", wall / bare_wall <= SCALE_WALL_TARGET),
        Figure(f"scale: {SCALE} POS at once, -d 1: peak RSS", peak, "MiB",
               f"<= {SCALE_RSS_TARGET_MIB}", peak <= SCALE_RSS_TARGET_MIB),
    ]


def measure_memory(args: argparse.Namespace) -> list[Figure]:
    with EntryPoint("-d", "0", "--max-connections", str(IDLE_CONNECTIONS + 1)) as server:
        one_transaction(server.address)
        before = server.rss_mib()
        idle = [socket.create_connection(server.address, timeout=TIMEOUT)
                for _ in range(IDLE_CONNECTIONS)]
        try:
            # Accepts are in order: once this one is answered, all idle ones are in.
            if APPROVED not in one_transaction(server.address):
                raise RuntimeError("not an approval")
            rss = server.rss_mib()
        finally:
            for sock in idle:
                sock.close()
    return [
        Figure("default start RSS, no connection", before, "MiB"),
        Figure(f"default start RSS, {IDLE_CONNECTIONS} idle connections", rss, "MiB",
               f"<= {MEMORY_TARGET_MIB}", rss <= MEMORY_TARGET_MIB),
    ]


def measure_journal(args: argparse.Namespace) -> list[Figure]:
    """--journal FILE under load, stopped by SIGTERM: one row per transaction answered."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "load.sqlite"
        sent = 0
        with EntryPoint("-d", "0", "--journal", str(path)) as server:
            for _ in range(4):
                burst(server.address, JOURNAL_LOAD)
                sent += JOURNAL_LOAD
        db = sqlite3.connect(path)  # the server has stopped (SIGTERM)
        try:
            rows = dict(db.execute("SELECT status, COUNT(*) FROM transactions GROUP BY status"))
        finally:
            db.close()
    recorded = sum(rows.values())
    return [Figure(f"journal rows / transactions answered ({sent}), SIGTERM",
                   recorded / sent, "x", "= 1, all approved",
                   recorded == sent and rows.get("approved") == sent)]


def measure_client_startup(args: argparse.Namespace) -> list[Figure]:
    """bench/client_startup.py's figure: the client's --help against bare imports."""
    runs = "8" if args.quick else "30"
    output = subprocess.run([sys.executable, str(ROOT / "bench" / "client_startup.py"),
                             "--runs", runs], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout
    match = re.search(r"^cached\s+\S+ ms\s+\S+ ms\s+(\S+)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"client_startup.py printed no ratio:\n{output}")
    ratio = float(match[1])
    return [Figure("client start-up / bare imports (cached)", ratio, "x",
                   f"<= {CLIENT_STARTUP_TARGET}", ratio <= CLIENT_STARTUP_TARGET)]


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Figure]]] = {
    "throughput": measure_throughput,
    "latency": measure_latency,
    "concurrency": measure_concurrency,
    "scale": measure_scale,
    "memory": measure_memory,
    "journal": measure_journal,
    "client-startup": measure_client_startup,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter rounds (about a third of the time): a check, "
                             "not the figures to quote")
    parser.add_argument("--seconds", type=float, default=None,
                        help="throughput section: seconds of client loop, shared by the "
                             "servers (default: 18, or 4 with --quick)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("options", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 18.0
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
