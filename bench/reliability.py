"""The reliability suite: the terminal and its control plane under hostile input and abuse.

Each scenario starts the real server (caisse-ap-ip-server.py) on 127.0.0.1 and
a free port, attacks it, prints its figures and judges a few checks:

- tcp-fuzz: mutated valid frames (bytes flipped, inserted, cut, repeated...),
  each on its own connection, then a half-close;
- tcp-flood: 8 MiB of random bytes on one connection; many valid requests
  back to back on another;
- dribble: valid requests sent one byte at a time;
- slow-senders: connections that send a few bytes and stall, while a POS pays;
  a request sent in parts, its pauses together longer than --request-timeout;
- never-reading: a POS that sends requests and never reads the answers;
- proxy-never-reading: through --proxy, a POS pipelines valid requests, then
  junk, and never reads: the proxy stops reading it instead of buffering
  (it grows by at most 16 MiB) and gives the memory back after the close;
- half-close: a request, then the POS closes its sending side;
- max-connections: more connections than --max-connections (they wait their turn);
- soak: POS paying at full speed with the journal in a file (rows = payments
  sent, none doubled, RSS and file descriptors flat, write-ahead log bounded,
  PRAGMA integrity_check ok);
- sigterm: SIGTERM under load (clean exit, nothing left pending);
- sigkill: SIGKILL with payments in flight, then a restart on the same journal
  (the rows become `interrupted`, the file stays sound);
- serial-fuzz: the Concert E+ line over its pty: frames of the right size and LRC
  with random field contents (any byte), cut frames, blobs of random bytes; each
  frame gets ACK or NAK, each ACKed one an answer, the line serves after all;
- hostile-profiles: --profile on a FIFO, /dev/zero, a file over 1 MiB, deep nesting
  (one line file:line: reason, exit 2, bounded memory);
- full-disk: the journal on a 16 MiB tmpfs that fills (needs root to mount it): the
  terminal goes on; at SIGTERM the rows kept in memory go to the overflow file or
  stderr, and the next start takes them back;
- lazy-listeners: 200 event-stream clients that never read;
- http-bodies: hostile HTTP requests and random JSON bodies at every endpoint;
- http-edges: the audit's raw requests (5,000-digit numbers, NUL and non-UTF-8
  paths, loose Host headers, an https Origin): 4xx, never 5xx;
- slow-http: clients sending a header one byte at a time, cut after
  --web-request-timeout, while an event stream stays open.

A check holds (OK) or fails (FAIL: exit status 1). The TCP rules it checks
(half-close, back-to-back requests, silence before --request-timeout, the idle
time-out...) are docs/protocol.md's.

Short form (the default, run by tests/test_reliability.py): seconds per
scenario. `--full`: 50,000 fuzz cases, a 5-minute soak, bigger floods.
Loopback only, bounded in count and time.

Usage: python3 bench/reliability.py [--full] [--only NAME ...] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import selectors
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a plain clone
sys.path.insert(0, str(ROOT / "tests"))  # the tests' server process helper

from server_process import ServerProcess, fill, run_server, small_filesystem  # noqa: E402

from caisse_ap import Outcome, PaymentResult, TerminalUnreachable, client, tlv  # noqa: E402
from caisse_ap.terminal.web.api import MAX_STREAM_UNSENT, MAX_STREAMS_UNSENT  # noqa: E402

MIB = 1024 * 1024
# The default, said: the slow sender's pauses are measured against it.
REQUEST_TIMEOUT_ARGS = ["--request-timeout", "2"]
REQUEST = tlv.encode([("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"), ("CE", "978"),
                      ("BA", "0"), ("CD", "0"), ("CB", "1245")])
REQUEST_START = re.compile(rb"CZ[0-9]{3}")  # as the terminal reads a request start
SEEDS = [
    REQUEST,
    tlv.encode([("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"), ("CE", "978"),
                ("BA", "0"), ("CD", "1"), ("CB", "500")]),  # refund
    tlv.encode([("CZ", "0320"), ("CJ", "012345678901"), ("CA", "01"), ("CE", "978"),
                ("BA", "1"), ("CD", "0"), ("CB", "100000"), ("CF", "REF-42")]),
    tlv.encode([("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"), ("CE", "978"),
                ("BA", "0"), ("CD", "0"), ("CB", "1245"), ("CC", "001"), ("BF", "1")]),
]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Run:
    """What a scenario gets: the form asked for, a seeded generator, where to print."""

    full: bool
    rng: random.Random
    out: Callable[[str], None] = print
    checks: list[Check] = field(default_factory=list)

    def size(self, short: int, full: int) -> int:
        return full if self.full else short

    def figure(self, name: str, value: object) -> None:
        self.out(f"  {name}: {value}")

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))


class Server(ServerProcess):
    """The server in a subprocess, with its resident size and open files from /proc."""

    def __init__(self, *args: str):
        super().__init__("-d", "0", *args, timeout=30.0)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def api(self, path: str, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}",
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def pays(self) -> bool:
        """A fresh POS still gets an approval."""
        return pay(self.port).outcome is Outcome.APPROVED

    def tracebacks(self) -> int:
        return self.output().count("Traceback")


def pay(port: int, amount: str = "12.45", timeout: float = 10.0) -> PaymentResult:
    return client.pay(client.make_request(amount), "127.0.0.1", port, timeout=timeout)


def answers_in(data: bytes) -> int:
    """How many answers a stream of bytes from the terminal holds: each has one AE field
    (AE=10 done, AE=01 not done), which no request has."""
    return data.count(b"AE002")


async def exchange(port: int, data: bytes, timeout: float, half_close: bool = True
                   ) -> tuple[str, bytes]:
    """Send data (then half-close); read until the terminal closes.

    ("closed", bytes received), or ("timeout", ...) if it neither closed nor
    stopped within `timeout`, or ("reset", ...).
    """
    received = bytearray()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused", b""
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
        return "closed", bytes(received)
    except TimeoutError:
        return "timeout", bytes(received)
    except OSError:
        return "reset", bytes(received)
    finally:
        writer.transport.abort()


async def gather_limited(jobs: list, limit: int) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(job):
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


# --- Hostile TCP input ------------------------------------------------------------------------


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """One to three random mutations of a frame."""
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(10)
        where = rng.randrange(len(data) + 1)
        if kind == 0 and data:  # flip a byte
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:  # insert random bytes
            data[where:where] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2 and data:  # cut a slice out
            del data[where:where + rng.randint(1, 10)]
        elif kind == 3:  # repeat a slice
            data[where:where] = data[where:where + rng.randint(1, 20)]
        elif kind == 4:  # truncate
            del data[where:]
        elif kind == 5 and data:  # a length digit changed
            digits = [i for i, byte in enumerate(data) if 48 <= byte <= 57]
            if digits:
                data[rng.choice(digits)] = rng.choice(b"0123456789")
        elif kind == 6:  # a field with an absurd length
            data[where:where] = b"CB999" + b"9" * rng.randint(0, 40)
        elif kind == 7:  # a second message behind
            data += rng.choice(SEEDS)
        elif kind == 8:  # non-ASCII and control bytes
            data[where:where] = bytes(rng.choice([0, 10, 13, 127, 128, 255])
                                      for _ in range(rng.randint(1, 4)))
        else:  # a tag of random letters
            data[where:where] = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                                      for _ in range(2)) + b"001x"
    return bytes(data)


def scenario_tcp_fuzz(run: Run) -> None:
    cases = run.size(300, 50_000)
    server = Server("--no-web", "--idle-timeout", "30", "--journal-max-rows", "1000")
    try:
        rss_before = server.rss_mib()
        frames = [mutate(run.rng.choice(SEEDS), run.rng) for _ in range(cases)]
        started = time.monotonic()
        outcomes = asyncio.run(gather_limited(
            [exchange(server.port, frame, 5.0) for frame in frames], 20))
        elapsed = time.monotonic() - started
        kinds = Counter(kind for kind, _ in outcomes)
        answered = sum(1 for _, data in outcomes if answers_in(data))
        # Never more answers than requests: the request starts (CZ and three digits) a
        # case holds, or one when it holds none (its first bytes get the one AF=09).
        too_many = sum(1 for frame, (_, data) in zip(frames, outcomes, strict=True)
                       if answers_in(data) > max(1, len(REQUEST_START.findall(frame))))
        run.figure("cases", f"{cases} in {elapsed:.1f} s ({cases / elapsed:.0f}/s)")
        run.figure("outcomes", f"{answered} answered, {dict(kinds)}")
        run.figure("cases with more answers than requests", too_many)
        run.figure("RSS", f"{rss_before:.1f} -> {server.rss_mib():.1f} MiB")
        run.check("server alive and paying after the fuzzing", server.alive() and server.pays())
        run.check("no traceback in the log", server.tracebacks() == 0,
                  f"{server.tracebacks()} tracebacks")
        run.check("never more answers than requests", too_many == 0,
                  f"{too_many} cases with more answers than requests")
        run.check("every fuzz case answered or closed after the half-close",
                  kinds["timeout"] == 0, f"{kinds['timeout']} left hanging 5 s")
    finally:
        server.stop()


def scenario_tcp_flood(run: Run) -> None:
    garbage = run.size(8, 64) * MIB
    requests = run.size(2000, 50_000)
    server = Server("--no-web", "--journal-max-rows", "1000")
    try:
        rss_before = server.rss_mib()
        started = time.monotonic()
        kind, _ = asyncio.run(exchange(server.port, random.Random(1).randbytes(garbage), 30.0))
        elapsed = time.monotonic() - started
        run.figure("random bytes", f"{garbage // MIB} MiB: {kind} after {elapsed:.1f} s")
        rss_garbage = server.rss_mib()
        started = time.monotonic()
        kind, data = asyncio.run(exchange(server.port, REQUEST * requests, 60.0))
        elapsed = time.monotonic() - started
        answered = answers_in(data)
        run.figure("back-to-back requests", f"{requests} sent, {answered} answered, {kind} "
                                            f"after {elapsed:.1f} s")
        run.figure("RSS", f"{rss_before:.1f} -> {rss_garbage:.1f} (random) -> "
                          f"{server.rss_mib():.1f} MiB (requests)")
        run.check("server alive and paying after the floods", server.alive() and server.pays())
        run.check("the floods cost under 64 MiB", server.rss_mib() - rss_before < 64)
        run.check("every request of the back-to-back flood answered", answered == requests,
                  f"{answered}/{requests}")
    finally:
        server.stop()


def scenario_dribble(run: Run) -> None:
    count = run.size(5, 50)
    server = Server("--no-web")
    try:
        async def dribble() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for byte in REQUEST:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.01)
            received = bytearray()
            try:  # the answer, and whatever follows it within 0.5 s
                async with asyncio.timeout(3):
                    while not answers_in(bytes(received)):
                        received += await reader.read(4096) or b"?"
                async with asyncio.timeout(0.5):
                    while chunk := await reader.read(4096):
                        received += chunk
            except TimeoutError:
                pass
            writer.transport.abort()
            return answers_in(bytes(received))

        async def all_of_them() -> list[int]:
            return await asyncio.gather(*(dribble() for _ in range(count)))

        answers = asyncio.run(all_of_them())
        run.figure("dribbled requests", f"{count}, one byte every 10 ms; answers each: "
                                        f"{dict(Counter(answers))}")
        run.check("server alive and paying", server.alive() and server.pays())
        run.check("every dribbled request answered once", answers == [1] * count,
                  f"answers per request: {dict(Counter(answers))}")
    finally:
        server.stop()


# --- Connection abuse ---------------------------------------------------------------------------


def scenario_slow_senders(run: Run) -> None:
    stalled = run.size(100, 900)
    server = Server("--no-web", "--idle-timeout", "1", *REQUEST_TIMEOUT_ARGS)
    sockets: list[socket.socket] = []
    try:
        for _ in range(stalled):
            connection = socket.create_connection(server.address, timeout=5)
            connection.sendall(REQUEST[:10])
            sockets.append(connection)
        started = time.monotonic()
        paid = server.pays()
        latency = time.monotonic() - started
        run.figure("stalled connections", f"{stalled}; a POS paid meanwhile in "
                                          f"{latency * 1000:.0f} ms")
        # Pauses under the idle time-out (1 s), together over --request-timeout (2 s).
        slow_answers = slow_sender(server.port, parts=5, pause=0.6)
        closed = sum(1 for connection in sockets if _closed_by_peer(connection, 5.0))
        run.figure("stalled connections closed by the idle time-out (1 s)",
                   f"{closed}/{stalled}")
        run.figure("a request in 5 parts 0.6 s apart (--request-timeout 2)",
                   f"answers: {slow_answers}")
        run.check("a POS pays while others stall", paid and latency < 2.0, f"{latency:.2f} s")
        run.check("stalled connections closed by the idle time-out", closed == stalled)
        run.check("a slow sender's request, never silent for --request-timeout, answered once",
                  slow_answers == [b"10"], f"answers {slow_answers}")
    finally:
        for connection in sockets:
            connection.close()
        server.stop()


def slow_sender(port: int, parts: int, pause: float) -> list[bytes]:
    """The action statuses (AE) of what answers one request sent in `parts` segments
    `pause` seconds apart, up to 0.5 s after the first answer.

    Silence counts from the last byte (--request-timeout), not from the request's first:
    the pauses alone must neither refuse the request nor be answered."""
    size = -(-len(REQUEST) // parts)
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for start in range(0, len(REQUEST), size):
            connection.sendall(REQUEST[start:start + size])
            received += _read_for(connection, pause if start + size < len(REQUEST) else 0.0)
        connection.settimeout(5)
        while not answers_in(bytes(received)):
            chunk = connection.recv(4096)
            if not chunk:
                break
            received += chunk
        received += _read_for(connection, 0.5)
    return re.findall(rb"AE002(..)", bytes(received))  # as answers_in counts them


def _read_for(connection: socket.socket, seconds: float) -> bytes:
    """What comes within `seconds` (time passes, whether anything comes or not)."""
    received = bytearray()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        connection.settimeout(left)
        try:
            chunk = connection.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _closed_by_peer(connection: socket.socket, timeout: float) -> bool:
    connection.settimeout(timeout)
    try:
        while connection.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def scenario_never_reading(run: Run) -> None:
    requests = run.size(5000, 100_000)
    server = Server("--no-web", "--journal-max-rows", "1000")
    try:
        rss_before = server.rss_mib()
        connection = socket.create_connection(server.address, timeout=5)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        started = time.monotonic()
        try:
            for _ in range(requests):
                connection.sendall(REQUEST)
                sent += 1
        except (TimeoutError, OSError):
            pass  # the terminal stopped reading: backpressure
        elapsed = time.monotonic() - started
        time.sleep(0.2)  # let the server take in what was sent
        rss_after = server.rss_mib()
        connection.close()
        run.figure("requests sent, answers never read",
                   f"{sent}/{requests} in {elapsed:.1f} s")
        run.figure("RSS", f"{rss_before:.1f} -> {rss_after:.1f} MiB")
        run.check("server alive and paying", server.alive() and server.pays())
        run.check("a never-reading POS costs under 64 MiB", rss_after - rss_before < 64,
                  f"+{rss_after - rss_before:.1f} MiB")
    finally:
        server.stop()


def _send_until_blocked(connection: socket.socket, data: bytes, total: int) -> int:
    """Send `data` over and over, `total` bytes at most, until the peer stops reading
    (a send that makes no progress for a second); the bytes sent."""
    connection.settimeout(1.0)
    sent = 0
    try:
        while sent < total:
            sent += connection.send(data[:total - sent])
    except (TimeoutError, OSError):
        pass  # backpressure: the peer reads no more
    return sent


def _rss_settles(server: Server, below: float, seconds: float) -> float:
    """The server's resident size once it falls below `below`, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while (rss := server.rss_mib()) >= below and time.monotonic() < deadline:
        time.sleep(0.1)  # a figure of the bench, not a test's readiness
    return rss


