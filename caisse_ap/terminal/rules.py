"""Amount-driven outcomes: the amount a POS asks for chooses what the terminal answers.

With `--amount-rules`, a POS test picks the outcome without touching the
server: 12.51 EUR is refused, 12.55 never answered, and so on (the default
table below). A TOML file given to `--amount-rules FILE` replaces the table
with the user's own rules:

    [[rule]]
    cents = 51                 # or [51, 52], or "00-50"
    outcome = "refused"        # any outcome of docs/api.md, or an AF code
    description = "card refused"

    [[rule]]
    amount = "99.99"           # exact amount in the request's currency
    action = "refund"          # debit, refund, cancellation, duplicate
    application = "cheque"     # cheque, card, or a CC code such as "00C"
    outcome = "approved"
    delay = 0.5                # seconds before answering
    payment_type = "amexcontact"

The first rule that matches decides; a request no rule matches gets the
settings' outcome. `include_defaults = true` at the top of a file appends the
default table after the file's rules. "cents" are the last two digits of the
amount field CB, whatever the currency.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol, cast

from .. import money, tags
from ..errors import CaisseApError
from ..i18n import N_, gettext
from ..messages import ACTION_BY_CODE, ACTION_BY_NAME, Action, PaymentRequest
from .behaviour import Decision, OutcomeSpec, SettingsError, TerminalSettings
from .words import DecidedBy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DECIDED_BY = DecidedBy.AMOUNT_RULE

# "application" matches the request's CC: cheque (00C), card (no CC, or any
# other code), or one CC code exactly.
APPLICATION_WORDS = ("cheque", "card")
MATCH_KEYS = ("cents", "amount", "amount_min", "amount_max", "action", "application")
SET_KEYS = ("outcome", "delay", "payment_type", "description")


class RulesError(CaisseApError, ValueError):
    """A rules file that cannot be used; the message names the file, line and rule."""


@dataclass(frozen=True)
class RuleMatch:
    """What a request must have for a rule to apply; None means anything."""

    cents: frozenset[int] | None = None
    amount: Decimal | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    action: Action | None = None
    application: str | None = None  # "cheque", "card" or a CC code

    def matches(self, request: PaymentRequest) -> bool:
        if self.cents is not None and request.amount % 100 not in self.cents:
            return False
        if self.action is not None and request.action is not self.action:
            return False
        if self.application is not None and not self._application_matches(request):
            return False
        if self.amount is None and self.amount_min is None and self.amount_max is None:
            return True
        value = _major_units(request)
        if value is None:
            return False
        return ((self.amount is None or value == self.amount)
                and (self.amount_min is None or value >= self.amount_min)
                and (self.amount_max is None or value <= self.amount_max))

    def _application_matches(self, request: PaymentRequest) -> bool:
        if self.application == "cheque":
            return request.cheque
        if self.application == "card":
            return not request.cheque
        return request.value("CC") == self.application

    def to_json(self) -> dict[str, object]:
        values: dict[str, object] = {}
        if self.cents is not None:
            values["cents"] = sorted(self.cents)
        for name in ("amount", "amount_min", "amount_max"):
            value = getattr(self, name)
            if value is not None:
                values[name] = format(value, "f")
        if self.action is not None:
            values["action"] = self.action.name.lower()
        if self.application is not None:
            values["application"] = self.application
        return values

    def describe(self, say: Callable[[str], str] = str) -> str:
        """What the rule matches, for people; `say` translates the words (gettext)."""
        parts = []
        if self.cents is not None:
            parts.append(say(N_("cents %s")) % _cents_text(self.cents))
        if self.amount is not None:
            parts.append(say(N_("amount %s")) % self.amount)
        if self.amount_min is not None:
            parts.append(say(N_("amount >= %s")) % self.amount_min)
        if self.amount_max is not None:
            parts.append(say(N_("amount <= %s")) % self.amount_max)
        if self.action is not None:
            parts.append(self.action.name.lower())  # as a rules file names it
        if self.application is not None:
            parts.append(say(N_("application %s")) % self.application)
        return ", ".join(parts) or say(N_("any request"))


@dataclass(frozen=True)
class AmountRule:
    match: RuleMatch
    outcome: OutcomeSpec
    description: str = ""
    line: int | None = field(default=None, compare=False)  # where it was read, if from a file

    def to_json(self) -> dict[str, object]:
        return {"match": self.match.to_json(), "outcome": self.outcome.to_dict(),
                "description": self.description or _describe_outcome(self.outcome)}


def _major_units(request: PaymentRequest) -> Decimal | None:
    try:
        return money.from_minor_units(request.amount, request.currency)
    except (money.AmountError, money.CurrencyError):
        return None


def _cents_text(cents: frozenset[int]) -> str:
    """".51", ".00-.50", ".51, .53" for people."""
    ordered = sorted(cents)
    if len(ordered) > 2 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f".{ordered[0]:02d}-.{ordered[-1]:02d}"
    return ", ".join(f".{c:02d}" for c in ordered)


def _describe_outcome(spec: OutcomeSpec, say: Callable[[str], str] = str) -> str:
    """The outcome for people, under the names a rules file uses; `say` translates the
    words around them (gettext)."""
    code = spec.failure_code
    if code is not None:
        text = f"{spec.outcome} (AF={code}, {tags.label(tags.FAILURE_REASONS, code)})"
    elif spec.outcome == "partial":
        text = say(N_("partial approval of half the amount when BF=1, else approved"))
    else:
        text = spec.outcome
    if spec.payment_type is not None:
        text += say(N_(", paid %s")) % spec.payment_type
    if spec.delay is not None:
        text += say(N_(", after %s s")) % format(spec.delay, "g")
    return text


def _rule(cents: Iterable[int], outcome: str, payment_type: str | None = None,
          delay: float | None = None) -> AmountRule:
    spec = OutcomeSpec.parse(outcome, delay, payment_type)
    return AmountRule(RuleMatch(cents=frozenset(cents)), spec)


DEFAULT_SOURCE = N_("default table")  # the API's "source" says it in English
# The default table (README and --list-amount-rules print it).
DEFAULT_RULES: tuple[AmountRule, ...] = (
    _rule(range(0, 51), "approved"),
    _rule([51], "refused"),
    _rule([52], "forbidden"),
    _rule([53], "abandon"),
    _rule([54], "timeout"),
    _rule([55], "no-answer"),
    _rule([56], "hang-up"),
    _rule([57], "phone-authorisation"),
    _rule([58], "partial"),
    _rule([59], "approved", payment_type="cbcontactless"),
    _rule([60], "approved", payment_type="amexcontact"),
    _rule([61], "not-completed"),
    _rule([62], "approved", delay=10.0),
)


class SettingsHolder(Protocol):
    """What the rules ask of the terminal: its current settings (service.Terminal)."""

    @property
    def settings(self) -> TerminalSettings: ...


@dataclass
class AmountRules:
    """An ordered rule table; as an outcome source of the Terminal it decides
    when the settings enable amount rules and a rule matches."""

    rules: tuple[AmountRule, ...] = DEFAULT_RULES
    source: str = DEFAULT_SOURCE
    terminal: SettingsHolder | None = None  # the Terminal: its settings say if rules are on

    def find(self, request: PaymentRequest) -> AmountRule | None:
        return next((rule for rule in self.rules if rule.match.matches(request)), None)

    def __call__(self, transaction: object, request: PaymentRequest) -> Decision | None:
        if self.terminal is None or not self.terminal.settings.amount_rules:
            return None
        rule = self.find(request)
        return None if rule is None else Decision(rule.outcome, DECIDED_BY)

    def to_json(self) -> list[dict[str, object]]:
        return [rule.to_json() for rule in self.rules]

    def listing(self) -> str:
        """The table as `--list-amount-rules` prints it, in the user's language: each
        rule's outcome, then its description when it has one."""
        say = gettext
        otherwise = gettext("anything else")
        width = max([len(rule.match.describe(say)) for rule in self.rules] + [len(otherwise)])
        source = say(self.source) if self.source == DEFAULT_SOURCE else self.source
        lines = [gettext("Amount rules (%s); the first that matches decides:") % source]
        for rule in self.rules:
            outcome = _describe_outcome(rule.outcome, say)
            if rule.description:  # its words, then what it does, under them
                lines.append(f"  {rule.match.describe(say).ljust(width)}  {rule.description}")
                lines.append(f"  {''.ljust(width)}  → {outcome}")
            else:
                lines.append(f"  {rule.match.describe(say).ljust(width)}  {outcome}")
        settings_decide = gettext("the settings decide")
        lines.append(f"  {otherwise.ljust(width)}  {settings_decide}")
        return "\n".join(lines) + "\n"


