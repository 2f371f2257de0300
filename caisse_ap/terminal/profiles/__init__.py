"""Terminal profiles: one Caisse-AP dialect, as a small TOML file the behaviour reads.

A profile says how one kind of real terminal answers where terminals differ
(what requests it refuses: CB's digits, a zero amount, the payment
applications it has; answer version, CB padding or echo, field order, card
masking, CG, AF details, fields added to failures, the status of BA=1 and of
a Concert E+ immediate answer, the CD table, receipt options, extra tags)
and names the public document it follows. Every key is optional
but `name`, `label` and `source`: what a profile leaves out keeps the
standard behaviour, so a source's silence never invents anything.

`load()` checks a file against the tag table (tags.py) and raises
ProfileError with the file, the line and the reason, so that the terminal
refuses to start on a profile that would make it send invalid answers.
Pure: no I/O but reading the file given.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TypedDict

from ... import messages, tags, tlv, tomlfile
from ...errors import CaisseApError
from ...tomlfile import Table, TableReader, all_text

PROFILE_DIR = Path(__file__).parent
DEFAULT = "standard"

# What a CD code may do (the [actions] table): the terminal's behaviour for it.
ACTION_KINDS = ("debit", "refund", "cancellation", "duplicate", "consultation",
                "pre-authorisation")
# What each CD code usually does; the standard profile carries out the first four.
USUAL_KINDS = MappingProxyType({"0": "debit", "1": "refund", "2": "cancellation",
                                "3": "duplicate", "4": "pre-authorisation"})
STANDARD_ACTIONS = MappingProxyType({code: USUAL_KINDS[code]
                                     for code in sorted(messages.STANDARD_ACTIONS)})
KIND_WORDS = {"debit": "débit", "refund": "crédit", "cancellation": "annulation",
              "duplicate": "duplicata", "consultation": "consultation",
              "pre-authorisation": "pré-autorisation"}  # French, for the console
# How an extra tag is filled.
FILLS = ("constant", "time", "epoch-ms", "transaction-id")
# Which answers an extra tag goes into.
ANSWER_KINDS = ("approved", "declined", "accepted")
FAILURE_FIELDS = ("AC", "ZT")
# The payment applications (CC) a terminal has unless its profile says otherwise: the
# tag table's (PROTOCOL.md section 4), cheque included.
STANDARD_APPLICATIONS = tuple(tags.APPLICATIONS)
# Concert E+ status characters (concert.py): done, not done, taken into account.
CONCERT_STATUSES = ("0", "7", "9")
# Tags the behaviour builds itself: an extra tag may not take their place.
BUILT_TAGS = frozenset({"CZ", "CJ", "CA", "CB", "CD", "CE", "BF", "CF", "AE", "AF", "CC", "CI",
                        "AC", "AA", "AB", "AI", "AL", "CG", "ZT", "AK", "CK"})
SAMPLE_TIME = datetime(2026, 12, 31, 23, 59, 59)  # checks the width of a time format
MAX_SIZE = 1024 * 1024  # bytes; a real profile is a few KiB
EPOCH_MS_DIGITS = 13  # milliseconds since 1970 have 13 digits until the year 2286


class ProfileError(CaisseApError, ValueError):
    """A profile that cannot be used: `where` is "file:line", `reason` one sentence."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class ExtraTag:
    """A tag a dialect adds to its answers, and how the terminal fills it."""

    tag: str
    fill: str  # one of FILLS
    value: str = ""  # constant: the value; time: a strftime format
    length: int = 0  # transaction-id: how many digits
    on: tuple[str, ...] = ("approved",)


