"""What an exchange did that PROTOCOL.md or the expected terminal profile does not: no I/O.

The proxy (terminal/proxy.py) reads both sides of each exchange and asks
`find_deviations()` what stands out: an answer's CB padded with zeros, an
echo missing or changed, an unknown tag, fields out of the profile's order,
an answer split in several segments, bytes after the answer, a POS sending
the same request again after a time-out. Each kind is one row of `KINDS`
(its code, the side at fault and its labels); each check is one function of
`CHECKS`; what a terminal is expected to do comes in as `Expectations`
(data, from a profile), never as a vendor's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import tags
from .messages import ECHOED_TAGS, EXACT_ECHOES
from .tlv import Field

POS, TERMINAL = "pos", "terminal"


@dataclass(frozen=True)
class Kind:
    code: str
    side: str  # who deviates: POS or TERMINAL
    label_fr: str
    label_en: str


KINDS = {kind.code: kind for kind in (
    Kind("amount-padded", TERMINAL, "CB complété par des zéros", "CB padded with zeros"),
    Kind("echo-missing", TERMINAL, "écho absent", "echo missing"),
    Kind("echo-changed", TERMINAL, "écho modifié", "echo changed"),
    Kind("version-changed", TERMINAL, "version CZ différente", "CZ version changed"),
    Kind("unknown-tag", TERMINAL, "étiquette inconnue", "unknown tag"),
    Kind("unknown-request-tag", POS, "étiquette inconnue dans la demande",
         "unknown tag in the request"),
    Kind("field-order", TERMINAL, "ordre des champs", "field order"),
    Kind("answer-split", TERMINAL, "réponse en plusieurs segments",
         "answer split in several segments"),
    Kind("after-answer", TERMINAL, "octets après la réponse", "bytes after the answer"),
    Kind("unreadable-answer", TERMINAL, "réponse illisible", "unreadable answer"),
    Kind("unreadable-request", POS, "demande illisible", "unreadable request"),
    Kind("pos-resend", POS, "demande renvoyée après un délai",
         "request sent again after a time-out"),
    Kind("terminal-unreachable", TERMINAL, "terminal injoignable", "terminal unreachable"),
    Kind("replay-unmatched", TERMINAL, "absente de l'enregistrement",
         "not in the recording"),
)}

# The order of a standard answer's fields (behaviour.py writes them so): CZ and
# CJ, the status, the other echoes, then what the terminal adds.
STANDARD_ORDER = ("CZ", "CJ", "AE", "AF", "CA", "CB", "CD", "CE", "BF", "CF", "CC", "CI",
                  "AC", "AA", "AB", "AI", "CG", "ZT")


@dataclass(frozen=True)
class Expectations:
    """What the expected terminal does where terminals differ (a profile's data).

    `answer_version` None: CZ echoed. `field_order`: the order of the answer's
    known tags (tags it does not list may come anywhere).
    """

    pad_amount: bool = False
    answer_version: str | None = None
    field_order: tuple[str, ...] = STANDARD_ORDER
    extra_tags: frozenset[str] = frozenset()  # tags of its own, not unknown for it


@dataclass(frozen=True)
class Deviation:
    code: str
    detail: str = ""

    @property
    def kind(self) -> Kind:
        return KINDS[self.code]

    def message(self, lang: str = "en") -> str:
        label = self.kind.label_en if lang == "en" else self.kind.label_fr
        return f"{label}: {self.detail}" if self.detail else label

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "side": self.kind.side, "label": self.kind.label_fr,
                "detail": self.detail}


@dataclass(frozen=True)
class Exchange:
    """One request and what came back, as the proxy read them.

    `answer` None: no whole answer came. `answer_segments`: how many reads
    carried it; `after_answer`: bytes that came after it (not part of it).
    """

    request: Sequence[Field]
    answer: Sequence[Field] | None = None
    answer_segments: int = 1
    after_answer: bytes = b""
    resent: bool = False
    unmatched: bool = False
    problems: dict[str, str] = field(default_factory=dict)  # kind code: why


Check = Callable[[Exchange, Expectations], list[Deviation]]


def _amount_padded(exchange: Exchange, expected: Expectations) -> list[Deviation]:
    answered = dict(exchange.answer or ()).get("CB", "")
    asked = dict(exchange.request).get("CB", "")
    if expected.pad_amount or not answered.startswith("0") or asked.startswith("0"):
        return []
    return [Deviation("amount-padded", f"CB={answered}, sent {asked}")]


def _echoes(exchange: Exchange, expected: Expectations) -> list[Deviation]:
    if exchange.answer is None:
        return []
    asked, answered = dict(exchange.request), dict(exchange.answer)
    missing = [tag for tag in ECHOED_TAGS if tag in asked and tag not in answered]
    changed = [tag for tag in (*EXACT_ECHOES, "CJ", "CF")
               if tag in asked and tag in answered and asked[tag] != answered[tag]]
    amount, sent = answered.get("CB", ""), asked.get("CB", "")
    if (amount.isdigit() and sent.isdigit() and int(amount) != int(sent)
            and not (asked.get("BF") == "1" and 0 < int(amount) < int(sent))):
        changed.append("CB")
    found = []
    if missing:
        found.append(Deviation("echo-missing", ", ".join(missing)))
    if changed:
        found.append(Deviation("echo-changed", ", ".join(
            f"{tag}={answered[tag]!r}, sent {asked[tag]!r}" for tag in changed)))
    version, expected_version = answered.get("CZ"), expected.answer_version or asked.get("CZ")
    if version is not None and "CZ" in asked and version != expected_version:
        found.append(Deviation("version-changed", f"CZ={version}, expected {expected_version}"))
    return found


def _unknown_tags(exchange: Exchange, expected: Expectations) -> list[Deviation]:
    found = []
    for code, fields in (("unknown-request-tag", exchange.request),
                         ("unknown-tag", exchange.answer or ())):
        unknown = [tag for tag, _ in fields if tag not in tags.TAGS
                   and tag not in expected.extra_tags]
        if unknown:
            found.append(Deviation(code, ", ".join(unknown)))
    return found


def _field_order(exchange: Exchange, expected: Expectations) -> list[Deviation]:
    rank = {tag: i for i, tag in enumerate(expected.field_order)}
    known = [tag for tag, _ in exchange.answer or () if tag in rank]
    if known == sorted(known, key=rank.__getitem__):
        return []
    return [Deviation("field-order", " ".join(known))]


def _segments(exchange: Exchange, expected: Expectations) -> list[Deviation]:
    found = []
    if exchange.answer is not None and exchange.answer_segments > 1:
        found.append(Deviation("answer-split", f"{exchange.answer_segments} segments"))
    if exchange.after_answer:
        found.append(Deviation("after-answer", repr(exchange.after_answer[:40])[2:-1]))
    return found


def _flags(exchange: Exchange, expected: Expectations) -> list[Deviation]:
    found = [Deviation(code, detail) for code, detail in exchange.problems.items()]
    if exchange.resent:
        found.append(Deviation("pos-resend"))
    if exchange.unmatched:
        found.append(Deviation("replay-unmatched"))
    return found


CHECKS: tuple[Check, ...] = (_amount_padded, _echoes, _unknown_tags, _field_order, _segments,
                             _flags)


def find_deviations(exchange: Exchange,
                    expected: Expectations = Expectations()) -> list[Deviation]:
    """Every deviation of `exchange`, each kind at most once."""
    found: list[Deviation] = []
    for check in CHECKS:
        found.extend(check(exchange, expected))
    return found


RESEND_WINDOW = 600.0  # seconds: a POS that gave up waits less than this to try again


def _resend_key(request: Sequence[Field]) -> tuple[str | None, ...]:
    values = dict(request)
    return tuple(values.get(tag) for tag in ("CJ", "CA", "CD", "CB", "CE", "CF"))


class ResendWatch:
    """Requests seen lately, to recognise a POS sending the same request again (PROTOCOL.md
    section 5: a POS must not resend a payment on its own after a time-out: the first may
    have gone through).

    A request is a resend when the same one (same CJ, CA, CD, CB, CE, CF) came within
    the window on the same connection, or on another one while no answer had been
    delivered to it (still in progress, or left without an answer). Two customers paying
    the same amount in a row on two connections are no resend.
    """

    def __init__(self, window: float = RESEND_WINDOW):
        self.window = window
        # key -> (when it was sent, the connection it came on, whether its answer was delivered)
        self._seen: dict[tuple[str | None, ...], tuple[float, object, bool]] = {}

    def sent(self, request: Sequence[Field], at: float, connection: object = None) -> bool:
        """Note a request on its way from `connection`; whether it is a resend of one seen
        within the window (forgotten then)."""
        for key, (when, _, _) in list(self._seen.items()):
            if at - when > self.window:
                del self._seen[key]
        key = _resend_key(request)
        earlier = self._seen.get(key)
        self._seen[key] = (at, connection, False)
        if earlier is None:
            return False
        _, where, delivered = earlier
        return where is connection or not delivered

    def answered(self, request: Sequence[Field], connection: object = None) -> None:
        """The answer to `request` was delivered to the POS (on `connection`)."""
        key = _resend_key(request)
        seen = self._seen.get(key)
        if seen is not None and seen[1] is connection:
            self._seen[key] = (seen[0], connection, True)
