"""What the simulated terminal answers, and when: pure functions, no I/O.

Given a parsed `PaymentRequest`, the `TerminalSettings` and an outcome
(`OutcomeSpec`), this module builds the answer a real French terminal would
send: echoes, card data of the right scheme, the customer receipt. Time and
randomness come in as arguments (a `datetime`, a `random.Random`), so that the
same inputs give the same answer and tests need no clock.

The vocabulary (modes, failure types, outcomes, payment types, the settings
object) is the one of docs/api.md, shared by the command line, the JSON API
and the web console.
"""

from __future__ import annotations

import base64
import html
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from functools import cache, cached_property, lru_cache
from typing import Any, NamedTuple

from .. import money, tags, tlv
from ..errors import CaisseApError
from ..messages import (
    CHEQUE_APPLICATION,
    ECHOED_TAGS,
    FORMAT_ERROR,
    PROTOCOL_VERSION,
    RECEIPT_WANTED,
    Action,
    PaymentRequest,
    RequestError,
)
from ..tlv import Field
from . import profiles
from .profiles import Profile
from .words import DecidedBy, Mode, OutcomeName, TransactionStatus

MODES = tuple(Mode)

# Failure types: every AF code, by name (OutcomeName).
FAILURE_TYPES: dict[OutcomeName, str] = {
    OutcomeName.UNKNOWN: "00",
    OutcomeName.AUTHORISED: "01",
    OutcomeName.PHONE_AUTHORISATION: "02",
    OutcomeName.FORCED: "03",
    OutcomeName.REFUSED: "04",
    OutcomeName.FORBIDDEN: "05",
    OutcomeName.ABANDONED: "06",
    OutcomeName.NOT_COMPLETED: "07",
    OutcomeName.TIMEOUT: "08",
    OutcomeName.FORMAT_ERROR: "09",
    OutcomeName.SELECTION_ERROR: "10",
    OutcomeName.ABANDON: "11",
    OutcomeName.UNKNOWN_ACTION: "12",
    OutcomeName.UNSUPPORTED_CURRENCY: "13",
}
FAILURE_NAMES = {code: name for name, code in FAILURE_TYPES.items()}

APPROVED = OutcomeName.APPROVED
PARTIAL = OutcomeName.PARTIAL
NO_ANSWER = OutcomeName.NO_ANSWER
HANG_UP = OutcomeName.HANG_UP
TERMINAL = OutcomeName.TERMINAL
TERMINAL_SPLIT = OutcomeName.TERMINAL_SPLIT
FORWARDED = (TERMINAL, TERMINAL_SPLIT)
OUTCOMES = tuple(OutcomeName)
# The outcomes that are not failures.
_NOT_FAILURES = frozenset((APPROVED, PARTIAL, NO_ANSWER, HANG_UP, *FORWARDED))

# Transaction statuses (docs/api.md).
# interrupted: left pending by a server that stopped without answering (journal.py).
STATUSES = tuple(TransactionStatus)

RECEIPT_WIDTH = 32
MAX_DURATION = 3600.0  # an hour: longer is surely a typo
MAX_SELLER_CONTRACT = tags.tag("CG").max_size


@dataclass(frozen=True)
class Scheme:
    """A card scheme: how its card numbers start and which AID its cards select."""

    name: str
    bins: tuple[str, ...]  # six-digit issuer prefixes of real cards of the scheme
    pan_length: int
    aid: str


# CB cards are co-badged Visa or Mastercard; a French terminal selects the CB AID.
CB = Scheme("CB", ("497010", "497401", "513283", "535110"), 16, "A0000000421010")
AMEX = Scheme("AMEX", ("374245", "375987", "371449"), 15, "A000000025010801")
DINERS = Scheme("DINERS", ("361234", "305693"), 14, "A0000001523010")
JCB = Scheme("JCB", ("353011", "356600"), 16, "A0000000651010")
UNIONPAY = Scheme("UNIONPAY", ("621483", "625094"), 16, "A000000333010101")
# Private-label (store credit) and CONECS meal-voucher cards: no public source gives
# their number ranges or AID. Their numbers start with 9 (ISO/IEC 7812: issuer
# numbers for national assignment, no bank card's), and no AI is sent (aid "").
PRIVATE_LABEL = Scheme("PRIVATIVE", ("990001", "990002"), 16, "")
CONECS = Scheme("CONECS", ("990101", "990102"), 16, "")


@dataclass(frozen=True)
class PaymentType:
    """A card payment the terminal simulates: application CC, read mode CI, scheme."""

    name: str
    application: str
    read_mode: str
    scheme: Scheme

    @property
    def label(self) -> str:
        return tags.label(tags.APPLICATIONS, self.application)

    @property
    def contactless(self) -> bool:
        return self.read_mode == "2"


