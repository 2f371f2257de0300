"""In-shop debugging options of the server command line: proxy, record, replay, derive.

`add_arguments` adds them to the server's command line; `options_from_args`
checks them, opens the file to record into and reads the recording to
replay (--derive-profile prints its profile and exits there);
`describe_terminal` gives the start-up line. The composition root (app.py)
puts the proxy, the replay or the recording tap in place.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from ..i18n import _
from .behaviour import TerminalSettings
from .options import UsageError, describe_mode
from .recording import RecordFile, Recording, RecordingError

log = logging.getLogger("caisse_ap.terminal")


def upstream_arg(text: str) -> tuple[str, int]:
    """HOST:PORT of the real terminal (argparse type)."""
    host, _colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(_("the terminal must be given as HOST:PORT, such "
                                           "as 192.168.1.20:8888, not %r") % text)
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(_("in-shop debugging: proxy, record, replay"))
    add = group.add_argument
    add("--proxy", type=upstream_arg, default=None, metavar=_("HOST:PORT"),
        help=_("stand between the POS and the real terminal at HOST:PORT: pass every byte "
               "both ways, decode and check both sides, show them in the console; the "
               "outcome queue (POST /api/next) answers in the terminal's place"))
    add("--record", default=None, metavar=_("FILE"),
        help=_("write every exchange to FILE (JSON Lines: segments, fields, outcome), card "
               "numbers masked"))
    add("--replay", default=None, metavar=_("FILE"),
        help=_("answer from a recording: the recorded answer of the same action, amount and "
               "currency, with its delay and segments; other requests get the usual "
               "answer"))
    add("--replay-order", action="store_true",
        help=_("with --replay: the recorded answers in order, whatever the requests"))
    add("--derive-profile", default=None, metavar=_("FILE"),
        help=_("print a terminal profile (see --profile) that answers as the terminal "
               "recorded in FILE did, and exit"))


@dataclass(frozen=True)
class DebugOptions:
    """What answers in the simulated terminal's place, and where exchanges are recorded."""

    upstream: tuple[str, int] | None = None  # the real terminal's HOST:PORT (--proxy)
    replay: Recording | None = None  # the recording to answer from (--replay)
    replay_path: str | None = None
    replay_order: bool = False
    record: RecordFile | None = None  # the file every exchange goes to (--record)
    record_path: str | None = None


def options_from_args(args: argparse.Namespace) -> DebugOptions:
    """Checks the options, opens the file to record into and reads the one to replay.

    --derive-profile prints its profile and exits here.
    """
    if args.derive_profile:
        _print_derived_profile(args.derive_profile)
    if args.proxy and args.replay:
        raise UsageError(_("--proxy and --replay cannot be used together"))
    if args.replay_order and not args.replay:
        raise UsageError(_("--replay-order needs --replay FILE"))
    replay = record = None
    # Opened now, so that a file that cannot be written stops us before anything listens.
    if args.record:
        try:
            record = RecordFile(args.record)
        except RecordingError as error:
            raise UsageError(str(error)) from None
    if args.replay:
        try:
            replay = Recording.read(args.replay)
        except RecordingError as error:
            raise UsageError(str(error)) from None
    return DebugOptions(args.proxy, replay, args.replay, args.replay_order, record, args.record)


def _print_derived_profile(path: str) -> None:
    from .derive import check, derive_profile, profile_name

    try:
        text = derive_profile(Recording.read(path), profile_name(path))
    except RecordingError as error:
        raise UsageError(str(error)) from None
    check(text)  # what is printed can be used as it is
    sys.stdout.write(text)
    raise SystemExit(0)


def describe_terminal(options: DebugOptions, settings: TerminalSettings) -> str | None:
    """What answers the POS, for the start-up line: the real terminal behind the proxy, or
    a recording (None: the simulated terminal)."""
    if options.upstream:
        host, port = options.upstream
        if ":" in host:  # an IPv6 address, bracketed as --proxy takes it
            host = f"[{host}]"
        return (f"proxy to the terminal at {host}:{port}: every request goes there, unless "
                f"the outcome queue answers it; answers checked against profile "
                f"{settings.profile.key}")
    if options.replay is not None:
        order = "in order" if options.replay_order else "by action, amount and currency"
        return (f"replay of {options.replay_path} ({len(options.replay.transactions)} "
                f"transactions, {order}); other requests: mode {settings.mode}: "
                f"{describe_mode(settings)}; profile {settings.profile.key}")
    return None
