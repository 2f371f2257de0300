"""A terminal profile from a recording (`--derive-profile FILE`): no I/O, no Twisted.

What a recording shows of a terminal (its answers to the requests it got) is
turned into a profile file in the format of docs/profiles.md: answer
version, CB padding, field order, card masking and AL, CG, AF details, what
failures carry, the status answering BA=1, the CD codes refused, extra
tags. A point the recording cannot show (no approval recorded, no BA=1
request...) keeps the standard value, and the file says so in a comment and
in its `silent` list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..deviations import STANDARD_ORDER
from ..messages import CHEQUE_APPLICATION
from ..tlv import Field
from .profiles import BUILT_TAGS, Profile, builtin
from .recording import Recording

STANDARD = builtin("standard")
ANSWER_KINDS = {"10": "approved", "01": "declined", "11": "accepted"}
EPOCH_MS_DIGITS = 13
UNKNOWN_ACTION = "12"

# Each answered transaction: the request's values by tag, and the answer's fields.
Answers = list[tuple[dict[str, str], list[Field]]]


def _toml(value: object) -> str:
    """A TOML value: text, boolean, whole number or list of texts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class _Profile:
    """The profile file being written: tables of keys with their comments, and `silent`."""

    def __init__(self) -> None:
        self.tables: dict[str, list[str]] = {}
        self.silent: list[str] = []

    def set(self, table: str, key: str, value: object, why: str) -> None:
        lines = self.tables.setdefault(table, [])
        lines.append(f"# {why}")
        lines.append(f"{key} = {_toml(value)}")

    def unseen(self, table: str, note: str) -> None:
        self.tables.setdefault(table, []).append(f"# {note}: standard value kept")
        self.silent.append(note)

    def text(self, header: list[str]) -> str:
        lines = [*header, "silent = ["]
        lines += [f"    {_toml(note)}," for note in self.silent]
        lines.append("]")
        for table, body in self.tables.items():
            lines += ["", f"[{table}]", *body]
        return "\n".join(lines) + "\n"


def _answers(recording: Recording) -> Answers:
    """(request values, answer fields) of every answered transaction; behind a proxy, of
    those the real terminal answered (not the outcome queue)."""
    transactions = recording.transactions
    if any(t.mode == "proxied" for t in transactions):
        transactions = [t for t in transactions if t.mode == "proxied"]
    return [(dict(t.request), list(t.answer)) for t in transactions if t.answer and t.request]


def _most_common(values: Iterable[str]) -> str | None:
    counted = Counter(values).most_common(1)
    return counted[0][0] if counted else None


def derive_profile(recording: Recording, name: str) -> str:
    """The profile file (TOML text) that answers as the recorded terminal did."""
    answers = _answers(recording)
    profile = _Profile()
    _answer_points(profile, answers)
    _card_points(profile, answers)
    _contract_points(profile, answers)
    _failure_points(profile, answers)
    _action_points(profile, answers)
    _extra_tags(profile, answers)
    profile.silent.append("receipt options (CK second and third digits) cannot be told "
                          "from a recording: standard behaviour kept")
    header = [f"# Derived by caisse-ap-ip-server --derive-profile from {recording.source}",
              f"# ({len(recording.transactions)} transactions, {len(answers)} answers read).",
              f"name = {_toml(name)}",
              f"label = {_toml('Terminal enregistré (' + name + ')')}",
              f"source = {_toml('recording ' + recording.source)}"]
    return profile.text(header)


