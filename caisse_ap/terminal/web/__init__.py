"""The web console and its JSON API: an optional edge of the terminal.

`add_arguments` adds the console's options (and the journal's and the amount
rules', which it shows) to the server's command line; `options_from_args`
reads them. `start_console()` serves the API and the console over
twisted.web for a terminal the composition root (app.py) has built, with its
journal, rules, outcome queue and manual decisions: the console shapes its
own JSON (transactions.py) and sends the terminal's events (control.py).

Nothing here imports twisted.web until a console starts, so that `--help`
stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...i18n import N_, _
from ...number_text import read_decimal
from ..journal import DEFAULT_MAX_ROWS, Journal, JournalError, Rows
from ..options import (
    DEFAULTS,
    MODE_FLAGS,
    UsageError,
    ip_address_arg,
    mode_from_args,
    port_arg,
    setting_arg,
)
from ..rules import AmountRules, RulesError, load_rules
from ..words import Mode
from . import farm_file
from .farm_file import TerminalSpec
from .limits import MAX_CONNECTIONS, REQUEST_TIMEOUT
from .rawlog import RecentLog

if TYPE_CHECKING:  # Twisted, which --help does without
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IListeningPort, IReactorTCP
    from twisted.web.resource import Resource

    from ..outcomes import ManualDecisions, OutcomeQueue
    from ..service import Terminal
    from .api import ControlApi
    from .farm import Farm

log = logging.getLogger("caisse_ap.terminal.web")

DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 5000
WEB_BACKLOG = 50  # connections the kernel holds past the cap (listenTCP's default)
# Where a container (Dockerfile, docker-compose.yml) passes the token: not on the
# command line, which any local user can read in the process list.
TOKEN_VARIABLE = "CAISSE_AP_WEB_TOKEN"
DEFAULT_MAX_TERMINALS = 64  # farm terminals (farm.py), besides the command line's
MAX_TERMINALS_LIMIT = 1000  # each one a port and its file descriptors
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _token(text: str) -> str:
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(_("the web token must be printable ASCII without "
                                           "spaces"))
    return text


def _host_name(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    address = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if _is_ip(address):
        return address
    if not HOST_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(_("a host name or an IP address is expected, not %r")
                                         % text)
    return name


def _max_rows(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(_("a whole number above 0 is expected, not %r")
                                         % text)
    return int(text)


def _max_terminals(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_TERMINALS_LIMIT:
        raise argparse.ArgumentTypeError(_("--max-terminals must be a whole number from 0 to "
                                           "%(max)s, not %(value)r")
                                         % {"max": MAX_TERMINALS_LIMIT, "value": text})
    return int(text)


def _max_web_connections(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 6
            and 1 <= int(text) <= 100_000):
        raise argparse.ArgumentTypeError(_("--web-max-connections must be a whole number "
                                           "from 1 to 100000, not %r") % text)
    return int(text)


def _web_seconds(text: str) -> float:
    try:
        value = float(read_decimal(text))
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(_("--web-request-timeout must be a number of seconds "
                                           "above 0, at most 3600, not %r") % text)
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(_("web console, control API, journal and amount rules"))
    add = group.add_argument
    add("--web-host", type=ip_address_arg(N_("web host")), default=DEFAULT_WEB_HOST,
        metavar=_("ADDRESS"),
        help=_("address of the web console and JSON API (default: %s; set --web-token "
               "before opening it to the network)") % DEFAULT_WEB_HOST)
    add("--web-port", type=port_arg(N_("web port")), default=DEFAULT_WEB_PORT, metavar="PORT",
        help=_("port of the web console and JSON API (default: %s; 0: any free)")
        % DEFAULT_WEB_PORT)
    add("--no-web", action="store_true", help=_("no web console and no JSON API"))
    # A string default goes through _token too: a bad variable is a usage error.
    add("--web-token", type=_token, default=os.environ.get(TOKEN_VARIABLE) or None,
        metavar=_("TOKEN"),
        help=_("require 'Authorization: Bearer TOKEN' on every API call but /api/status "
               "(default: the environment variable %s when set and not empty; listening "
               "beyond the loopback without one, the server makes one and prints the "
               "console's URL with it)") % TOKEN_VARIABLE)
    add("--web-allowed-host", type=_host_name, action="append", default=[], metavar=_("NAME"),
        help=_("a host name the console may be reached by, besides localhost and the "
               "addresses it listens on (repeatable); other names get 421"))
    add("--web-max-connections", type=_max_web_connections, default=MAX_CONNECTIONS,
        metavar="N",
        help=_("connections the web console and API take at once (default: %s; each open "
               "console takes one or two, and one per event stream); more wait")
        % MAX_CONNECTIONS)
    add("--web-request-timeout", type=_web_seconds, default=REQUEST_TIMEOUT,
        metavar=_("SECONDS"),
        help=_("seconds an HTTP request (line, headers, body) has to arrive whole, however "
               "slowly it comes (default: %s); answers, and event streams, have no time "
               "limit") % format(REQUEST_TIMEOUT, "g"))
    add("--journal", default=None, metavar=_("PATH"),
        help=_("keep the transaction journal in this SQLite file, across restarts "
               "(default: in memory)"))
    add("--journal-overflow", default=None, metavar=_("PATH"),
        help=_("with --journal: where the transactions it cannot take at stop (a full disk) "
               "are written, as JSON Lines (default: JOURNAL.unwritten.jsonl beside it, then "
               "stderr); the next start on the journal takes them back in"))
    add("--journal-max-rows", type=_max_rows, default=DEFAULT_MAX_ROWS, metavar="N",
        help=_("transactions an in-memory journal keeps, the newest (default: %s)")
        % DEFAULT_MAX_ROWS)
    add("--amount-rules", nargs="?", const=True, default=None, metavar=_("FILE"),
        help=_("let the amount's cents choose the outcome (see --list-amount-rules); "
               "FILE: a TOML file of your own rules"))
    add("--list-amount-rules", action="store_true",
        help=_("print the amount rules (the default table, or FILE's) and exit"))
    add("--max-terminals", type=_max_terminals, default=DEFAULT_MAX_TERMINALS, metavar="N",
        help=_("terminals the API may create besides this one (POST /api/terminals; "
               "default: %s; 0: none)") % DEFAULT_MAX_TERMINALS)
    add("--terminals", default=None, metavar=_("FILE"),
        help=_("also start the terminals of this TOML file, one table per terminal "
               "(port, profile, label, settings)"))
    add("--manual", action="store_true",
        help=_("manual mode: hold each payment until someone decides in the web console "
               "or through the API (POST /api/transactions/ID/decision)"))
    add("--manual-timeout", type=setting_arg("manual_timeout", number=True),
        default=DEFAULTS.manual_timeout, metavar=_("SECONDS"),
        help=_("in manual mode, seconds before an undecided payment gets AF=08 "
               "(default: %s)") % format(DEFAULTS.manual_timeout, "g"))


def rules_from_args(args: argparse.Namespace) -> AmountRules:
    """The amount rules the options name (the default table without a FILE)."""
    if isinstance(args.amount_rules, str):
        try:
            return load_rules(args.amount_rules)
        except RulesError as error:
            raise UsageError(str(error)) from None
    return AmountRules()


def journal_from_args(args: argparse.Namespace) -> Journal | None:
    """The journal the options ask for, opened: none with --no-web and no --journal, as
    nothing could read it."""
    if args.journal_overflow is not None and not args.journal:
        raise UsageError(_("--journal-overflow needs --journal"))
    if args.no_web and not args.journal:
        return None
    try:
        return Journal(args.journal, max_rows=args.journal_max_rows,
                       overflow=args.journal_overflow)
    except JournalError as error:
        raise UsageError(str(error)) from None


def settings_changes(args: argparse.Namespace) -> dict[str, object]:
    """Settings these options set: amount rules on or off, manual mode and its time-out."""
    changes: dict[str, object] = {"amount_rules": args.amount_rules is not None,
                                  "manual_timeout": args.manual_timeout}
    if args.manual:
        mode = mode_from_args(args)
        if mode != Mode.SUCCESS:
            flag = "-ft" if mode == Mode.FAILURE and not args.failure else MODE_FLAGS[mode]
            raise UsageError(_("--manual and %s cannot be used together") % flag)
        if args.no_web:
            raise UsageError(_("--manual needs the web console or API to decide: drop "
                               "--no-web"))
        changes["mode"] = Mode.MANUAL
    return changes


@dataclass(frozen=True)
class WebOptions:
    """Where and how the console listens. `made_token`: the token was made for this run
    (no --web-token for a console reachable by others), so its URL is printed."""

    host: str = DEFAULT_WEB_HOST
    port: int = DEFAULT_WEB_PORT
    token: str | None = None
    made_token: bool = False
    allowed_hosts: tuple[str, ...] = ()
    keep_alive: float | None = None  # seconds between event-stream comments (api.py's default)
    recent_log: RecentLog | None = None  # the raw log GET /api/log serves (rawlog.py)
    max_terminals: int = DEFAULT_MAX_TERMINALS  # the farm's (farm.py)
    terminals: tuple[TerminalSpec, ...] = ()  # --terminals FILE, started with the farm
    max_connections: int = MAX_CONNECTIONS  # the HTTP side's (site.py)
    request_timeout: float = REQUEST_TIMEOUT


def options_from_args(args: argparse.Namespace,
                      recent_log: RecentLog | None = None) -> WebOptions | None:
    """The console the options ask for (None with --no-web)."""
    if args.no_web:
        if args.terminals is not None:
            raise UsageError("--terminals needs the web console's API: drop --no-web")
        return None
    token = args.web_token
    made_token = token is None and not _is_loopback(args.web_host)
    if made_token:
        # Reachable by others and no token given: never open, as Jupyter does.
        token = secrets.token_urlsafe(24)
    terminals = () if args.terminals is None else farm_file.load(args.terminals)
    return WebOptions(args.web_host, args.web_port, token, made_token,
                      tuple(args.web_allowed_host), recent_log=recent_log,
                      max_terminals=args.max_terminals, terminals=terminals,
                      max_connections=args.web_max_connections,
                      request_timeout=args.web_request_timeout)


class Console:
    """A console start_console() started; `stop()` ends its event streams and closes it."""

    def __init__(self, api: ControlApi, web_port: IListeningPort):
        self.api = api
        self.web_port: IListeningPort | None = web_port

    @property
    def web_address(self) -> tuple[str, int] | None:
        if self.web_port is None:
            return None
        from twisted.internet.address import IPv4Address, IPv6Address

        address = self.web_port.getHost()
        assert isinstance(address, (IPv4Address, IPv6Address))  # a TCP port's
        return address.host, address.port

    @property
    def web_url(self) -> str | None:
        address = self.web_address
        if address is None:
            return None
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"http://{host}:{address[1]}/"

    def stop(self) -> Deferred[None]:
        """Stop serving the API (event streams end); a Deferred firing once closed."""
        from twisted.internet import defer

        self.api.detach()
        if self.web_port is None:
            return defer.succeed(None)
        port, self.web_port = self.web_port, None
        stopped = port.stopListening()
        return defer.succeed(None) if stopped is None else stopped


def start_console(reactor: IReactorTCP, terminal: Terminal, journal: Journal,
                  rules: AmountRules, queue: OutcomeQueue, manual: ManualDecisions,
                  options: WebOptions, farm: Farm | None = None) -> Console:
    """Serve the API and the console for `terminal`, its journal, rules, queue and manual
    decisions; its feed replaces the journal among the terminal's observers.

    The API answers requests whose Host is a loopback name, the web host or
    one of `allowed_hosts` (site.HostAllowlist). Call on the reactor thread.
    Raises UsageError when the web port is taken.
    """
    from twisted.internet.error import CannotListenError

    from .api import ControlApi
    from .site import HostAllowlist, LimitedPort, build_site

    console: Console | None = None

    def web_address() -> tuple[str, int] | None:
        return None if console is None else console.web_address

    api = ControlApi(terminal, journal, rules, token=options.token, web_address=web_address,
                     recent_log=options.recent_log, queue=queue, manual=manual,
                     **({} if options.keep_alive is None
                        else {"keep_alive": options.keep_alive}))
    site = build_site(api, HostAllowlist(options.host, options.allowed_hosts),
                      max_connections=options.max_connections,
                      request_timeout=options.request_timeout)
    if farm is not None:  # /api/terminals/... too (farm.py)
        from .farm import ApiRoot
        from .openapi import document

        site.resource.putChild(b"api", ApiRoot(api, farm, document))
    site.resource.putChild(b"metrics", _metrics_page(api, farm))
    try:
        port = LimitedPort(options.port, site, WEB_BACKLOG, options.host, reactor)
        port.startListening()
    except CannotListenError as error:
        raise UsageError(_("cannot listen on %(host)s:%(port)s for the web console: %(why)s")
                         % {"host": options.host, "port": options.port,
                            "why": error.socketError}) from None
    site.port = port  # stops reading at the connection cap
    console = Console(api, port)
    api.attach()  # the feed of the journal and the event stream, the keep-alive
    log.info("web console and control API on %s", console.web_url)
    if options.made_token:
        from .api import WILDCARDS

        assert console.web_address is not None  # the console listens
        host, port_number = console.web_address
        host = WILDCARDS.get(host, host)
        url = (f"http://{f'[{host}]' if ':' in host else host}:{port_number}/"
               f"#token={options.token}")
        log.warning("no --web-token for a console listening on %s: this run's token is "
                    "required; open the console with it: %s", options.host, url)
    return console


def _metrics_page(api: ControlApi, farm: Farm | None) -> Resource:
    """/metrics (metrics.py): the console's terminal as "main", and the farm's."""
    from .metrics import MAIN, Metrics, MetricsPage

    def terminals() -> list[tuple[str, Terminal, Rows | None]]:
        # One journal holds every terminal's transactions: its state is said once, as main's.
        found: list[tuple[str, Terminal, Rows | None]] = [(MAIN, api.terminal, api.journal)]
        if farm is not None:
            found.extend((kept.id, kept.member.terminal, None)
                         for kept in farm.terminals.values())
        return found

    metrics = Metrics(terminals)
    metrics.watch(MAIN, api.terminal)
    if farm is not None:
        farm.created.append(lambda kept: metrics.watch(kept.id, kept.member.terminal))
        farm.forgotten.append(lambda kept: metrics.forget(kept.id))
    return MetricsPage(metrics, api)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
