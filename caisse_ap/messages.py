"""Caisse-AP messages: the POS's payment request and the terminal's answer.

Both sides use these: the command-line POS builds a `PaymentRequest` and
reads a `TerminalAnswer`; the simulated terminal parses a `PaymentRequest`
from the bytes it received. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from html.parser import HTMLParser

from . import money, tags, tlv
from .errors import CaisseApError
from .tlv import Field, FrameError

MANDATORY_REQUEST_TAGS = ("CZ", "CJ", "CA", "CB", "CD", "CE")
# What a terminal sends back unchanged from the request (CB may be zero-padded).
ECHOED_TAGS = ("CZ", "CJ", "CA", "CB", "CD", "CE", "BF", "CF")
# What a POS compares exactly (PROTOCOL.md section 4); CB is compared as a number.
EXACT_ECHOES = ("CA", "CD", "CE", "BF")

PROTOCOL_VERSION = "0300"  # CZ of the requests this project writes
CHEQUE_APPLICATION = "00C"
RECEIPT_WANTED = "100"

# AF codes a terminal answers to a request it cannot carry out.
FORMAT_ERROR = "09"
UNKNOWN_ACTION = "12"
UNSUPPORTED_CURRENCY = "13"


class Action(str, Enum):
    """CD: what the POS asks for."""

    DEBIT = "0"
    REFUND = "1"
    CANCELLATION = "2"
    DUPLICATE = "3"
    PRE_AUTHORISATION = "4"  # some terminals only: which codes exist is a profile's CD table


# Actions by the names people use for them ("debit", "refund"...): command
# line, amount rules and JSON all spell them this way.
ACTION_BY_NAME = {action.name.lower(): action for action in Action}
ACTION_BY_CODE = {action.value: action for action in Action}  # by CD
ACTION_NAMES = {action.value: name for name, action in ACTION_BY_NAME.items()}  # by CD
# The CD codes every terminal carries out; others depend on the terminal (its profile).
STANDARD_ACTIONS = frozenset({"0", "1", "2", "3"})


class Outcome(str, Enum):
    """What an answer means for the POS."""

    APPROVED = "approved"  # AE=10
    DECLINED = "declined"  # AE=01: operation not done
    ACCEPTED = "accepted"  # AE=11: request taken into account (BA=1)
    UNREADABLE = "unreadable"


OUTCOME_BY_STATUS = {"10": Outcome.APPROVED, "01": Outcome.DECLINED, "11": Outcome.ACCEPTED}

# Lookups for parse(), which every request a terminal receives goes through:
# a set comparison costs a third of a loop over the tags (and ACTION_BY_CODE,
# above, a fifth of calling the Enum).
_MANDATORY = frozenset(MANDATORY_REQUEST_TAGS)


def has_mandatory_fields(fields: list[Field]) -> bool:
    """A request is whole once its mandatory fields are in (no length prefix over IP)."""
    return _MANDATORY.issubset(dict(fields))


def has_action_status(fields: list[Field]) -> bool:
    """An answer is whole once its action status (AE) is in; later fields are optional."""
    return any(tag == "AE" for tag, _ in fields)


class RequestError(CaisseApError, ValueError):
    """A request a terminal must refuse; `reason` is the AF code to answer with.

    `fields` are those that could be read, for the answer's echoes.
    """

    def __init__(self, message: str, reason: str, fields: Iterable[Field] = ()):
        super().__init__(message)
        self.reason = reason
        self.fields = list(fields)


class _TextOfHtml(HTMLParser):
    """The text of an HTML receipt: its character data, a line break per <br>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts).strip("\n") + "\n"


class ProtocolError(CaisseApError, ValueError):
    """An answer that does not fit the request it answers."""


def _fields_of(frame_or_fields: bytes | str | Iterable[Field]) -> list[Field]:
    if isinstance(frame_or_fields, (bytes, bytearray, str)):
        return tlv.decode(frame_or_fields)
    return list(frame_or_fields)


