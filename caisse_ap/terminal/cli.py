"""Command line of the simulated terminal: `caisse-ap-ip-server` / `caisse-ap-ip-server.py`.

Keeps every option of the original script with its short form and default
(-p, -f, -ft, -d, -pt, -sc, -l) and adds its own (modes, profiles, limits...).

The options come in groups: the terminal's own (here), then those of its
optional edges, each a plain import: the web console (web/), the serial line
(serial.py), the in-shop debugging tools (debugging.py). `options_from_args`
turns them into app.TerminalOptions, and app.start() builds the terminal
from those. A bad value, whichever the group, is one line on stderr and exit
status 2 (UsageError, SettingsError).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .. import __version__
from ..conformance import options as conformance
from ..connection import REQUEST_TIMEOUT
from ..i18n import N_, _, language, set_up_command
from . import behaviour, debugging, health, serial, web
from .behaviour import SettingsError, TerminalSettings
from .options import (
    DEFAULTS,
    LOG_LEVELS,
    MODE_FLAGS,
    Parser,
    UsageError,
    describe_mode,
    ip_address_arg,
    mode_from_args,
    port_arg,
    positive_arg,
    profile_arg,
    setting_arg,
)
from .profiles import DEFAULT as DEFAULT_PROFILE
from .profiles import describe_all
from .web import rawlog

if TYPE_CHECKING:  # the terminal imports Twisted, which --help does without
    from ..twisted import IGlobalReactor, IReactorTCPTime
    from .app import RunningTerminal, TerminalOptions

PROG = "caisse-ap-ip-server"

log = logging.getLogger("caisse_ap.terminal")

__all__ = ["DEFAULTS", "LOG_LEVELS", "MODE_FLAGS", "UsageError", "build_parser",
           "describe_mode", "main", "mode_from_args", "run", "settings_from_args"]


class OptionGroup(Protocol):
    """A module that adds a group of options to the parser (web, serial, debugging)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...


# The optional edges' option groups, in the order --help shows them.
OPTION_GROUPS: tuple[OptionGroup, ...] = (web, serial, debugging, conformance)


def _add_terminal_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", type=ip_address_arg(N_("host")), default="0.0.0.0", metavar=_("ADDRESS"),
        help=_("address to listen on (default: 0.0.0.0, reachable from the LAN)"))
    add("-p", "--port", type=port_arg(N_("port")), default=8888,
        help=_("TCP port (default: 8888; 0: any free)"))
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("-f", "--failure", action="store_true",
                       help=_("answer every payment with a failure (see -ft)"))
    modes.add_argument("--no-answer", action="store_true",
                       help=_("read each request and never answer: the POS must time out"))
    modes.add_argument("--hang-up", action="store_true",
                       help=_("close the connection without answering"))
    # None when not given: -ft alone switches to failure mode (run() says so).
    add("-ft", "--failure-type", type=setting_arg("failure_type"), default=None, metavar="TYPE",
        help=_("failure answered with -f (alone, -ft implies -f): abandon (AF=11), "
               "timeout (08), refused (04), forbidden (05), or any AF code by its two "
               "digits or name: %(names)s (default: %(default)s)")
        % {"names": ", ".join(f"{name} ({code})"
                              for name, code in behaviour.FAILURE_TYPES.items()),
           "default": DEFAULTS.failure_type})
    add("-d", "--duration", type=setting_arg("duration", number=True),
        default=DEFAULTS.duration, metavar=_("SECONDS"),
        help=_("seconds before answering, decimals allowed (0,5 or 0.5; default: %s); "
               "ignored for BA=1") % format(DEFAULTS.duration, "g"))
    add("-pt", "--payment-type", type=setting_arg("payment_type"),
        default=DEFAULTS.payment_type, metavar="TYPE",
        help=_("card payment simulated: %(types)s (default: %(default)s)")
        % {"types": ", ".join(behaviour.PAYMENT_TYPES), "default": DEFAULTS.payment_type})
    add("-sc", "--seller-contract", type=setting_arg("seller_contract"),
        default=None, metavar=_("NUMBER"),
        help=_("merchant contract number sent in CG, 10 characters at most "
               "(default: the profile's, %s for the standard one)") % DEFAULTS.seller_contract)
    add("-l", "--log-level", choices=tuple(LOG_LEVELS), default="info",
        type=str.lower, help=_("log level (default: info); debug shows raw frames"))
    add("--answer-version", type=setting_arg("answer_version"), default=None, metavar="CZ",
        help=_("protocol version the terminal answers with, e.g. 0301 (default: the "
               "profile's; the standard one echoes the request's)"))
    add("--pad-amount", action="store_true", default=None,
        help=_("answer CB left-padded with zeros (to 12 digits, or the profile's width), "
               "as Ingenico terminals do"))
    add("--profile", type=profile_arg, default=None, metavar=_("NAME|FILE"),
        help=_("terminal dialect to answer in: a built-in profile (see --list-profiles) or "
               "a profile file (docs/profiles.md); -sc, --answer-version and --pad-amount "
               "still override it (default: %s)") % DEFAULT_PROFILE)
    add("--list-profiles", action="store_true",
        help=_("list the profiles (name, label, where its facts come from, and a "
               "--profile FILE's), one a line, and exit"))
    add("--currencies", type=setting_arg("currencies"), default=None, metavar=_("CODES"),
        help=_("comma-separated currencies accepted, numeric or alphabetic (978,EUR); "
               "others get AF=13 (default: every ISO 4217 code)"))
    add("--seed", default=None, metavar=_("SEED"),
        help=_("make card numbers, authorisation numbers, etc. reproducible"))
    add("--idle-timeout", type=positive_arg(float, N_("idle timeout")), default=300.0,
        metavar=_("SECONDS"),
        help=_("close a connection that sends nothing for this long (default: 300)"))
    add("--max-connections", type=positive_arg(int, N_("max connections")), default=1000,
        metavar="N", help=_("connections open at once; more wait until one closes "
                            "(default: 1000)"))
    add("--request-timeout", type=positive_arg(float, N_("request timeout")),
        default=REQUEST_TIMEOUT, metavar=_("SECONDS"),
        help=_("refuse (AF=09) a request left unfinished after this much silence "
               "(default: %s)") % format(REQUEST_TIMEOUT, "g"))
    add("--check-health", type=health.address_arg, default=None, metavar=_("HOST:PORT"),
        help=_("check that the terminal listening at HOST:PORT serves, and exit: status 0 "
               "if it does, 1 if not (a container's health check)"))
    add("--version", action="version", version=f"%(prog)s {__version__}",
        help=_("show the version and exit"))


