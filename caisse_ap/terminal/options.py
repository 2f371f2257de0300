"""What the server's option groups share: argparse types, usage errors and defaults.

The terminal's own options (cli.py) and those of its optional edges (the web
console, the serial line, the in-shop debugging tools) check their values
with these, so that a bad value is one line on stderr and exit status 2,
whichever group it belongs to. Nothing here imports Twisted: `--help` stays
fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Callable
from typing import NoReturn, TypeVar

from ..errors import CaisseApError
from ..i18n import _, language
from ..number_text import read_decimal, with_point
from . import behaviour
from .behaviour import SettingsError, TerminalSettings
from .profiles import Profile, ProfileError
from .profiles import available as available_profiles
from .profiles import find as find_profile
from .words import Mode

# Both commands take "warn" and "warning" (the client's spelling is logging's).
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR}

DEFAULTS = TerminalSettings()  # the options' defaults are the settings'
# The options that choose another mode than success, by mode (one at most).
MODE_FLAGS = {Mode.FAILURE: "-f", Mode.NO_ANSWER: "--no-answer", Mode.HANG_UP: "--hang-up"}

Number = TypeVar("Number", int, float)


class UsageError(CaisseApError, ValueError):
    """A bad option value found after parsing (one line on stderr, exit status 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _("%(prog)s: error: %(message)s") % {"prog": self.prog,
                                                          "message": message} + "\n")


def mode_from_args(args: argparse.Namespace) -> Mode:
    """The mode the flags choose; `-ft TYPE` alone means failure mode.

    Raises UsageError when -ft comes with a mode that never fails.
    """
    for mode in MODE_FLAGS:
        if getattr(args, mode.replace("-", "_")):
            if mode != Mode.FAILURE and args.failure_type is not None:
                raise UsageError(_("-ft and %s cannot be used together") % MODE_FLAGS[mode])
            return mode
    return Mode.FAILURE if args.failure_type is not None else Mode.SUCCESS


def setting_arg(name: str, number: bool = False) -> Callable[[str], object]:
    """An argparse type that checks one setting with the same rules as the API; a
    `number` takes a decimal comma as a point ("0,5")."""
    def check(text: str) -> object:
        try:
            return behaviour.check_setting(name, with_point(text) if number else text)
        except SettingsError as error:
            raise argparse.ArgumentTypeError(setting_message(error, text)) from None
    check.__name__ = name  # argparse names the type in some messages
    return check


def setting_message(error: SettingsError, text: str) -> str:
    """What a bad option value gets: in English, the API's own sentence; in French, one
    said from the error's code and limits (the API's message stays English, for scripts)."""
    if language() == "en":
        return error.message
    limits = error.limits or {}
    values = {"value": text, "choices": ", ".join(behaviour.PAYMENT_TYPES),
              "max": format(limits.get("max", limits.get("max_length", 0)), "g"),
              "min": format(limits.get("min", limits.get("above", 0)), "g")}
    messages = {
        "not_a_number": _("a number of seconds is expected (0,5 or 0.5), not %(value)r"),
        "out_of_range": _("a number of seconds from %(min)s to %(max)s is expected, "
                          "not %(value)r") if "min" in limits else
        _("a number of seconds above %(min)s, up to %(max)s, is expected, not %(value)r"),
        "unknown_choice": _("unknown payment type %(value)r: choose from %(choices)s")
        if error.field == "payment_type" else
        _("unknown failure type %(value)r: give a name such as refused, or an AF code "
          "from 00 to 13"),
        "empty": _("give at least one currency code, such as EUR or 978")
        if error.field == "currencies" else _("the contract number cannot be blank"),
        "too_long": _("the contract number takes %(max)s characters at most, not %(value)r"),
        "not_printable_ascii": _("the contract number takes printable ASCII characters "
                                 "only (no accents), not %(value)r"),
        "invalid_format": _("4 digits such as 0301 are expected, not %(value)r"),
        "unknown_currency": _("ISO 4217 currency codes separated by commas are expected "
                              "(EUR,978), not %(value)r"),
    }
    message = messages.get(error.code)
    return message % values if message else error.message


def ip_address_arg(what: str) -> Callable[[str], str]:
    """An argparse type for a listening address ("localhost" is 127.0.0.1)."""
    def check(text: str) -> str:
        if text == "localhost":
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                _("%(what)s must be an IP address such as 0.0.0.0 or 127.0.0.1, not %(value)r")
                % {"what": _(what), "value": text}) from None
    check.__name__ = what
    return check


def port_arg(what: str) -> Callable[[str], int]:
    """An argparse type for a TCP port, 0 meaning any free one."""
    def check(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) > 65535:
            raise argparse.ArgumentTypeError(_("%(what)s must be 0 to 65535, not %(value)r")
                                             % {"what": _(what), "value": text})
        return int(text)
    check.__name__ = what
    return check


def positive_arg(kind: Callable[[str], Number], what: str) -> Callable[[str], Number]:
    """An argparse type for a number above 0 (`kind`: int or float), finite: a float
    takes a decimal comma ("0,5"), an int whole digits."""
    def check(text: str) -> Number:
        try:
            # The one grammar of numbers (number_text): no exponent, nan or inf.
            value: Number | None = kind(str(read_decimal(text))) if kind is float else kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < 1e9:
            message = (_("%(what)s must be a number above 0, not %(value)r") if kind is float
                       else _("%(what)s must be a whole number above 0, not %(value)r"))
            raise argparse.ArgumentTypeError(message % {"what": _(what), "value": text})
        return value
    check.__name__ = what
    return check


def profile_arg(text: str) -> Profile:
    """An argparse type: a profile by name or file, checked (file:line: reason if not)."""
    try:
        return find_profile(text)
    except ProfileError as error:
        if text in available_profiles() or text.endswith(".toml") or os.path.exists(text):
            raise argparse.ArgumentTypeError(str(error)) from None  # the file's own words
        raise argparse.ArgumentTypeError(
            _("unknown profile %(name)r: give one of %(names)s, or a profile file (.toml)")
            % {"name": text, "names": ", ".join(available_profiles())}) from None


def describe_mode(settings: TerminalSettings) -> str:
    """The start-up line's mode part: what a POS will get."""
    mode = settings.mode
    if mode == Mode.SUCCESS:
        what = f"approve every payment ({settings.payment_type})"
    elif mode == Mode.FAILURE:
        what = f"refuse every payment with AF={settings.failure_code} ({settings.failure_type})"
    elif mode == Mode.MANUAL:
        return (f"wait for a decision on each payment "
                f"(AF=08 after {settings.manual_timeout:g} s)")
    elif mode == Mode.NO_ANSWER:
        return "read each request and never answer"
    else:
        what = "close each connection without answering"
    return f"{what}, after {settings.duration:g} s"
