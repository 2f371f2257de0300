"""Keep the French catalog of the commands in step with the code (needs Babel, a test
dependency: `pip install -r requirements-dev.txt`).

    python tools/catalog.py          # add new messages to the .po, drop gone ones, compile
    python tools/catalog.py --check  # exit 1, saying what, if the .po or .mo lags behind

The messages are those the code marks with _(), gettext(), N_() or said()
(a profile's French source is its own `source_fr`, data of the profile). A new
message enters the .po untranslated: write its French form, then run this again to
compile `caisse_ap.mo`, which is committed beside the .po so that an installed
package needs no tool to speak French (tests/test_i18n.py checks both agree).
"""

from __future__ import annotations

import gettext
import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "caisse_ap"
PO_FILE = PACKAGE / "locale" / "fr" / "LC_MESSAGES" / "caisse_ap.po"
MO_FILE = PO_FILE.with_suffix(".mo")
KEYWORDS = {"_": None, "gettext": None, "N_": None, "said": None}
HEADER = """\
# French messages of the caisse-ap-ip commands (see caisse_ap/i18n.py).
# Distributed under the same license as caisse-ap-ip (GPL-3.0-or-later).
# Kept up to date by tools/catalog.py; write the French forms by hand.
#"""


def code_messages() -> dict[str, str]:
    """Every message the code marks, with a comment saying where it comes from."""
    found: dict[str, str] = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
            PACKAGE, method_map=[("**.py", "python")], keywords=KEYWORDS):
        ids = message if isinstance(message, tuple) else (message,)
        for text in ids:
            if text:
                found.setdefault(text, filename)
    return found


def read_catalog() -> Catalog:
    with PO_FILE.open("rb") as file:
        return read_po(file, locale="fr", domain="caisse_ap")


def compiled(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    return buffer.getvalue()


def updated(catalog: Catalog, wanted: dict[str, str]) -> Catalog:
    """The catalog with the messages the code has, their translations kept."""
    # The old dates: the .po changes only when a message does.
    fresh = Catalog(locale="fr", domain="caisse_ap", project="caisse-ap-ip", fuzzy=False,
                    creation_date=catalog.creation_date, revision_date=catalog.revision_date,
                    language_team="French", last_translator="caisse-ap-ip",
                    header_comment=HEADER)
    for text in sorted(wanted):
        old = catalog.get(text)
        fresh.add(text, old.string if old is not None else "",
                  auto_comments=[wanted[text]], flags=old.flags if old is not None else ())
    return fresh


def problems(catalog: Catalog, wanted: dict[str, str]) -> list[str]:
    """What is missing or out of date: messages without French, gone ones, a stale .mo."""
    have = {message.id for message in catalog if message.id}
    found = [f"not in the catalog: {text!r}" for text in sorted(set(wanted) - have)]
    found += [f"no longer in the code: {text!r}" for text in sorted(have - set(wanted))]
    found += [f"no French yet: {message.id!r}" for message in catalog
              if message.id and (not message.string or message.fuzzy)]
    if compiled_messages() != {message.id: message.string for message in catalog
                               if message.id and message.string}:
        found.append(f"{MO_FILE.name} does not say what {PO_FILE.name} says: run "
                     "tools/catalog.py")
    return found


def compiled_messages() -> dict[str, str]:
    """The messages of the committed .mo, as Python's gettext reads them (its header,
    which names the tool that wrote it, left out)."""
    if not MO_FILE.exists():
        return {}
    with MO_FILE.open("rb") as file:
        messages = dict(gettext.GNUTranslations(file)._catalog)  # type: ignore[attr-defined]
    messages.pop("", None)
    return messages


def main(argv: list[str]) -> int:
    wanted = code_messages()
    catalog = read_catalog()
    if "--check" in argv:
        found = problems(catalog, wanted)
        print("\n".join(found) or "the catalog is up to date")
        return 1 if found else 0
    catalog = updated(catalog, wanted)
    with PO_FILE.open("wb") as file:
        write_po(file, catalog, width=100, omit_header=False, no_location=True)
    catalog = read_catalog()
    MO_FILE.write_bytes(compiled(catalog))
    print("\n".join(problems(catalog, wanted)) or "the catalog is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