PAYMENT_TYPES: dict[str, PaymentType] = {
    pt.name: pt
    for pt in (
        PaymentType("cbcontact", "001", "1", CB),
        PaymentType("cbcontactless", "00B", "2", CB),
        PaymentType("amexcontact", "002", "1", AMEX),
        PaymentType("amexcontactless", "00D", "2", AMEX),
        PaymentType("cbmagstripe", "001", "3", CB),
        PaymentType("cbmanual", "001", "4", CB),
        PaymentType("diners", "006", "1", DINERS),
        PaymentType("jcb", "009", "1", JCB),
        PaymentType("unionpay", "00U", "1", UNIONPAY),
    )
}

# The card a request that names its payment application (CC) is paid with, when the
# payment type chosen is of another application. 000 (indifferent) takes the chosen
# one, 00C is a cheque (no card). Read mode: contactless for the contactless
# applications, else contact.
APPLICATION_CARDS: dict[str, PaymentType] = {
    kind.application: kind for kind in (
        *(PaymentType(f"cc-{code.lower()}", code, "1", CB) for code in ("003", "007", "00F")),
        *(PaymentType(f"cc-{code.lower()}", code, "1", PRIVATE_LABEL)
          for code in ("004", "005", "008", "00A", "00I")),
        PaymentType("cc-00e", "00E", "1", CONECS),
        PaymentType("cc-10e", "10E", "2", CONECS),
        *reversed(PAYMENT_TYPES.values()),  # the first of each application wins
    )
}


class SettingsError(CaisseApError, ValueError):
    """A settings value, outcome or option that is not acceptable.

    `field` names what is wrong (a settings field, "outcome", "delay",
    "payment_type"); the message is one English sentence for a user; `code`
    says what is wrong for a program (the API's error codes, docs/api.md), and
    `limits` the bounds it broke ({"min": 0, "max": 3600}, {"max_length": 10}).
    """

    def __init__(self, field: str | None, message: str, code: str = "invalid_value",
                 limits: Mapping[str, object] | None = None):
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code
        self.limits = limits


# --- Settings ---------------------------------------------------------------


def _number(name: str, value: object, minimum: float, maximum: float, *,
            allow_zero: bool = True) -> float:
    """A finite number in range; numeric text is accepted (the command line gives text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SettingsError(name, f"{name} must be a number of seconds, not {value!r}",
                            "not_a_number")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer too big for a float
        raise SettingsError(name, f"{name} must be a number of seconds, not {value!r}",
                            "not_a_number") from None
    # "above" instead of "min" when the minimum itself is refused.
    limits = {"min" if allow_zero else "above": minimum, "max": maximum}
    if not math.isfinite(number) or number < minimum or number > maximum:
        raise SettingsError(name, f"{name} must be between {minimum:g} and {maximum:g} seconds, "
                                  f"not {value!r}", "out_of_range", limits)
    if not allow_zero and number == 0:
        raise SettingsError(name, f"{name} must be above 0 seconds", "out_of_range", limits)
    return number


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(name, f"{name} must be true or false, not {value!r}", "not_boolean")
    return value


def failure_code(name_or_code: object, field: str = "failure_type") -> str:
    """The AF code of a failure type given by name ("refused") or two digits ("04")."""
    text = name_or_code.strip().lower() if isinstance(name_or_code, str) else None
    if text in FAILURE_TYPES:
        return FAILURE_TYPES[OutcomeName(text)]
    if text in FAILURE_NAMES:
        return text
    raise SettingsError(field, f"unknown failure type {name_or_code!r}; use a name such as "
                               f"'refused' or an AF code from 00 to 13", "unknown_choice")


def failure_name(name_or_code: object, field: str = "failure_type") -> OutcomeName:
    """The canonical name of a failure type given by name or two-digit AF code."""
    return FAILURE_NAMES[failure_code(name_or_code, field)]


def payment_type(name: object, field: str = "payment_type") -> PaymentType:
    if isinstance(name, str) and name.strip().lower() in PAYMENT_TYPES:
        return PAYMENT_TYPES[name.strip().lower()]
    raise SettingsError(field, f"unknown payment type {name!r}; choose from "
                               f"{', '.join(PAYMENT_TYPES)}", "unknown_choice")


def _mode(value: object) -> Mode:
    if isinstance(value, str) and value in MODES:
        return Mode(value)
    raise SettingsError("mode", f"unknown mode {value!r}; choose from {', '.join(MODES)}",
                        "unknown_choice")


def _seller_contract(value: object) -> str:
    # Blank is as good as empty: a contract of spaces reaches no acquirer.
    if not isinstance(value, str) or not value.strip():
        raise SettingsError("seller_contract", "seller_contract must be non-blank text", "empty")
    if len(value) > MAX_SELLER_CONTRACT:
        raise SettingsError("seller_contract", f"seller_contract {value!r} is longer than "
                                               f"{MAX_SELLER_CONTRACT} characters", "too_long",
                            {"max_length": MAX_SELLER_CONTRACT})
    if not (value.isascii() and value.isprintable()):
        raise SettingsError("seller_contract", f"seller_contract {value!r} must be printable "
                                               "ASCII", "not_printable_ascii")
    return value


def _answer_version(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 4 and value.isascii() and value.isdigit():
        return value
    raise SettingsError("answer_version", f"answer_version must be 4 digits such as '0301', "
                                          f"or null to echo the request's, not {value!r}",
                        "invalid_format")


def _profile(value: object) -> Profile:
    """A profile given as itself or by the name of one in use (never a path: the API
    must not read files)."""
    if isinstance(value, Profile):
        return value
    known = profiles.available()
    if isinstance(value, str) and value in known:
        return known[value]
    raise SettingsError("profile", f"unknown profile {value!r}; choose from {', '.join(known)}",
                        "unknown_choice")


def _currencies(value: object) -> tuple[str, ...] | None:
    """Accepted currencies as numeric codes; alphabetic codes ("EUR") are converted."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part for part in value.replace(" ", "").split(",") if part]
    if not isinstance(value, (list, tuple)) or not value:
        raise SettingsError("currencies", "currencies must be a non-empty list of ISO 4217 "
                                          "codes, or null for all of them", "empty")
    codes: list[str] = []
    for code in value:
        if isinstance(code, bool) or not isinstance(code, (str, int)):
            raise SettingsError("currencies", f"currency {code!r} is not an ISO 4217 code",
                                "unknown_currency")
        try:
            numeric = money.currency(code).numeric
        except money.CurrencyError:
            raise SettingsError("currencies", f"currency {code!r} is not an ISO 4217 "
                                              "code", "unknown_currency") from None
        if numeric not in codes:
            codes.append(numeric)
    return tuple(codes)


