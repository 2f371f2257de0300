"""The simulated terminal's closed sets of words, each defined once.

String enums (StrEnum): a member equals its word, prints as it and is
written as it in JSON, so that the API, the journal and the command line
keep the same words (docs/api.md).
"""

from __future__ import annotations

from .._compat import StrEnum


class Mode(StrEnum):
    """How the terminal answers the next transactions (settings.mode)."""

    SUCCESS = "success"
    FAILURE = "failure"
    NO_ANSWER = "no-answer"
    HANG_UP = "hang-up"
    MANUAL = "manual"


class TransactionStatus(StrEnum):
    """Where a transaction of the journal stands (transaction.status)."""

    PENDING = "pending"  # waiting for its delay or a manual decision
    APPROVED = "approved"
    DECLINED = "declined"
    ACCEPTED = "accepted"  # immediate answer (BA=1)
    NO_ANSWER = "no-answer"
    HANG_UP = "hang-up"
    DROPPED = "dropped"  # the POS closed before the answer
    ERROR = "error"  # malformed request, answered AF=09
    INTERRUPTED = "interrupted"  # left pending by a server that stopped without answering


class DecidedBy(StrEnum):
    """Who chose a transaction's outcome (transaction.decided_by)."""

    SETTINGS = "settings"
    QUEUE = "queue"
    AMOUNT_RULE = "amount-rule"
    MANUAL = "manual"
    MANUAL_TIMEOUT = "manual-timeout"
    SHUTDOWN = "shutdown"
    REQUEST_ERROR = "request-error"