def _answer_points(profile: _Profile, answers: Answers) -> None:
    table = "answer"
    versions = {values.get("CZ"): dict(answer).get("CZ") for values, answer in answers}
    changed = {answered for asked, answered in versions.items() if answered != asked}
    if not answers:
        profile.unseen(table, "answer version: no answer recorded")
    elif changed:
        profile.set(table, "version", _most_common(dict(a).get("CZ", "") for _, a in answers),
                    "the version every answer carried, whatever the request's")
    amounts = [(values.get("CB", ""), dict(answer).get("CB", "")) for values, answer in answers
               if "CB" in dict(answer)]
    padded = [answered for asked, answered in amounts
              if answered.startswith("0") and len(answered) > len(asked)]
    kept = [answered for asked, answered in amounts
            if asked.startswith("0") and len(asked) > 1 and answered == asked]
    if kept:
        profile.set(table, "amount_as_received", True, f"CB={kept[0]} came back as sent")
    if not amounts:
        profile.unseen(table, "CB padding: no answer echoed CB")
    elif padded:
        profile.set(table, "pad_amount", True, "CB came back left-padded with zeros")
        profile.set(table, "amount_width", len(padded[0]), f"to {len(padded[0])} digits")
    order = _field_order([[tag for tag, _ in answer] for _, answer in answers])
    if order is not None:
        profile.set(table, "order", order, "the order of the answers' fields")
    approvals = [dict(a) for _, a in answers if dict(a).get("AE") == "10"]
    reasons = {a["AF"] for a in approvals if "AF" in a}
    if reasons:
        profile.set(table, "approval_reason", sorted(reasons)[0], "AF sent with AE=10")
    immediate = [status for values, a in answers if values.get("BA") == "1"
                 for tag, status in a if tag == "AE"]
    if not immediate:
        profile.unseen(table, "status answering BA=1: no BA=1 request recorded")
    elif _most_common(immediate) != STANDARD.immediate_status:
        profile.set(table, "immediate_status", _most_common(immediate),
                    "the status answering BA=1")


def _field_order(orders: list[list[str]]) -> list[str] | None:
    """The tags in the order the answers sent them, or None if that is the standard order.

    Every pair of tags seen one before the other keeps that order; others
    follow the standard order.
    """
    rank = {tag: i for i, tag in enumerate(STANDARD_ORDER)}
    if all([t for t in order if t in rank] == sorted((t for t in order if t in rank),
                                                     key=rank.__getitem__)
           for order in orders):
        return None
    before: dict[str, set[str]] = {}
    seen: list[str] = []
    for order in orders:
        for i, tag in enumerate(order):
            if tag not in seen:
                seen.append(tag)
            before.setdefault(tag, set()).update(order[:i])
    result: list[str] = []
    remaining = sorted(seen, key=lambda t: (rank.get(t, len(rank)), seen.index(t)))
    while remaining:
        ready = next((t for t in remaining if not (before[t] - set(result))), remaining[0])
        result.append(ready)
        remaining.remove(ready)
    return result


def _card_points(profile: _Profile, answers: Answers) -> None:
    table = "card"
    numbers = [dict(a)["AA"] for _, a in answers if "AA" in dict(a)]
    if not numbers:
        profile.unseen(table, "card masking: no card number recorded")
        return
    number = numbers[0]
    mask = next((c for c in number if not c.isdigit()), STANDARD.mask)
    first = len(number) - len(number.lstrip("0123456789"))
    last = len(number) - len(number.rstrip("0123456789"))
    for key, value, standard in (("mask", mask, STANDARD.mask),
                                 ("shown_first", min(first, 6), STANDARD.shown_first),
                                 ("shown_last", min(last, 4), STANDARD.shown_last)):
        if value != standard:
            profile.set(table, key, value, f"as in AA={number}")
    pan_types = [dict(a)["AL"] for _, a in answers if "AL" in dict(a)]
    if pan_types:
        profile.set(table, "pan_type", pan_types[0], "AL sent with the card number")


def _contract_points(profile: _Profile, answers: Answers) -> None:
    contracts = [dict(a)["CG"] for _, a in answers if "CG" in dict(a)]
    if not contracts:
        card_approvals = [a for _, a in answers if dict(a).get("AE") == "10" and "AA" in dict(a)]
        if card_approvals:
            profile.set("contract", "send", False, "no card approval carried CG")
            return
        profile.unseen("contract", "CG: no merchant contract recorded")
        return
    contract = _most_common(contracts)
    assert contract is not None
    if contract != STANDARD.seller_contract:
        profile.set("contract", "length", len(contract), "the length of CG")
        profile.set("contract", "default", contract, "the merchant contract recorded")


