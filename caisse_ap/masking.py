"""Card numbers kept out of everything this project writes down: no I/O.

A terminal sends the card number (`AA`) masked, as `497010######0123`. Should
one send a full number, it must still never reach a file, the journal, the
console or a log: whoever writes an answer down masks it here first, the
same way, keeping what a masked number shows (the first six digits, the
issuer's, and the last four).

Masking never changes a length, so that a masked frame still decodes and
masked segments still add up to the frame they were cut from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .tlv import Field

# Tags whose value is a card number (PROTOCOL.md section 4).
CARD_NUMBER_TAGS = frozenset({"AA"})
SHOWN_FIRST = 6  # the issuer's digits, which a masked number keeps
SHOWN_LAST = 4
MASK = "#"  # what the terminals this project knows put in place of hidden digits


def mask_card_number(value: str) -> str:
    """`value` with every digit but the first six and the last four hidden.

    An already masked number shows no more than those ten and comes back unchanged.
    """
    digits = sum(char.isdigit() for char in value)
    if digits <= SHOWN_FIRST + SHOWN_LAST:
        return value
    masked, seen = [], 0
    for char in value:
        if char.isdigit():
            seen += 1
            if SHOWN_FIRST < seen <= digits - SHOWN_LAST:
                char = MASK
        masked.append(char)
    return "".join(masked)


def full_card_numbers(fields: Iterable[Field]) -> list[str]:
    """The card numbers in `fields` that show more than a masked number does."""
    return [value for tag, value in fields
            if tag in CARD_NUMBER_TAGS and mask_card_number(value) != value]


def mask_fields(fields: Iterable[Field]) -> list[Field]:
    """`fields` with every card number masked."""
    return [(tag, mask_card_number(value) if tag in CARD_NUMBER_TAGS else value)
            for tag, value in fields]


def mask_bytes(data: bytes, numbers: Iterable[str]) -> bytes:
    """`data` with each of the full card `numbers` masked wherever it appears."""
    for number in numbers:
        data = data.replace(number.encode("latin-1"),
                            mask_card_number(number).encode("latin-1"))
    return data


def mask_segments(segments: Sequence[bytes], numbers: Iterable[str]) -> list[bytes]:
    """Segments masked as one stream (a number may be cut between two), then cut again
    at the same places."""
    numbers = list(numbers)
    if not numbers:
        return list(segments)
    masked = mask_bytes(b"".join(segments), numbers)
    pieces, start = [], 0
    for segment in segments:
        pieces.append(masked[start:start + len(segment)])
        start += len(segment)
    return pieces
