"""A transaction's JSON form (docs/api.md), as the API and the event stream send it.

The terminal keeps facts (service.Transaction, its journal record); what
derives from them for people and programs reading the API (action, amount,
frames, receipt, labels) is built here, when someone reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ... import money, tags, tlv
from ...messages import ACTION_NAMES, TerminalAnswer
from ..journal import Record
from ..service import CAISSE_AP, Transaction

# A transaction's JSON form (docs/api.md, transaction object).
TransactionJson = dict[str, object]


def transaction_json(txn: Transaction) -> TransactionJson:
    """The JSON form of a transaction of this run."""
    return complete(txn.record())


def complete(record: Record) -> TransactionJson:
    """A transaction's JSON form (docs/api.md) from its record: the record plus what
    derives from its request and answer fields (action, amount, frames, labels).

    Takes a record as Transaction.record() gives it or as a journal reads it
    back, whatever the version that wrote it (what is derived is derived again).
    """
    request: list[list[str]] = [list(f) for f in record.get("request") or ()]
    answered = record.get("answer")
    answer = None if answered is None else [list(f) for f in answered]
    values = dict(request)
    return {
        "id": record["id"],
        "received_at": record.get("received_at"),
        "answered_at": record.get("answered_at"),
        "duration_s": record.get("duration_s"),
        "peer": record.get("peer"),
        "action": ACTION_NAMES.get(values.get("CD") or ""),
        **_amount(values.get("CB"), values.get("CE")),
        "request": request,
        "request_frame": _frame(request),
        "answer": answer,
        "answer_frame": _frame(answer),
        "receipt": _receipt(answer),
        "status": record["status"],
        "reason": record.get("reason"),
        "decided_by": record.get("decided_by"),
        "labels": {**_labels(request), **_labels(answer or ())},
        "protocol": record.get("protocol", CAISSE_AP),
        "exchange": record.get("exchange"),
        "mode": record.get("mode", "simulated"),
        "deviations": record.get("deviations", []),
        "terminal": record.get("terminal"),
        # Only in a conformance session's transactions: the scenario that answered.
        **({"scenario": record["scenario"]} if record.get("scenario") else {}),
    }


def _receipt(answer: Sequence[Sequence[str]] | None) -> str | None:
    """The customer receipt of an answer, decoded (ZT is base64): None without one."""
    if answer is None or not any(tag == "ZT" for tag, _ in answer):
        return None
    return TerminalAnswer.parse([(tag, value) for tag, value in answer]).receipt


def _amount(units_text: str | None, code: str | None) -> dict[str, str | int | None]:
    units = int(units_text) if units_text and units_text.isdigit() else None
    info = None
    if code is not None:
        try:
            info = money.currency(code)
        except money.CurrencyError:
            info = None
    amount = None
    if units is not None and info is not None and len(units_text or "") <= money.MAX_DIGITS:
        amount = format(money.from_minor_units(units, info), "f")
    return {
        "amount": amount,
        "amount_minor": units,
        "currency": info.alpha if info else None,
        "currency_numeric": info.numeric if info else None,
        "currency_symbol": info.symbol if info else None,
    }


def _labels(fields: Sequence[Sequence[str]]) -> dict[str, str]:
    """A French label per tag: the code's, else the tag's."""
    return {tag: tags.field_label(tag, value) for tag, value in fields}


def _frame(fields: Sequence[Sequence[str]] | None) -> str | None:
    if not fields or fields[0][0] != tlv.FIRST_TAG:
        return None  # what was read of a broken request need not start with CZ
    # Decoded fields, valid: encode() would only check them again.
    return tlv.encode_unchecked([(tag, value) for tag, value in fields]).decode("ascii")
