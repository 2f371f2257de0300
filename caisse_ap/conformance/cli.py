"""Command line of the conformance kit: `caisse-ap-ip-conformance`.

    caisse-ap-ip-conformance --pos "python3 pay.py {host} {port} {amount}"

Runs the POS command once per scenario against a terminal that plays it,
prints each verdict (in French), writes the reports asked for and exits 0
only when every scenario passed (1 otherwise, 2 for a bad option).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from twisted.internet.error import CannotListenError

from .. import __version__
from ..errors import CaisseApError
from . import DEFAULT_POS_TIMEOUT
from .catalogue import ScenarioError, builtins, select
from .judge import WORDS, Verdict
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
        raise argparse.ArgumentTypeError(f"durée invalide : {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"la durée doit être entre 0 et 3600 s, pas {text}")
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Kit de conformité Caisse-AP sur IP : fait passer une caisse par ce que "
                    "font les vrais terminaux et les vrais réseaux (réponses coupées, "
                    "tardives, illisibles, échos faux, silences...).",
        epilog="La commande de la caisse paie {amount} (12.50) sur le terminal {host}:{port} "
               "et sort avec 0 (accepté), 1 (refusé) ou 3 (issue inconnue) ; tout autre code, "
               "ou pas de conclusion à temps, est un échec. Code de sortie : 0 si tous les "
               "scénarios réussissent, 1 sinon, 2 pour une option invalide.")
    parser.add_argument("--pos", metavar="COMMANDE",
                        help='la commande de la caisse, avec {host}, {port} et {amount} '
                             '(exemple : "caisse-ap-ip-client -d {host} -p {port} -a {amount} '
                             '--timeout 10")')
    parser.add_argument("--only", action="append", type=_names, metavar="NOMS",
                        help="ces scénarios seulement (séparés par des virgules, répétable)")
    parser.add_argument("--skip", action="append", type=_names, metavar="NOMS",
                        help="sauter ces scénarios (séparés par des virgules, répétable)")
    parser.add_argument("--pos-timeout", type=_seconds, default=DEFAULT_POS_TIMEOUT,
                        metavar="SECONDES",
                        help="le délai d'attente de la caisse : « pas de réponse » attend au "
                             f"plus ce délai plus {STOP_MARGIN:g} s puis arrête la caisse ; "
                             "« réponse après le délai » répond 1 s après lui. Les scénarios "
                             "tournent en parallèle : une caisse qui attend 177 s coûte "
                             "environ 180 s en tout (--pos-timeout 177) "
                             f"(défaut : {DEFAULT_POS_TIMEOUT:g})")
    parser.add_argument("--host", default=HOST, metavar="ADRESSE",
                        help="l'adresse où les terminaux des scénarios attendent la caisse, "
                             "donnée comme {host} (une caisse dans une autre machine ou un "
                             f"conteneur : l'adresse de cette machine ; défaut : {HOST})")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                        help=f"scénarios joués en même temps (défaut : {DEFAULT_JOBS})")
    parser.add_argument("--report", type=Path, metavar="FICHIER.html",
                        help="écrire le rapport HTML (une page autonome)")
    parser.add_argument("--junit", type=Path, metavar="FICHIER.xml",
                        help="écrire le rapport JUnit XML (intégration continue)")
    parser.add_argument("--list", action="store_true", help="lister les scénarios et sortir")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


# Under a locale of another language than French, the result lines are in English (the
# explanations stay in French until the commands' messages go through gettext).
WORDS_EN = {"approved": "approved", "refused": "refused", "unknown": "unknown outcome",
            "failure": "POS failure"}


def english() -> bool:
    """Whether the locale names another language than French (unset, C and POSIX: French,
    the project's language)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return not value.lower().startswith(("fr", "c", "posix"))
    return False


def _print_list() -> None:
    en = english()
    for scenario in builtins().values():
        word = (WORDS_EN if en else WORDS)[scenario.expect]
        print(f"{scenario.name:28} {word:17} {scenario.title_en if en else scenario.title}")


def _line(verdict: Verdict) -> str:
    if english():
        mark = "passed" if verdict.passed else "FAILED"
        text = (f"{mark}  {verdict.scenario.name:28} expected: "
                f"{WORDS_EN[verdict.scenario.expect]:17} concluded: "
                f"{WORDS_EN[verdict.concluded]}")
    else:
        mark = "réussi" if verdict.passed else "ÉCHEC "
        text = (f"{mark}  {verdict.scenario.name:28} attendu : "
                f"{WORDS[verdict.scenario.expect]:17} conclu : {WORDS[verdict.concluded]}")
    return "\n".join([text, *(f"        - {problem}" for problem in verdict.problems)])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.list:
            _print_list()
            return EXIT_PASSED
        if not args.pos:
            raise OptionError("--pos COMMANDE est requis (ou --list)")
        try:
            args.pos.format(host="h", port=1, amount="1.00")
        except (KeyError, IndexError, ValueError) as error:
            raise OptionError(f"--pos : seuls {{host}}, {{port}} et {{amount}} sont "
                              f"remplacés ({error})") from None
        if "{port}" not in args.pos:
            raise OptionError("--pos doit contenir {port} : chaque scénario a son terminal")
        if args.jobs < 1:
            raise OptionError("--jobs doit valoir au moins 1")
        only = [name for names in args.only or [] for name in names]
        skip = [name for names in args.skip or [] for name in names]
        scenarios = select(only, skip)
    except (OptionError, ValueError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ScenarioError as error:  # a broken built-in file: say where
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not scenarios:
        print(f"{PROG}: aucun scénario à jouer", file=sys.stderr)
        return EXIT_USAGE
    en = english()
    print(f"{len(scenarios)} scenarios, {args.jobs} at a time, POS time-out "
          f"{args.pos_timeout:g} s" if en else
          f"{len(scenarios)} scénarios, {args.jobs} à la fois, délai de la caisse "
          f"{args.pos_timeout:g} s", flush=True)
    try:
        verdicts = run_all(scenarios, command_pos(args.pos), args.pos_timeout, args.jobs,
                           on_verdict=lambda v: print(_line(v), flush=True), host=args.host)
    except CannotListenError as error:
        print(f"{PROG}: impossible d'attendre la caisse sur {args.host} : "
              f"{error.socketError}", file=sys.stderr)
        return EXIT_USAGE
    failed = [v for v in verdicts if not v.passed]
    names = ", ".join(v.scenario.name for v in failed)
    if en:
        print(f"{len(verdicts) - len(failed)} / {len(verdicts)} scenarios passed"
              + (f"; failed: {names}" if failed else ""))
    else:
        print(f"{len(verdicts) - len(failed)} / {len(verdicts)} scénarios réussis"
              + (f" ; échecs : {names}" if failed else ""))
    try:
        if args.report:
            args.report.write_text(html_report(verdicts, args.pos, args.pos_timeout),
                                   encoding="utf-8")
            print(f"rapport : {args.report}")
        if args.junit:
            args.junit.write_text(junit_report(verdicts), encoding="utf-8")
    except OSError as error:
        print(f"{PROG}: impossible d'écrire le rapport : {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_PASSED


if __name__ == "__main__":
    sys.exit(main())
