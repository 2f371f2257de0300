"""What the kit's terminal writes for one scenario and one request: a plan, no I/O.

A plan is the list of writes (bytes, each after a pause) and what happens to
the connection after the last one (wait for the POS to close, close, reset).
It is computed from the scenario and the request the POS sent, through the
project's one protocol core: the request is read by `messages.PaymentRequest`,
the answer decided by the simulated terminal's `behaviour.reply` with the
scenario's profile, and encoded by `tlv`. The Twisted edge (wire.py) only
carries a plan out; a server that plays scenarios for a POS driven by hand
can carry out the same plans.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import datetime

from .. import tlv
from ..messages import PaymentRequest, RequestError
from ..terminal import behaviour
from ..terminal.behaviour import OutcomeSpec, TerminalSettings
from ..terminal.words import OutcomeName
from ..tlv import Field
from .catalogue import Scenario

ANSWER_LIMIT = 1024  # what one recv(1024) reads: a long receipt must take the answer past it
RECEIPT_LINES = 30


@dataclass(frozen=True)
class Write:
    """Bytes to write, `after` seconds after the previous write (or the request)."""

    after: float
    data: bytes


@dataclass(frozen=True)
class Plan:
    """Every write of one answer, then `then`: "wait-close" (until the POS closes),
    "close" or "reset". `answer` is the whole answer meant (for the report), `fields`
    its fields (none when the terminal writes nothing or unreadable bytes)."""

    writes: tuple[Write, ...]
    then: str
    answer: bytes
    fields: tuple[Field, ...] = ()


def settings_for(scenario: Scenario) -> TerminalSettings:
    part = scenario.terminal
    changes: dict[str, object] = {"profile": part.profile, "payment_type": part.payment_type,
                                  "duration": 0}
    if part.pad_amount:
        changes["pad_amount"] = True
    if part.answer_version is not None:
        changes["answer_version"] = part.answer_version
    return TerminalSettings.from_dict(changes)


def answer_fields(scenario: Scenario, request_fields: list[Field],
                  rng: random.Random, now: datetime) -> list[Field]:
    """The fields the scenario's terminal answers to the request, in their order."""
    settings = settings_for(scenario)
    try:
        request = PaymentRequest.parse(request_fields, settings.accepted_currencies,
                                       settings.accepted_actions)
    except RequestError as error:
        # A POS that sends a malformed request gets what a terminal answers (AF=09...).
        reply = behaviour.error_reply(error.fields, error.reason, settings)
    else:
        if scenario.terminal.immediate:
            reply = behaviour.immediate_reply(request, settings)
        else:
            spec = OutcomeSpec(OutcomeName(scenario.terminal.outcome))
            reply = behaviour.reply(request, spec, settings, rng, now)
    fields = list(reply.fields or ())
    if scenario.terminal.long_receipt:
        fields = _set(fields, "ZT", _long_receipt(fields))
    for tag, value in scenario.terminal.fields:
        fields = _set(fields, tag, value)
    fields = [field for field in fields if field[0] not in scenario.terminal.drop]
    for tag in reversed(scenario.terminal.first):
        moved = [field for field in fields if field[0] == tag]
        fields = fields[:1] + moved + [field for field in fields[1:] if field[0] != tag]
    return fields


def _set(fields: list[Field], tag: str, value: str) -> list[Field]:
    if any(name == tag for name, _ in fields):
        return [(name, value if name == tag else old) for name, old in fields]
    return [*fields, (tag, value)]