_VALIDATORS: dict[str, Callable[[object], object]] = {
    "mode": _mode,
    "failure_type": failure_name,
    "duration": lambda v: _number("duration", v, 0, MAX_DURATION),
    "payment_type": lambda v: payment_type(v).name,
    "seller_contract": _seller_contract,
    "answer_version": _answer_version,
    "pad_amount": lambda v: _boolean("pad_amount", v),
    "currencies": _currencies,
    "amount_rules": lambda v: _boolean("amount_rules", v),
    "manual_timeout": lambda v: _number("manual_timeout", v, 0, 24 * 3600, allow_zero=False),
    "profile": _profile,
}

# Settings whose value a profile gives; a change of profile sets them, unless the
# same change gives them too (the command line's -sc, --answer-version, --pad-amount).
PROFILE_SETTINGS = ("answer_version", "pad_amount", "seller_contract")  # Profile's names too


def check_setting(name: str, value: object) -> object:
    """The checked, canonical value of one setting (SettingsError if it is not acceptable).

    The command line uses it to check each option as argparse reads it.
    """
    validator = _VALIDATORS.get(name)
    if validator is None:
        raise SettingsError(name, f"unknown setting {name!r}", "unknown_field")
    return validator(value)


@dataclass(frozen=True)
class TerminalSettings:
    """Everything that decides how the terminal answers (docs/api.md, settings object).

    Immutable: a change builds new settings with `updated()`, which takes
    effect for the next transaction. Build from untrusted input with
    `from_dict()`; both validate every field and raise SettingsError naming
    the field, so that nothing changes when a value is wrong.
    """

    mode: Mode = Mode.SUCCESS
    failure_type: OutcomeName = OutcomeName.ABANDON  # a failure's name
    duration: float = 3.0
    payment_type: str = "cbcontact"
    seller_contract: str = "424242"
    answer_version: str | None = None
    pad_amount: bool = False
    currencies: tuple[str, ...] | None = None
    amount_rules: bool = False
    manual_timeout: float = 60.0
    profile: Profile = field(default_factory=lambda: profiles.builtin(profiles.DEFAULT))

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> TerminalSettings:
        """Settings from a (possibly partial) dict; missing fields take their defaults."""
        return cls().updated(values)

    def updated(self, changes: Mapping[str, object]) -> TerminalSettings:
        """New settings with `changes` applied; SettingsError on any unknown field or bad value."""
        if not isinstance(changes, Mapping):
            raise SettingsError(None, "settings must be a JSON object", "object_required")
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise SettingsError(name, f"unknown setting {name!r}", "unknown_field")
        # Each value of the type its validator gives: the field's (mypy cannot follow).
        checked: dict[str, Any] = {name: _VALIDATORS[name](value)
                                   for name, value in changes.items()}
        if "profile" in checked:
            for setting in PROFILE_SETTINGS:
                checked.setdefault(setting, getattr(checked["profile"], setting))
        new = replace(self, **checked)
        _check_contract_length(new)
        return new

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        values["profile"] = self.profile.key
        if self.currencies is not None:
            values["currencies"] = list(self.currencies)
        return values

    @cached_property
    def accepted_actions(self) -> frozenset[str]:
        """The CD codes PaymentRequest.parse accepts: the profile's CD table."""
        return self.profile.action_codes

    @cached_property  # asked for every request; the settings never change
    def accepted_currencies(self) -> frozenset[str]:
        """The numeric codes PaymentRequest.parse accepts (every ISO 4217 code by default)."""
        if self.currencies is None:
            return money.numeric_codes()
        return frozenset(self.currencies)

    @property
    def failure_code(self) -> str:
        return FAILURE_TYPES[self.failure_type]


