"""The commands' language: French when the environment asks for it, English otherwise.

The source strings are English; `caisse_ap/locale/fr/LC_MESSAGES/caisse_ap.po`
gives their French form, compiled beside it into `caisse_ap.mo`, which ships
in the wheel. Python's gettext picks the language from the environment as
GNU gettext does: the first of LANGUAGE, LC_ALL, LC_MESSAGES and LANG that is
set, so `LANG=fr_FR.UTF-8` means French, and `LANG=C` (or `LC_ALL=C` over a
French LANG) English. Only the variables are read: the French system locale
need not be installed.

What scripts read stays the same in every language: `--json`, the exit
statuses, the API, and the server's log lines (logs are in English, as the
code). The library's errors about an amount or a request (money,
payment.make_request) stay English as str(), and carry their French form as
`local`, which the client shows; what the library says of an outcome
(PaymentResult.problem) stays English, since `--json` carries it, and carries
its form in the user's language as PaymentResult.problem_local, which the
client's result line shows.

The catalog is loaded on first use, not on import: the library's users who
never show a message never pay for it.

A new or changed message: run `.venv-tests/bin/python tools/catalog.py`, write
its French form in the .po, run it again (it compiles the .mo);
tests/test_i18n.py fails while a message has no French form or the .mo lags.
"""

from __future__ import annotations

import gettext as _gettext
import os
import sys
from functools import lru_cache
from typing import TypedDict

DOMAIN = "caisse_ap"
LOCALE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locale")


@lru_cache(maxsize=1)
def translation() -> _gettext.NullTranslations:
    """The catalog the environment asks for (English, the source strings, if none)."""
    return _gettext.translation(DOMAIN, LOCALE_DIR, fallback=True)


def gettext(message: str) -> str:
    """`message` in the user's language."""
    return translation().gettext(message)


class Said(TypedDict):
    """What said() gives: an error's English message and its form for the user."""

    message: str
    local: str


def said(template: str, values: object = None) -> Said:
    """A library error's keyword arguments: `message` in English, its str(), which
    programs and the API read, and `local` in the user's language, for the commands
    to show."""
    if values is None:
        return {"message": template, "local": gettext(template)}
    return {"message": template % values, "local": gettext(template) % values}


def N_(message: str) -> str:
    """Mark `message` for the catalog where it is defined (a constant); it is translated
    with gettext() where it is shown."""
    return message


def language() -> str:
    """"fr" or "en": the language the messages are shown in."""
    return "fr" if isinstance(translation(), _gettext.GNUTranslations) else "en"


def set_up_command() -> None:
    """For a command's main(): argparse's own words ("usage:", "unrecognized
    arguments"...) from our catalog too, and output that never fails on a character
    the terminal's encoding lacks ("€" under LANG=C with PYTHONIOENCODING=ascii)."""
    # argparse calls gettext.gettext, which looks in the process's text domain:
    # a command owns its process, so it may name ours (the GNU gettext way).
    _gettext.bindtextdomain(DOMAIN, LOCALE_DIR)
    _gettext.textdomain(DOMAIN)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


_ = gettext

# argparse's own words that our commands can show: set_up_command() has argparse look
# them up in our catalog, so they are in it (marked here for the extraction).
ARGPARSE_WORDS = (
    N_("usage: "), N_("options"), N_("positional arguments"),
    N_("show this help message and exit"), N_("argument %(argument_name)s: %(message)s"),
    N_("unrecognized arguments: %s"), N_("expected one argument"),
    N_("expected at most one argument"), N_("expected at least one argument"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("invalid %(type)s value: %(value)r"), N_("not allowed with argument %s"),
    N_("ignored explicit argument %r"), N_("one of the arguments %s is required"),
    N_("the following arguments are required: %s"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
)