@dataclass(frozen=True)
class PaymentRequest:
    """A payment request, as a POS builds it or as a terminal received it.

    `extra` adds or overrides raw fields (to imitate unusual POS software).
    A parsed request keeps the fields as received in `received`, so that a
    terminal echoes them byte for byte.
    """

    amount: int  # minor units of the currency
    currency: str = money.EUR.numeric
    action: Action = Action.DEBIT
    register: str = "01"
    pos_id: str = "012345678901"
    version: str = PROTOCOL_VERSION
    immediate: bool = False
    partial: bool = False
    cheque: bool = False
    reference: str | None = None
    receipt: bool = False
    extra: tuple[Field, ...] = ()
    received: tuple[Field, ...] = field(default=(), compare=False)

    def fields(self) -> list[Field]:
        if self.received:
            return list(self.received)
        # The order of the widely used open-source POS script, so that a
        # default request is the frame real terminals already know.
        fields = [
            ("CZ", self.version),
            ("CJ", self.pos_id),
            ("CA", self.register),
            ("CE", self.currency),
            ("BA", "1" if self.immediate else "0"),
            ("CD", Action(self.action).value),
        ]
        if self.cheque:
            fields.append(("CC", CHEQUE_APPLICATION))
        fields.append(("CB", money.format_minor_units(self.amount)))
        # BF only when asked: some Ingenico software misbehaves when it is sent.
        if self.partial:
            fields.append(("BF", "1"))
        if self.reference:
            fields.append(("CF", self.reference))
        if self.receipt:
            fields.append(("CK", RECEIPT_WANTED))
        overrides = dict(self.extra)
        merged = [(tag, overrides.pop(tag, value)) for tag, value in fields]
        return merged + list(overrides.items())

    def encode(self) -> bytes:
        return tlv.encode(self.fields())

    def value(self, tag: str) -> str | None:
        return dict(self.fields()).get(tag)

    @classmethod
    def parse(cls, frame_or_fields: bytes | str | Iterable[Field],
              currencies: frozenset[str] | None = None,
              actions: frozenset[str] = STANDARD_ACTIONS) -> PaymentRequest:
        """Read a received request, or raise RequestError with the AF code to answer.

        `currencies` are the accepted numeric codes (default: all of ISO 4217);
        `actions` the CD codes the terminal carries out (a profile's CD table).
        """
        if type(frame_or_fields) is list:  # fields, as a terminal passes them
            fields = frame_or_fields
        else:
            try:
                fields = _fields_of(frame_or_fields)
            except FrameError as error:
                raise RequestError(str(error), FORMAT_ERROR, error.fields) from None
        values = dict(fields)
        _check_request_format(values, fields)
        action = ACTION_BY_CODE.get(values["CD"]) if values["CD"] in actions else None
        if action is None:
            raise RequestError(f"unknown action type CD={values['CD']!r}", UNKNOWN_ACTION, fields)
        accepted = money.numeric_codes() if currencies is None else currencies
        if values["CE"] not in accepted:
            message = f"currency {values['CE']} is not supported"
            raise RequestError(message, UNSUPPORTED_CURRENCY, fields)
        # Every field at once, without __init__: a frozen dataclass's __init__
        # sets them one by one through object.__setattr__, which costs as much
        # as the rest of parse(), and a terminal parses every request. Every
        # field must be given here (a test compares with PaymentRequest(...)).
        request = object.__new__(cls)
        request.__dict__.update(
            amount=int(values["CB"]),
            currency=values["CE"],
            action=action,
            register=values["CA"],
            pos_id=values["CJ"],
            version=values["CZ"],
            immediate=values.get("BA") == "1",
            partial=values.get("BF") == "1",
            cheque=values.get("CC") == CHEQUE_APPLICATION,
            reference=values.get("CF"),
            receipt=values.get("CK", "").startswith("1"),
            extra=(),
            received=tuple(fields),
        )
        return request