@dataclass(frozen=True, eq=False)
class Profile:
    """One terminal dialect (docs/profiles.md). The defaults are the standard profile's."""

    name: str
    label: str
    source: str
    silent: tuple[str, ...] = ()  # what the source does not say (standard behaviour kept)
    path: str = ""  # the file it was read from
    # The file's name when it bears a built-in profile's name (a copy changed by a user):
    # then shown and chosen as "name (file)", beside the built-in one.
    file: str = ""
    # [request]: what the terminal refuses
    amount_min_digits: int = 1  # CB's digits as received
    amount_max_digits: int = 12
    zero_amount_reason: str = "09"  # AF for CB=0 (a terminal cannot charge nothing)
    applications: tuple[str, ...] = STANDARD_APPLICATIONS  # CC it has; others get AF=10
    source_fr: str = ""  # the source in French, for the console ("": `source` is shown)
    # [answer]
    answer_version: str | None = None  # None: echo the request's CZ
    pad_amount: bool = False
    amount_width: int = 12
    field_order: tuple[str, ...] = ()  # () keeps the standard order
    approval_reason: str | None = None  # AF sent with AE=10
    immediate_status: str = "11"  # AE answering BA=1
    # AE answering BA=1 while another transaction is in progress; None: as when free
    immediate_status_busy: str | None = None
    cf_max: int | None = None  # the answer's CF is cut to this many characters; None: whole
    amount_as_received: bool = False  # CB echoed byte for byte (else as digits, unpadded)
    # [card]
    mask: str = "#"
    shown_first: int = 6
    shown_last: int = 4
    pan_type: str | None = None  # AL
    # [contract]
    contract_length: int | None = None
    seller_contract: str = "424242"
    send_contract: bool = True  # CG in approvals
    # [concert]: the E+ status of an immediate answer (A011), taken into account
    concert_immediate_status: str = "9"
    # [failure]
    failure_details: MappingProxyType[str, str] = field(
        default_factory=lambda: MappingProxyType({}))
    failure_fields: tuple[str, ...] = ()
    cheque_reason: str = "04"
    # [actions]: CD code -> kind
    actions: MappingProxyType[str, str] = field(default_factory=lambda: STANDARD_ACTIONS)
    # [receipt]: whether CK digits 2 (tickets) and 3 (HTML) are honoured
    receipt_tickets: bool = False
    receipt_html: bool = False
    extra_tags: tuple[ExtraTag, ...] = ()

    @property
    def action_codes(self) -> frozenset[str]:
        return frozenset(self.actions)

    @property
    def key(self) -> str:
        """How settings, the console and the API name it: its name, and for a file that
        bears a built-in profile's name, the file's name too."""
        return f"{self.name} ({self.file})" if self.file else self.name

    def failure_value(self, code: str) -> str:
        """AF: the code, then this dialect's detail text for it if any."""
        return code + self.failure_details.get(code, "")

    def tickets(self, receipt_mode: str) -> tuple[str, ...]:
        """Which tickets CK asks for: ("customer",), ("merchant",) or both."""
        if not self.receipt_tickets:
            return ("customer",)
        return {"1": ("merchant",), "2": ("customer", "merchant")}.get(receipt_mode[1:2],
                                                                     ("customer",))

    def html(self, receipt_mode: str) -> bool:
        return self.receipt_html and receipt_mode[2:3] == "1"

    def summary(self) -> dict[str, str]:
        """Each point a dialect may change, in words (French, for the console and docs)."""
        tickets = "client / commerçant / les deux" if self.receipt_tickets else "client seul"
        extra = ", ".join(f"{t.tag} ({t.fill})" for t in self.extra_tags)
        return {
            "chiffres de CB acceptés": f"{self.amount_min_digits} à {self.amount_max_digits}",
            "montant nul (AF)": self.zero_amount_reason,
            "applications (CC)": ("toutes celles du tableau" if self.applications
                                  == STANDARD_APPLICATIONS else " ".join(self.applications)),
            "version de réponse (CZ)": self.answer_version or "celle de la demande",
            "montant (CB)": (f"complété de zéros sur {self.amount_width} chiffres"
                             if self.pad_amount else "tel que reçu" if self.amount_as_received
                             else "tel que demandé"),
            "ordre des champs": " ".join(self.field_order) or "standard",
            "CF dans la réponse": (f"coupé à {self.cf_max} caractères" if self.cf_max
                                   else "tel que demandé"),
            "AF sur une acceptation": self.approval_reason or "absent",
            "statut pour BA=1 (AE)": self.immediate_status,
            "statut E+ d'une réponse immédiate (A011)": self.concert_immediate_status,
            "statut pour BA=1, terminal occupé (AE)": (self.immediate_status_busy
                                                       or self.immediate_status),
            "carte masquée (AA)": _mask_example(self),
            "type de PAN (AL)": self.pan_type or "absent",
            "contrat (CG)": ("absent" if not self.send_contract else
                             f"{self.contract_length} caractères, {self.seller_contract}"
                             if self.contract_length else self.seller_contract),
            "détails de AF": "; ".join(f"{code}: {text.strip()}" for code, text
                                         in self.failure_details.items()) or "aucun",
            "champs ajoutés aux échecs": " ".join(self.failure_fields) or "aucun",
            "échec d'un chèque (AF)": self.cheque_reason,
            "codes CD": "; ".join(f"{code} {KIND_WORDS[kind]}"
                                  for code, kind in self.actions.items()),
            "tickets (CK, 2e chiffre)": tickets,
            "ticket HTML (CK, 3e chiffre)": "oui" if self.receipt_html else "non",
            "champs supplémentaires": extra or "aucun",
        }

    def differences(self, base: Profile | None = None) -> list[dict[str, str]]:
        """The points where this profile differs from `base` (the standard one)."""
        standard = (base or builtin(DEFAULT)).summary()
        return [{"point": point, "standard": standard[point], "profile": value}
                for point, value in self.summary().items() if standard[point] != value]

    def to_json(self) -> dict[str, object]:
        # A copy bearing a built-in's name shows its file beside the label (the console
        # lists profiles by label).
        label = f"{self.label} ({self.file})" if self.file else self.label
        return {"name": self.key, "label": label, "source": self.source,
                "source_fr": self.source_fr or self.source,
                "file": self.file or None, "silent": list(self.silent),
                "differences": self.differences()}


