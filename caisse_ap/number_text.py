"""Numbers as people type them on a French keyboard: "0,5" is "0.5".

The one grammar every number option of both commands reads (and amounts,
money.parse_amount): digits, and at most one '.' or ',' before the decimals.
Exponents ("1e3"), "nan", "inf", thousands separators and spaces inside are
refused, so that what a user typed is what is used.
"""

from __future__ import annotations

import re
from decimal import Decimal

NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")


def read_decimal(text: str) -> Decimal:
    """The number in `text` (surrounding spaces ignored); ValueError if it is not one."""
    cleaned = text.strip()
    if not NUMBER.fullmatch(cleaned):
        raise ValueError(f"not a number: {text!r}")
    return Decimal(cleaned.replace(",", "."))


def with_point(text: str) -> str:
    """`text` with a decimal comma made a point when it is a number, else as it is (for
    checks that take text and have their own words for what is not a number)."""
    cleaned = text.strip()
    return cleaned.replace(",", ".") if NUMBER.fullmatch(cleaned) else text