def scenario_proxy_never_reading(run: Run) -> None:
    """Issue of a flooding POS behind --proxy: what it sends and does not read is bounded."""
    total = run.size(4, 50) * MIB
    terminal = Server("--no-web")
    proxy = None
    try:
        # A POS that reads nothing is aborted at the idle time-out (3 s here, 300 by default):
        # while the proxy does not read it, its close cannot be seen before.
        proxy = Server("--no-web", "--proxy", f"127.0.0.1:{terminal.port}", "--idle-timeout", "3")
        rss_before = proxy.rss_mib()
        fds_before = proxy.fds()
        connection = socket.create_connection(proxy.address, timeout=5)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        started = time.monotonic()
        requests = REQUEST * (64 * 1024 // len(REQUEST))
        sent = _send_until_blocked(connection, requests, total // 2)
        if sent == total // 2:  # not blocked yet: the rest is junk, as the audit sent
            junk = bytes(run.rng.randrange(256) for _ in range(64 * 1024))
            sent += _send_until_blocked(connection, junk, total - sent)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # let the proxy take in what was sent
        rss_loaded = proxy.rss_mib()
        connection.close()
        closed_at = time.monotonic()
        deadline = closed_at + 10
        while proxy.fds() > fds_before and time.monotonic() < deadline:
            time.sleep(0.1)  # the proxy closes both sides of the connection
        closed_in = time.monotonic() - closed_at
        rss_after = _rss_settles(proxy, rss_before + 4, 5.0)
        run.figure("bytes sent by a POS that never reads, through the proxy",
                   f"{sent / MIB:.1f}/{total / MIB:.0f} MiB in {elapsed:.1f} s")
        run.figure("proxy RSS", f"{rss_before:.1f} -> {rss_loaded:.1f} -> {rss_after:.1f} MiB "
                   "(before, loaded, after the close)")
        run.check("the proxy grows by at most 16 MiB", rss_loaded - rss_before <= 16,
                  f"+{rss_loaded - rss_before:.1f} MiB")
        run.check("its memory comes back after the close (within 4 MiB)",
                  rss_after - rss_before <= 4, f"+{rss_after - rss_before:.1f} MiB")
        run.check("the proxy closed both sides within the idle time-out",
                  proxy.fds() <= fds_before,
                  f"{fds_before} -> {proxy.fds()} open files in {closed_in:.1f} s")
        run.check("proxy alive and paying", proxy.alive() and proxy.pays())
    finally:
        if proxy is not None:
            proxy.stop()
        terminal.stop()


def scenario_half_close(run: Run) -> None:
    trials = run.size(10, 100)
    server = Server("--no-web")
    try:
        outcomes = asyncio.run(gather_limited(
            [exchange(server.port, REQUEST, 5.0) for _ in range(trials)], 10))
        answered = sum(1 for kind, data in outcomes if kind == "closed" and answers_in(data))
        run.figure("request then half-close", f"{answered}/{trials} answered then closed; "
                   f"{dict(Counter(kind for kind, _ in outcomes))}")
        run.check("server alive and paying", server.alive() and server.pays())
        run.check("a request then a half-close gets its answer", answered == trials,
                  f"{answered}/{trials}")
    finally:
        server.stop()


def scenario_max_connections(run: Run) -> None:
    limit, extra = 20, run.size(10, 200)
    server = Server("--max-connections", str(limit), "--web-port", "0")
    held: list[socket.socket] = []
    over: list[socket.socket] = []
    try:
        for _ in range(limit):
            held.append(socket.create_connection(server.address, timeout=5))
        # The server counts a connection once its loop accepted it: wait for all.
        deadline = time.monotonic() + 10
        while server.api("/api/status")["counters"]["open_connections"] < limit:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # At the limit the terminal stops accepting: the kernel's backlog holds new POS.
        for _ in range(extra):
            over.append(socket.create_connection(server.address, timeout=5))
            over[-1].sendall(REQUEST)
        early = _heard_from(over, 1.0)
        open_connections = server.api("/api/status")["counters"]["open_connections"]
        answered = 0
        for connection in held:
            connection.sendall(REQUEST)
            connection.settimeout(5)
            with contextlib.suppress(OSError):  # cut off: not answered
                answered += answers_in(connection.recv(4096)) == 1
        for connection in held:
            connection.close()
        held.clear()
        served = 0  # each slot freed takes the next POS waiting (the backlog is in order)
        for connection in over:
            connection.settimeout(10)
            with contextlib.suppress(OSError):
                served += answers_in(connection.recv(4096)) == 1
            connection.close()
        run.figure("connections", f"limit {limit}: {extra} more, {early} answered or cut off "
                                  f"while waiting; open {open_connections}; {answered}/{limit} "
                                  f"held ones paid; then {served}/{extra} waiting ones paid")
        run.check("connections over the limit wait, neither answered nor cut off",
                  early == 0 and open_connections == limit,
                  f"{early}/{extra} heard from, {open_connections} open")
        run.check("the held connections still pay", answered == limit, f"{answered}/{limit}")
        run.check("the waiting POS are served once the held ones close", served == extra,
                  f"{served}/{extra}")
        run.check("a new POS pays once they are closed", server.pays())
    finally:
        for connection in held + over:
            connection.close()
        server.stop()


def _heard_from(connections: list[socket.socket], seconds: float) -> int:
    """How many of `connections` get bytes, or a close, within `seconds`."""
    heard = 0
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
                heard += 1
    return heard


# --- The journal: soak, stops and crashes ------------------------------------------------------


def pay_in_threads(port: int, seconds: float, workers: int, first: int = 1,
                   stop: threading.Event | None = None) -> dict[str, Counter]:
    """POS paying at full speed from `workers` threads, each amount once (1 cent, 2 cents...).

    Returns the statuses by amount (each amount must appear once).
    """
    counter = iter(range(first, 10**9))
    lock = threading.Lock()
    results: dict[str, Counter] = {"status": Counter(), "amounts": Counter()}
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()

    def work() -> None:
        while time.monotonic() < deadline and not stop.is_set():
            with lock:
                cents = next(counter)
            amount = f"{cents // 100}.{cents % 100:02d}"
            try:
                result = pay(port, amount)
            except TerminalUnreachable:
                return  # nothing was sent: the terminal is gone
            with lock:
                results["status"][result.outcome] += 1
                results["amounts"][amount] += 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def journal_rows(path: Path) -> tuple[Counter, int, int, str]:
    """(statuses, rows, distinct amounts, integrity_check) of a journal file."""
    db = sqlite3.connect(path)
    try:
        statuses = Counter(dict(db.execute(
            "SELECT status, COUNT(*) FROM transactions GROUP BY status").fetchall()))
        rows = db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
        # Each payment has its own amount, so its own request fields (stored in rows
        # of every version, where the derived amount is not: issue 16).
        amounts = db.execute("SELECT COUNT(DISTINCT json_extract(data, '$.request')) "
                             "FROM transactions").fetchone()[0]
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    return statuses, rows, amounts, integrity


def scenario_soak(run: Run) -> None:
    seconds = run.size(3, 300)
    workers = 4
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journal.sqlite"
        server = Server("--journal", str(path), "--web-port", "0")
        samples: list[tuple[float, float, int, int]] = []
        done = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not done.wait(run.size(0.25, 2.0)):
                wal = Path(f"{path}-wal")
                samples.append((time.monotonic() - start, server.rss_mib(), server.fds(),
                                wal.stat().st_size if wal.exists() else 0))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            started = time.monotonic()
            results = pay_in_threads(server.port, seconds, workers)
            elapsed = time.monotonic() - started
        finally:
            done.set()
            sampler.join()
            code = server.stop()
        sent = sum(results["amounts"].values())
        doubled_sent = sum(1 for n in results["amounts"].values() if n > 1)
        statuses, rows, amounts, integrity = journal_rows(path)
        warm = samples[len(samples) // 4] if samples else (0, 0, 0, 0)
        last = samples[-1] if samples else (0, 0, 0, 0)
        biggest_wal = max((s[3] for s in samples), default=0)
        run.figure("payments", f"{sent} in {elapsed:.0f} s from {workers} POS "
                               f"({sent / elapsed:.0f}/s): {dict(results['status'])}")
        run.figure("journal rows", f"{rows} ({dict(statuses)}), {amounts} distinct amounts; "
                                   f"integrity_check {integrity}")
        run.figure("RSS", f"{samples[0][1]:.1f} at start, {warm[1]:.1f} after a quarter, "
                          f"{last[1]:.1f} MiB at the end" if samples else "no sample")
        run.figure("open files", f"{warm[2]} after a quarter, {last[2]} at the end")
        run.figure("write-ahead log", f"{biggest_wal / MIB:.1f} MiB at most")
        run.check("clean exit on SIGTERM", code == 0, f"exit status {code}")
        run.check("rows = payments sent, none doubled", rows == sent == amounts
                  and doubled_sent == 0, f"{rows} rows, {sent} sent, {amounts} distinct")
        run.check("every payment approved", results["status"] == Counter({"approved": sent}))
        run.check("integrity_check ok", integrity == "ok")
        run.check("write-ahead log under 64 MiB", biggest_wal < 64 * MIB)
        run.check("RSS flat (under 16 MiB of growth after warm-up)", last[1] - warm[1] < 16,
                  f"+{last[1] - warm[1]:.1f} MiB")
        run.check("open files flat", last[2] - warm[2] <= 4, f"{warm[2]} -> {last[2]}")


def scenario_sigterm(run: Run) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journal.sqlite"
        server = Server("--journal", str(path), "--no-web", "-d", "0.2")
        stop = threading.Event()
        outcome: dict = {}
        payers = threading.Thread(target=lambda: outcome.setdefault(
            "results", pay_in_threads(server.port, 30, 20, stop=stop)))
        payers.start()
        time.sleep(0.5)  # payments in flight
        started = time.monotonic()
        code = server.stop(signal.SIGTERM)
        stopped_in = time.monotonic() - started
        stop.set()
        payers.join()
        statuses, rows, _, integrity = journal_rows(path)
        approved = outcome["results"]["status"]["approved"]
        run.figure("SIGTERM under load", f"exit {code} in {stopped_in:.2f} s; POS saw "
                                         f"{dict(outcome['results']['status'])}")
        run.figure("journal", f"{rows} rows {dict(statuses)}; integrity_check {integrity}")
        run.check("clean exit within 10 s", code == 0 and stopped_in < 10)
        run.check("nothing left pending", statuses["pending"] == 0)
        run.check("every approval the POS saw is journalled", statuses["approved"] >= approved,
                  f"{statuses['approved']} rows, {approved} seen")
        run.check("integrity_check ok", integrity == "ok")


def scenario_sigkill(run: Run) -> None:
    in_flight = 5
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journal.sqlite"
        server = Server("--journal", str(path), "--web-port", "0", "-d", "60")
        payers = [threading.Thread(target=pay, args=(server.port, "1.00", 30))
                  for _ in range(in_flight)]
        for payer in payers:
            payer.start()
        deadline = time.monotonic() + 10
        while server.api("/api/status")["counters"]["pending"] < in_flight:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
        for payer in payers:
            payer.join()
        killed, _, _, integrity_killed = journal_rows(path)
        again = Server("--journal", str(path), "--web-port", "0")
        try:
            status = again.api("/api/status")
            paid = pay(again.port)
            newest = again.api("/api/transactions?limit=1")["transactions"][0]
        finally:
            again.stop()
        statuses, _, _, integrity = journal_rows(path)
        run.figure("after SIGKILL", f"{dict(killed)}; integrity_check {integrity_killed}")
        run.figure("after the restart", f"{dict(statuses)}; counters.interrupted "
                   f"{status['counters']['interrupted']}; integrity_check {integrity}")
        run.check("pending rows marked interrupted at restart",
                  statuses["interrupted"] == in_flight and statuses["pending"] == 0)
        run.check("the interrupted are counted", status["counters"]["interrupted"] == in_flight)
        run.check("the restarted terminal pays, numbering after them",
                  paid.outcome is Outcome.APPROVED and newest["id"] == in_flight + 1)
        run.check("integrity_check ok after the kill and the restart",
                  integrity_killed == integrity == "ok")


# --- The serial line (Concert E+) ----------------------------------------------------------------

SERIAL_LINE = re.compile(r"Concert E\+ terminal on serial line (\S+)")


class SerialPos:
    """A POS on the server's pseudo-terminal: bytes written as given, reads waited for."""

    def __init__(self, path: str):
        from caisse_ap.concert_pos import configure

        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        configure(self.fd)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                time.sleep(0.001)

    def read(self, size: int, wait: float) -> bytes:
        """Up to `size` bytes, as many as come within `wait` seconds."""
        data = b""
        deadline = time.monotonic() + wait
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while len(data) < size and (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    with contextlib.suppress(BlockingIOError):
                        data += os.read(self.fd, size - len(data))
        return data

    def drain(self, quiet: float) -> bytes:
        """What comes until `quiet` seconds pass without a byte."""
        data = b""
        while chunk := self.read(4096, quiet):
            data += chunk
        return data

    def take_answer(self, request: bytes) -> bytes | None:
        """After the request's ACK and our EOT: the answer frame, taken as a POS does."""
        from caisse_ap import concert

        if self.read(1, 10) != concert.ENQ:
            return None
        self.write(concert.ACK)
        size = 83 if request[10:11] == concert.LONG_ANSWER.encode() else 28
        answer = self.read(size, 10)
        self.write(concert.ACK)
        self.read(1, 10)  # EOT
        return answer

    def pays(self) -> bool:
        """A good exchange from whatever state the line is in: ENQ, the frame, EOT (again if
        a leftover of garbage swallowed them); an approval (status 0)."""
        from caisse_ap import concert

        message = concert.ConcertRequest(amount="00000100").encode()
        for _ in range(3):
            self.drain(0.05)
            self.write(concert.ENQ + concert.frame(message) + concert.EOT)
            # Our ENQ and frame get ACKs (after a NAK for a cut leftover); then the answer.
            seen = b""
            while concert.ENQ not in seen and (byte := self.read(1, 1.5)):
                seen += byte
            if concert.ENQ in seen:
                self.write(concert.ACK)
                answer = self.read(83, 10)
                self.write(concert.ACK)
                self.read(1, 10)
                return (len(answer) == 83 and answer[3:4] == b"0"
                        and answer[-1] == concert.lrc(answer[1:-2]))
        return False

    def close(self) -> None:
        os.close(self.fd)


def random_request(rng: random.Random) -> bytes:
    """A 34-byte request: each field either right or random bytes (any of the 256, STX and
    ETX included)."""
    from caisse_ap import concert

    good = concert.ConcertRequest(amount="00001234").encode()
    message, offset = bytearray(), 0
    for _, width in concert.ConcertRequest.WIDTHS:
        part = good[offset:offset + width]
        if rng.random() < 0.4:
            part = bytes(rng.choice([rng.randrange(256), rng.randrange(0xE0, 0x100),
                                     rng.randrange(32)]) for _ in range(width))
        message += part
        offset += width
    return bytes(message)


def scenario_serial_fuzz(run: Run) -> None:
    from caisse_ap import concert

    frames, cuts, blobs = run.size(150, 5000), run.size(20, 500), run.size(4, 100)
    server = Server("--no-web", "--serial", "pty")
    pos = SerialPos(SERIAL_LINE.search(server.output())[1])
    replies: Counter = Counter()
    cut_replies: Counter = Counter()
    try:
        started = time.monotonic()
        # The audit's frame: right size and LRC, an é (0xE9) in the private field.
        accented = concert.ConcertRequest(amount="00000500", private="caf\u00e9      ").encode()
        pos.write(concert.ENQ + concert.frame(accented) + concert.EOT)
        first = pos.read(2, 10)
        accented_answer = pos.take_answer(accented) if first == concert.ACK * 2 else None
        unanswered = lost_after_nak = 0
        for _ in range(frames):  # whole frames, right LRC, random field contents
            message = random_request(run.rng)
            pos.write(concert.ENQ)
            pos.read(1, 10)
            pos.write(concert.frame(message))
            reply = pos.read(1, 10)
            replies[concert.CONTROL_NAMES.get(reply, repr(reply))] += 1
            if not reply:
                break  # the line no longer answers: the checks below say so
            pos.write(concert.EOT)
            if reply == concert.ACK:
                answer = pos.take_answer(message)
                unanswered += answer is None or answer[-1] != concert.lrc(answer[1:-2])
            else:  # an STX or ETX inside cut it: what followed may have begun a frame
                lost_after_nak += not pos.pays()
        for _ in range(cuts):  # a cut frame, then the whole one
            message = random_request(run.rng)
            whole = concert.frame(concert.ConcertRequest(amount="00000200").encode())
            pos.write(concert.ENQ)
            pos.read(1, 10)
            pos.write(whole[:run.rng.randint(1, len(whole) - 2)] + whole)  # cut before its ETX
            reply = pos.read(2, 10)
            cut_replies[reply == concert.NAK + concert.ACK] += 1
            pos.write(concert.EOT)
            if reply[-1:] == concert.ACK:
                unanswered += pos.take_answer(whole[1:-2]) is None
        served_after_garbage = 0
        for _ in range(blobs):  # random bytes, then a good exchange
            pos.write(run.rng.randbytes(run.rng.randint(1, run.size(2000, 65536))))
            served_after_garbage += pos.pays()
        elapsed = time.monotonic() - started
        run.figure("serial cases", f"{frames} random frames, {cuts} cut frames, {blobs} blobs "
                                   f"of random bytes in {elapsed:.1f} s")
        run.figure("replies to the random frames", f"{dict(replies)}; to the cut frames: "
                   f"{cut_replies[True]} NAK then ACK")
        run.check("the frame with an é is answered (status 7)",
                  accented_answer is not None and accented_answer[3:4] == b"7",
                  f"{first!r} then {accented_answer!r}")
        run.check("every frame gets ACK or NAK, every ACKed one an answer",
                  set(replies) <= {"ACK", "NAK"} and unanswered == 0 and lost_after_nak == 0,
                  f"{dict(replies)}, {unanswered} unanswered, {lost_after_nak} not served "
                  "after a NAK")
        run.check("a cut frame gets NAK, the whole one after it ACK",
                  cut_replies[True] == cuts, f"{cut_replies[True]}/{cuts}")
        run.check("the line serves after every blob of random bytes",
                  served_after_garbage == blobs, f"{served_after_garbage}/{blobs}")
        run.check("the line and TCP still pay", pos.pays() and server.pays())
        run.check("no traceback in the log", server.tracebacks() == 0,
                  f"{server.tracebacks()} tracebacks")
    finally:
        pos.close()
        server.stop()


# --- Hostile profile files ------------------------------------------------------------------------


def hostile_profiles(directory: Path, full: bool) -> dict[str, str]:
    """name -> path of profile files an attacker or an accident could hand to --profile."""
    head = 'name = "hostile"\nlabel = "y"\nsource = "z"\n'
    files = {
        "deep arrays": head + "silent = " + "[" * 100_000 + "\n",
        "deep tables": head + "[answer]\nx = " + "{a = " * 20_000 + "1" + "}" * 20_000 + "\n",
        "over 1 MiB": head + "# " + "x" * (2 * MIB) + "\n",
    }
    if full:
        files["60 MB"] = head + ("# " + "x" * 98 + "\n") * 600_000
        files["integer of 5,000 digits"] = head + "[contract]\nlength = " + "9" * 5000 + "\n"
    paths = {}
    for name, text in files.items():
        path = directory / (name.replace(" ", "-").replace(",", "") + ".toml")
        path.write_text(text)
        paths[name] = str(path)
    fifo = directory / "fifo.toml"
    os.mkfifo(fifo)
    paths["a FIFO"] = str(fifo)
    paths["/dev/zero"] = "/dev/zero"
    return paths


def refused_profile(path: str) -> tuple[int, str, float, float]:
    """The server started on profile `path`: (exit status, stderr, seconds, its peak resident
    size in MiB); exit status -1 if it still reads after 30 s.

    The peak is VmHWM from /proc, read while it runs: what it took once started
    (wait4's figure would count the pages of this process it was forked from)."""
    import subprocess

    started = time.monotonic()
    peak = 0.0
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen([sys.executable, str(ROOT / "caisse-ap-ip-server.py"),
                                    "--profile", path, "--no-web", "--host", "127.0.0.1",
                                    "-p", "0"], stdout=subprocess.DEVNULL, stderr=errors,
                                   stdin=subprocess.DEVNULL, cwd=ROOT)
        while process.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
            if time.monotonic() - started > 30:
                process.kill()
                process.wait()
                return -1, "", 30.0, peak
            time.sleep(0.005)
        errors.seek(0)
        return process.returncode, errors.read(), time.monotonic() - started, peak


def scenario_hostile_profiles(run: Run) -> None:
    with tempfile.TemporaryDirectory() as directory:
        lines, peak = [], 0.0
        for name, path in hostile_profiles(Path(directory), run.full).items():
            code, stderr, elapsed, rss = refused_profile(path)
            peak = max(peak, rss)
            said = stderr.strip().rpartition("argument --profile: ")[2]
            one_line = stderr.count("\n") == 1 and "Traceback" not in stderr
            run.figure(name, f"exit {code} in {elapsed:.2f} s, {rss:.0f} MiB: {said[-60:]}")
            if not (code == 2 and one_line and said.startswith(f"{path}:")):
                lines.append(f"{name}: exit {code}, {stderr[-200:]!r}")
        run.check("each refused in one line file:line: reason, exit 2",
                  not lines, "; ".join(lines))
        run.check("none costs over 64 MiB", peak < 64, f"{peak:.0f} MiB at most")


# --- A full disk ---------------------------------------------------------------------------------


def scenario_full_disk(run: Run) -> None:
    """A journal on a tmpfs of 16 MiB that fills (room enough, once the filler is gone, to
    take the rows back): the terminal goes on; at SIGTERM the rows
    kept in memory go to the overflow file (--journal-overflow, on another file system),
    or to stderr when none is given and nothing beside the journal can be written; the
    next start takes them back."""
    payments = run.size(60, 1500)
    with tempfile.TemporaryDirectory() as directory, \
            small_filesystem(Path(directory) / "disk", 16 * 1024) as disk:
        for how in ("--journal-overflow", "stderr"):
            path = disk / f"journal-{how.strip('-')}.sqlite"
            overflow = Path(directory) / "overflow.jsonl"
            options = ["--journal", str(path), "--web-port", "0",
                       *(["--journal-overflow", str(overflow)] if how != "stderr" else [])]
            server = Server(*options)
            pay(server.port, "1.00")
            filler = fill(disk)
            started = time.monotonic()
            results = Counter(pay(server.port, f"{2 + n % 500}.{n % 100:02d}").status
                              for n in range(payments))
            paid_in = time.monotonic() - started
            journal = server.api("/api/status")["journal"]
            started = time.monotonic()
            code = server.stop(signal.SIGTERM)
            stopped_in = time.monotonic() - started
            output = server.output()
            kept = journal["in_memory_only"]
            said = [line for line in output.splitlines() if "kept in memory" in line
                    and ("are in" in line or "follow on stderr" in line)]
            if how == "stderr":  # what a user does: the lines saved where the log says
                rows = [line for line in output.splitlines() if line.startswith("{")]
                filler.unlink()
                Path(f"{path}.unwritten.jsonl").write_text("\n".join(rows) + "\n")
            else:
                rows = overflow.read_text().splitlines()
                # Restarted while the disk is still full: refused in one line, rows kept.
                refused = run_server("--host", "127.0.0.1", "-p", "0", *options)
                run.figure("restart on the still full disk",
                           f"exit {refused.returncode}: {refused.stderr.strip()[-80:]}")
                run.check("restarted on the still full disk: exit 2 in one line, rows kept",
                          refused.returncode == 2 and refused.stderr.count("\n") == 1
                          and len(overflow.read_text().splitlines()) == len(rows),
                          refused.stderr[-200:])
                filler.unlink()
            again = Server(*options)
            try:
                taken = next((line for line in again.output().splitlines()
                              if "are taken back from" in line), "none taken back")
            finally:
                again.stop()
            with contextlib.closing(sqlite3.connect(path)) as db:
                ids = [row[0] for row in db.execute("SELECT id FROM transactions ORDER BY id")]
            taken_back = int(match[1]) if (match := re.search(r": (\d+) transactions", taken)) \
                else 0
            run.figure(how, f"{results['approved']}/{payments} approved on a full disk "
                            f"in {paid_in:.1f} s (journal {journal['state']}: {kept} in memory "
                            f"only); SIGTERM: exit {code} in {stopped_in:.1f} s, {len(rows)} "
                            f"rows written out; restart: {taken_back} taken back, {len(ids)} "
                            "rows in the journal")
            run.check(f"{how}: every payment approved while the disk is full",
                      results["approved"] == payments and journal["state"] == "failing",
                      f"{dict(results)}, journal {journal['state']}")
            run.check(f"{how}: at SIGTERM, the rows in memory written out, one line says where",
                      code == 0 and len(rows) == kept > 0 and len(said) == 1,
                      f"exit {code}, {len(rows)} written of {kept}; {said}")
            run.check(f"{how}: the next start takes them back: every payment listed once",
                      ids == list(range(1, payments + 2)),
                      f"{len(ids)} rows, {len(set(ids))} distinct, of {payments + 1}")


# --- The control plane ----------------------------------------------------------------------------


def scenario_lazy_listeners(run: Run) -> None:
    # 50 in the short form, for time: each takes some MiB in the kernel's buffers first.
    listeners = run.size(50, 200)
    # The bound follows the server's caps (web/api.py): each stream may hold 256 KiB unsent
    # before it is cut, all lagging streams together 24 MiB; plus a fixed 8 MiB for the
    # rest of the run (the payments and their journal of at most 1000 rows, each
    # listener's HTTP objects, the allocator's slack). 200 listeners reach the 24 MiB cap:
    # 32 MiB, the full form's bound. 50 stay under it (12.5 MiB), but a share of 32 MiB
    # scaled linearly (8) left no room for the fixed part, and failed about one run in
    # three (+15.9 MiB for 50).
    unsent_mib = min(listeners * MAX_STREAM_UNSENT, MAX_STREAMS_UNSENT) / MIB
    allowed = unsent_mib + 8  # MiB
    server = Server("--web-port", "0", "--journal-max-rows", "1000")
    sockets: list[socket.socket] = []
    try:
        rss_before = server.rss_mib()
        request = (f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.web_port}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        for _ in range(listeners):
            connection = socket.socket()
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            connection.connect(("127.0.0.1", server.web_port))
            connection.sendall(request)  # and never read
            sockets.append(connection)
        peak, payments = rss_before, 0
        deadline = time.monotonic() + run.size(60, 120)
        connection = socket.create_connection(server.address, timeout=10)
        while time.monotonic() < deadline:
            # 50 payments at once, two events each, about 3 KB: answered in turn.
            connection.sendall(REQUEST * 50)
            _read_answers(connection, 50)
            payments += 50
            peak = max(peak, server.rss_mib())
            if server.output().count("cutting it off") >= listeners:
                break
        connection.close()
        cut = server.output().count("cutting it off")
        run.figure("listeners", f"{listeners} never reading; {cut} cut off after "
                                f"{payments} payments")
        run.figure("RSS", f"{rss_before:.1f} -> {peak:.1f} MiB at the peak "
                          f"(+{peak - rss_before:.1f})")
        run.check(f"listeners that never read cost at most {allowed:.1f} MiB for {listeners} "
                  "(their unsent caps + 8; 32 for 200)",
                  peak - rss_before <= allowed, f"+{peak - rss_before:.1f} MiB for {listeners}")
        run.check("every listener that never reads is cut off", cut == listeners,
                  f"{cut}/{listeners}")
        run.check("server alive and paying", server.alive() and server.pays())
    finally:
        for connection in sockets:
            connection.close()
        server.stop()


def _read_answers(connection: socket.socket, count: int) -> None:
    data = b""
    while answers_in(data) < count:
        chunk = connection.recv(4096)
        if not chunk:
            raise ConnectionError("the terminal closed")
        data += chunk


HOSTILE_HTTP = [
    ("deep nesting", "PUT", "/api/settings", b"[" * 60000),
    ("lone surrogate", "PUT", "/api/settings", b'{"\\ud800": 1}'),
    ("huge integer", "PUT", "/api/settings", b'{"duration": 1' + b"0" * 400 + b"}"),
    ("4300+ digits", "PUT", "/api/settings", b'{"duration": ' + b"9" * 5000 + b"}"),
    ("NaN and Infinity", "POST", "/api/next", b'{"outcome": "approved", "delay": NaN}'),
    ("invalid UTF-8", "PUT", "/api/settings", b'{"mode": "\xff\xfe"}'),
    ("not JSON", "POST", "/api/next", b"outcome=approved"),
    ("id too big", "GET", "/api/transactions/" + "9" * 40, b""),
    ("after too big", "GET", "/api/transactions?after=" + "9" * 40, b""),
    ("bad percent-encoding", "GET", "/api/transactions/%ff%fe", b""),
    ("over 64 KiB", "PUT", "/api/settings", b'{"x": "' + b"a" * 70000 + b'"}'),
    ("a list of 10,000 outcomes", "POST", "/api/next",
     json.dumps([{"outcome": "approved"}] * 10000).encode()),
    ("test payment to a port of nothing", "POST", "/api/test-payment",
     b'{"amount": "1.00", "port": 1, "timeout": 1}'),
]


def http_request(port: int, method: str, path: str, body: bytes, token: str | None,
                 headers: dict[str, str] | None = None) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=body or None, headers=all_headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0  # cut off: no status
    finally:
        connection.close()


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**64), 10**30, 0.5, 1e308, -1e-308])
    if kind == 3:
        return rng.choice(["", "approved", "manual", "hang-up", "\u00e9\u20ac", "x" * 300,
                           "12,50", "EUR", "978", "\u0000", "cbcontact", "refused"])
    if kind == 4:
        return rng.randint(-10, 10)
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["mode", "duration", "failure_type", "payment_type", "seller_contract", "outcome",
            "delay", "amount", "currency", "action", "port", "timeout", "manual_timeout",
            "currencies", "answer_version", "amount_rules", "", "\u00e9"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def scenario_http_bodies(run: Run) -> None:
    token = "reliability"
    bodies = run.size(200, 5000)
    server = Server("--web-port", "0", "--web-token", token, "--journal-max-rows", "1000")
    try:
        rss_before = server.rss_mib()
        statuses: Counter = Counter()
        worst = []
        for name, method, path, body in HOSTILE_HTTP:
            status = http_request(server.web_port, method, path, body, token)
            statuses[status] += 1
            if status >= 500 or status == 0 and name != "over 64 KiB":
                worst.append(f"{name}: {status}")
        endpoints = [("PUT", "/api/settings"), ("POST", "/api/next"),
                     ("POST", "/api/test-payment"), ("POST", "/api/transactions/1/decision"),
                     ("GET", "/api/transactions?limit=5"), ("POST", "/api/session")]
        for _ in range(bodies):
            method, path = run.rng.choice(endpoints)
            body = json.dumps(random_json(run.rng)).encode()
            if path == "/api/test-payment":  # nowhere but a closed port of this machine
                body = json.dumps({"amount": "1.00", "host": "127.0.0.1", "port": 1,
                                   "timeout": 1}).encode() if run.rng.random() < 0.1 else body
            status = http_request(server.web_port, method, path, body, token)
            statuses[status] += 1
            if status >= 500 or status == 0:
                worst.append(f"{method} {path} {body[:60]!r}: {status}")
        # The random bodies changed the settings and queue: back to approving at once.
        http_request(server.web_port, "DELETE", "/api/next", b"", token)
        reset = json.dumps({"mode": "success", "duration": 0, "amount_rules": False,
                            "currencies": None, "answer_version": None}).encode()
        reset_status = http_request(server.web_port, "PUT", "/api/settings", reset, token)
        # Requests of an attacker's page: another Host, no token.
        rebinding = http_request(server.web_port, "PUT", "/api/settings", b'{"mode":"hang-up"}',
                                 None, {"Host": f"evil.example:{server.web_port}",
                                        "Origin": f"http://evil.example:{server.web_port}"})
        run.figure("requests", f"{len(HOSTILE_HTTP)} hostile + {bodies} random bodies: "
                               f"statuses {dict(sorted(statuses.items()))}")
        run.figure("DNS rebinding request", rebinding)
        run.figure("RSS", f"{rss_before:.1f} -> {server.rss_mib():.1f} MiB")
        run.check("no 5xx, no connection cut but the oversized body's", not worst,
                  "; ".join(worst[:5]))
        run.check("a rebinding request gets 421", rebinding == 421)
        run.check("no traceback in the log", server.tracebacks() == 0)
        run.check("server alive and paying once its settings are reset",
                  server.alive() and reset_status == 200 and server.pays())
    finally:
        server.stop()


def raw_http_status(port: int, request: bytes, timeout: float = 10.0) -> int:
    """The status of one raw HTTP request (bytes as given), 0 if closed without one."""
    head = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        with contextlib.suppress(OSError):
            while b"\r\n" not in head and (chunk := connection.recv(4096)):
                head += chunk
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def hostile_raw_requests(port: int) -> list[tuple[str, bytes, int]]:
    """(name, raw request, the status expected) of the audit's 5xx and loose checks."""
    huge = b"9" * 5000
    host = f"127.0.0.1:{port}".encode()

    def request(target: bytes, *headers: bytes, method: bytes = b"GET") -> bytes:
        lines = [method + b" " + target + b" HTTP/1.1", *headers, b"Content-Length: 0",
                 b"Connection: close"]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    return [
        ("limit of 5,000 digits", request(b"/api/transactions?limit=" + huge, b"Host: " + host),
         400),
        ("after of 5,000 digits", request(b"/api/transactions?after=" + huge, b"Host: " + host),
         400),
        ("id of 5,000 digits", request(b"/api/transactions/" + huge, b"Host: " + host), 404),
        ("decision on an id of 5,000 digits",
         request(b"/api/transactions/" + huge + b"/decision", b"Host: " + host,
                 method=b"POST"), 404),
        ("Last-Event-ID of 5,000 digits",
         request(b"/api/events", b"Host: " + host, b"Last-Event-ID: " + huge), 200),
        ("NUL in a static path", request(b"/index.html%00.js", b"Host: " + host), 404),
        ("non-UTF-8 static path", request(b"/%ff%fe.js", b"Host: " + host), 404),
        ("Host with userinfo", request(b"/api/settings", b"Host: " + host + b"@evil.example"),
         421),
        ("Host [::1]x", request(b"/api/settings", b"Host: [::1]x"), 421),
        ("two Host headers", request(b"/api/settings", b"Host: " + host,
                                     b"Host: evil.example"), 421),
        ("https Origin for an http console",
         request(b"/api/next", b"Host: " + host, b"Origin: https://" + host, method=b"DELETE"),
         403),
    ]


def scenario_http_edges(run: Run) -> None:
    server = Server("--web-port", "0", "--journal-max-rows", "1000")
    try:
        wrong = []
        cases = hostile_raw_requests(server.web_port)
        for name, request, expected in cases:
            status = raw_http_status(server.web_port, request)
            if status != expected:
                wrong.append(f"{name}: {status}, not {expected}")
        run.figure("requests", f"{len(cases)} of the audit's: {len(cases) - len(wrong)} "
                               "answered as expected")
        run.check("huge numbers and bad paths get 4xx, loose Host and Origin are refused",
                  not wrong, "; ".join(wrong))
        run.check("no traceback in the log", server.tracebacks() == 0)
        run.check("server alive and paying", server.alive() and server.pays())
    finally:
        server.stop()


def scenario_slow_http(run: Run) -> None:
    """Clients sending a header one byte at a time, while a console streams its events and
    reads the API: the slow ones are cut after --web-request-timeout, the stream is not."""
    slow, timeout = run.size(50, 200), run.size(2, 10)
    server = Server("--web-port", "0", "--web-request-timeout", str(timeout))
    sockets: list[socket.socket] = []
    stream = socket.create_connection(("127.0.0.1", server.web_port), timeout=10)
    try:
        stream.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.web_port}\r\n"
                       "Accept: text/event-stream\r\n\r\n".encode())
        received = stream.recv(4096)
        for _ in range(slow):
            sockets.append(socket.create_connection(("127.0.0.1", server.web_port)))
        header = b"GET /api/status HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
        started = time.monotonic()
        open_at: dict[int, float] = {}
        api_latencies = []
        position = 0
        while time.monotonic() - started < 2 * timeout + 0.5:  # the stream lives past that
            for index, connection in enumerate(sockets):  # one byte each, every 0.25 s
                if index in open_at:
                    continue
                try:
                    connection.send(header[position:position + 1])
                except OSError:
                    open_at[index] = time.monotonic() - started
            position += 1
            asked = time.monotonic()
            ok = raw_http_status(server.web_port, f"GET /api/status HTTP/1.1\r\nHost: "
                                 f"127.0.0.1:{server.web_port}\r\nConnection: close\r\n"
                                 "\r\n".encode()) == 200
            api_latencies.append(time.monotonic() - asked if ok else float("inf"))
            time.sleep(0.25)
        paid = server.pays()
        stream.settimeout(10)
        while b"event: answer" not in received and (chunk := stream.recv(65536)):
            received += chunk
        cut = sorted(open_at.values())
        run.figure("slow clients", f"{slow}, one header byte each every 0.25 s: {len(cut)} cut, "
                                   f"after {cut[0]:.1f} to {cut[-1]:.1f} s "
                                   f"(--web-request-timeout {timeout})" if cut else
                   f"{slow}: none cut")
        run.figure("the console meanwhile", f"{len(api_latencies)} GET /api/status, slowest "
                                            f"{max(api_latencies) * 1000:.0f} ms; its event "
                                            f"stream open {time.monotonic() - started:.1f} s")
        run.check("every slow client cut within the request time-out (+1 s)",
                  len(cut) == slow and cut[-1] < timeout + 1,
                  f"{len(cut)}/{slow}, last after {cut[-1] if cut else 0:.1f} s")
        run.check("the console answered meanwhile", max(api_latencies) < 2.0,
                  f"slowest {max(api_latencies):.2f} s")
        run.check("the event stream outlived them and carried the payment",
                  paid and b"event: answer" in received)
        run.check("no traceback in the log", server.tracebacks() == 0)
    finally:
        stream.close()
        for connection in sockets:
            connection.close()
        server.stop()


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "tcp-fuzz": scenario_tcp_fuzz,
    "tcp-flood": scenario_tcp_flood,
    "dribble": scenario_dribble,
    "slow-senders": scenario_slow_senders,
    "never-reading": scenario_never_reading,
    "proxy-never-reading": scenario_proxy_never_reading,
    "half-close": scenario_half_close,
    "max-connections": scenario_max_connections,
    "soak": scenario_soak,
    "sigterm": scenario_sigterm,
    "sigkill": scenario_sigkill,
    "serial-fuzz": scenario_serial_fuzz,
    "hostile-profiles": scenario_hostile_profiles,
    "full-disk": scenario_full_disk,
    "lazy-listeners": scenario_lazy_listeners,
    "http-bodies": scenario_http_bodies,
    "http-edges": scenario_http_edges,
    "slow-http": scenario_slow_http,
}


