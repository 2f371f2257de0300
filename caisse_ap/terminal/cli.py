"""Command line of the simulated terminal: `caisse-ap-ip-server` / `caisse-ap-ip-server.py`.

Keeps every option of the original script with its short form and default
(-p, -f, -ft, -d, -pt, -sc, -l) and adds the ones of issue 3.

Extensions: each module named in EXTENSIONS that can be imported (the web
console and control API) may define
- `add_arguments(parser)`: add its options;
- `settings_changes(args) -> dict`: settings it sets (e.g. amount_rules);
- `start(terminal, args, reactor)`: start its services once the terminal
  listens, before the reactor runs; it may register its own shutdown triggers;
- `terminal_factory(args)`: None, or what builds the connections' factory
  from the Terminal (server.start_terminal's `factory`: the proxy's);
- `describe_terminal(args, settings) -> str | None`: what answers the POS,
  for the start-up line, when it is not the simulated terminal (the proxy).
Any of them may raise `UsageError` or `SettingsError` for a bad option value:
the user gets one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from .. import __version__
from ..connection import REQUEST_TIMEOUT
from . import behaviour, health
from .behaviour import SettingsError, TerminalSettings
from .profiles import DEFAULT as DEFAULT_PROFILE
from .profiles import Profile, ProfileError, describe_all
from .profiles import find as find_profile

if TYPE_CHECKING:  # the service imports Twisted, which --help does without
    from .service import Terminal

PROG = "caisse-ap-ip-server"
EXTENSIONS = ("caisse_ap.terminal.web", "caisse_ap.terminal.serial",
              "caisse_ap.terminal.debugging")
# Both commands take "warn" and "warning" (the client's spelling is logging's).
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR}

log = logging.getLogger("caisse_ap.terminal")

DEFAULTS = TerminalSettings()  # the options' defaults are the settings'
# The options that choose another mode than success, by mode (one at most).
MODE_FLAGS = {"failure": "-f", "no-answer": "--no-answer", "hang-up": "--hang-up"}


def mode_from_args(args: argparse.Namespace) -> str:
    """The mode the flags choose; `-ft TYPE` alone means failure mode.

    Raises UsageError when -ft comes with a mode that never fails.
    """
    for mode in MODE_FLAGS:
        if getattr(args, mode.replace("-", "_")):
            if mode != "failure" and args.failure_type is not None:
                raise UsageError(f"-ft and {MODE_FLAGS[mode]} cannot be used together")
            return mode
    return "failure" if args.failure_type is not None else "success"


class UsageError(ValueError):
    """A bad option value found after parsing (one line on stderr, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def setting_arg(name: str) -> Callable[[str], Any]:
    """An argparse type that checks one setting with the same rules as the API."""
    def check(text: str) -> Any:
        try:
            return behaviour.check_setting(name, text)
        except SettingsError as error:
            raise argparse.ArgumentTypeError(error.message) from None
    check.__name__ = name  # argparse names the type in some messages
    return check


def ip_address_arg(what: str) -> Callable[[str], str]:
    """An argparse type for a listening address ("localhost" is 127.0.0.1)."""
    def check(text: str) -> str:
        if text == "localhost":
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an IP address such as 0.0.0.0 or "
                                             f"127.0.0.1, not {text!r}") from None
    check.__name__ = what
    return check


def port_arg(what: str) -> Callable[[str], int]:
    """An argparse type for a TCP port, 0 meaning any free one."""
    def check(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) > 65535:
            raise argparse.ArgumentTypeError(f"{what} must be 0 to 65535, not {text!r}")
        return int(text)
    check.__name__ = what
    return check


def _positive(kind: type, what: str) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a number above 0, not {text!r}")
        return value
    check.__name__ = what
    return check


