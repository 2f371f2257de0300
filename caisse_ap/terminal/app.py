"""The one place that builds a simulated terminal from its options (the composition root).

`start(reactor, options)` wires, in this order: the Terminal, its journal,
its outcome sources (the outcome queue, the amount rules, manual
decisions), then its edges: TCP (the simulated terminal's connections, the
proxy's, the replay's, or the recording tap's), the web console, the serial
line, the recording. It returns a `RunningTerminal`; `stop()` undoes it all
in the reverse order. Several terminals can run in one process, each with
its own port, journal and console: nothing here is global but the reactor.

The command line (cli.py) reads the options from argv and calls this; tests
and `caisse_ap.testing` call it with options of their own. Every edge is a
plain import: this module is where the drawing of the terminal is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.internet import defer, protocol, task, threads
from twisted.internet.interfaces import IReactorTime

from ..connection import REQUEST_TIMEOUT
from . import proxy, serial, taps
from .behaviour import TerminalSettings
from .debugging import DebugOptions
from .journal import Journal
from .options import UsageError
from .outcomes import ManualDecisions, OutcomeQueue
from .rules import AmountRules
from .server import TerminalFactory, drain_terminal, start_terminal, stop_terminal
from .service import Terminal
from .web import Console, WebOptions, start_console
from .web.api import ApiError
from .web.farm import Farm
from .words import TransactionMode

if TYPE_CHECKING:
    # What the terminal needs of a reactor: IReactorTCP and IReactorTime, as Twisted's own is.
    from ..twisted import IReactorTCPTime as Reactor
    from .serial import SerialOptions, SerialTerminalLink

log = logging.getLogger("caisse_ap.terminal")

CHECKPOINT_EVERY = 5.0  # seconds between journal checkpoints, off the reactor thread


@dataclass
class TerminalOptions:
    """Everything one terminal is built from. Only `settings` matters for most uses."""

    settings: TerminalSettings = field(default_factory=TerminalSettings)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    seed: str | int | None = None
    idle_timeout: float = 300.0
    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = 1000
    # Opened; None: one in memory when the console is on (none without it: nothing
    # could read it). The RunningTerminal closes it.
    journal: Journal | None = None
    rules: AmountRules = field(default_factory=AmountRules)
    web: WebOptions | None = None  # None: no console
    serial: SerialOptions | None = None  # None: no serial line
    debug: DebugOptions = field(default_factory=DebugOptions)  # proxy, replay, record
    # Another factory of the terminal's connections (the conformance kit's scenarios),
    # and the start-up line's words for it.
    connections: Callable[[Terminal], protocol.Factory] | None = None
    description: str | None = None


@dataclass
class RunningTerminal:
    """A terminal start() started, with what serves it; `stop()` stops it all."""

    options: TerminalOptions
    terminal: Terminal
    journal: Journal | None
    rules: AmountRules
    queue: OutcomeQueue
    manual: ManualDecisions
    console: Console | None = None
    farm: Farm | None = None  # the terminals created over the console's API
    serial: SerialTerminalLink | None = None
    recorder: taps.Recorder | None = None
    _checkpoints: task.LoopingCall | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        return self.terminal.address

    @property
    def web_url(self) -> str | None:
        return None if self.console is None else self.console.web_url

    def stop(self) -> defer.Deferred[None]:
        """Answer what is in flight and close every connection, then the console, the
        serial line, the recording and the journal (once every answer is in it)."""
        return self._stop_after(stop_terminal(self.terminal))

    def retire(self) -> tuple[defer.Deferred[None], defer.Deferred[None]]:
        """Stop accepting at once, answer each transaction in flight as it would have been
        (its delay and all), then stop as stop() does (a farm terminal deleted). Fires
        first once no connection is accepted, then once it is all stopped."""
        refusing, stopped = drain_terminal(self.terminal)
        return refusing, self._stop_after(stopped)

    def _stop_after(self, stopped: defer.Deferred[None]) -> defer.Deferred[None]:
        if self.farm is not None:
            farm = self.farm
            stopped.addBoth(lambda _: farm.stop())
        stopped.addBoth(lambda _: self._stop_edges())
        stopped.addBoth(lambda _: self._close())
        return stopped

    def _stop_edges(self) -> defer.Deferred[None] | None:
        if self.serial is not None:
            self.serial.stop()
        return None if self.console is None else self.console.stop()

    def _close(self) -> None:
        if self._checkpoints is not None and self._checkpoints.running:
            self._checkpoints.stop()
        if self.recorder is not None:
            self.recorder.record.close()
        if self.journal is not None:
            self.journal.close()


def start(reactor: Reactor, options: TerminalOptions) -> RunningTerminal:
    """Build and start a terminal as `options` say; call on the reactor thread.

    Raises twisted's CannotListenError when the terminal's port is taken,
    UsageError for the console's port or a serial line; what was started is
    then stopped and the journal closed.
    """
    journal = options.journal
    if journal is None and options.web is not None:
        journal = Journal()
    try:
        terminal = start_terminal(reactor, options.settings, options.host, options.port,
                                  factory=_connections(options, reactor), seed=options.seed,
                                  idle_timeout=options.idle_timeout,
                                  request_timeout=options.request_timeout,
                                  max_connections=options.max_connections)
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    running = RunningTerminal(options, terminal, journal, options.rules, OutcomeQueue(),
                              ManualDecisions(terminal))
    _add_outcome_sources(running)
    if journal is not None:
        _keep_journal(running, journal, reactor)
    try:
        if options.web is not None:
            assert journal is not None  # made above for the console
            running.farm = _farm(reactor, options, options.web, running)
            running.console = start_console(reactor, terminal, journal, running.rules,
                                            running.queue, running.manual, options.web,
                                            running.farm)
            _start_shop(running.farm, running.console, options.web)
        if options.serial is not None:
            running.serial = serial.start(terminal, options.serial, reactor)
        if options.debug.record is not None:
            running.recorder = _start_recording(terminal, options)
    except BaseException:
        running.stop()
        raise
    _announce(running)
    return running


def _farm(reactor: Reactor, options: TerminalOptions, web: WebOptions,
          running: RunningTerminal) -> Farm:
    """The farm of the console's API: terminals as this one is built, on its address,
    with no console and no serial line of their own. They write in this terminal's
    journal (the farm gives each its view, journal.TerminalRows) and take their ids
    from its numbering: one journal, ids unique across it."""
    numbering = running.terminal.numbering

    def start_one(settings: TerminalSettings, port: int) -> RunningTerminal:
        started = start(reactor, TerminalOptions(
            settings, options.host, port, idle_timeout=options.idle_timeout,
            request_timeout=options.request_timeout,
            max_connections=options.max_connections))
        started.terminal.numbering = numbering  # before any request: the reactor runs this
        return started

    assert running.journal is not None  # the console has one
    return Farm(start_one, options.host, running.journal, max_terminals=web.max_terminals,
                token=web.token)


def _start_shop(farm: Farm, console: Console, web: WebOptions) -> None:
    """The terminals of --terminals FILE, checked already (farm_file.py): a port taken
    is the one thing left to go wrong (UsageError "file:line: reason")."""
    for spec in web.terminals:
        try:
            farm.create(dict(spec.body), console.api.web_address)
        except ApiError as error:
            raise UsageError(f"{spec.where}: {error.message}") from None


def _announce(running: RunningTerminal) -> None:
    """Log what keeps the transactions and what decides them, once everything serves."""
    journal = running.journal
    if journal is not None:
        where = f"in {journal.path}" if not journal.in_memory else "in memory"
        log.info("transaction journal %s (transactions already recorded: %d)", where,
                 journal.count())
    if running.terminal.settings.amount_rules:
        log.info("amount rules on (%s): the cents of the amount choose the outcome",
                 running.rules.source)


def _connections(options: TerminalOptions, reactor: IReactorTime
                 ) -> Callable[[Terminal], protocol.Factory]:
    """What builds the factory of the terminal's connections: the simulated terminal's,
    the proxy's (to a real terminal or a recording), or the recording tap around it."""
    if options.connections is not None:
        return options.connections
    debug = options.debug
    if debug.upstream is not None or debug.replay is not None:
        def build_proxy(terminal: Terminal) -> proxy.ProxyFactory:
            upstream: proxy.TerminalUpstream | proxy.RecordingUpstream
            if debug.upstream is not None:
                upstream = proxy.TerminalUpstream(*debug.upstream)
            else:
                assert debug.replay is not None
                upstream = proxy.RecordingUpstream(debug.replay, debug.replay_order)
            return proxy.ProxyFactory(terminal, upstream)

        return build_proxy
    if debug.record is not None:
        def build_tap(terminal: Terminal) -> protocol.Factory:
            # A WrappingFactory is a Factory; its type parameters differ in the stubs.
            return taps.TapFactory(TerminalFactory(terminal), reactor)  # type: ignore[return-value]

        return build_tap
    return TerminalFactory