def _check_request_format(values: dict[str, str], fields: list[Field]) -> None:
    """Refuse (AF=09) a request missing a mandatory field or with a field of a size the tag
    table does not allow; the error keeps only the fields that fit, for the echoes."""
    misfits = tags.misfits(fields)
    if misfits:
        fields = [field for field in fields if field not in misfits]
        sizes = ", ".join(f"{tag} of {len(value)} characters" for tag, value in misfits)
        raise RequestError(f"field size outside the tag table: {sizes}", FORMAT_ERROR, fields)
    if not values.keys() >= _MANDATORY:
        missing = [tag for tag in MANDATORY_REQUEST_TAGS if tag not in values]
        raise RequestError(f"missing mandatory field {', '.join(missing)}", FORMAT_ERROR, fields)
    amount = values["CB"]
    if not (amount.isascii() and amount.isdigit()):
        raise RequestError(f"amount CB={amount!r} is not digits", FORMAT_ERROR, fields)
    currency = values["CE"]
    if not (currency.isascii() and currency.isdigit() and len(currency) == 3):
        raise RequestError(f"currency CE={currency!r} is not three digits", FORMAT_ERROR, fields)


@dataclass(frozen=True)
class FailureReason:
    """AF: why an operation was not done, with any acquirer details after the code."""

    code: str
    details: str = ""

    @classmethod
    def from_value(cls, value: str) -> FailureReason:
        return cls(value[:2], value[2:].strip())

    @property
    def label(self) -> str:
        return tags.label(tags.FAILURE_REASONS, self.code)

    @property
    def label_en(self) -> str:
        return tags.label(tags.FAILURE_REASONS, self.code, "en")


