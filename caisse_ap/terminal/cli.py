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
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from .. import __version__
from ..connection import REQUEST_TIMEOUT
from ..i18n import N_, _, language, set_up_command
from ..number_text import read_decimal, with_point
from . import behaviour, health
from .behaviour import SettingsError, TerminalSettings
from .profiles import DEFAULT as DEFAULT_PROFILE
from .profiles import Profile, ProfileError, describe_all
from .profiles import available as available_profiles
from .profiles import find as find_profile

if TYPE_CHECKING:  # the service imports Twisted, which --help does without
    from .service import Terminal

PROG = "caisse-ap-ip-server"
EXTENSIONS = ("caisse_ap.terminal.web", "caisse_ap.terminal.serial",
              "caisse_ap.terminal.debugging", "caisse_ap.conformance.manual")
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
                raise UsageError(_("-ft and %s cannot be used together") % MODE_FLAGS[mode])
            return mode
    return "failure" if args.failure_type is not None else "success"


class UsageError(ValueError):
    """A bad option value found after parsing (one line on stderr, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _("%(prog)s: error: %(message)s") % {"prog": self.prog,
                                                          "message": message} + "\n")


def setting_arg(name: str, number: bool = False) -> Callable[[str], Any]:
    """An argparse type that checks one setting with the same rules as the API; a
    `number` takes a decimal comma as a point ("0,5")."""
    def check(text: str) -> Any:
        try:
            return behaviour.check_setting(name, with_point(text) if number else text)
        except SettingsError as error:
            raise argparse.ArgumentTypeError(setting_message(error, text)) from None
    check.__name__ = name  # argparse names the type in some messages
    return check


def setting_message(error: SettingsError, text: str) -> str:
    """What a bad option value gets: in English, the API's own sentence; in French, one
    said from the error's code and limits (the API's message stays English, for scripts)."""
    if language() == "en":
        return error.message
    limits = error.limits or {}
    values = {"value": text, "choices": ", ".join(behaviour.PAYMENT_TYPES),
              "max": format(limits.get("max", limits.get("max_length", 0)), "g"),
              "min": format(limits.get("min", limits.get("above", 0)), "g")}
    messages = {
        "not_a_number": _("a number of seconds is expected (0,5 or 0.5), not %(value)r"),
        "out_of_range": _("a number of seconds from %(min)s to %(max)s is expected, "
                          "not %(value)r") if "min" in limits else
        _("a number of seconds above %(min)s, up to %(max)s, is expected, not %(value)r"),
        "unknown_choice": _("unknown payment type %(value)r: choose from %(choices)s")
        if error.field == "payment_type" else
        _("unknown failure type %(value)r: give a name such as refused, or an AF code "
          "from 00 to 13"),
        "empty": _("give at least one currency code, such as EUR or 978")
        if error.field == "currencies" else _("the contract number cannot be blank"),
        "too_long": _("the contract number takes %(max)s characters at most, not %(value)r"),
        "not_printable_ascii": _("the contract number takes printable ASCII characters "
                                 "only (no accents), not %(value)r"),
        "invalid_format": _("4 digits such as 0301 are expected, not %(value)r"),
        "unknown_currency": _("ISO 4217 currency codes separated by commas are expected "
                              "(EUR,978), not %(value)r"),
    }
    message = messages.get(error.code)
    return message % values if message else error.message


def ip_address_arg(what: str) -> Callable[[str], str]:
    """An argparse type for a listening address ("localhost" is 127.0.0.1)."""
    def check(text: str) -> str:
        if text == "localhost":
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                _("%(what)s must be an IP address such as 0.0.0.0 or 127.0.0.1, not %(value)r")
                % {"what": _(what), "value": text}) from None
    check.__name__ = what
    return check


def port_arg(what: str) -> Callable[[str], int]:
    """An argparse type for a TCP port, 0 meaning any free one."""
    def check(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) > 65535:
            raise argparse.ArgumentTypeError(_("%(what)s must be 0 to 65535, not %(value)r")
                                             % {"what": _(what), "value": text})
        return int(text)
    check.__name__ = what
    return check


def _positive(kind: type, what: str) -> Callable[[str], Any]:
    """A number above 0: a float takes a decimal comma ("0,5"), an int whole digits."""
    def check(text: str) -> Any:
        try:
            value = kind(read_decimal(text)) if kind is float else kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < 1e9:
            message = (_("%(what)s must be a number above 0, not %(value)r") if kind is float
                       else _("%(what)s must be a whole number above 0, not %(value)r"))
            raise argparse.ArgumentTypeError(message % {"what": _(what), "value": text})
        return value
    check.__name__ = what
    return check


def profile_arg(text: str) -> Profile:
    """An argparse type: a profile by name or file, checked (file:line: reason if not)."""
    try:
        return find_profile(text)
    except ProfileError as error:
        if text in available_profiles() or text.endswith(".toml") or os.path.exists(text):
            raise argparse.ArgumentTypeError(str(error)) from None  # the file's own words
        raise argparse.ArgumentTypeError(
            _("unknown profile %(name)r: give one of %(names)s, or a profile file (.toml)")
            % {"name": text, "names": ", ".join(available_profiles())}) from None


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
    add("--idle-timeout", type=_positive(float, N_("idle timeout")), default=300.0,
        metavar=_("SECONDS"),
        help=_("close a connection that sends nothing for this long (default: 300)"))
    add("--max-connections", type=_positive(int, N_("max connections")), default=1000,
        metavar="N", help=_("connections open at once; more wait until one closes "
                            "(default: 1000)"))
    add("--request-timeout", type=_positive(float, N_("request timeout")),
        default=REQUEST_TIMEOUT, metavar=_("SECONDS"),
        help=_("refuse (AF=09) a request left unfinished after this much silence "
               "(default: %s)") % format(REQUEST_TIMEOUT, "g"))
    add("--check-health", type=health.address_arg, default=None, metavar=_("HOST:PORT"),
        help=_("check that the terminal listening at HOST:PORT serves, and exit: status 0 "
               "if it does, 1 if not (a container's health check)"))
    add("--version", action="version", version=f"%(prog)s {__version__}",
        help=_("show the version and exit"))


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
        description=_("Simulated Caisse-AP over IP payment terminal: point-of-sale software "
                      "connects to it and gets the answers a real French terminal gives."),
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
        print(_("%(prog)s: error: cannot listen on %(host)s:%(port)s: %(why)s")
              % {"prog": PROG, "host": args.host, "port": args.port, "why": error.socketError},
              file=sys.stderr)
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
    set_up_command()
    modules = extensions()
    parser = build_parser(modules)
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
        return run(args, modules=modules)
    except (SettingsError, UsageError) as error:
        print(_("%(prog)s: error: %(message)s") % {"prog": PROG, "message": error},
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