def profile_arg(text: str) -> Profile:
    """An argparse type: a profile by name or file, checked (file:line: reason if not)."""
    try:
        return find_profile(text)
    except ProfileError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_terminal_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", type=ip_address_arg("host"), default="0.0.0.0",
        help="address to listen on (default: 0.0.0.0, reachable from the LAN)")
    add("-p", "--port", type=port_arg("port"), default=8888,
        help="TCP port (default: 8888; 0: any free)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("-f", "--failure", action="store_true",
                       help="answer every payment with a failure (see -ft)")
    modes.add_argument("--no-answer", action="store_true",
                       help="read each request and never answer: the POS must time out")
    modes.add_argument("--hang-up", action="store_true",
                       help="close the connection without answering")
    # None when not given: -ft alone switches to failure mode (run() says so).
    add("-ft", "--failure-type", type=setting_arg("failure_type"), default=None, metavar="TYPE",
        help="failure answered with -f (alone, -ft implies -f): abandon (AF=11), "
             "timeout (08), refused (04), "
             "forbidden (05), or any AF code by its two digits or name: "
             + ", ".join(f"{name} ({code})" for name, code in behaviour.FAILURE_TYPES.items())
             + f" (default: {DEFAULTS.failure_type})")
    add("-d", "--duration", type=setting_arg("duration"), default=DEFAULTS.duration,
        metavar="SECONDS",
        help=f"seconds before answering, decimals allowed (default: {DEFAULTS.duration:g}); "
             "ignored for BA=1")
    add("-pt", "--payment-type", type=setting_arg("payment_type"),
        default=DEFAULTS.payment_type, metavar="TYPE",
        help="card payment simulated: " + ", ".join(behaviour.PAYMENT_TYPES)
             + f" (default: {DEFAULTS.payment_type})")
    add("-sc", "--seller-contract", type=setting_arg("seller_contract"),
        default=None, metavar="NUMBER",
        help="merchant contract number sent in CG, 10 characters at most "
             f"(default: the profile's, {DEFAULTS.seller_contract} for the standard one)")
    add("-l", "--log-level", choices=tuple(LOG_LEVELS), default="info",
        type=str.lower, help="log level (default: info); debug shows raw frames")
    add("--answer-version", type=setting_arg("answer_version"), default=None, metavar="CZ",
        help="protocol version the terminal answers with, e.g. 0301 (default: the profile's; "
             "the standard one echoes the request's)")
    add("--pad-amount", action="store_true", default=None,
        help="answer CB left-padded with zeros (to 12 digits, or the profile's width), as "
             "Ingenico terminals do")
    add("--profile", type=profile_arg, default=None, metavar="NAME|FILE",
        help="terminal dialect to answer in: a built-in profile (see --list-profiles) or a "
             "profile file (docs/profiles.md); -sc, --answer-version and --pad-amount still "
             f"override it (default: {DEFAULT_PROFILE})")
    add("--list-profiles", action="store_true",
        help="list the profiles (name, label, source, and a --profile FILE's), one a line, "
             "and exit")
    add("--currencies", type=setting_arg("currencies"), default=None, metavar="CODES",
        help="comma-separated currencies accepted, numeric or alphabetic (978,EUR); others "
             "get AF=13 (default: every ISO 4217 code)")
    add("--seed", default=None,
        help="make card numbers, authorisation numbers, etc. reproducible")
    add("--idle-timeout", type=_positive(float, "idle timeout"), default=300.0,
        metavar="SECONDS",
        help="close a connection that sends nothing for this long (default: 300)")
    add("--max-connections", type=_positive(int, "max connections"), default=1000,
        metavar="N", help="connections open at once; more wait until one closes "
                          "(default: 1000)")
    add("--request-timeout", type=_positive(float, "request timeout"),
        default=REQUEST_TIMEOUT, metavar="SECONDS",
        help="refuse (AF=09) a request left unfinished after this much silence "
             f"(default: {REQUEST_TIMEOUT:g})")
    add("--check-health", type=health.address_arg, default=None, metavar="HOST:PORT",
        help="check that the terminal listening at HOST:PORT serves, and exit: status 0 if "
             "it does, 1 if not (a container's health check)")
    add("--version", action="version", version=f"%(prog)s {__version__}")


def extensions() -> list[ModuleType]:
    """The extension modules present in this installation."""
    found = []
    for name in EXTENSIONS:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name is None or not name.startswith(error.name):
                raise  # the extension is there but one of its imports is missing
    return found


def build_parser(modules: Sequence[ModuleType] | None = None) -> argparse.ArgumentParser:
    """The parser: the terminal's options, then each extension's."""
    parser = _Parser(
        prog=PROG,
        description="Simulated Caisse-AP over IP payment terminal: point-of-sale software "
                    "connects to it and gets the answers a real French terminal gives.",
    )
    _add_terminal_arguments(parser)
    for module in extensions() if modules is None else modules:
        add_arguments = getattr(module, "add_arguments", None)
        if add_arguments is not None:
            add_arguments(parser)
    return parser


