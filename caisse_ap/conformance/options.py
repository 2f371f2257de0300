"""The options of `caisse-ap-ip-server --conformance` (the kit for a POS driven by hand,
manual.py), read without Twisted: `--help` stays fast."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..i18n import _
from ..terminal.options import UsageError
from .catalogue import select
from .session import ConformanceSession

DEFAULT_REPORT = "conformite.html"
DEFAULT_POS_TIMEOUT = 180.0  # what POS integrations usually wait


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(_("conformance kit for a POS driven by hand"))
    add = group.add_argument
    add("--conformance", action="store_true",
        help=_("answer each payment with the next scenario of the conformance kit and ask "
               "what the POS showed, on this console or in the web console's page "
               "/conformance.html; then write the report (and stop, with --no-web)"))
    add("--conformance-only", default=None, metavar=_("NAMES"),
        help=_("with --conformance: these scenarios only (commas)"))
    add("--conformance-skip", default=None, metavar=_("NAMES"),
        help=_("with --conformance: skip these scenarios (commas)"))
    add("--conformance-report", default=DEFAULT_REPORT, metavar=_("FILE.html"),
        help=_("with --conformance: the HTML report (default %s)") % DEFAULT_REPORT)
    add("--conformance-pos-timeout", type=float, default=DEFAULT_POS_TIMEOUT,
        metavar=_("SECONDS"),
        help=_("with --conformance: how long the POS waits for an answer (the late answer "
               "comes 1 s after it; default %g)") % DEFAULT_POS_TIMEOUT)


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@dataclass(frozen=True)
class ConformanceOptions:
    """A session of --conformance: its scenarios, the POS's time-out, the report."""

    session: ConformanceSession
    pos_timeout: float
    report: Path
    stop_when_done: bool  # without the web console, the command ends with the session


def options_from_args(args: argparse.Namespace) -> ConformanceOptions | None:
    """The session the options ask for (None without --conformance), checked."""
    if not args.conformance:
        for option in ("only", "skip"):
            if getattr(args, f"conformance_{option}"):
                raise UsageError(_("--conformance-%s needs --conformance") % option)
        return None
    if not 0 < args.conformance_pos_timeout <= 3600:
        raise UsageError(_("--conformance-pos-timeout must be between 0 and 3600 seconds"))
    try:
        scenarios = select(_names(args.conformance_only), _names(args.conformance_skip))
    except ValueError as error:
        raise UsageError(getattr(error, "local", str(error))) from None
    return ConformanceOptions(ConformanceSession(scenarios), args.conformance_pos_timeout,
                              Path(args.conformance_report), stop_when_done=args.no_web)


__all__ = ["ConformanceOptions", "add_arguments", "options_from_args"]