def _mask_example(profile: Profile) -> str:
    digits = "4970101234560123"
    hidden = len(digits) - profile.shown_first - profile.shown_last
    return (digits[:profile.shown_first] + profile.mask * hidden
            + digits[len(digits) - profile.shown_last:])


# --- Reading a file ---------------------------------------------------------------

# What each table of the file gives the Profile, checked.


class _Request(TypedDict):
    amount_min_digits: int
    amount_max_digits: int
    zero_amount_reason: str
    applications: tuple[str, ...]


class _Answer(TypedDict):
    answer_version: str | None
    pad_amount: bool
    amount_width: int
    field_order: tuple[str, ...]
    approval_reason: str | None
    immediate_status: str
    immediate_status_busy: str | None
    cf_max: int | None
    amount_as_received: bool


class _Card(TypedDict):
    mask: str
    shown_first: int
    shown_last: int
    pan_type: str | None


class _Contract(TypedDict):
    contract_length: int | None
    seller_contract: str
    send_contract: bool


class _Failure(TypedDict):
    failure_details: MappingProxyType[str, str]
    failure_fields: tuple[str, ...]
    cheque_reason: str


def load(path: str | Path) -> Profile:
    """Read and check a profile file; ProfileError (file, line, reason) if it is wrong."""
    where = str(path)
    return parse(read_text(where), where)