def settings_from_args(args: argparse.Namespace,
                       modules: Sequence[ModuleType] = ()) -> TerminalSettings:
    """The TerminalSettings the options describe (SettingsError if they do not fit)."""
    values: dict[str, Any] = {
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
    for module in modules:
        changes = getattr(module, "settings_changes", None)
        if changes is not None:
            values.update(changes(args))
    return TerminalSettings.from_dict(values)


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


def describe_terminal(args: argparse.Namespace, settings: TerminalSettings,
                      modules: Sequence[ModuleType] = ()) -> str:
    """The start-up line's first part: what answers the POS."""
    for module in modules:
        describe = getattr(module, "describe_terminal", None)
        described = describe(args, settings) if describe is not None else None
        if described:
            return str(described)
    return (f"simulated terminal in mode {settings.mode}: {describe_mode(settings)}; "
            f"profile {settings.profile.key}")


def describe_mode(settings: TerminalSettings) -> str:
    """The startup line's mode part: what a POS will get."""
    mode = settings.mode
    if mode == "success":
        what = f"approve every payment ({settings.payment_type})"
    elif mode == "failure":
        what = f"refuse every payment with AF={settings.failure_code} ({settings.failure_type})"
    elif mode == "manual":
        return (f"wait for a decision on each payment "
                f"(AF=08 after {settings.manual_timeout:g} s)")
    elif mode == "no-answer":
        return "read each request and never answer"
    else:
        what = "close each connection without answering"
    return f"{what}, after {settings.duration:g} s"


def start(args: argparse.Namespace, reactor: Any,
          modules: Sequence[ModuleType]) -> Terminal:
    """Set up logging, start the terminal and the extensions as `args` say.

    Raises twisted's CannotListenError, SettingsError and UsageError.
    """
    from .server import start_terminal

    configure_logging(args.log_level)
    settings = settings_from_args(args, modules)
    # An extension may put its own connections in the terminal's place (the proxy).
    factory = {}
    for module in modules:
        build = getattr(module, "terminal_factory", None)
        made = build(args) if build is not None else None
        if made is not None:
            factory["factory"] = made
    terminal = start_terminal(reactor, settings, args.host, args.port, seed=args.seed,
                              idle_timeout=args.idle_timeout,
                              request_timeout=args.request_timeout,
                              max_connections=args.max_connections, **factory)
    for module in modules:
        start_module = getattr(module, "start", None)
        if start_module is not None:
            start_module(terminal, args, reactor)
    return terminal


def run(args: argparse.Namespace, reactor: Any = None,
        modules: Sequence[ModuleType] | None = None) -> int:
    """Start the terminal (and the extensions) as `args` say and serve until a signal."""
    from twisted.internet.error import CannotListenError

    from .server import stop_terminal

    if reactor is None:
        from twisted.internet import reactor
    modules = extensions() if modules is None else modules
    try:
        terminal = start(args, reactor, modules)
    except CannotListenError as error:
        # The same status as a web port that is taken (a UsageError, see main()).
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: "
              f"{error.socketError}", file=sys.stderr)
        return 2
    assert terminal.address is not None  # start() returns a listening terminal
    host, port = terminal.address
    if args.failure_type is not None and not args.failure:
        log.info("-ft %s without -f: failure mode", args.failure_type)
    log.info("%s %s: %s; listening on %s:%d", PROG, __version__,
             describe_terminal(args, terminal.settings, modules), host, port)

    def shutdown() -> Any:
        log.info("stopping: answering %d transactions in flight", len(terminal.pending))
        return stop_terminal(terminal)

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn bad values into one stderr line and status 2."""
    modules = extensions()
    parser = build_parser(modules)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 2
    if args.check_health is not None:
        problem = health.check(args.check_health)
        print(f"{PROG}: unhealthy: {problem}" if problem else "healthy",
              file=sys.stderr if problem else sys.stdout)
        return 1 if problem else 0
    try:
        if args.list_profiles:  # after parsing: a --profile FILE, wherever given, is checked
            print("\n".join(describe_all()))
            return 0
        return run(args, modules=modules)
    except (SettingsError, UsageError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