# --- Reading a TOML file --------------------------------------------------------


_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_ANY_HEADER = re.compile(r"^\s*\[")


def _rule_lines(text: str) -> list[tuple[int, int]]:
    """(first line, last line) of each [[rule]] section, 1-based, for error messages."""
    lines = text.splitlines()
    starts = [number for number, line in enumerate(lines, 1) if _HEADER.match(line)]
    spans = []
    for start in starts:
        end = start
        while end < len(lines) and not _ANY_HEADER.match(lines[end]):
            end += 1
        spans.append((start, end))
    return spans


def _key_line(text: str, span: tuple[int, int] | None, key: str) -> int | None:
    if span is None:
        return None
    lines = text.splitlines()
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number in range(span[0], span[1] + 1):
        if pattern.match(lines[number - 1]):
            return number
    return span[0]


class _RuleProblem(CaisseApError):
    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _cents(value: object) -> frozenset[int]:
    def one(item: object) -> int:
        if isinstance(item, str) and item.strip().lstrip(".").isdigit():
            item = int(item.strip().lstrip("."))
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 99:
            raise _RuleProblem("cents", f"cents must be whole numbers from 0 to 99, not {item!r}")
        return int(item)

    if isinstance(value, str) and "-" in value:
        low_text, _, high_text = value.partition("-")
        low, high = one(low_text), one(high_text)
        if low > high:
            raise _RuleProblem("cents", f"cents range {value!r} goes backwards")
        return frozenset(range(low, high + 1))
    if isinstance(value, list):
        if not value:
            raise _RuleProblem("cents", "cents must not be an empty list")
        return frozenset(one(item) for item in value)
    return frozenset([one(value)])