def _check_contract_length(settings: TerminalSettings) -> None:
    """A profile that gives CG a length (7 on Nepting) holds any contract number to it."""
    length = settings.profile.contract_length
    if length is not None and len(settings.seller_contract) != length:
        raise SettingsError("seller_contract", f"seller_contract {settings.seller_contract!r} "
                                               f"must be {length} characters long: CG has "
                                               f"{length} on profile {settings.profile.key}")


# --- Outcomes ---------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeSpec:
    """The outcome chosen for one transaction: by the settings, the queue, a rule or a person.

    `outcome` is a canonical name of OUTCOMES (a failure is always by name,
    "refused", never "04"); `delay` None means the settings' duration;
    `payment_type` None means the settings' one.
    """

    outcome: OutcomeName
    delay: float | None = None
    payment_type: str | None = None
    # Whether a person chose it (-ft, the queue, a rule, the keypad: parse() sets it)
    # rather than it being the terminal's default failure (abandon, the manual mode's
    # time-out): a cheque fails with the profile's cheque failure (04) unless chosen.
    chosen: bool = field(default=False, compare=False)

    @classmethod
    def parse(cls, outcome: object, delay: object = None,
              payment_type_name: object = None) -> OutcomeSpec:
        """Read an outcome by name or AF code: "approved", "partial", "no-answer", "hang-up",
        "refused", "04"... Raises SettingsError naming the bad part."""
        if not isinstance(outcome, str):
            raise SettingsError("outcome", f"outcome must be text, not {outcome!r}", "not_text")
        text = outcome.strip().lower()
        name = OutcomeName(text) if text in _NOT_FAILURES else failure_name(text, "outcome")
        checked_delay = None if delay is None else _number("delay", delay, 0, MAX_DURATION)
        checked_type = (None if payment_type_name is None
                        else payment_type(payment_type_name).name)
        return cls(name, checked_delay, checked_type, chosen=True)

    @classmethod
    def from_dict(cls, values: object) -> OutcomeSpec:
        """From the JSON form {"outcome": ..., "delay": ..., "payment_type": ...}."""
        if isinstance(values, str):
            return cls.parse(values)
        if not isinstance(values, Mapping):
            raise SettingsError("outcome", "an outcome must be a JSON object or a name",
                                "object_required")
        unknown = set(values) - {"outcome", "delay", "payment_type"}
        if unknown:
            name = sorted(unknown)[0]
            raise SettingsError(name, f"unknown outcome field {name!r}", "unknown_field")
        if "outcome" not in values:
            raise SettingsError("outcome", "the outcome is missing", "required")
        return cls.parse(values["outcome"], values.get("delay"), values.get("payment_type"))

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = {"outcome": self.outcome}
        if self.delay is not None:
            values["delay"] = self.delay
        if self.payment_type is not None:
            values["payment_type"] = self.payment_type
        return values

    @property
    def failure_code(self) -> str | None:
        """The AF code when the outcome is a failure, else None."""
        return FAILURE_TYPES.get(self.outcome)


@dataclass(frozen=True)
class Decision:
    """An outcome and who chose it (docs/api.md, transaction.decided_by)."""

    spec: OutcomeSpec
    decided_by: DecidedBy = DecidedBy.SETTINGS


def decide_from_settings(settings: TerminalSettings) -> tuple[Decision, float]:
    """The settings' outcome for a request no outcome source took, and its delay.

    In manual mode with nobody to decide (no web API), the customer never
    types anything: the terminal gives up after manual_timeout with AF=08.
    """
    mode = settings.mode
    if mode == Mode.MANUAL:
        return MANUAL_TIMEOUT, settings.manual_timeout
    return _settings_decision(mode, settings.failure_type), settings.duration


# Nobody typed anything in time: what the terminal answers in manual mode.
MANUAL_TIMEOUT = Decision(OutcomeSpec(OutcomeName.TIMEOUT), DecidedBy.MANUAL_TIMEOUT)


@lru_cache(maxsize=64)
def _settings_decision(mode: Mode, failure_type: OutcomeName) -> Decision:
    # Decisions are immutable: one per mode and failure type serves every
    # transaction, instead of two frozen dataclasses built for each.
    outcome = _MODE_OUTCOMES.get(mode, failure_type)
    chosen = outcome != TerminalSettings.failure_type  # the default failure: not chosen
    return Decision(OutcomeSpec(outcome, chosen=chosen), DecidedBy.SETTINGS)


# The outcome of each mode but failure (the failure type's) and manual (decided apart).
_MODE_OUTCOMES = {Mode.SUCCESS: APPROVED, Mode.NO_ANSWER: NO_ANSWER, Mode.HANG_UP: HANG_UP}


# --- Answers ----------------------------------------------------------------


