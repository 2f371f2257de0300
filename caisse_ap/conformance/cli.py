"""Command line of the conformance kit: `caisse-ap-ip-conformance`.

    caisse-ap-ip-conformance --pos "python3 pay.py {host} {port} {amount}"

Runs the POS command once per scenario against a terminal that plays it,
prints each verdict, writes the reports asked for and exits 0 only when
every scenario passed (1 otherwise, 2 for a bad option). What it prints, and
the HTML report, are in French under a French locale (LANGUAGE, LC_ALL,
LC_MESSAGES or LANG fr...), in English otherwise (caisse_ap.i18n); the JUnit
XML keeps its structure in every language.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from twisted.internet.error import CannotListenError

from .. import __version__
from ..errors import CaisseApError
from ..i18n import _, set_up_command
from . import DEFAULT_POS_TIMEOUT
from .catalogue import ScenarioError, builtins, select
from .judge import Verdict, word
from .report import html_report, junit_report
from .runner import DEFAULT_JOBS, HOST, STOP_MARGIN, command_pos, run_all

PROG = "caisse-ap-ip-conformance"
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class OptionError(CaisseApError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise OptionError(message)


def _seconds(text: str) -> float:
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise argparse.ArgumentTypeError(_("invalid duration: %r") % text) from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(_("the duration must be between 0 and 3600 s, not %s")
                                         % text)
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    # argparse formats help with %: a literal percent sign would be %%.
    parser = _Parser(
        prog=PROG,
        description=_("Caisse-AP over IP conformance kit: puts a point of sale through what "
                      "real terminals and networks do (answers cut, late, unreadable, wrong "
                      "echoes, silences...)."),
        epilog=_("The POS command pays {amount} (12.50) on the terminal {host}:{port} and "
                 "exits with 0 (approved), 1 (refused) or 3 (unknown outcome); any other "
                 "status, or no conclusion in time, is a failure. Exit status: 0 if every "
                 "scenario passes, 1 otherwise, 2 for an invalid option."))
    parser.add_argument("--pos", metavar=_("COMMAND"),
                        help=_('the POS command, with {host}, {port} and {amount} (example: '
                               '"caisse-ap-ip-client -d {host} -p {port} -a {amount} '
                               '--timeout 10")'))
    parser.add_argument("--only", action="append", type=_names, metavar=_("NAMES"),
                        help=_("these scenarios only (separated by commas, repeatable)"))
    parser.add_argument("--skip", action="append", type=_names, metavar=_("NAMES"),
                        help=_("skip these scenarios (separated by commas, repeatable)"))
    parser.add_argument("--pos-timeout", type=_seconds, default=DEFAULT_POS_TIMEOUT,
                        metavar=_("SECONDS"),
                        help=_("the POS's time-out: \"no answer\" waits at most this long "
                               "plus %(margin)g s, then stops the POS; \"answer after the "
                               "time-out\" answers 1 s after it. The scenarios run in "
                               "parallel: a POS that waits 177 s costs about 180 s in all "
                               "(--pos-timeout 177) (default: %(default)g)")
                        % {"margin": STOP_MARGIN, "default": DEFAULT_POS_TIMEOUT})
    parser.add_argument("--host", default=HOST, metavar=_("ADDRESS"),
                        help=_("the address where the scenarios' terminals wait for the POS, "
                               "given as {host} (a POS in another machine or a container: "
                               "this machine's address; default: %s)") % HOST)
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                        help=_("scenarios played at the same time (default: %d)")
                        % DEFAULT_JOBS)
    parser.add_argument("--report", type=Path, metavar=_("FILE.html"),
                        help=_("write the HTML report (a self-contained page)"))
    parser.add_argument("--junit", type=Path, metavar=_("FILE.xml"),
                        help=_("write the JUnit XML report (continuous integration)"))
    parser.add_argument("--list", action="store_true",
                        help=_("list the scenarios and exit"))
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _print_list() -> None:
    for scenario in builtins().values():
        print(f"{scenario.name:28} {word(scenario.expect):17} {scenario.text('title')}")


def _line(verdict: Verdict) -> str:
    mark = _("passed") if verdict.passed else _("FAILED")
    text = (_("%(mark)-6s  %(name)-28s expected: %(expected)-17s concluded: %(concluded)s")
            % {"mark": mark, "name": verdict.scenario.name,
               "expected": word(verdict.scenario.expect), "concluded": word(verdict.concluded)})
    return "\n".join([text, *(f"        - {problem}" for problem in verdict.problems)])


def main(argv: Sequence[str] | None = None) -> int:
    set_up_command()
    try:
        args = build_parser().parse_args(argv)
        if args.list:
            _print_list()
            return EXIT_PASSED
        if not args.pos:
            raise OptionError(_("--pos COMMAND is required (or --list)"))
        try:
            args.pos.format(host="h", port=1, amount="1.00")
        except (KeyError, IndexError, ValueError) as error:
            raise OptionError(_("--pos: only {host}, {port} and {amount} are replaced (%s)")
                              % error) from None
        if "{port}" not in args.pos:
            raise OptionError(_("--pos must contain {port}: each scenario has its terminal"))
        if args.jobs < 1:
            raise OptionError(_("--jobs must be at least 1"))
        only = [name for names in args.only or [] for name in names]
        skip = [name for names in args.skip or [] for name in names]
        scenarios = select(only, skip)
    except (OptionError, ValueError) as error:
        return _usage(getattr(error, "local", str(error)))
    except ScenarioError as error:  # a broken built-in file: say where
        return _usage(str(error))
    if not scenarios:
        return _usage(_("no scenario to play"))
    print(_("%(count)d scenarios, %(jobs)d at a time, POS time-out %(timeout)g s")
          % {"count": len(scenarios), "jobs": args.jobs, "timeout": args.pos_timeout},
          flush=True)
    try:
        verdicts = run_all(scenarios, command_pos(args.pos), args.pos_timeout, args.jobs,
                           on_verdict=lambda v: print(_line(v), flush=True), host=args.host)
    except CannotListenError as error:
        return _usage(_("cannot wait for the POS on %(host)s: %(why)s")
                      % {"host": args.host, "why": error.socketError})
    failed = [v for v in verdicts if not v.passed]
    names = ", ".join(v.scenario.name for v in failed)
    print(_("%(passed)d / %(count)d scenarios passed")
          % {"passed": len(verdicts) - len(failed), "count": len(verdicts)}
          + (_("; failed: %s") % names if failed else ""))
    try:
        if args.report:
            args.report.write_text(html_report(verdicts, args.pos, args.pos_timeout),
                                   encoding="utf-8")
            print(_("report: %s") % args.report)
        if args.junit:
            args.junit.write_text(junit_report(verdicts), encoding="utf-8")
    except OSError as error:
        return _usage(_("cannot write the report: %s") % error)
    return EXIT_FAILED if failed else EXIT_PASSED


def _usage(message: str) -> int:
    print(_("%(prog)s: %(message)s") % {"prog": PROG, "message": message}, file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
