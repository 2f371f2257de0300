"""The conformance catalogue: scenarios as TOML data files, read and checked.

A scenario says what a real terminal or network did somewhere (the fact and
its public source), how the kit's terminal reproduces it (the terminal's
outcome, profile and fields; the network's segments, pauses, trailer,
hang-up...) and what a correct point of sale concludes. docs/conformance.md
describes every key. `load()` checks a file as the profiles' loader does and
raises ScenarioError with "file:line: reason", so that a scenario that could
not be played as written is refused before any POS is run. Pure: no I/O but
reading the file given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

from .. import tlv
from ..errors import CaisseApError
from ..i18n import N_, language, said
from ..terminal import profiles
from ..terminal.behaviour import OUTCOMES, PAYMENT_TYPES
from ..tomlfile import TableReader, all_text, decode, line_of

SCENARIO_DIR = Path(__file__).parent / "scenarios"

# What a POS may conclude, and the exit status of a POS command that concludes it
# (the conventions of caisse-ap-ip-client).
CONCLUSIONS = ("approved", "refused", "unknown")
EXIT_BY_CONCLUSION = {"approved": 0, "refused": 1, "unknown": 3}
CONCLUSION_BY_EXIT = {status: word for word, status in EXIT_BY_CONCLUSION.items()}
# What the terminal does once its answer is written (or instead of answering).
THEN = ("wait-close", "close", "reset")
MAX_PAUSE = 10.0  # seconds: longer pauses would only slow the kit down
MAX_AMOUNT_DIGITS = 12


class ScenarioError(CaisseApError, ValueError):
    """A scenario that cannot be used: `where` is "file:line", `reason` one sentence."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class UnknownScenario(CaisseApError, ValueError):
    """A scenario name that is not in the catalogue: str() in English, `local` in the
    user's language (caisse_ap.i18n), for a command to show."""

    def __init__(self, name: str) -> None:
        worded = said(N_("unknown scenario %r; see --list"), (name,))
        super().__init__(worded["message"])
        self.name = name
        self.local = worded["local"]


@dataclass(frozen=True)
class TerminalPart:
    """What the simulated terminal decides and answers."""

    outcome: str = "approved"  # an outcome name of the terminal (behaviour.OUTCOMES)
    profile: str = profiles.DEFAULT
    payment_type: str = "cbcontact"
    pad_amount: bool = False
    answer_version: str | None = None
    long_receipt: bool = False  # a customer receipt long enough for an answer over 1,024 bytes
    fields: tuple[tuple[str, str], ...] = ()  # set or add these fields in the answer
    first: tuple[str, ...] = ()  # these fields right after CZ (the order is free)
    raw: str | None = None  # instead of an answer, these bytes (an unreadable answer)
    immediate: bool = False  # "request taken into account" (AE=11), whatever was asked
    drop: tuple[str, ...] = ()  # fields left out of the answer


@dataclass(frozen=True)
class NetworkPart:
    """How the answer travels: when each byte is written and how the connection ends."""

    delay: float = 0.0  # before the first byte
    after_pos_timeout: float | None = None  # the first byte this long after the POS's time-out
    cut_inside: tuple[str, ...] = ()  # a segment ends in the middle of each of these fields
    pause: float = 0.0  # between segments
    byte_pause: float | None = None  # one byte at a time, this long apart
    late: tuple[str, ...] = ()  # these fields come after the rest, `late_pause` later
    late_pause: float = 0.0
    trailer: str = ""  # written right after the answer, in the same segment
    hang_up_inside: str | None = None  # write up to the middle of this field, then `then`
    then: str = "wait-close"


