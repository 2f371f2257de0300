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
    TERMINAL = "terminal"  # the real terminal behind the proxy (proxy.py)
    RECORDING = "recording"  # the recording a replay answers from
    SCENARIO = "scenario"  # a scenario of the conformance kit (--conformance)


class TransactionMode(StrEnum):
    """What answered a transaction (transaction.mode)."""

    SIMULATED = "simulated"  # this terminal
    PROXIED = "proxied"  # the real terminal behind the proxy
    REPLAYED = "replayed"  # a recording (--replay)
    CONFORMANCE = "conformance"  # a scenario of the conformance kit (--conformance)


class OutcomeName(StrEnum):
    """What a transaction's outcome is (docs/api.md, outcome object): an approval, no
    answer, a hang-up, the real terminal's answer (proxy), or a failure by its name, one
    per AF code (behaviour.FAILURE_TYPES)."""

    APPROVED = "approved"
    PARTIAL = "partial"
    NO_ANSWER = "no-answer"
    HANG_UP = "hang-up"
    # Proxy mode (proxy.py): the real terminal answers, `delay` seconds later than it
    # did, or its answer cut into segments. With no terminal behind: the settings' outcome.
    TERMINAL = "terminal"
    TERMINAL_SPLIT = "terminal-split"
    # Failures, by AF code. "abandon" (11, operator abandon) is the original script's
    # default; "abandoned" (06) is the customer's.
    UNKNOWN = "unknown"
    AUTHORISED = "authorised"
    PHONE_AUTHORISATION = "phone-authorisation"
    FORCED = "forced"
    REFUSED = "refused"
    FORBIDDEN = "forbidden"
    ABANDONED = "abandoned"
    NOT_COMPLETED = "not-completed"
    TIMEOUT = "timeout"
    FORMAT_ERROR = "format-error"
    SELECTION_ERROR = "selection-error"
    ABANDON = "abandon"
    UNKNOWN_ACTION = "unknown-action"
    UNSUPPORTED_CURRENCY = "unsupported-currency"
