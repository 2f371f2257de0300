import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caisse_ap.money import (
    EUR,
    AmountError,
    CurrencyError,
    CurrencyInfo,
    currency,
    format_amount,
    format_minor_units,
    from_minor_units,
    numeric_codes,
    parse_amount,
    to_minor_units,
)

ROOT = Path(__file__).resolve().parent.parent


# --- currencies ---------------------------------------------------------------


@pytest.mark.parametrize("code", ["EUR", "eur", " Eur ", "978", 978])
def test_eur_by_any_code(code):
    assert currency(code) is EUR
    assert CurrencyInfo("EUR", "978", 2, "€", "Euro") == EUR


@pytest.mark.parametrize(
    "code, alpha, numeric, exponent, symbol",
    [
        ("XPF", "XPF", "953", 0, "F CFP"),
        (953, "XPF", "953", 0, "F CFP"),
        ("kwd", "KWD", "414", 3, "KWD"),
        ("usd", "USD", "840", 2, "$"),
        ("826", "GBP", "826", 2, "£"),
        ("JPY", "JPY", "392", 0, "¥"),
        ("CHF", "CHF", "756", 2, "CHF"),
        (8, "ALL", "008", 2, "ALL"),
        ("8", "ALL", "008", 2, "ALL"),
        ("XAU", "XAU", "959", 0, "XAU"),  # no minor unit in ISO 4217: whole units
    ],
)
def test_iso_currencies(code, alpha, numeric, exponent, symbol):
    info = currency(code)
    assert (info.alpha, info.numeric, info.exponent, info.symbol) == (
        alpha,
        numeric,
        exponent,
        symbol,
    )
    assert info.name


def test_iso_eur_matches_builtin():
    # The built-in EUR must agree with the iso4217 table it stands in for.
    from caisse_ap.money import _iso_tables

    assert _iso_tables()[0]["EUR"] == EUR


@pytest.mark.parametrize(
    "code, message",
    [
        ("EUX", "unknown currency 'EUX'"),
        ("000", "unknown currency '000'"),
        (1000, "unknown currency 1000"),
        ("", "unknown currency ''"),
        ("EURO", "unknown currency 'EURO'"),
        (True, "unknown currency True"),
        (None, "unknown currency None"),
    ],
)
def test_unknown_currency(code, message):
    with pytest.raises(CurrencyError) as caught:
        currency(code)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_missing_iso4217_is_a_clear_error(monkeypatch):
    from caisse_ap.money import _iso_tables

    _iso_tables.cache_clear()
    currency.cache_clear()  # lookups are cached too
    monkeypatch.setitem(sys.modules, "iso4217", None)  # makes the import fail
    try:
        assert to_minor_units("1", "EUR") == 100
        with pytest.raises(CurrencyError) as caught:
            currency("USD")
        assert str(caught.value) == (
            "currencies other than EUR need the iso4217 package, which is not installed"
        )
    finally:
        _iso_tables.cache_clear()
        currency.cache_clear()


def test_numeric_codes():
    codes = numeric_codes()
    assert {"978", "953", "840", "414", "008"} <= codes
    assert all(len(code) == 3 and code.isdigit() for code in codes)
    assert "000" not in codes


