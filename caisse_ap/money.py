"""Amounts and currencies: text or Decimal <-> minor units, ISO 4217 lookups.

Amounts are never floats: a float such as 0.1 cannot hold a price exactly, so
every amount is text, ``int`` or ``Decimal`` and all arithmetic is on integers.

The Caisse-AP amount field (CB) carries minor units (cents for EUR), so a
currency's exponent (number of decimals) decides the conversion. EUR is built
in; any other currency loads the ``iso4217`` package on first use, so that a
client paying in EUR starts with the standard library alone.

ISO 4217 lists no minor unit for a few codes (gold XAU, test code XTS, "no
currency" XXX...). We treat them as exponent 0 (whole units only): they are
still valid numeric codes, and a terminal will refuse them anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from .errors import CaisseApError
from .i18n import said
from .number_text import NUMBER

MAX_DIGITS = 12  # the CB field holds at most 12 digits
MAX_UNITS = 10**MAX_DIGITS - 1

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "XPF": "F CFP"}


class _Said(CaisseApError, ValueError):
    """An error whose English message (str()) has its form in the user's language too,
    `local` (caisse_ap.i18n), for a command to show."""

    def __init__(self, message: str, *, local: str | None = None) -> None:
        super().__init__(message)
        self.local = local or message


class AmountError(_Said):
    """An amount that cannot be paid or encoded; the message is for a user.

    `reason` says what is wrong, for programs that word it themselves (the web
    console): "not_an_amount", "empty", "zero", "negative", "too_many_decimals"
    or "too_large"; `limits` the bound it passed ({"decimals": 2} or
    {"max": "9999999999.99", "currency": "EUR"}), when there is one.
    """

    def __init__(self, message: str, reason: str = "not_an_amount",
                 limits: dict[str, object] | None = None, *, local: str | None = None
                 ) -> None:
        super().__init__(message, local=local)
        self.reason = reason
        self.limits = limits


class CurrencyError(_Said):
    """A currency code that ISO 4217 does not know."""


@dataclass(frozen=True)
class CurrencyInfo:
    alpha: str  # "EUR"
    numeric: str  # "978", always 3 digits ("008" for ALL)
    exponent: int  # number of decimals: 2 for EUR, 0 for XPF, 3 for KWD
    symbol: str  # "€", or the alpha code when we know no symbol
    name: str  # "Euro"


EUR = CurrencyInfo(alpha="EUR", numeric="978", exponent=2, symbol="€", name="Euro")


def _show(value: object) -> str:
    """The amount as the user wrote it, shortened so a message stays readable."""
    text = value.strip() if isinstance(value, str) else str(value)
    return text if len(text) <= 24 else text[:20] + "..."


@lru_cache(maxsize=1)
def _iso_tables() -> tuple[dict[str, CurrencyInfo], dict[str, CurrencyInfo]]:
    """All ISO 4217 currencies by alpha and by numeric code (imports iso4217)."""
    try:
        from iso4217 import Currency
    except ImportError:
        # Only EUR works without it; say so instead of showing a traceback.
        raise CurrencyError(**said(
            "currencies other than EUR need the iso4217 package, which is not installed"
        )) from None

    by_alpha: dict[str, CurrencyInfo] = {}
    for entry in Currency:
        info = CurrencyInfo(
            alpha=entry.code,
            numeric=f"{entry.number:03d}",
            exponent=entry.exponent or 0,  # None (no minor unit) -> whole units
            symbol=_SYMBOLS.get(entry.code, entry.code),
            name=entry.currency_name,
        )
        by_alpha[info.alpha] = info
    by_numeric = {info.numeric: info for info in by_alpha.values()}
    return by_alpha, by_numeric


# Cached: the terminal looks up each transaction's currency several times. A
# code that is not found raises, and errors are not cached.
@lru_cache(maxsize=1024, typed=True)  # typed: True is not 1
def currency(code: str | int | CurrencyInfo) -> CurrencyInfo:
    """Look up a currency by alphabetic ("EUR", "eur") or numeric code ("978", 978)."""
    if isinstance(code, CurrencyInfo):
        return code
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 999:
        key = f"{code:03d}"
    elif isinstance(code, str) and re.fullmatch(r"[0-9]{1,3}", code.strip()):
        key = code.strip().zfill(3)
    elif isinstance(code, str) and re.fullmatch(r"[A-Za-z]{3}", code.strip()):
        key = code.strip().upper()
    else:
        raise CurrencyError(**said("unknown currency %r", (code,)))
    if key in (EUR.alpha, EUR.numeric):
        return EUR  # no iso4217 import for the common case
    by_alpha, by_numeric = _iso_tables()
    info = by_numeric.get(key) if key.isdigit() else by_alpha.get(key)
    if info is None:
        raise CurrencyError(**said("unknown currency %r", (code,)))
    return info


@lru_cache(maxsize=1)
def numeric_codes() -> frozenset[str]:
    """Every ISO 4217 numeric code, as 3-digit strings."""
    return frozenset(_iso_tables()[1])


def parse_amount(text: str | Decimal | int) -> Decimal:
    """Read an amount such as "12.50", "12,50", " 12 " or "-3" into a Decimal.

    Surrounding spaces are ignored; one '.' or ',' may separate the decimals.
    Thousands separators, exponents ("1e3"), "nan", "inf" and floats are refused.
    """
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise AmountError(f"amount {_show(text)} is not a finite number", "not_an_amount")
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        return Decimal(text)
    if isinstance(text, float):
        raise AmountError(
            f"amount {text!r} is a float; give it as text or Decimal to keep it exact"
        )
    if not isinstance(text, str):
        raise AmountError(f"{_show(repr(text))} is not an amount")
    cleaned = text.strip()
    if not cleaned:
        raise AmountError(**said("the amount is empty"), reason="empty")
    if not NUMBER.fullmatch(cleaned):
        raise AmountError(**said(
            "%s is not an amount: write digits with at most one '.' or ',' before the "
            "decimals, like 12.50", (_show(repr(cleaned)),)
        ))
    return Decimal(cleaned.replace(",", "."))


def to_minor_units(
    amount: str | Decimal | int,
    currency: str | int | CurrencyInfo = "EUR",
    *,
    allow_negative: bool = False,
) -> int:
    """Convert an amount to minor units of the currency: "12,50" EUR -> 1250.

    Refused with AmountError: more decimals than the currency has, zero,
    a negative amount (unless allow_negative), more than 12 digits of minor units.
    """
    info = _lookup(currency)
    value = parse_amount(amount)
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN or infinity: parse_amount lets none through
        raise AmountError(f"amount {_show(amount)} is not a number")
    # Work on the integer digits so that no Decimal context can round anything.
    digit_text = "".join(map(str, digits)).lstrip("0")
    stripped = digit_text.rstrip("0")
    exponent += len(digit_text) - len(stripped)  # "12.500" is 12.5
    if not stripped:
        raise AmountError(**said("amount %s is zero; an amount must be above zero",
                                (_show(amount),)), reason="zero")
    shift = exponent + info.exponent
    if shift < 0:
        raise AmountError(**said(
            "amount %(amount)s has more decimals than %(currency)s allows (%(decimals)d)",
            {"amount": _show(amount), "currency": info.alpha, "decimals": info.exponent}
        ), reason="too_many_decimals", limits={"decimals": info.exponent, "currency": info.alpha})
    if sign and not allow_negative:
        raise AmountError(**said("amount %s is negative; only positive amounts are accepted",
                                (_show(amount),)), reason="negative")
    if len(stripped) + shift > MAX_DIGITS:
        largest = format(from_minor_units(MAX_UNITS, info), "f")
        raise AmountError(**said(
            "amount %(amount)s is too large: %(currency)s amounts stop at %(largest)s "
            "(%(digits)d digits of minor units)",
            {"amount": _show(amount), "currency": info.alpha, "largest": largest,
             "digits": MAX_DIGITS}
        ), reason="too_large", limits={"max": largest, "currency": info.alpha})
    units = int(stripped + "0" * shift)
    return -units if sign else units


def format_minor_units(units: int) -> str:
    """The CB field value: at least two digits, 5 -> "05", 11245 -> "11245"."""
    if not isinstance(units, int) or isinstance(units, bool):
        raise AmountError(f"minor units must be a whole number, not {_show(repr(units))}")
    if units < 0:
        raise AmountError(f"amount {units} is negative; the amount field holds no sign")
    if units > MAX_UNITS:
        raise AmountError(f"amount {units} has more than {MAX_DIGITS} digits of minor units")
    return f"{units:02d}"


def from_minor_units(units: int | str, currency: str | int | CurrencyInfo = "EUR") -> Decimal:
    """Minor units back to an amount: "0000011245" EUR -> Decimal("112.45").

    Text must be digits (left zero padding, as terminals send, is fine); an int
    may be negative (a refund shown with its sign). At most 12 significant digits.
    """
    info = _lookup(currency)
    if isinstance(units, str):
        if not (units.isascii() and units.isdigit()):
            raise AmountError(f"{_show(repr(units))} is not an amount in minor units")
        digit_text = units.lstrip("0") or "0"
        sign = 0
    elif isinstance(units, int) and not isinstance(units, bool):
        digit_text, sign = str(abs(units)), int(units < 0)
    else:
        raise AmountError(f"{_show(repr(units))} is not an amount in minor units")
    if len(digit_text) > MAX_DIGITS:
        raise AmountError(
            f"amount {_show(digit_text)} has more than {MAX_DIGITS} digits of minor units"
        )
    return Decimal((sign, tuple(map(int, digit_text)), -info.exponent))


def format_amount(
    units: int | str, currency: str | int | CurrencyInfo = "EUR", lang: str = "fr"
) -> str:
    """Minor units as text for people, without thousands separators.

    French: decimal comma, then a space and the symbol: "112,45 €", "1245 ¥".
    English: decimal point, then a space and the alphabetic code: "112.45 EUR".
    The space is a plain space (U+0020) so the text is easy to compare and log.
    """
    info = _lookup(currency)
    number = format(from_minor_units(units, info), "f")
    if lang == "fr":
        return f"{number.replace('.', ',')} {info.symbol}"
    if lang == "en":
        return f"{number} {info.alpha}"
    raise ValueError(f"unsupported language {lang!r}; use 'fr' or 'en'")


def _lookup(code: str | int | CurrencyInfo) -> CurrencyInfo:
    # The public parameter is named `currency`, which hides the function above.
    return currency(code)
