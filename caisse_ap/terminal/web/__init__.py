"""The server's control side: JSON API, web console, journal and amount rules.

An extension of the server command line (see cli.py): `add_arguments`,
`settings_changes` and `start` hook its options in. `start_services()` does
the same for code (caisse_ap.testing): attach a journal and the amount rules
to a listening Terminal and serve the API and console over twisted.web.

Nothing here imports twisted.web until a server starts, so that `--help`
stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

from ..cli import (
    DEFAULTS,
    MODE_FLAGS,
    UsageError,
    ip_address_arg,
    mode_from_args,
    port_arg,
    setting_arg,
)
from ..journal import DEFAULT_MAX_ROWS, Journal, JournalError
from ..rules import AmountRules, RulesError, load_rules
from . import rawlog

log = logging.getLogger("caisse_ap.terminal.web")

DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 5000
# The console's HTTP side (site.py): connections open at once (each console takes one
# or two, and one per event stream; more wait), seconds a request has to arrive whole.
MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 10.0
CHECKPOINT_EVERY = 5.0  # seconds between journal checkpoints, off the reactor thread
# Where a container (Dockerfile, docker-compose.yml) passes the token: not on the
# command line, which any local user can read in the process list.
TOKEN_VARIABLE = "CAISSE_AP_WEB_TOKEN"
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _token(text: str) -> str:
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError("the web token must be printable ASCII without spaces")
    return text


def _host_name(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    address = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if _is_ip(address):
        return address
    if not HOST_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"--web-allowed-host takes a host name or an IP "
                                         f"address, not {text!r}")
    return name


def _max_rows(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--journal-max-rows must be a whole number above 0, "
                                         f"not {text!r}")
    return int(text)


def _max_web_connections(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 6
            and 1 <= int(text) <= 100_000):
        raise argparse.ArgumentTypeError(f"--web-max-connections must be a whole number from "
                                         f"1 to 100000, not {text!r}")
    return int(text)


def _web_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"--web-request-timeout must be a number of seconds "
                                         f"above 0, at most 3600, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("web console, control API, journal and amount rules")
    add = group.add_argument
    add("--web-host", type=ip_address_arg("web host"), default=DEFAULT_WEB_HOST, metavar="ADDRESS",
        help=f"address of the web console and JSON API (default: {DEFAULT_WEB_HOST}; "
             "set --web-token before opening it to the network)")
    add("--web-port", type=port_arg("web port"), default=DEFAULT_WEB_PORT, metavar="PORT",
        help=f"port of the web console and JSON API (default: {DEFAULT_WEB_PORT}; 0: any free)")
    add("--no-web", action="store_true", help="no web console and no JSON API")
    # A string default goes through _token too: a bad variable is a usage error.
    add("--web-token", type=_token, default=os.environ.get(TOKEN_VARIABLE) or None,
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on every API call but /api/status "
             f"(default: the environment variable {TOKEN_VARIABLE} when set and not empty; "
             "listening beyond the loopback without one, the server makes one and prints "
             "the console's URL with it)")
    add("--web-allowed-host", type=_host_name, action="append", default=[], metavar="NAME",
        help="a host name the console may be reached by, besides localhost and the "
             "addresses it listens on (repeatable); other names get 421")
    add("--web-max-connections", type=_max_web_connections, default=MAX_CONNECTIONS,
        metavar="N",
        help=f"connections the web console and API take at once (default: {MAX_CONNECTIONS}; "
             "each open console takes one or two, and one per event stream); more wait")
    add("--web-request-timeout", type=_web_seconds, default=REQUEST_TIMEOUT, metavar="SECONDS",
        help="seconds an HTTP request (line, headers, body) has to arrive whole, however "
             f"slowly it comes (default: {REQUEST_TIMEOUT:g}); answers, and event streams, "
             "have no time limit")
    add("--journal", default=None, metavar="PATH",
        help="keep the transaction journal in this SQLite file, across restarts "
             "(default: in memory)")
    add("--journal-overflow", default=None, metavar="PATH",
        help="with --journal: where the transactions it cannot take at stop (a full disk) "
             "are written, as JSON Lines (default: JOURNAL.unwritten.jsonl beside it, then "
             "stderr); the next start on the journal takes them back in")
    add("--journal-max-rows", type=_max_rows, default=DEFAULT_MAX_ROWS, metavar="N",
        help=f"transactions an in-memory journal keeps, the newest (default: {DEFAULT_MAX_ROWS})")
    add("--amount-rules", nargs="?", const=True, default=None, metavar="FILE",
        help="let the amount's cents choose the outcome (see --list-amount-rules); "
             "FILE: a TOML file of your own rules")
    add("--list-amount-rules", action="store_true",
        help="print the amount rules (the default table, or FILE's) and exit")
    add("--manual", action="store_true",
        help="manual mode: hold each payment until someone decides in the web console or "
             "through the API (POST /api/transactions/ID/decision)")
    add("--manual-timeout", type=setting_arg("manual_timeout"), default=DEFAULTS.manual_timeout,
        metavar="SECONDS",
        help="in manual mode, seconds before an undecided payment gets AF=08 "
             f"(default: {DEFAULTS.manual_timeout:g})")


def _rules_from_args(args: argparse.Namespace) -> AmountRules:
    if isinstance(args.amount_rules, str):
        try:
            return load_rules(args.amount_rules)
        except RulesError as error:
            raise UsageError(str(error)) from None
    return AmountRules()


def _journal_from_args(args: argparse.Namespace) -> Journal | None:
    """The journal the options ask for: none with --no-web and no --journal, as nothing
    could read it."""
    if args.journal_overflow is not None and not args.journal:
        raise UsageError("--journal-overflow needs --journal")
    if args.no_web and not args.journal:
        return None
    try:
        return Journal(args.journal, max_rows=args.journal_max_rows,
                       overflow=args.journal_overflow)
    except JournalError as error:
        raise UsageError(str(error)) from None


def settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    """Settings the options set; also loads the rules file (and lists it if asked)."""
    rules = _rules_from_args(args)
    if args.list_amount_rules:
        sys.stdout.write(rules.listing())
        raise SystemExit(0)
    args.loaded_amount_rules = rules
    # Opened now, so that a journal that cannot be used stops us before anything listens.
    args.opened_journal = _journal_from_args(args)
    changes: dict[str, Any] = {"amount_rules": args.amount_rules is not None,
                               "manual_timeout": args.manual_timeout}
    if args.manual:
        mode = mode_from_args(args)
        if mode != "success":
            flag = "-ft" if mode == "failure" and not args.failure else MODE_FLAGS[mode]
            raise UsageError(f"--manual and {flag} cannot be used together")
        if args.no_web:
            raise UsageError("--manual needs the web console or API to decide: drop --no-web")
        changes["mode"] = "manual"
    return changes


@dataclass
class Services:
    """What start_services() started. To stop, after the terminal: `stop_web()`, then
    `close_journal()` once the transactions in flight are answered."""

    terminal: Any
    journal: Journal | None
    rules: AmountRules
    api: Any = None
    web_port: Any = None
    _checkpoints: Any = field(default=None, repr=False)

    @property
    def web_address(self) -> tuple[str, int] | None:
        if self.web_port is None:
            return None
        address = self.web_port.getHost()
        return address.host, address.port

    @property
    def web_url(self) -> str | None:
        address = self.web_address
        if address is None:
            return None
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"http://{host}:{address[1]}/"

    def stop_web(self) -> Any:
        """Stop serving the API (event streams end); a Deferred firing once closed."""
        from twisted.internet import defer

        if self.api is not None:
            self.api.detach()
        if self.web_port is None:
            return defer.succeed(None)
        port, self.web_port = self.web_port, None
        return defer.maybeDeferred(port.stopListening)

    def _checkpoint(self) -> Any:
        """The bulk of the checkpoint in a thread, its end on the reactor (journal.py)."""
        from twisted.internet import threads

        journal = self.journal
        assert journal is not None  # checkpoints run only for a journal

        def restart(_: Any) -> None:
            journal.restart_log()

        return threads.deferToThread(journal.checkpoint).addCallback(restart)

    def close_journal(self) -> None:
        if self._checkpoints is not None and self._checkpoints.running:
            self._checkpoints.stop()
        if self.journal is not None:
            self.journal.close()


def start_services(reactor: Any, terminal: Any, *, web: bool = True,
                   web_host: str = DEFAULT_WEB_HOST, web_port: int = DEFAULT_WEB_PORT,
                   token: str | None = None, journal: Journal | None = None,
                   rules: AmountRules | None = None, keep_alive: float | None = None,
                   allowed_hosts: tuple[str, ...] = (), recent_log: Any = None,
                   web_limits: dict[str, Any] | None = None) -> Services:
    """Attach the journal and amount rules to `terminal` and serve the API (unless not `web`).

    The API answers requests whose Host is a loopback name, `web_host` or one
    of `allowed_hosts` (site.HostAllowlist). Without `journal`, the API gets
    one in memory; without `web` either, there is none, as nothing could read
    it.

    `web_limits`: max_connections and request_timeout of the console's HTTP side
    (site.QuietSite; default: site.MAX_CONNECTIONS, site.REQUEST_TIMEOUT).

    Call on the reactor thread, right after the terminal starts listening.
    Raises CannotListenError when the web port is taken.
    """
    from twisted.internet import task

    if journal is None and web:
        journal = Journal()
    rules = rules if rules is not None else AmountRules()
    services = Services(terminal, journal, rules)
    if web:  # listening first: if the port is taken, nothing is attached yet
        assert journal is not None  # made above when none was given
        from .api import ControlApi
        from .site import HostAllowlist, build_site

        # recent_log: the raw log GET /api/log serves (rawlog.py), if any.
        options: dict[str, Any] = {"recent_log": recent_log}
        if keep_alive is not None:
            options["keep_alive"] = keep_alive
        services.api = ControlApi(terminal, journal, rules, token=token,
                                  web_address=lambda: services.web_address, **options)
        site = build_site(services.api, HostAllowlist(web_host, allowed_hosts),
                          **(web_limits or {}))
        services.web_port = site.port = reactor.listenTCP(web_port, site, interface=web_host)
    rules.terminal = terminal
    terminal.outcome_sources.append(rules)
    if journal is None:
        return services
    # A journal in a file numbers after the transactions of earlier runs.
    terminal.next_id = max(terminal.next_id, journal.last_id() + 1)
    terminal.counts["interrupted"] += journal.interrupted
    journal.write_in_groups(reactor)
    if services.api is not None:
        services.api.attach()  # the queue, manual mode, the journal and the event stream
    else:
        # First, so that whoever hears of a transaction next can read it back.
        terminal.observers.insert(0, journal)
    if not journal.in_memory:
        services._checkpoints = task.LoopingCall(services._checkpoint)
        services._checkpoints.clock = reactor
        services._checkpoints.start(CHECKPOINT_EVERY, now=False)
    return services


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


def start(terminal: Any, args: argparse.Namespace, reactor: Any) -> Services:
    """The command line's hook: start the services as the options say."""
    from twisted.internet.error import CannotListenError

    journal = args.opened_journal if hasattr(args, "opened_journal") else _journal_from_args(args)
    rules = getattr(args, "loaded_amount_rules", None) or _rules_from_args(args)
    token = args.web_token
    made_token = token is None and not args.no_web and not _is_loopback(args.web_host)
    if made_token:
        # Reachable by others and no token given: never open, as Jupyter does.
        token = secrets.token_urlsafe(24)
    recent_log = None if args.no_web else rawlog.install()
    try:
        services = start_services(reactor, terminal, web=not args.no_web,
                                  web_host=args.web_host, web_port=args.web_port,
                                  token=token, journal=journal, rules=rules,
                                  allowed_hosts=tuple(args.web_allowed_host),
                                  recent_log=recent_log,
                                  web_limits={"max_connections": args.web_max_connections,
                                              "request_timeout": args.web_request_timeout})
    except CannotListenError as error:
        if journal is not None:
            journal.close()
        raise UsageError(f"cannot listen on {args.web_host}:{args.web_port} for the web "
                          f"console: {error.socketError}") from None
    if journal is None:
        log.info("no transaction journal (--no-web without --journal)")
    else:
        where = f"in {journal.path}" if not journal.in_memory else "in memory"
        log.info("transaction journal %s (transactions already recorded: %d)", where,
                 journal.count())
    if terminal.settings.amount_rules:
        log.info("amount rules on (%s): the cents of the amount choose the outcome",
                 rules.source)
    if services.web_url is not None:
        log.info("web console and control API on %s", services.web_url)
        if made_token:
            from .api import WILDCARDS

            assert services.web_address is not None  # the console listens
            host, port = services.web_address
            host = WILDCARDS.get(host, host)
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}/#token={token}"
            log.warning("no --web-token for a console listening on %s: this run's token is "
                        "required; open the console with it: %s", args.web_host, url)
    # Event streams end before the web port closes; the journal closes last, once
    # the terminal has answered (and recorded) the transactions in flight.
    reactor.addSystemEventTrigger("during", "shutdown", services.stop_web)
    reactor.addSystemEventTrigger("after", "shutdown", services.close_journal)
    if recent_log is not None:
        reactor.addSystemEventTrigger("after", "shutdown", rawlog.uninstall, recent_log)
    return services
