"""Shared fixtures: a real Twisted reactor in a background thread, terminals on free ports.

The pattern: one reactor runs for the whole test session in a daemon thread
(`reactor_thread`); tests stay plain blocking code and run reactor work with
`reactor_thread.call(f, ...)`, which waits for f's result (or its Deferred's)
on the reactor thread. POS are blocking sockets on 127.0.0.1 (`Pos`).
Delay logic is tested without it, with `twisted.internet.task.Clock`.

The quick loop, `pytest -m "not slow"`, leaves out the `slow` tests: those that
start a browser or a process (the server, the client, mypy, a nested pytest)
and the long property tests. A test is slow when it carries the marker (a
module's `pytestmark`, a decorator) or uses one of SLOW_FIXTURES. A test that
starts a process without being slow gets a warning naming it (`-ra` lists it).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from caisse_ap import client, tlv

TIMEOUT = 10.0  # a test that waits this long has failed: never a pacing delay

# The trailing grace the library clients get in tests not marked `trailing_grace`. The
# simulated terminal keeps the connection open after answering, so each payment waits
# the whole grace after its answer (0.4 s by default, for a TCP segment lost on a real
# network and sent again). On 127.0.0.1 no segment is lost, and the terminal writes an
# answer in one write unless a test cuts it on purpose: those tests, the ones about the
# grace, carry the marker and keep the default.
QUICK_GRACE = 0.05

# Fixtures that start a browser (test_web_console.py's) or a server process (below): the
# tests that use them, directly or through another fixture, are marked slow at collection.
SLOW_FIXTURES = {"browser", "server_process"}


class StartedAProcess(UserWarning):
    """A test that is not marked slow started a process: the quick loop is slower for it."""


def pytest_configure(config: pytest.Config) -> None:
    # PYTEST_ADDOPTS (CI's coverage options, a developer's -m) is for this run only: the
    # pytest runs that tests start stand for a POS project's own, which has none of them.
    os.environ.pop("PYTEST_ADDOPTS", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# Processes started since the current test's setup began, as the audit hook sees them
# (subprocess.Popen raises an audit event for each: asyncio's and Playwright's too).
_processes_started: list[str] = []


def _note_processes(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen":
        _processes_started.append(" ".join(str(arg) for arg in list(args[1])[:2]))


sys.addaudithook(_note_processes)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _processes_started.clear()  # before any fixture: a module's server counts for its first test


@pytest.fixture(autouse=True)
def processes_only_in_slow_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if _processes_started and request.node.get_closest_marker("slow") is None:
        request.node.warn(StartedAProcess(
            f"started {len(_processes_started)} process(es) ({_processes_started[0]}) "
            "without the slow marker: mark it @pytest.mark.slow, or use a fixture of "
            "conftest.SLOW_FIXTURES, so that `pytest -m \"not slow\"` leaves it out"))


@pytest.fixture(autouse=True)
def no_log_handler_left_on_a_closed_stream() -> Iterator[None]:
    """The server's command line run in-process (terminal/cli.py's configure_logging) gives
    the root logger a handler on the sys.stderr of the moment: a test's captured stream,
    closed after it. Left there, every later log line fails on it ("--- Logging error
    ---" in the next test's stderr). Removed after the test; pytest's own handlers stay."""
    root = logging.getLogger()
    before = set(map(id, root.handlers))
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and id(handler) not in before:
            root.removeHandler(handler)


@pytest.fixture(autouse=True)
def trailing_grace(request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> float | None:
    """The `trailing_grace` to give a library client: QUICK_GRACE, or None (the default)
    in a test marked `trailing_grace`. The blocking client, and so the command line run
    in-process, reads its default from client.TRAILING_GRACE: set here as well.
    Module-scoped fixtures run before this one, with the default."""
    if request.node.get_closest_marker("trailing_grace"):
        return None
    monkeypatch.setattr(client, "TRAILING_GRACE", QUICK_GRACE)
    return QUICK_GRACE


class ReactorThread:
    """The global reactor, running in a daemon thread for the whole session: the one
    caisse_ap.testing starts and shares, as a POS project's tests would use it."""

    def start(self) -> None:
        from caisse_ap import testing

        self.reactor = testing.shared_reactor()
        self.thread = testing._reactor_thread

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run function on the reactor thread and return its result (waits for a Deferred)."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, function, *args, **kwargs)

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        if self.thread is not None:
            self.thread.join(TIMEOUT)


@pytest.fixture(scope="session")
def reactor_thread() -> Iterator[ReactorThread]:
    running = ReactorThread()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def server_process() -> Iterator[Callable[..., Any]]:
    """server_process(*args, env=None, timeout=30.0) -> caisse-ap-ip-server.py running in a
    process of its own (server_process.ServerProcess), killed at the end of the test.

    A test that uses it is slow (SLOW_FIXTURES).
    """
    from server_process import ServerProcess

    started: list[ServerProcess] = []

    def start(*args: str, **options: Any) -> ServerProcess:
        started.append(ServerProcess(*args, **options))
        return started[-1]

    yield start
    for each in started:
        each.kill()


@pytest.fixture
def start_terminal(reactor_thread: ReactorThread) -> Iterator[Callable[..., Any]]:
    """start_terminal(settings=None or dict, **Terminal options) -> a listening Terminal.

    Listens on 127.0.0.1, port chosen by the OS; stopped at the end of the test.
    """
    from caisse_ap.terminal import server
    from caisse_ap.terminal.behaviour import TerminalSettings

    started = []

    def start(settings: Any = None, **options: Any) -> Any:
        if isinstance(settings, dict):
            settings = TerminalSettings.from_dict(settings)
        terminal = reactor_thread.call(server.start_terminal, reactor_thread.reactor,
                                       settings, "127.0.0.1", 0, **options)
        started.append(terminal)
        return terminal

    yield start
    for terminal in started:
        reactor_thread.call(server.stop_terminal, terminal)


class Pos:
    """A blocking POS connection to a terminal, for tests."""

    def __init__(self, address: tuple[str, int], timeout: float = TIMEOUT):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = tlv.FrameDecoder()  # each whole field run is a message

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("latin-1") if isinstance(data, str) else data)

    def read_answer(self) -> bytes:
        """The next answer. The terminal writes each answer whole, in one write, so an
        answer ends where the next one starts (CZ) or where the bytes received end."""
        while True:
            message = self.decoder.next_message()
            if message is not None:
                return tlv.encode(message)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before an answer")
            self.decoder.feed(chunk)

    def exchange(self, data: bytes | str) -> list[tuple[str, str]]:
        self.send(data)
        return tlv.decode(self.read_answer())

    def closed_by_peer(self) -> bool:
        """True when the terminal closed the connection without sending anything more."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Pos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def pos() -> Iterator[Callable[..., Pos]]:
    """pos(terminal_or_address) -> a connected Pos, closed at the end of the test."""
    opened = []

    def connect(target: Any) -> Pos:
        address = target if isinstance(target, tuple) else target.address
        connection = Pos(address)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.close()


@pytest.fixture(autouse=True)
def no_web_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported CAISSE_AP_WEB_TOKEN must not change what the tests start."""
    monkeypatch.delenv("CAISSE_AP_WEB_TOKEN", raising=False)



@pytest.fixture(autouse=True)
def commands_in_english(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's French locale must not change what the tests read: the commands
    speak English unless a test gives them a French environment (test_i18n.py)."""
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