@dataclass(frozen=True)
class Scenario:
    """One situation a point of sale must survive (docs/conformance.md)."""

    name: str
    title: str  # French, one line
    title_en: str
    description: str  # French
    description_en: str
    fact: str  # French: what happens in real shops, and why it matters
    source: str  # the public source of the fact
    fix: str  # French: how POS code usually gets it right
    expect: str  # one of CONCLUSIONS
    fact_en: str = ""  # the fact in English ("": only the French is known)
    fix_en: str = ""
    amount: str = "12.50"
    terminal: TerminalPart = TerminalPart()
    network: NetworkPart = NetworkPart()
    path: str = ""

    def text(self, part: str) -> str:
        """Its `title`, `description`, `fact` or `fix` in the language of the messages
        (i18n.language(): French under a French locale, English otherwise; the French
        when a scenario file has no English for it)."""
        english = getattr(self, f"{part}_en") if language() == "en" else ""
        return str(english or getattr(self, part))

    @property
    def answers(self) -> bool:
        """Whether the terminal writes anything at all."""
        return self.terminal.outcome not in ("no-answer", "hang-up")


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError (file, line, reason) if it is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}:1", f"cannot read the scenario: {error}") from None
    return parse(text, str(path))


def parse(text: str, where: str = "<scenario>") -> Scenario:
    """A scenario from TOML text; `where` names it in error messages."""
    return _scenario(TableReader(where, text, decode(text, where, ScenarioError),
                                 error=ScenarioError), where)


def _scenario(top: TableReader, where: str) -> Scenario:
    texts: dict[str, str] = {}
    for key in ("name", "title", "title_en", "description", "description_en", "fact",
                "source", "fix", "expect"):
        value = top.get(key, str)
        if value is None or not value.strip():
            raise top.fail(key if key in top.table else None, f"the scenario needs a {key}")
        texts[key] = " ".join(value.split())
    for key in ("fact_en", "fix_en"):  # optional: a scenario of one's own may be French only
        texts[key] = " ".join(top.get(key, str, "").split())
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,47}", texts["name"]):
        raise top.fail("name", f"name {texts['name']!r} must be 1 to 48 lower-case letters, "
                               "digits or dashes")
    if texts["expect"] not in CONCLUSIONS:
        raise top.fail("expect", f"expect must be one of {', '.join(CONCLUSIONS)}, "
                                 f"not {texts['expect']!r}")
    amount = top.get("amount", str, "12.50")
    if not re.fullmatch(r"\d{1,10}\.\d{2}", amount) or amount.replace(".", "").strip("0") == "":
        raise top.fail("amount", f"amount {amount!r} must be a positive amount like 12.50")
    terminal = _terminal(top.sub("terminal"))
    network = _network(top.sub("network"), terminal)
    top.check_known()
    return Scenario(**texts, amount=amount, terminal=terminal, network=network, path=where)


def _terminal(table: TableReader) -> TerminalPart:
    outcome = table.get("outcome", str, "approved")
    if outcome not in OUTCOMES or outcome in ("terminal", "terminal-split"):
        raise table.fail("outcome", f"outcome {outcome!r} is not one of the terminal's "
                                    "(approved, refused, abandon, no-answer, hang-up...)")
    profile = table.get("profile", str, profiles.DEFAULT)
    if profile not in profiles.builtins():
        raise table.fail("profile", f"profile {profile!r} is not a built-in one "
                                    f"({', '.join(profiles.builtins())})")
    payment_type = table.get("payment_type", str, "cbcontact")
    if payment_type not in PAYMENT_TYPES:
        raise table.fail("payment_type", f"payment_type {payment_type!r} is not one of "
                                         f"{', '.join(PAYMENT_TYPES)}")
    version = table.text_in("answer_version", "CZ")
    fields_table = table.sub("fields")
    answer_fields = []
    for tag in fields_table.table:
        value = fields_table.get(tag, str, "")  # there: the default is never used
        if not tlv.is_tag(tag):
            raise fields_table.fail(tag, f"{tag!r} is not a tag (two upper-case letters)")
        if not 1 <= len(value) <= tlv.MAX_VALUE_LENGTH or not (value.isascii()
                                                               and value.isprintable()):
            raise fields_table.fail(tag, f"fields.{tag} must be 1 to 999 printable ASCII "
                                         "characters")
        answer_fields.append((tag, value))
    first = table.get("first", list, [])
    if not all_text(first) or not all(tlv.is_tag(tag) for tag in first):
        raise table.fail("first", "first must list tags")
    raw = table.get("raw", str)
    if raw is not None and not raw:
        raise table.fail("raw", "raw must not be empty: an answer that says nothing is "
                                "outcome = \"hang-up\"")
    part = TerminalPart(outcome, profile, payment_type, table.get("pad_amount", bool, False),
                        version, table.get("long_receipt", bool, False), tuple(answer_fields),
                        tuple(first), raw, table.get("immediate", bool, False),
                        _tags(table, "drop"))
    table.check_known()
    return part