def _add_outcome_sources(running: RunningTerminal) -> None:
    """In the order of docs/api.md: the queue, the amount rules, then manual mode."""
    running.rules.terminal = running.terminal
    running.terminal.outcome_sources.extend((running.queue, running.rules, running.manual))


def _keep_journal(running: RunningTerminal, journal: Journal, reactor: Reactor) -> None:
    """The journal hears of every transaction first, so that whoever hears next can read
    it back (the console's feed takes its place and writes it)."""
    terminal = running.terminal
    # A journal in a file numbers after the transactions of earlier runs.
    terminal.next_id = max(terminal.next_id, journal.last_id() + 1)
    terminal.counts["interrupted"] += journal.interrupted
    journal.write_in_groups(reactor)
    terminal.observers.insert(0, journal)
    if not journal.in_memory:
        def checkpoint() -> defer.Deferred[None]:
            """The bulk of the checkpoint in a thread, its end on the reactor (journal.py)."""
            return threads.deferToThread(journal.checkpoint).addCallback(
                lambda _: journal.restart_log())

        running._checkpoints = task.LoopingCall(checkpoint)
        running._checkpoints.clock = reactor
        running._checkpoints.start(CHECKPOINT_EVERY, now=False)


def _start_recording(terminal: Terminal, options: TerminalOptions) -> taps.Recorder:
    debug = options.debug
    assert debug.record is not None
    mode = (TransactionMode.PROXIED if debug.upstream
            else TransactionMode.REPLAYED if debug.replay else TransactionMode.SIMULATED)
    header: dict[str, object] = {
        "mode": mode, "settings": terminal.settings.to_dict(),
        "upstream": "{}:{}".format(*debug.upstream) if debug.upstream else None}
    # The tap's or the proxy's: the segments of each connection.
    logs = terminal.listening_port.factory.logs
    recorder = taps.start_recording(terminal, debug.record, logs, header)
    log.info("recording every exchange in %s", debug.record_path)
    return recorder

