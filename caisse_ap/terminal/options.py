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
from collections.abc import Callable
from typing import NoReturn, TypeVar

from ..errors import CaisseApError
from . import behaviour
from .behaviour import SettingsError, TerminalSettings
from .profiles import Profile, ProfileError
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
        self.exit(2, f"{self.prog}: error: {message}\n")


def mode_from_args(args: argparse.Namespace) -> Mode:
    """The mode the flags choose; `-ft TYPE` alone means failure mode.

    Raises UsageError when -ft comes with a mode that never fails.
    """
    for mode in MODE_FLAGS:
        if getattr(args, mode.replace("-", "_")):
            if mode != Mode.FAILURE and args.failure_type is not None:
                raise UsageError(f"-ft and {MODE_FLAGS[mode]} cannot be used together")
            return mode
    return Mode.FAILURE if args.failure_type is not None else Mode.SUCCESS


def setting_arg(name: str) -> Callable[[str], object]:
    """An argparse type that checks one setting with the same rules as the API."""
    def check(text: str) -> object:
        try:
            return behaviour.check_setting(name, text)
        except SettingsError as error:
            raise argparse.ArgumentTypeError(error.message) from None
    check.__name__ = name  # argparse names the type in some messages
    return check


def ip_address_arg(what: str) -> Callable[[str], str]:
    """An argparse type for a listening address ("localhost" is 127.0.0.1)."""
    def check(text: str) -> str:
        if text == "localhost":
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an IP address such as 0.0.0.0 or "
                                             f"127.0.0.1, not {text!r}") from None
    check.__name__ = what
    return check


def port_arg(what: str) -> Callable[[str], int]:
    """An argparse type for a TCP port, 0 meaning any free one."""
    def check(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) > 65535:
            raise argparse.ArgumentTypeError(f"{what} must be 0 to 65535, not {text!r}")
        return int(text)
    check.__name__ = what
    return check


def positive_arg(kind: Callable[[str], Number], what: str) -> Callable[[str], Number]:
    """An argparse type for a number above 0 (`kind`: int or float), finite."""
    def check(text: str) -> Number:
        try:
            value: Number | None = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a number above 0, not {text!r}")
        return value
    check.__name__ = what
    return check


def profile_arg(text: str) -> Profile:
    """An argparse type: a profile by name or file, checked (file:line: reason if not)."""
    try:
        return find_profile(text)
    except ProfileError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