def _long_receipt(fields: list[Field]) -> str:
    """A customer receipt (ZT holding CK and AK, base64) as long as ZT may be, as a real
    ticket with the shop's header and the card's lines is: with ZT first, the answer's
    status (AE) then comes after its first 1,024 bytes."""
    values = dict(fields)
    lines = ["TICKET CLIENT A CONSERVER", "BOULANGERIE DU MARCHE", "12 RUE DE LA PAIX",
             "75002 PARIS", f"CARTE {values.get('AA', '')}", f"AUTO {values.get('AC', '')}"]
    while len(lines) < RECEIPT_LINES:
        lines.append(f"LIGNE {len(lines):02d} MERCI DE VOTRE VISITE")
    text = "\n".join(line[:32] for line in lines).encode("ascii")
    # ZT holds CK (8 characters) and AK's header (5): AK's base64 gets the rest, in
    # whole groups of 4 characters (3 bytes of text) so that it still decodes.
    room = (tlv.MAX_VALUE_LENGTH - 8 - tlv.HEADER) // 4 * 3
    encoded = base64.b64encode(text[:room]).decode("ascii")
    return tlv.encode([("CK", "100"), ("AK", encoded)], bare=True).decode("ascii")


def _middle(frame: bytes, fields: list[Field], tag: str) -> int | None:
    """The offset of the middle of `tag`'s value in the encoded answer."""
    offset = 0
    for name, value in fields:
        size = tlv.HEADER + len(value)
        if name == tag:
            return offset + tlv.HEADER + max(1, len(value) // 2)
        offset += size
    return None


def make_plan(scenario: Scenario, request_fields: list[Field], pos_timeout: float,
              rng: random.Random | None = None, now: datetime | None = None) -> Plan:
    """The writes that play `scenario` for a request (its fields as received).

    `pos_timeout` is how long the POS says it waits: an answer "after the POS's
    time-out" comes that long, plus the scenario's margin, after the request.
    """
    net = scenario.network
    then = net.then
    if not scenario.answers:
        # Nothing written; a delay still holds back the close (or the reset).
        pause = (Write(net.delay, b""),) if net.delay else ()
        return Plan(pause, "close" if scenario.terminal.outcome == "hang-up" else then, b"")
    if scenario.terminal.raw is not None:
        frame = scenario.terminal.raw.encode("latin-1")
        fields: list[Field] = []
    else:
        fields = answer_fields(scenario, request_fields, rng or random.Random(0),
                               now or datetime.now())
        fields = ([f for f in fields if f[0] not in net.late]
                  + [f for f in fields if f[0] in net.late])
        frame = tlv.encode_unchecked(fields)
    first_pause = net.delay
    if net.after_pos_timeout is not None:
        first_pause = pos_timeout + net.after_pos_timeout
    cuts = sorted({offset for tag in net.cut_inside
                   if (offset := _middle(frame, fields, tag)) is not None})
    pauses = {offset: net.pause for offset in cuts}
    if net.late:
        late_start = _late_start(frame, fields, net.late)
        pauses[late_start] = net.late_pause
    end = len(frame)
    if net.hang_up_inside is not None:
        end = _middle(frame, fields, net.hang_up_inside) or end
    whole = frame[:end] + (net.trailer.encode("ascii") if end == len(frame) else b"")
    writes = _writes(whole, pauses, net.byte_pause, first_pause)
    return Plan(writes, then, frame + net.trailer.encode("ascii"), tuple(fields))


def _late_start(frame: bytes, fields: list[Field], late: tuple[str, ...]) -> int:
    size = sum(tlv.HEADER + len(value) for tag, value in fields if tag not in late)
    return min(size, len(frame))


def _writes(data: bytes, pauses: dict[int, float], byte_pause: float | None,
            first_pause: float) -> tuple[Write, ...]:
    if byte_pause is not None:
        return tuple(Write(first_pause if i == 0 else byte_pause, data[i:i + 1])
                     for i in range(len(data)))
    writes, start, pause = [], 0, first_pause
    for offset in sorted(o for o in pauses if 0 < o < len(data)):
        writes.append(Write(pause, data[start:offset]))
        start, pause = offset, pauses[offset]
    writes.append(Write(pause, data[start:]))
    return tuple(writes)


__all__ = ["ANSWER_LIMIT", "Plan", "Write", "answer_fields", "make_plan", "settings_for"]