def build_parser(groups: Sequence[OptionGroup] | None = None) -> argparse.ArgumentParser:
    """The parser: the terminal's options, then each group's (default: every group)."""
    parser = Parser(
        prog=PROG,
        description=_("Simulated Caisse-AP over IP payment terminal: point-of-sale software "
                      "connects to it and gets the answers a real French terminal gives."),
    )
    _add_terminal_arguments(parser)
    for group in OPTION_GROUPS if groups is None else groups:
        group.add_arguments(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> TerminalSettings:
    """The TerminalSettings the options describe (SettingsError if they do not fit)."""
    values: dict[str, object] = {
        "mode": mode_from_args(args),
        "failure_type": args.failure_type or DEFAULTS.failure_type,
        "duration": args.duration,
        "payment_type": args.payment_type,
        "currencies": args.currencies,
    }
    if args.profile is not None:
        values["profile"] = args.profile
    # Given on the command line, these override the profile's values.
    for name in behaviour.PROFILE_SETTINGS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if hasattr(args, "manual"):  # a parser with the console's options (build_parser())
        values.update(web.settings_changes(args))
    return TerminalSettings.from_dict(values)


def options_from_args(args: argparse.Namespace,
                      recent_log: rawlog.RecentLog | None = None) -> TerminalOptions:
    """The terminal the options of build_parser() describe, its files opened and checked.

    --list-amount-rules and --derive-profile print and exit here (SystemExit).
    """
    from .app import TerminalOptions

    rules = web.rules_from_args(args)
    if args.list_amount_rules:
        sys.stdout.write(rules.listing())
        raise SystemExit(0)
    settings = settings_from_args(args)
    serial_options = serial.options_from_args(args)
    debug = debugging.options_from_args(args)
    session = conformance.options_from_args(args)
    connections = description = None
    if session is not None:
        from ..conformance import manual

        connections = manual.terminal_factory(session)
        description = manual.describe_terminal(session)
    # Opened last, so that a journal that cannot be used stops us before anything
    # listens, and nothing else can fail once it is open.
    journal = web.journal_from_args(args)
    return TerminalOptions(settings, args.host, args.port, seed=args.seed,
                           idle_timeout=args.idle_timeout, request_timeout=args.request_timeout,
                           max_connections=args.max_connections, journal=journal, rules=rules,
                           web=web.options_from_args(args, recent_log), serial=serial_options,
                           debug=debug, connections=connections, description=description)


class _LogFormat(logging.Formatter):
    """"TIME LEVEL MESSAGE", built with one f-string and the local time worked out once
    a second: at the default level the server logs a line per transaction, and
    logging's general formatting cost as much as the rest of the line's work."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._second_text},{int(record.msecs):03d}"  # logging's default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)  # with the traceback, as logging writes it
        return f"{self.formatTime(record)} {record.levelname} {record.getMessage()}"


def configure_logging(level_name: str) -> None:
    """Logs on stderr; Twisted's own messages go through the same handler."""
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    level = LOG_LEVELS[level_name]
    # The format shows neither the caller's line nor the thread nor the process:
    # not gathering them for each record is logging's own advice for speed.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Twisted's own start/stop lines ("QuietSite starting on 5000", "(TCP Port 8888
    # Closed)") say nothing a user needs: shown with -l debug only; its errors stay.
    logging.getLogger("twisted").setLevel(level if level == logging.DEBUG
                                          else max(level, logging.WARNING))
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")],
                                     redirectStandardIO=False)