def _amount(key: str, value: object) -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # TOML 12.51 is a float; its shortest repr is what was written
    try:
        # parse_amount checks the type itself, with the message a user reads.
        amount = money.parse_amount(cast("str", value))
    except money.AmountError as error:
        raise _RuleProblem(key, f"{key}: {error}") from None
    if amount < 0:
        raise _RuleProblem(key, f"{key} must not be negative")
    return amount


def _action(value: object) -> Action:
    text = value.strip().lower() if isinstance(value, str) else value
    if text in ACTION_BY_NAME:
        return ACTION_BY_NAME[text]
    if isinstance(text, str) and text in ACTION_BY_CODE:
        return ACTION_BY_CODE[text]
    known = ", ".join(ACTION_BY_NAME)
    raise _RuleProblem("action", f"unknown action {value!r}; use one of {known}")


def _application(value: object) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in APPLICATION_WORDS:
            return text.lower()
        if text.upper() in tags.APPLICATIONS:
            return text.upper()
    raise _RuleProblem("application", f"unknown application {value!r}; use cheque, card or a "
                                      "CC code such as 001")


def _read_rule(entry: object) -> AmountRule:
    if not isinstance(entry, Mapping):
        raise _RuleProblem(None, "a rule must be a table of keys")
    for key in entry:
        if key not in MATCH_KEYS and key not in SET_KEYS:
            raise _RuleProblem(key, f"unknown key {key!r}; a rule matches on "
                                    f"{', '.join(MATCH_KEYS)} and sets {', '.join(SET_KEYS)}")
    if "outcome" not in entry:
        raise _RuleProblem(None, "the rule has no outcome")
    match = RuleMatch(
        cents=_cents(entry["cents"]) if "cents" in entry else None,
        amount=_amount("amount", entry["amount"]) if "amount" in entry else None,
        amount_min=_amount("amount_min", entry["amount_min"]) if "amount_min" in entry else None,
        amount_max=_amount("amount_max", entry["amount_max"]) if "amount_max" in entry else None,
        action=_action(entry["action"]) if "action" in entry else None,
        application=_application(entry["application"]) if "application" in entry else None,
    )
    if (match.amount_min is not None and match.amount_max is not None
            and match.amount_min > match.amount_max):
        raise _RuleProblem("amount_min", "amount_min is above amount_max: nothing can match")
    try:
        spec = OutcomeSpec.parse(entry["outcome"], entry.get("delay"), entry.get("payment_type"))
    except SettingsError as error:
        raise _RuleProblem(error.field, error.message) from None
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise _RuleProblem("description", "description must be text")
    return AmountRule(match, spec, description)


def parse_rules(text: str, name: str = "<rules>") -> AmountRules:
    """Rules from TOML text; RulesError naming `name`, the line and the rule if wrong."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already ends with "(at line N, column M)".
        raise RulesError(f"{name}: not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"rule", "include_defaults"})
    if unknown:
        raise RulesError(f"{name}: unknown top-level key {unknown[0]!r}; "
                         "write each rule as a [[rule]] table")
    include_defaults = document.get("include_defaults", False)
    if not isinstance(include_defaults, bool):
        raise RulesError(f"{name}: include_defaults must be true or false")
    entries = document.get("rule", [])
    if not isinstance(entries, list):
        raise RulesError(f"{name}: 'rule' must be an array of tables, written [[rule]]")
    spans = _rule_lines(text)
    rules = []
    for index, entry in enumerate(entries):
        span = spans[index] if len(spans) == len(entries) else None
        try:
            rule = _read_rule(entry)
        except _RuleProblem as problem:
            if problem.key is not None:
                line = _key_line(text, span, problem.key)
            else:
                line = span[0] if span else None
            where = f"{name}:{line}" if line else name
            raise RulesError(f"{where}: rule {index + 1}: {problem.message}") from None
        rules.append(AmountRule(rule.match, rule.outcome, rule.description,
                                span[0] if span else None))
    if not rules and not include_defaults:
        raise RulesError(f"{name}: no [[rule]] in the file")
    if include_defaults:
        rules.extend(DEFAULT_RULES)
    return AmountRules(tuple(rules), name)


def load_rules(path: str | Path) -> AmountRules:
    """Rules from a TOML file; RulesError (never OSError) when it cannot be used."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise RulesError(f"cannot read the rules file {path}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RulesError(f"{path}: not UTF-8 text (byte {error.start})") from None
    return parse_rules(text, str(path))