@pytest.mark.slow
def test_iso4217_not_imported_for_eur():
    script = (
        "import sys, caisse_ap.money as m\n"
        "assert m.to_minor_units('12,50', 'EUR') == 1250\n"
        "assert m.to_minor_units('1', 978) == 100\n"
        "assert m.format_amount('0000011245') == '112,45 \u20ac'\n"
        "print('iso4217' in sys.modules)\n"
        "m.currency('USD')\n"
        "print('iso4217' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["False", "True"]


# --- parse_amount ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("12.50", "12.50"),
        ("12,50", "12.50"),
        (" 12 ", "12"),
        ("-3", "-3"),
        ("+7,5", "7.5"),
        ("\u00a012.5\t", "12.5"),
        (Decimal("4.20"), "4.20"),
        (42, "42"),
    ],
)
def test_parse_amount(text, value):
    parsed = parse_amount(text)
    assert parsed == Decimal(value)
    assert str(parsed) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the amount is empty"),
        ("   ", "the amount is empty"),
        *(
            (
                bad,
                f"{bad!r} is not an amount: write digits with at most one '.' "
                "or ',' before the decimals, like 12.50",
            )
            for bad in [
                "abc",
                "nan",
                "inf",
                "1e3",
                "12.",
                ".5",
                "1 234,56",
                "1,234.56",
                "1.2.3",
                "--3",
                "١٢",
            ]
        ),
        (12.5, "amount 12.5 is a float; give it as text or Decimal to keep it exact"),
        (Decimal("NaN"), "amount NaN is not a finite number"),
        (Decimal("-Infinity"), "amount -Infinity is not a finite number"),
        (None, "None is not an amount"),
        (True, "True is not an amount"),
    ],
)
def test_parse_amount_refused(text, message):
    with pytest.raises(AmountError) as caught:
        parse_amount(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("amount, currency, reason, limits", [
    ("0", "EUR", "zero", None),
    ("0,00", "EUR", "zero", None),
    ("-5", "EUR", "negative", None),
    ("99999999999", "EUR", "too_large", {"max": "9999999999.99", "currency": "EUR"}),
    ("12,345", "EUR", "too_many_decimals", {"decimals": 2, "currency": "EUR"}),
    ("1,5", "XPF", "too_many_decimals", {"decimals": 0, "currency": "XPF"}),
    ("", "EUR", "empty", None),
    ("douze", "EUR", "not_an_amount", None),
])
def test_a_refused_amount_says_why_for_programs(amount, currency, reason, limits):
    """The reason and bounds a program words itself (the web console, in French)."""
    with pytest.raises(AmountError) as caught:
        to_minor_units(amount, currency)
    assert (caught.value.reason, caught.value.limits) == (reason, limits)


def test_long_garbage_is_shortened_in_message():
    with pytest.raises(AmountError) as caught:
        parse_amount("x" * 1000)
    assert str(caught.value).startswith("'xxxxxxxxxxxxxxxxxxx... is not an amount")


# --- to_minor_units / from_minor_units -----------------------------------------------


@pytest.mark.parametrize(
    "amount, code, units",
    [
        ("112.45", "EUR", 11245),
        ("112,45", 978, 11245),
        ("0.05", "EUR", 5),
        ("12.500", "EUR", 1250),  # trailing zeros are not extra decimals
        ("12", "EUR", 1200),
        (Decimal("1E+2"), "EUR", 10000),
        (3, "EUR", 300),
        ("1245", "XPF", 1245),
        ("1245,00", "XPF", 1245),
        ("1245", "JPY", 1245),
        ("1.234", "KWD", 1234),
        ("0,001", "KWD", 1),
        ("9.99", "USD", 999),
        ("9999999999.99", "EUR", 999999999999),
        ("999999999999", "XPF", 999999999999),
        ("999999999.999", "KWD", 999999999999),
    ],
)
def test_to_minor_units(amount, code, units):
    assert to_minor_units(amount, code) == units


def test_negative_allowed_on_request():
    assert to_minor_units("-3", allow_negative=True) == -300
    assert to_minor_units("-0,05", "EUR", allow_negative=True) == -5


@pytest.mark.parametrize(
    "amount, code, message",
    [
        ("12.505", "EUR", "amount 12.505 has more decimals than EUR allows (2)"),
        ("12,5", "XPF", "amount 12,5 has more decimals than XPF allows (0)"),
        ("1.2345", "KWD", "amount 1.2345 has more decimals than KWD allows (3)"),
        ("0", "EUR", "amount 0 is zero; an amount must be above zero"),
        ("-0,00", "EUR", "amount -0,00 is zero; an amount must be above zero"),
        ("-3", "EUR", "amount -3 is negative; only positive amounts are accepted"),
        (
            "10000000000",
            "EUR",
            "amount 10000000000 is too large: EUR amounts stop at 9999999999.99 "
            "(12 digits of minor units)",
        ),
        (
            "1000000000000",
            "XPF",
            "amount 1000000000000 is too large: XPF amounts stop at 999999999999 "
            "(12 digits of minor units)",
        ),
        (
            Decimal("1E+1000000"),
            "EUR",
            "amount 1E+1000000 is too large: EUR amounts stop at 9999999999.99 "
            "(12 digits of minor units)",
        ),
        (Decimal("1E-1000000"), "EUR", "amount 1E-1000000 has more decimals than EUR allows (2)"),
        (0.1, "EUR", "amount 0.1 is a float; give it as text or Decimal to keep it exact"),
    ],
)
def test_to_minor_units_refused(amount, code, message):
    with pytest.raises(AmountError) as caught:
        to_minor_units(amount, code)
    assert str(caught.value) == message


def test_to_minor_units_unknown_currency():
    with pytest.raises(CurrencyError, match="unknown currency 'EUX'"):
        to_minor_units("1", "EUX")


@pytest.mark.parametrize(
    "units, code, value",
    [
        ("0000011245", "EUR", "112.45"),
        (11245, "EUR", "112.45"),
        ("05", "EUR", "0.05"),
        (100, "EUR", "1.00"),
        ("1245", "XPF", "1245"),
        (1245, "JPY", "1245"),
        (1234, "KWD", "1.234"),
        (999, "USD", "9.99"),
        (-300, "EUR", "-3.00"),
        ("0", "EUR", "0.00"),
        ("00000999999999999", "EUR", "9999999999.99"),
    ],
)
def test_from_minor_units(units, code, value):
    amount = from_minor_units(units, code)
    assert amount == Decimal(value)
    assert str(amount) == value


@pytest.mark.parametrize(
    "units, message",
    [
        ("12.45", "'12.45' is not an amount in minor units"),
        ("-5", "'-5' is not an amount in minor units"),
        ("", "'' is not an amount in minor units"),
        (12.0, "12.0 is not an amount in minor units"),
        ("1000000000000", "amount 1000000000000 has more than 12 digits of minor units"),
        (10**12, "amount 1000000000000 has more than 12 digits of minor units"),
    ],
)
def test_from_minor_units_refused(units, message):
    with pytest.raises(AmountError) as caught:
        from_minor_units(units)
    assert str(caught.value) == message


@given(st.integers(min_value=1, max_value=10**12 - 1), st.sampled_from(["EUR", "XPF", "KWD"]))
def test_round_trip(units, code):
    assert to_minor_units(from_minor_units(units, code), code) == units
    assert to_minor_units(from_minor_units(format_minor_units(units), code), code) == units


# --- format_minor_units / format_amount --------------------------------------------


@pytest.mark.parametrize(
    "units, field",
    [(5, "05"), (0, "00"), (11245, "11245"), (99, "99"), (999999999999, "999999999999")],
)
def test_format_minor_units(units, field):
    assert format_minor_units(units) == field


def test_five_cents_is_05():
    assert format_minor_units(to_minor_units("0,05")) == "05"


@pytest.mark.parametrize(
    "units, message",
    [
        (1000000000000, "amount 1000000000000 has more than 12 digits of minor units"),
        (-1, "amount -1 is negative; the amount field holds no sign"),
        ("05", "minor units must be a whole number, not '05'"),
        (True, "minor units must be a whole number, not True"),
    ],
)
def test_format_minor_units_refused(units, message):
    with pytest.raises(AmountError) as caught:
        format_minor_units(units)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "units, code, lang, text",
    [
        (11245, "EUR", "fr", "112,45 €"),
        ("0000011245", "EUR", "en", "112.45 EUR"),
        (5, "EUR", "fr", "0,05 €"),
        (1245, "JPY", "fr", "1245 ¥"),
        (1245, "JPY", "en", "1245 JPY"),
        (1245, "XPF", "fr", "1245 F CFP"),
        (1234, "KWD", "fr", "1,234 KWD"),
        (999, "USD", "fr", "9,99 $"),
        (-300, "EUR", "fr", "-3,00 €"),
    ],
)
def test_format_amount(units, code, lang, text):
    assert format_amount(units, code, lang) == text


def test_format_amount_unknown_language():
    with pytest.raises(ValueError, match="unsupported language 'de'; use 'fr' or 'en'"):
        format_amount(100, "EUR", "de")
