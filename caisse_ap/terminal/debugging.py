"""In-shop debugging options of the server command line: proxy, record, replay, derive.

An extension of cli.py (see its docstring): `add_arguments`,
`settings_changes` (checks the options, reads a recording to replay or
derive from), `terminal_factory` (the proxy's or the recording tap's
connection factory), `describe_terminal` (the start-up line) and `start`
(the recording's observer).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .behaviour import TerminalSettings
from .cli import UsageError, describe_mode
from .recording import RecordFile, Recording, RecordingError

log = logging.getLogger("caisse_ap.terminal")


def upstream_arg(text: str) -> tuple[str, int]:
    """HOST:PORT of the real terminal (argparse type)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"the terminal must be given as HOST:PORT, such as "
                                         f"192.168.1.20:8888, not {text!r}")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("in-shop debugging: proxy, record, replay")
    add = group.add_argument
    add("--proxy", type=upstream_arg, default=None, metavar="HOST:PORT",
        help="stand between the POS and the real terminal at HOST:PORT: pass every byte both "
             "ways, decode and check both sides, show them in the console; the outcome "
             "queue (POST /api/next) answers in the terminal's place")
    add("--record", default=None, metavar="FILE",
        help="write every exchange to FILE (JSON Lines: segments, fields, outcome), card "
             "numbers masked")
    add("--replay", default=None, metavar="FILE",
        help="answer from a recording: the recorded answer of the same action, amount and "
             "currency, with its delay and segments; other requests get the usual answer")
    add("--replay-order", action="store_true",
        help="with --replay: the recorded answers in order, whatever the requests")
    add("--derive-profile", default=None, metavar="FILE",
        help="print a terminal profile (see --profile) that answers as the terminal recorded "
             "in FILE did, and exit")


def settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    """No setting changes; checks the options and reads the recording to replay.

    --derive-profile prints its profile and exits here.
    """
    if args.derive_profile:
        _print_derived_profile(args.derive_profile)
    if args.proxy and args.replay:
        raise UsageError("--proxy and --replay cannot be used together")
    if args.replay_order and not args.replay:
        raise UsageError("--replay-order needs --replay FILE")
    args.replay_recording = None
    # Opened now, so that a file that cannot be written stops us before anything listens.
    args.record_file = None
    if args.record:
        try:
            args.record_file = RecordFile(args.record)
        except RecordingError as error:
            raise UsageError(str(error)) from None
    if args.replay:
        try:
            args.replay_recording = Recording.read(args.replay)
        except RecordingError as error:
            raise UsageError(str(error)) from None
    return {}


def _print_derived_profile(path: str) -> None:
    from .derive import check, derive_profile, profile_name

    try:
        text = derive_profile(Recording.read(path), profile_name(path))
    except RecordingError as error:
        raise UsageError(str(error)) from None
    check(text)  # what is printed can be used as it is
    sys.stdout.write(text)
    raise SystemExit(0)


def terminal_factory(args: argparse.Namespace) -> Any:
    """What builds the connections' factory: the proxy's, the recording tap's, or None."""
    from . import taps

    if args.proxy or args.replay_recording is not None:
        from . import proxy

        def build(terminal: Any) -> Any:
            upstream: proxy.TerminalUpstream | proxy.RecordingUpstream
            if args.proxy:
                upstream = proxy.TerminalUpstream(*args.proxy)
            else:
                upstream = proxy.RecordingUpstream(args.replay_recording, args.replay_order)
            return proxy.ProxyFactory(terminal, upstream)

        return build
    if args.record:
        from .server import TerminalFactory

        return lambda terminal: taps.TapFactory(TerminalFactory(terminal), terminal.reactor)
    return None


def describe_terminal(args: argparse.Namespace, settings: TerminalSettings) -> str | None:
    """What answers the POS, for the start-up line: the real terminal behind the proxy, or
    a recording (None: the simulated terminal)."""
    if args.proxy:
        host, port = args.proxy
        if ":" in host:  # an IPv6 address, bracketed as --proxy takes it
            host = f"[{host}]"
        return (f"proxy to the terminal at {host}:{port}: every request goes there, unless "
                f"the outcome queue answers it; answers checked against profile "
                f"{settings.profile.key}")
    if args.replay_recording is not None:
        order = "in order" if args.replay_order else "by action, amount and currency"
        return (f"replay of {args.replay} ({len(args.replay_recording.transactions)} "
                f"transactions, {order}); other requests: mode {settings.mode}: "
                f"{describe_mode(settings)}; profile {settings.profile.key}")
    return None


def start(terminal: Any, args: argparse.Namespace, reactor: Any) -> None:
    """Record."""
    from . import taps

    if args.record:
        mode = "proxied" if args.proxy else "replayed" if args.replay else "simulated"
        header = {"mode": mode, "settings": terminal.settings.to_dict(),
                  "upstream": "{}:{}".format(*args.proxy) if args.proxy else None}
        # The tap's or the proxy's: the segments of each connection.
        logs = terminal.listening_port.factory.logs
        recorder = taps.start_recording(terminal, args.record_file, logs, header)
        reactor.addSystemEventTrigger("after", "shutdown", recorder.record.close)
        log.info("recording every exchange in %s", args.record)