def read_text(path: str) -> str:
    """The text of a profile file: a regular file of at most MAX_SIZE bytes, UTF-8.

    Opened without blocking and checked before reading: a FIFO, a device
    (/dev/zero) or a directory would have the terminal wait or read for ever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        raise ProfileError(f"{path}:1", f"cannot read the profile: {error.strerror}") from None
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise ProfileError(f"{path}:1", "cannot read the profile: not a regular file "
                                            "(a profile is a .toml file)")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_SIZE + 1)
    except OSError as error:
        raise ProfileError(f"{path}:1", f"cannot read the profile: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise ProfileError(f"{path}:1", f"cannot read the profile: over {MAX_SIZE // 1024} KiB "
                                        "(a profile is a few KiB of TOML)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ProfileError(f"{path}:{line}", f"cannot read the profile: not UTF-8 text "
                                            f"({error.reason})") from None


def parse(text: str, where: str = "<profile>") -> Profile:
    """A profile from TOML text; `where` names it in error messages."""
    data = tomlfile.decode(text, where, ProfileError)
    try:
        return _profile(where, text, data)
    except RecursionError:
        raise ProfileError(f"{where}:{tomlfile.deep_line(text)}", "arrays or tables nested "
                                                                   "too deeply") from None


def _profile(where: str, text: str, data: Table) -> Profile:
    top = TableReader(where, text, data, error=ProfileError)
    values: dict[str, str] = {}
    for key in ("name", "label", "source"):
        value = top.get(key, str)
        if not value or not value.strip():
            raise top.fail(key if key in data else None, f"the profile needs a {key}")
        if not value.strip().isprintable():  # --list-profiles gives each profile one line
            raise top.fail(key, f"{key} must be one line of printable text, not {value!r}")
        values[key] = value.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", values["name"]):
        raise top.fail("name", f"name {values['name']!r} must be 1 to 32 lower-case letters, "
                               "digits or dashes")
    source_fr = top.get("source_fr", str, "").strip()
    if not source_fr.isprintable():
        raise top.fail("source_fr", f"source_fr must be one line of printable text, "
                                    f"not {source_fr!r}")
    silent = top.get("silent", list, [])
    if not all_text(silent):
        raise top.fail("silent", "silent must be a list of texts")
    request = _request(top.sub("request"))
    answer = _answer(top.sub("answer"))
    card = _card(top.sub("card"))
    contract = _contract(top.sub("contract"))
    failure = _failure(top.sub("failure"))
    actions = _actions(top.sub("actions"))
    receipt = top.sub("receipt")
    receipt_tickets = receipt.get("tickets", bool, False)
    receipt_html = receipt.get("html", bool, False)
    receipt.check_known()
    extra_tags = _extra_tags(top.sub("extra_tags"))
    concert = top.sub("concert")
    status = concert.get("immediate_status", str, "9")
    if status not in CONCERT_STATUSES:
        raise concert.fail("immediate_status", f"concert.immediate_status must be one of "
                                               f"{', '.join(CONCERT_STATUSES)}, not {status!r}")
    concert.check_known()
    top.check_known()
    return Profile(name=values["name"], label=values["label"], source=values["source"],
                   silent=tuple(silent), path=where, source_fr=source_fr, **request, **answer,
                   **card, **contract, **failure, actions=actions,
                   receipt_tickets=receipt_tickets, receipt_html=receipt_html,
                   extra_tags=extra_tags, concert_immediate_status=status)


def _request(table: TableReader) -> _Request:
    cb = tags.tag("CB")
    digits = {}
    for key, default in (("amount_min_digits", cb.min_size), ("amount_max_digits", cb.max_size)):
        digits[key] = table.get(key, int, default)
        if not cb.min_size <= digits[key] <= cb.max_size:
            raise table.fail(key, f"request.{key} {digits[key]} does not fit CB: the tag "
                                  f"table allows {cb.min_size} to {cb.max_size} digits")
    if digits["amount_min_digits"] > digits["amount_max_digits"]:
        raise table.fail("amount_min_digits", "request.amount_min_digits is above "
                                              "request.amount_max_digits")
    zero = table.get("zero_amount_reason", str, "09")
    _check_code(table, "zero_amount_reason", zero, tags.FAILURE_REASONS, "AF")
    applications: list[str] = []
    for code in table.get("applications", list, list(STANDARD_APPLICATIONS)):
        if not isinstance(code, str):
            raise table.fail("applications", f"request.applications holds {code!r}, not text")
        table.check_fits("applications", "CC", code)
        applications.append(code)
    if len(set(applications)) != len(applications):
        raise table.fail("applications", "request.applications names an application twice")
    table.check_known()
    return _Request(amount_min_digits=digits["amount_min_digits"],
                    amount_max_digits=digits["amount_max_digits"], zero_amount_reason=zero,
                    applications=tuple(applications))


def _answer(table: TableReader) -> _Answer:
    version = table.text_in("version", "CZ")
    if version is not None and not version.isdigit():
        raise table.fail("version", f"answer.version must be 4 digits, not {version!r}")
    pad_amount = table.get("pad_amount", bool, False)
    width = table.get("amount_width", int, 12)
    cb = tags.tag("CB")
    if not cb.min_size <= width <= cb.max_size:
        raise table.fail("amount_width", f"answer.amount_width {width} does not fit CB: the "
                                         f"tag table allows {cb.min_size} to {cb.max_size}")
    order: list[str] = []
    for tag in table.get("order", list, []):
        if not (isinstance(tag, str) and tlv.is_tag(tag)):
            raise table.fail("order", f"answer.order holds {tag!r}, not a tag")
        order.append(tag)
    if len(set(order)) != len(order):
        raise table.fail("order", "answer.order names a tag twice")
    if order and order[0] != tlv.FIRST_TAG:
        raise table.fail("order", f"answer.order must start with {tlv.FIRST_TAG}: every "
                                  "message starts with it")
    reason = table.get("approval_reason", str)
    if reason is not None:
        _check_code(table, "approval_reason", reason, tags.FAILURE_REASONS, "AF")
    status = table.get("immediate_status", str, "11")
    if status not in ("10", "11"):
        raise table.fail("immediate_status", f"answer.immediate_status must be 10 or 11, "
                                             f"not {status!r}")
    busy = table.get("immediate_status_busy", str)
    if busy is not None:
        _check_code(table, "immediate_status_busy", busy, tags.ACTION_STATUS, "AE")
    cf_max = table.get("cf_max", int)
    cf = tags.tag("CF")
    if cf_max is not None and not cf.min_size <= cf_max <= cf.max_size:
        raise table.fail("cf_max", f"answer.cf_max {cf_max} does not fit CF: the tag table "
                                   f"allows {cf.min_size} to {cf.max_size} characters")
    amount_as_received = table.get("amount_as_received", bool, False)
    table.check_known()
    return _Answer(answer_version=version, pad_amount=pad_amount, amount_width=width,
                   field_order=tuple(order), approval_reason=reason, immediate_status=status,
                   immediate_status_busy=busy, cf_max=cf_max,
                   amount_as_received=amount_as_received)


def _card(table: TableReader) -> _Card:
    mask = table.get("mask", str, "#")
    if len(mask) != 1 or mask.isdigit() or not (mask.isascii() and mask.isprintable()):
        raise table.fail("mask", f"card.mask must be one printable character that is not a "
                                 f"digit, not {mask!r}")
    first = table.get("shown_first", int, 6)
    last = table.get("shown_last", int, 4)
    # The terminal draws a BIN of 6 digits and the last 4: it can show no more.
    if not 0 <= first <= 6:
        raise table.fail("shown_first", f"card.shown_first must be 0 to 6, not {first}")
    if not 0 <= last <= 4:
        raise table.fail("shown_last", f"card.shown_last must be 0 to 4, not {last}")
    pan_type = table.text_in("pan_type", "AL")
    table.check_known()
    return _Card(mask=mask, shown_first=first, shown_last=last, pan_type=pan_type)


def _contract(table: TableReader) -> _Contract:
    length = table.get("length", int)
    cg = tags.tag("CG")
    if length is not None and not cg.min_size <= length <= cg.max_size:
        raise table.fail("length", f"contract.length {length} does not fit CG: the tag table "
                                   f"allows {cg.min_size} to {cg.max_size} characters")
    default = table.text_in("default", "CG", "424242")
    if length is not None and len(default) != length:
        raise table.fail("default" if "default" in table.table else "length",
                         f"contract.default {default!r} is not {length} characters long")
    send = table.get("send", bool, True)
    table.check_known()
    return _Contract(contract_length=length, seller_contract=default, send_contract=send)


def _failure(table: TableReader) -> _Failure:
    details_table = table.sub("details")
    details: dict[str, str] = {}
    for code in details_table.table:
        text = details_table.get(code, str, "")  # there: the default is never used
        _check_code(details_table, code, code, tags.FAILURE_REASONS, "AF")
        details_table.check_fits(code, "AF", code + text)
        details[code] = text
    fields_added: list[str] = []
    for tag in table.get("fields", list, []):
        if not isinstance(tag, str) or tag not in FAILURE_FIELDS:
            raise table.fail("fields", f"failure.fields holds {tag!r}; a failure may carry "
                                       f"{' and '.join(FAILURE_FIELDS)} only")
        fields_added.append(tag)
    cheque = table.get("cheque_reason", str, "04")
    _check_code(table, "cheque_reason", cheque, tags.FAILURE_REASONS, "AF")
    table.check_known()
    return _Failure(failure_details=MappingProxyType(details),
                    failure_fields=tuple(dict.fromkeys(fields_added)), cheque_reason=cheque)


def _actions(table: TableReader) -> MappingProxyType[str, str]:
    if not table.table:
        return STANDARD_ACTIONS
    actions: dict[str, str] = {}
    for code in table.table:
        kind = table.get(code, str, "")  # there: the default is never used
        if code not in tags.ACTIONS:
            raise table.fail(code, f"CD code {code!r} is not in the tag table's CD codes "
                                   f"({', '.join(tags.ACTIONS)})")
        if kind not in ACTION_KINDS:
            raise table.fail(code, f"CD {code} does {kind!r}; choose from "
                                   f"{', '.join(ACTION_KINDS)}")
        actions[code] = kind
    return MappingProxyType(actions)


def _extra_tags(table: TableReader) -> tuple[ExtraTag, ...]:
    extra = []
    for tag in table.table:
        spec = table.sub(tag)
        if not tlv.is_tag(tag):
            raise table.fail(tag, f"extra tag {tag!r} is not two upper-case letters")
        if tag in BUILT_TAGS:
            raise table.fail(tag, f"extra tag {tag} is one the terminal builds itself")
        fill = spec.get("fill", str, "constant")
        if fill not in FILLS:
            raise spec.fail("fill", f"fill {fill!r} is not one of {', '.join(FILLS)}")
        value = spec.get("value", str, "")
        length = spec.get("length", int, 0)
        on = spec.get("on", list, ["approved"])
        if not on or not all_text(on) or any(kind not in ANSWER_KINDS for kind in on):
            raise spec.fail("on", f"on must list some of {', '.join(ANSWER_KINDS)}")
        spec.check_known()
        key, example = _example(spec, tag, fill, value, length)
        spec.check_fits(key, tag, example)
        extra.append(ExtraTag(tag, fill, value, length, tuple(on)))
    return tuple(extra)


def _example(spec: TableReader, tag: str, fill: str, value: str, length: int) -> tuple[str, str]:
    """What an extra tag would hold, to check against the tag table, and the key it
    comes from."""
    if fill == "constant":
        return "value", value
    if fill == "time":
        try:
            return "value", SAMPLE_TIME.strftime(value) if value else ""
        except ValueError as error:  # a NUL character, on some systems a bad directive
            raise spec.fail("value", f"value {value!r} is not a time format: {error}") from None
    if fill == "epoch-ms":
        return "fill", "0" * EPOCH_MS_DIGITS
    # transaction-id: its length checked before any example is built (10**11 digits...)
    info = tags.tag(tag)
    if not info.min_size <= length <= info.max_size:
        raise spec.fail("length", f"{spec.section}.length {length} does not fit {info.code}: "
                                  f"the tag table allows {info.min_size} to {info.max_size}")
    return "length", "0" * length


def _check_code(table: TableReader, key: str, code: str, codes: Collection[str],
                tag: str) -> None:
    if code not in codes:
        raise table.fail(key, f"{code!r} is not a {tag} code of the tag table "
                              f"({', '.join(codes)})")


# --- Built-in profiles and the profiles in use ---------------------------------------


@cache
def builtins() -> dict[str, Profile]:
    """The profiles shipped in this directory, by name."""
    found = {}
    # The standard profile first: lists show it before the dialects.
    for path in sorted(PROFILE_DIR.glob("*.toml"), key=lambda p: (p.stem != DEFAULT, p.stem)):
        profile = load(path)
        found[profile.name] = replace(profile, path=f"built-in:{path.name}")
    return found


def builtin(name: str) -> Profile:
    return builtins()[name]


_loaded: dict[str, Profile] = {}  # profiles read from user files, by name


def available() -> dict[str, Profile]:
    """Every profile a setting may name, by key: the built-in ones and those read from
    files."""
    return {**builtins(), **_loaded}


def find(name_or_path: str) -> Profile:
    """A profile by key, or read from a file path (then available by its key).

    A file may bear a built-in profile's name (a copy of payxpert.toml with one
    value changed, a profile derived from payxpert.jsonl): it loads beside the
    built-in one, keyed "name (file name)".
    """
    known = available().get(name_or_path)
    if known is not None:
        return known
    if not (name_or_path.endswith(".toml") or "/" in name_or_path or Path(name_or_path).exists()):
        raise ProfileError(name_or_path, f"unknown profile {name_or_path!r}; choose from "
                                         f"{', '.join(available())} or give a .toml file")
    profile = load(name_or_path)
    if profile.name in builtins():
        profile = replace(profile, file=Path(name_or_path).name)
    _loaded[profile.key] = profile
    return profile


def describe_all(french: bool = False) -> list[str]:
    """One line per profile: key, label, source (--list-profiles); in French, the
    profile's `source_fr` when it has one."""
    return [f"{p.key}\t{p.label}\t{(p.source_fr if french else '') or p.source}"
            for p in available().values()]


__all__ = ["ACTION_KINDS", "DEFAULT", "ExtraTag", "Profile", "ProfileError", "available",
           "builtin", "builtins", "describe_all", "find", "load", "parse"]