def describe_terminal(options: TerminalOptions) -> str:
    """The start-up line's first part: what answers the POS."""
    settings = options.settings
    described = options.description or debugging.describe_terminal(options.debug, settings)
    if described:
        return described
    return (f"simulated terminal in mode {settings.mode}: {describe_mode(settings)}; "
            f"profile {settings.profile.key}")


def start(args: argparse.Namespace, reactor: IReactorTCPTime) -> RunningTerminal:
    """Set up logging and start the terminal and its edges as `args` say.

    Raises twisted's CannotListenError, SettingsError and UsageError.
    """
    from . import app

    configure_logging(args.log_level)
    options = options_from_args(args, None if args.no_web else rawlog.install())
    try:
        running = app.start(reactor, options)
    except BaseException:
        if options.web is not None and options.web.recent_log is not None:
            rawlog.uninstall(options.web.recent_log)
        raise
    if running.journal is None:
        log.info("no transaction journal (--no-web without --journal)")
    if args.conformance:
        from ..conformance import manual

        manual.start(running, reactor)
    return running


def run(args: argparse.Namespace, reactor: IGlobalReactor | None = None) -> int:
    """Start the terminal (and its edges) as `args` say and serve until a signal."""
    from twisted.internet.error import CannotListenError

    if reactor is None:
        from ..twisted import global_reactor

        reactor = global_reactor()
    try:
        running = start(args, reactor)
    except CannotListenError as error:
        # The same status as a web port that is taken (a UsageError, see main()).
        print(_("%(prog)s: error: cannot listen on %(host)s:%(port)s: %(why)s")
              % {"prog": PROG, "host": args.host, "port": args.port, "why": error.socketError},
              file=sys.stderr)
        return 2
    terminal = running.terminal
    assert terminal.address is not None  # start() returns a listening terminal
    host, port = terminal.address
    if args.failure_type is not None and not args.failure:
        log.info("-ft %s without -f: failure mode", args.failure_type)
    log.info("%s %s: %s; listening on %s:%d", PROG, __version__,
             describe_terminal(running.options), host, port)

    def shutdown() -> object:
        log.info("stopping: answering %d transactions in flight", len(terminal.pending))
        return running.stop()

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    recent_log = running.console.api.recent_log if running.console is not None else None
    if recent_log is not None:
        reactor.addSystemEventTrigger("after", "shutdown", rawlog.uninstall, recent_log)
    reactor.run()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn bad values into one stderr line and status 2."""
    set_up_command()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 2
    if args.check_health is not None:
        problem = health.check(args.check_health)
        print(_("%(prog)s: unhealthy: %(problem)s") % {"prog": PROG, "problem": problem}
              if problem else _("healthy"), file=sys.stderr if problem else sys.stdout)
        return 1 if problem else 0
    try:
        if args.list_profiles:  # after parsing: a --profile FILE, wherever given, is checked
            print("\n".join(describe_all(language() == "fr")))
            return 0
        return run(args)
    except (SettingsError, UsageError) as error:
        print(_("%(prog)s: error: %(message)s") % {"prog": PROG, "message": error},
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