def run_scenario(name: str, full: bool = False, seed: int = 12,
                 out: Callable[[str], None] = print) -> list[Check]:
    """Run one scenario, print its figures and checks; its checks."""
    run = Run(full, random.Random(f"{seed}:{name}"), out)
    out(f"== {name}")
    started = time.monotonic()
    try:
        SCENARIOS[name](run)
    except Exception as error:  # a scenario that breaks is a failure, not a crash
        run.check("scenario ran to its end", False, f"{type(error).__name__}: {error}")
    for check in run.checks:
        mark = "OK  " if check.ok else "FAIL"
        out(f"  {mark} {check.name}" + (f": {check.detail}" if check.detail else ""))
    out(f"  ({time.monotonic() - started:.1f} s)")
    return run.checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="the long version: 50,000 fuzz cases, a 5-minute soak")
    parser.add_argument("--only", action="append", choices=tuple(SCENARIOS), metavar="NAME",
                        help="run only this scenario (repeatable): " + ", ".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=12, help="the fuzzing's seed")
    args = parser.parse_args(argv)
    failed = [f"{name}: {check.name}" for name in args.only or SCENARIOS
              for check in run_scenario(name, args.full, args.seed) if not check.ok]
    print(f"== {'full' if args.full else 'short'} run: {len(failed)} failed")
    for line in failed:
        print(f"  FAIL {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
