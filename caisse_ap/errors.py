"""The library's exceptions: one base, `CaisseApError`, for everything it raises on purpose.

Kept apart and free of imports so that the framing core (tlv) can derive its
FrameError from the same base without pulling anything else in.
"""

from __future__ import annotations


class CaisseApError(Exception):
    """Base of every error caisse_ap raises on purpose."""


class InvalidRequest(CaisseApError, ValueError):
    """An argument that cannot make a payment request; `field` names it ("amount"...).

    For an amount, `reason` and `limits` say what is wrong, as money.AmountError does.
    str() is English; `local` is the same in the user's language (caisse_ap.i18n), for
    a command to show.
    """

    def __init__(self, message: str, field: str | None = None, reason: str | None = None,
                 limits: dict[str, object] | None = None, *, local: str | None = None
                 ) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.limits = limits
        self.local = local or message


class TerminalUnreachable(CaisseApError, ConnectionError):
    """No connection to the terminal: nothing was sent, so trying again is safe.

    `host` and `port` say where; `reason` why, in words.
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"{reason}; nothing was sent")
        self.host = host
        self.port = port
        self.reason = reason