class Card(NamedTuple):
    """The card the simulated customer used, as the answer shows it.

    A named tuple rather than a frozen dataclass: one is made per approval,
    and a frozen dataclass sets its fields one by one through
    object.__setattr__.
    """

    payment_type: PaymentType
    masked_pan: str
    expiry: str  # YYMM
    authorisation_number: str


class TerminalReply(NamedTuple):
    """What the terminal does for one request.

    `fields` is the answer to write, or None when nothing is sent (no-answer,
    hang-up). `status` is the transaction status (docs/api.md), `reason` the
    AF code of a declined or erroneous request. (A named tuple, as Card.)
    """

    fields: tuple[Field, ...] | None
    status: TransactionStatus
    reason: str | None = None
    card: Card | None = None

    @property
    def hang_up(self) -> bool:
        return self.status == TransactionStatus.HANG_UP


def luhn_check_digit(digits: str) -> str:
    """The digit that makes `digits` + it pass the Luhn check, as real card numbers do."""
    if digits.strip("0123456789"):
        raise ValueError(f"{digits!r} is not digits")
    reverse = digits[::-1].encode("ascii")
    # Every second digit from the right (check digit excluded) is doubled, digits summed.
    # translate() maps each digit to the value it adds, and sum() adds the bytes:
    # a loop in C, a sixth of the cost of int() on each character.
    total = sum(reverse[::2].translate(_DOUBLED)) + sum(reverse[1::2].translate(_PLAIN))
    return str(-total % 10)


_DIGITS = b"0123456789"
_PLAIN = bytes.maketrans(_DIGITS, bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
_DOUBLED = bytes.maketrans(_DIGITS, bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))  # 2d, digits summed

EXPIRY_MONTHS = 48  # a card expires in one of the 12 months of the next four years
AUTHORISATIONS = 10**6  # six digits
SHOWN_DIGITS = 1000  # the three drawn digits an answer shows before the check digit


def make_card(kind: PaymentType, rng: random.Random, now: datetime,
              profile: Profile | None = None) -> Card:
    """A plausible card: Luhn-valid number of the scheme (masked as the profile masks
    card numbers), expiry in the future."""
    scheme = kind.scheme
    mask = _STANDARD_MASK if profile is None else (profile.mask, profile.shown_first,
                                                   profile.shown_last)
    numbers = _CARD_NUMBERS.get((scheme.name, mask)) or _card_numbers(scheme, mask)
    expiries = _EXPIRIES.get(now.year) or _expiries(now.year)
    # One draw, split into each random part: a single call to the generator
    # instead of one per part, which cost most of an answer. 64 random bits
    # modulo under 2**38 choices: the bias is below 2**-26, and getrandbits
    # is one C call where randrange is two Python ones. The numbers and
    # expiries are tables made once: an index each.
    draw = rng.getrandbits(64) % (len(numbers) * EXPIRY_MONTHS * AUTHORISATIONS)
    draw, authorisation = divmod(draw, AUTHORISATIONS)
    number, months = divmod(draw, EXPIRY_MONTHS)
    return Card(kind, numbers[number], expiries[months], f"{authorisation:06d}")


# The masked numbers of every BIN of a scheme, by (scheme name, mask): _masked_numbers
# of each BIN in turn, so that BIN i's number `shown` is at i * SHOWN_DIGITS + shown.
_CARD_NUMBERS: dict[tuple[str, tuple[str, int, int]], tuple[str, ...]] = {}
# The 48 expiries (YYMM) a card may have, by the current year: the 12 months of each
# of the next four years.
_EXPIRIES: dict[int, tuple[str, ...]] = {}


def _card_numbers(scheme: Scheme, mask: tuple[str, int, int]) -> tuple[str, ...]:
    numbers = _CARD_NUMBERS[scheme.name, mask] = tuple(
        number for bin_ in scheme.bins for number in _masked_numbers(bin_, scheme.pan_length,
                                                                     *mask))
    return numbers