@dataclass(frozen=True)
class TerminalAnswer:
    """A terminal's answer, read tolerantly: parsing never raises.

    An answer that cannot be read has the outcome UNREADABLE and says why in
    `problem`; unknown tags are kept in `fields` as they came.
    """

    fields: tuple[Field, ...]
    outcome: Outcome
    reason: FailureReason | None = None
    problem: str | None = None

    @classmethod
    def unreadable(cls, error: FrameError) -> TerminalAnswer:
        """An answer broken by `error`: the fields read before it, and why."""
        return cls(tuple(error.fields), Outcome.UNREADABLE, problem=str(error))

    @classmethod
    def parse(cls, frame_or_fields: bytes | str | Iterable[Field]) -> TerminalAnswer:
        try:
            fields = tuple(_fields_of(frame_or_fields))
        except FrameError as error:
            return cls.unreadable(error)
        values = dict(fields)
        status = values.get("AE")
        if status is None:
            return cls(fields, Outcome.UNREADABLE, problem="the answer has no action status AE")
        outcome = OUTCOME_BY_STATUS.get(status)
        if outcome is None:
            return cls(fields, Outcome.UNREADABLE, problem=f"unknown action status AE={status!r}")
        reason = FailureReason.from_value(values["AF"]) if "AF" in values else None
        return cls(fields, outcome, reason)

    def value(self, tag: str) -> str | None:
        return dict(self.fields).get(tag)

    @property
    def amount(self) -> int | None:
        """CB as a number: some terminals left-pad it with zeros."""
        text = self.value("CB")
        return int(text) if text and text.isascii() and text.isdigit() else None

    @property
    def application(self) -> str | None:
        return self.value("CC")

    @property
    def read_mode(self) -> str | None:
        return self.value("CI")

    @property
    def card_number(self) -> str | None:
        return self.value("AA")

    @property
    def expiry(self) -> str | None:
        return self.value("AB")

    @property
    def authorisation_number(self) -> str | None:
        return self.value("AC")

    @property
    def aid(self) -> str | None:
        return self.value("AI")

    @property
    def seller_contract(self) -> str | None:
        return self.value("CG")

    @property
    def reference(self) -> str | None:
        return self.value("CF")

    @property
    def pan_type(self) -> str | None:
        """AL: "1" when AA holds a partial PAN (some terminals send it with every AA)."""
        return self.value("AL")

    @property
    def unknown_fields(self) -> list[Field]:
        """Tags this project does not know, kept as they came (a POS shows them raw)."""
        return [(tag, value) for tag, value in self.fields if tag not in tags.TAGS]

    def outcome_for(self, request: PaymentRequest | None) -> Outcome:
        """What the answer means for `request`.

        To an immediate request (BA=1), AE=10 only says that the request
        reached the terminal (PayXpert's dialect; others answer AE=11): the
        payment itself is not done yet, so it is ACCEPTED, never APPROVED.
        """
        if (self.outcome is Outcome.APPROVED and request is not None
                and request.value("BA") == "1"):
            return Outcome.ACCEPTED
        return self.outcome

    def missing_reason(self, request: PaymentRequest | None) -> str:
        """Why an AE=01 answer without AF was not done, as far as the dialects tell.

        To an immediate request (BA=1), AE=01 means the terminal did not take
        it, busy with another transaction (PayXpert's dialect).
        """
        if request is not None and request.value("BA") == "1":
            return "not taken by the terminal (busy: AE=01 to an immediate request)"
        return "no reason given (no AF)"

    @property
    def receipt_is_html(self) -> bool:
        """The receipt's CK asks for HTML (third digit 1); else it is text (Latin-1)."""
        block = self.value("ZT")
        try:
            mode = dict(tlv.nested(block)).get("CK", "") if block else ""
        except FrameError:
            return False
        return mode[2:3] == "1"

    @property
    def receipt(self) -> str | None:
        """The customer receipt carried in ZT/AK (base64), as text; None if absent or unreadable."""
        block = self.value("ZT")
        if block is None:
            return None
        try:
            encoded = dict(tlv.nested(block)).get("AK")
            if encoded is None:
                return None
            raw = base64.b64decode(encoded, validate=True)
        except (FrameError, binascii.Error):
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
        return _html_text(text) if self.receipt_is_html else text

    def labels(self, lang: str = "fr") -> dict[str, str]:
        """The label of each coded field's value ("" for the other tags)."""
        return {tag: tags.describe(tag, value, lang) for tag, value in self.fields}

    def echo_mismatches(self, request: PaymentRequest) -> list[str]:
        """How this answer's echoes differ from the request (empty when they agree).

        An echo the terminal left out is tolerated; a different value is not.
        """
        return [f"{tag} echoed as {got!r}, sent {sent!r}"
                for tag, got, sent in self.echo_differences(request)]

    def echo_differences(self, request: PaymentRequest) -> list[tuple[str, str, str]]:
        """echo_mismatches() as (tag, value echoed, value sent), to word in any language."""
        differences = []
        for tag in EXACT_ECHOES:
            sent, got = request.value(tag), self.value(tag)
            if sent is not None and got is not None and sent != got:
                differences.append((tag, got, sent))
        differences.extend(self._amount_mismatch(request))
        return differences

    def _amount_mismatch(self, request: PaymentRequest) -> list[tuple[str, str, str]]:
        got_text, sent_text = self.value("CB"), request.value("CB")
        if got_text is None or sent_text is None:
            return []
        sent_is_number = sent_text.isascii() and sent_text.isdigit()
        got, sent = self.amount, int(sent_text) if sent_is_number else None
        if got is None or sent is None:
            return [("CB", got_text, sent_text)]
        partial_approval = request.value("BF") == "1" and self.outcome is Outcome.APPROVED
        if got == sent or (partial_approval and 0 < got < sent):
            return []
        return [("CB", got_text, sent_text)]

    def check_echoes(self, request: PaymentRequest) -> None:
        """Raise ProtocolError when the echoes do not match the request."""
        problems = self.echo_mismatches(request)
        if problems:
            raise ProtocolError("; ".join(problems))