def _failure_points(profile: _Profile, answers: Answers) -> None:
    failures = [(values, dict(a)) for values, a in answers if dict(a).get("AE") == "01"]
    if not failures:
        profile.unseen("failure", "what failures carry: no failure recorded")
        return
    carried = [tag for tag in ("AC", "ZT")
               if any(tag in a for values, a in failures
                      if tag != "ZT" or values.get("CK", "").startswith("1"))]
    if carried:
        profile.set("failure", "fields", carried, "fields the failures carried")
    cheques = [a["AF"][:2] for values, a in failures if values.get("CC") == CHEQUE_APPLICATION]
    if cheques and cheques[0] != STANDARD.cheque_reason:
        profile.set("failure", "cheque_reason", cheques[0], "AF of a cheque failure")
    for code, value in sorted({a["AF"][:2]: a["AF"] for _, a in failures if "AF" in a}.items()):
        if len(value) > 2:
            profile.set("failure.details", _toml(code), value[2:], f"AF={value}")


def _action_points(profile: _Profile, answers: Answers) -> None:
    codes: dict[str, bool] = {}  # each CD asked: never refused as an unknown action
    for values, answer in answers:
        code = values.get("CD")
        if code is not None:
            unknown = dict(answer).get("AF", "")[:2] == UNKNOWN_ACTION
            codes[code] = codes.get(code, True) and not unknown
    kinds = dict(STANDARD.actions)
    refused = sorted(code for code, done in codes.items() if not done)
    if not refused:
        return
    lines = profile.tables.setdefault("actions", [])
    lines.append(f"# CD {', '.join(refused)} answered AF=12; what the other codes do cannot "
                 "be told from answers: standard kinds kept")
    for code, kind in kinds.items():
        if code not in refused:
            lines.append(f"{_toml(code)} = {_toml(kind)}")


def _extra_tags(profile: _Profile, answers: Answers) -> None:
    values_of: dict[str, list[str]] = {}
    kinds_of: dict[str, set[str]] = {}
    for _, answer in answers:
        kind = ANSWER_KINDS.get(dict(answer).get("AE", ""))
        for tag, value in answer:
            if tag not in BUILT_TAGS and kind is not None:
                values_of.setdefault(tag, []).append(value)
                kinds_of.setdefault(tag, set()).add(kind)
    for tag, values in values_of.items():
        table = f"extra_tags.{tag}"
        on = [kind for kind in ANSWER_KINDS.values() if kind in kinds_of[tag]]
        if len(set(values)) == 1 and (len(values) > 1 or not values[0].isdigit()):
            profile.set(table, "fill", "constant", "the same value in every answer")
            profile.set(table, "value", values[0], "as recorded")
        elif all(v.isdigit() and len(v) == EPOCH_MS_DIGITS for v in values):
            profile.set(table, "fill", "epoch-ms", "13 digits: milliseconds since 1970")
        elif all(v.isdigit() for v in values) and len({len(v) for v in values}) == 1:
            profile.set(table, "fill", "transaction-id", "digits that change every time")
            profile.set(table, "length", len(values[0]), "as recorded")
        else:
            profile.set(table, "fill", "constant", "values that change in no way this knows: "
                                                   "the first one recorded")
            profile.set(table, "value", values[0], "as recorded")
        profile.set(table, "on", on, "the answers that carried it")


def profile_name(path: str) -> str:
    """A profile name from a recording's file name: lower-case letters, digits, dashes."""
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(path).stem.lower()).strip("-") or "recorded"
    return stem[:32]


def check(text: str) -> Profile:
    """The derived text read back as a profile (ProfileError if it could not be)."""
    from .profiles import parse

    return parse(text, "<derived profile>")