def _expiries(year: int) -> tuple[str, ...]:
    expiries = _EXPIRIES[year] = tuple(
        f"{(year + 1 + ahead) % 100:02d}{month + 1:02d}" for ahead in range(EXPIRY_MONTHS // 12)
        for month in range(12))
    return expiries


_STANDARD_MASK = ("#", 6, 4)  # BIN, hidden digits as #, last four


@cache
def _masked_numbers(bin_: str, pan_length: int, mask: str = "#", shown_first: int = 6,
                    shown_last: int = 4) -> tuple[str, ...]:
    """The masked card numbers of a BIN, one per value of the three digits drawn.

    An answer shows at most the BIN and the last four digits, so the digits in
    between are never drawn: they are zeros, and the check digit makes the
    whole number Luhn-valid. Computed once per BIN and masking instead of per card.
    """
    hidden = pan_length - len(bin_) - 4
    numbers = []
    for shown in range(SHOWN_DIGITS):
        body = f"{bin_}{'0' * hidden}{shown:03d}"
        number = body + luhn_check_digit(body)
        masked = pan_length - shown_first - shown_last
        numbers.append(number[:shown_first] + mask * masked + number[pan_length - shown_last:])
    return tuple(numbers)


def _amount_text(units: int, currency_code: str) -> str:
    """A receipt amount: "112,45 EUR" (ASCII, as terminal printers print it)."""
    try:
        return money.format_amount(units, currency_code, "en").replace(".", ",")
    except money.CurrencyError:
        return f"{units} ({currency_code})"


# What a receipt calls each action, by the profile's kind of the CD code.
_RECEIPT_OPERATION = {
    "debit": "DEBIT",
    "refund": "CREDIT",
    "cancellation": "ANNULATION",
    "duplicate": "DEBIT",
    "consultation": "CONSULTATION",
    "pre-authorisation": "PRE-AUTORISATION",
}
_TICKET_LINE = {"customer": "TICKET CLIENT A CONSERVER",
                "merchant": "TICKET COMMERCANT A CONSERVER"}


def action_kind(request: PaymentRequest, settings: TerminalSettings) -> str:
    """What the request's CD code does on this terminal (its profile's CD table)."""
    code = Action(request.action).value
    # A request built rather than parsed (tests, the library) may use another code.
    return settings.profile.actions.get(code) or profiles.USUAL_KINDS[code]


def receipt_text(request: PaymentRequest, settings: TerminalSettings, card: Card | None,
                 amount: int, now: datetime, ticket: str = "customer",
                 failure: str | None = None) -> str:
    """A receipt, as a French terminal prints it (ASCII, 32 columns).

    `ticket` is "customer" or "merchant"; `failure` the AF code of a failed
    operation, whose receipt some terminals print too.
    """
    kind = action_kind(request, settings)
    lines: list[str] = []
    if kind == "duplicate":
        lines.append("*** DUPLICATA ***")
    if card is None:
        lines.append("CHEQUE" if request.cheque else "CARTE BANCAIRE")
    else:
        payment = card.payment_type
        lines.append("CARTE BANCAIRE" if payment.scheme is CB else payment.scheme.name)
        lines.append("SANS CONTACT" if payment.contactless else "CONTACT")
        lines.append(payment.scheme.aid)
    lines.append(f"LE {now:%d/%m/%y} A {now:%H:%M:%S}")
    lines.append("TERMINAL SIMULE CAISSE-AP")
    lines.append(f"CONTRAT {settings.seller_contract}")
    lines.append(f"CAISSE {request.register}")
    if card is not None:
        lines.append(card.masked_pan)
        if failure is None:
            lines.append(f"NO AUTO {card.authorisation_number}")
    lines.append("MONTANT")
    lines.append(_amount_text(amount, request.currency))
    lines.append(_RECEIPT_OPERATION[kind])
    if failure is not None:
        lines.append("OPERATION NON EFFECTUEE")
        lines.append(f"MOTIF {failure}")
    lines.append(_TICKET_LINE[ticket])
    # Cut to the width, so that any receipt fits in ZT (at most 999 characters).
    return "\n".join(line[:RECEIPT_WIDTH].center(RECEIPT_WIDTH).rstrip()
                     for line in lines) + "\n"


def receipt_block(request: PaymentRequest, settings: TerminalSettings, card: Card | None,
                  amount: int, now: datetime, failure: str | None = None) -> str:
    """The value of ZT: the request's CK and AK, the base64 of the receipt.

    The profile decides whether CK's second digit chooses the tickets
    (customer, merchant, both) and its third one HTML; the text is Latin-1.
    """
    mode = request.value("CK") or RECEIPT_WANTED
    profile = settings.profile
    texts = [receipt_text(request, settings, card, amount, now, ticket, failure)
             for ticket in profile.tickets(mode)]
    html = profile.html(mode)
    # Both tickets when they fit in ZT, else the first one alone.
    for count in range(len(texts), 0, -1):
        text = "\n".join(texts[:count])
        if html:
            text = _html_receipt(text)
        encoded = base64.b64encode(text.encode("latin-1")).decode("ascii")
        block = tlv.encode([("CK", mode), ("AK", encoded)], bare=True).decode("ascii")
        if len(block) <= tlv.MAX_VALUE_LENGTH or count == 1:
            return block
    raise AssertionError("unreachable")  # pragma: no cover


def _html_receipt(text: str) -> str:
    return f"<html><body><pre>{html.escape(text)}</pre></body></html>"


# Where echoes go in an answer: CZ and CJ before the status, the others after.
_ECHOED_AFTER = tuple(tag for tag in ECHOED_TAGS if tag not in ("CZ", "CJ"))


def _answer(received: Iterable[Field], settings: TerminalSettings, status: list[Field],
            extra: Iterable[Field] = (), amount: int | None = None) -> tuple[Field, ...]:
    """CZ, CJ, the status, the other echoes in their usual order, then `extra`.

    Echoes are the request's fields as received, except CZ (the settings'
    answer_version when set), CB (`amount` when given, zero-padded when
    the settings ask for it) and CF (cut to the profile's cf_max). A profile
    with its own field order sorts them.
    """
    echoes = dict(received)  # the fields that are not echoed are simply not read
    if settings.answer_version is not None or "CZ" not in echoes:
        # A request whose CZ could not be read gets the usual version.
        echoes["CZ"] = settings.answer_version or PROTOCOL_VERSION
    profile = settings.profile
    if profile.cf_max is not None and "CF" in echoes:
        # A terminal that answers a shorter CF than it takes keeps its beginning.
        echoes["CF"] = echoes["CF"][:profile.cf_max]
    if "CB" in echoes:
        # A profile that echoes CB as received keeps it byte for byte unless the amount
        # changed (a partial approval).
        if amount is not None and not (profile.amount_as_received
                                       and int(echoes["CB"]) == amount):
            echoes["CB"] = money.format_minor_units(amount)
        if settings.pad_amount and echoes["CB"].isdigit():
            echoes["CB"] = echoes["CB"].zfill(profile.amount_width)
    answer = [("CZ", echoes["CZ"])]
    if "CJ" in echoes:
        answer.append(("CJ", echoes["CJ"]))
    answer += status
    for tag in _ECHOED_AFTER:
        if tag in echoes:
            answer.append((tag, echoes[tag]))
    answer += extra
    if profile.field_order:
        place = _field_places(profile.field_order)
        answer.sort(key=lambda f: place.get(f[0], len(place)))  # stable: others keep theirs
    return tuple(answer)


@lru_cache(maxsize=16)
def _field_places(order: tuple[str, ...]) -> dict[str, int]:
    return {tag: index for index, tag in enumerate(order)}


def _extra_fields(settings: TerminalSettings, answer_kind: str, rng: random.Random,
                  now: datetime) -> list[Field]:
    """The profile's extra tags for this kind of answer, filled."""
    extra = []
    for spec in settings.profile.extra_tags:
        if answer_kind not in spec.on:
            continue
        if spec.fill == "constant":
            value = spec.value
        elif spec.fill == "time":
            value = now.strftime(spec.value)
        elif spec.fill == "epoch-ms":
            value = f"{int(now.timestamp() * 1000):013d}"
        else:  # transaction-id
            value = f"{rng.randrange(10 ** spec.length):0{spec.length}d}"
        extra.append((spec.tag, value))
    return extra


# The outcomes that answer nothing, and the status they leave.
_UNANSWERED = {NO_ANSWER: TransactionStatus.NO_ANSWER, HANG_UP: TransactionStatus.HANG_UP}


def error_reply(fields_read: Iterable[Field], reason: str,
                settings: TerminalSettings) -> TerminalReply:
    """AE=01 with `reason` (09, 12, 13) to a request that cannot be carried out.

    Echoes what could be read, so that a POS can match the answer to its request.
    """
    status = (TransactionStatus.ERROR if reason == FORMAT_ERROR
              else TransactionStatus.DECLINED)
    # Strict on output: a field the tag table does not allow is not echoed (a CZ that does
    # not fit is then replaced by ours). Requests that reach the other replies were parsed,
    # which refuses such fields.
    fields_read = list(fields_read)
    misfits = tags.misfits(fields_read)
    fields_read = [field for field in fields_read if field not in misfits]
    af = settings.profile.failure_value(reason)
    return TerminalReply(_answer(fields_read, settings, [("AE", "01"), ("AF", af)]), status,
                         reason)


def immediate_reply(request: PaymentRequest, settings: TerminalSettings,
                    spec: OutcomeSpec | None = None, rng: random.Random | None = None,
                    now: datetime | None = None, busy: bool = False) -> TerminalReply:
    """BA=1: "request taken into account", at once: AE=11, or the profile's status.

    `busy`: another transaction is in progress on the terminal; a profile may
    then answer its own status (AE=01: the request is not taken). Of the
    outcomes, only no-answer and hang-up apply (`spec`, the settings').
    `rng` and `now` fill the profile's extra tags, if it has some for this answer.
    """
    if spec is not None and spec.outcome in _UNANSWERED:
        return TerminalReply(None, _UNANSWERED[spec.outcome])
    profile = settings.profile
    status_code = profile.immediate_status
    if busy and profile.immediate_status_busy is not None:
        status_code = profile.immediate_status_busy
    # AE=01: not taken, so declined (no AF: the busy terminal gives no reason).
    status = (TransactionStatus.DECLINED if status_code == "01"
              else TransactionStatus.ACCEPTED)
    received = request.received or request.fields()
    extra = []
    if profile.extra_tags:
        extra = _extra_fields(settings, status, rng or random.Random(0),
                              now or datetime.fromtimestamp(0))
    return TerminalReply(_answer(received, settings, [("AE", status_code)], extra), status)


def reply(request: PaymentRequest, spec: OutcomeSpec, settings: TerminalSettings,
          rng: random.Random, now: datetime, previous_card: Card | None = None) -> TerminalReply:
    """The answer to a readable request for the chosen outcome.

    `now` dates the receipt and bounds the expiry; `previous_card` is the card
    of the last approved transaction, which a duplicate (CD=3) reprints.
    """
    if spec.outcome in FORWARDED:  # no terminal behind: the settings say
        spec = replace(decide_from_settings(settings)[0].spec, delay=spec.delay)
    if spec.outcome in _UNANSWERED:
        return TerminalReply(None, _UNANSWERED[spec.outcome])
    received = request.received or request.fields()
    profile = settings.profile
    code = FAILURE_TYPES.get(spec.outcome)
    if code is not None:
        return _failure_reply(request, spec, settings, code, rng, now)
    amount = request.amount
    if spec.outcome == PARTIAL and request.partial and amount > 1:
        amount //= 2
    card = None
    if request.cheque:
        extra: list[Field] = [("CC", CHEQUE_APPLICATION)]
    else:
        if action_kind(request, settings) in ("duplicate", "consultation"):
            card = previous_card
        else:
            card = make_card(card_kind(request, spec, settings), rng, now, profile)
        extra = _card_fields(card, settings)
    if request.receipt:
        extra.append(("ZT", receipt_block(request, settings, card, amount, now)))
    if profile.extra_tags:
        extra += _extra_fields(settings, "approved", rng, now)
    status = [("AE", "10")]
    if profile.approval_reason is not None:
        status.append(("AF", profile.failure_value(profile.approval_reason)))
    return TerminalReply(_answer(received, settings, status, extra, amount),
                         TransactionStatus.APPROVED, None, card)


def _failure_reply(request: PaymentRequest, spec: OutcomeSpec, settings: TerminalSettings,
                   code: str, rng: random.Random, now: datetime) -> TerminalReply:
    """AE=01 with AF; some profiles add the authorisation number and the receipt."""
    profile = settings.profile
    if request.cheque and not spec.chosen:  # the default failure: what cheques get
        code = profile.cheque_reason
    extra: list[Field] = []
    added = profile.failure_fields
    card = None
    if added and not request.cheque:
        card = make_card(card_kind(request, spec, settings), rng, now, profile)
        if "AC" in added:
            extra.append(("AC", card.authorisation_number))
    if "ZT" in added and request.receipt:
        extra.append(("ZT", receipt_block(request, settings, card, request.amount, now, code)))
    if profile.extra_tags:
        extra += _extra_fields(settings, "declined", rng, now)
    status = [("AE", "01"), ("AF", profile.failure_value(code))]
    return TerminalReply(_answer(request.received or request.fields(), settings, status, extra),
                         TransactionStatus.DECLINED, code)


def card_kind(request: PaymentRequest, spec: OutcomeSpec,
              settings: TerminalSettings) -> PaymentType:
    """The card a request is paid with: the payment type chosen (the outcome's, else the
    settings'), unless the request names another payment application (CC), which is then
    paid with a card of that application."""
    kind = PAYMENT_TYPES[spec.payment_type or settings.payment_type]
    wanted = request.value("CC")
    if wanted is None or wanted == kind.application or wanted not in APPLICATION_CARDS:
        return kind  # none named, the chosen one's, or 000 (indifferent)
    return APPLICATION_CARDS[wanted]


# Actions that move money: a zero amount is refused for them (a duplicate or a
# consultation moves none, and may carry any amount).
MONEY_KINDS = frozenset({"debit", "refund", "cancellation", "pre-authorisation"})
SELECTION_ERROR = "10"


def check_request(request: PaymentRequest, settings: TerminalSettings) -> None:
    """Refuse (RequestError with the AF code) what this terminal refuses of a request the
    core could read: CB outside the profile's digits, a zero amount, a payment
    application (CC) the terminal does not have."""
    profile = settings.profile
    fields = request.received or request.fields()
    values = dict(fields)  # once: every request a terminal answers comes through here
    amount = values.get("CB", "")
    if not profile.amount_min_digits <= len(amount) <= profile.amount_max_digits:
        raise RequestError(f"amount CB={amount!r} has {len(amount)} digits; this terminal "
                           f"takes {profile.amount_min_digits} to {profile.amount_max_digits}",
                           FORMAT_ERROR, fields)
    if request.amount == 0 and action_kind(request, settings) in MONEY_KINDS:
        raise RequestError(f"amount CB={amount!r} is zero: a terminal cannot charge nothing",
                           profile.zero_amount_reason, fields)
    application = values.get("CC")
    if application is not None and application not in profile.applications:
        raise RequestError(f"payment application CC={application!r} is not on this terminal",
                           SELECTION_ERROR, fields)


def _card_fields(card: Card | None, settings: TerminalSettings) -> list[Field]:
    contract = [("CG", settings.seller_contract)] if settings.profile.send_contract else []
    if card is None:
        return contract
    kind = card.payment_type
    fields = [
        ("CC", kind.application),
        ("CI", kind.read_mode),
        ("AC", card.authorisation_number),
        ("AA", card.masked_pan),
    ]
    pan_type = settings.profile.pan_type
    if pan_type is not None:
        fields.append(("AL", pan_type))
    fields.append(("AB", card.expiry))
    if kind.scheme.aid:
        fields.append(("AI", kind.scheme.aid))
    return fields + contract