_Pause = TypeVar("_Pause", float, None)  # a pause's default: some seconds, or none


def _seconds(table: TableReader, key: str, default: _Pause) -> float | _Pause:
    value = table.get(key, (int, float), default)
    if value is not None and not 0 <= value <= MAX_PAUSE:
        raise table.fail(key, f"{key} must be 0 to {MAX_PAUSE:g} seconds, not {value}")
    return None if value is None else float(value)


def _network(table: TableReader, terminal: TerminalPart) -> NetworkPart:
    cut_inside = _tags(table, "cut_inside")
    late = _tags(table, "late")
    trailer = table.get("trailer", str, "")
    if trailer.strip("\r\n"):
        raise table.fail("trailer", f"trailer must be line ends (CR, LF), not {trailer!r}")
    hang_up_inside = table.get("hang_up_inside", str)
    if hang_up_inside is not None and not tlv.is_tag(hang_up_inside):
        raise table.fail("hang_up_inside", f"{hang_up_inside!r} is not a tag")
    then = table.get("then", str, "wait-close")
    if then not in THEN:
        raise table.fail("then", f"then must be one of {', '.join(THEN)}, not {then!r}")
    if hang_up_inside is not None and then == "wait-close":
        raise table.fail("hang_up_inside", "a hang-up needs then = \"close\" or \"reset\"")
    if (cut_inside or late or hang_up_inside) and terminal.raw is not None:
        raise table.fail(None, "a raw answer has no fields to cut, hold back or hang up in")
    part = NetworkPart(_seconds(table, "delay", 0.0),
                       _seconds(table, "after_pos_timeout", None), cut_inside,
                       _seconds(table, "pause", 0.0), _seconds(table, "byte_pause", None),
                       late, _seconds(table, "late_pause", 0.0), trailer, hang_up_inside, then)
    table.check_known()
    return part


def _tags(table: TableReader, key: str) -> tuple[str, ...]:
    listed = table.get(key, list, [])
    if not all_text(listed) or not all(tlv.is_tag(tag) for tag in listed):
        raise table.fail(key, f"{key} must list tags (two upper-case letters)")
    return tuple(listed)


@cache
def builtins() -> dict[str, Scenario]:
    """The scenarios shipped with the package, by name, in their files' order."""
    found: dict[str, Scenario] = {}
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        scenario = load(path)
        if scenario.name in found:
            where = f"{path}:{line_of(path.read_text(encoding='utf-8'), '', 'name')}"
            raise ScenarioError(where, f"name {scenario.name!r} is also "
                                       f"{found[scenario.name].path}'s")
        found[scenario.name] = scenario
    return found


def select(only: list[str] | None = None, skip: list[str] | None = None) -> list[Scenario]:
    """The built-in scenarios, or those named in `only`, less those in `skip`
    (UnknownScenario, a ValueError, naming an unknown one)."""
    known = builtins()
    for name in [*(only or []), *(skip or [])]:
        if name not in known:
            raise UnknownScenario(name)
    chosen = [known[name] for name in only] if only else list(known.values())
    return [scenario for scenario in chosen if scenario.name not in set(skip or [])]


__all__ = ["CONCLUSIONS", "NetworkPart", "Scenario", "ScenarioError", "TerminalPart",
           "UnknownScenario",
           "builtins", "load", "parse", "select"]
