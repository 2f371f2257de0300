"""Recordings of exchanges (JSON Lines) and answering from them: no Twisted here.

`--record FILE` writes one JSON object per line: first a header, then one
line per transaction, whatever the mode (simulated, proxied, replayed):

    {"type": "recording", "version": 1, "mode": "proxied", "started_at": ISO,
     "upstream": "192.168.1.20:8888", "settings": {...}}
    {"type": "transaction", "id": 1, "mode": "proxied", "peer": "...",
     "received_at": ISO, "request": [[tag, value], ...], "answer": [[...]] | null,
     "status": "approved", "reason": null, "decided_by": "terminal",
     "outcome": {...} | null, "latency_s": 0.84,
     "segments": [{"at": 0.0, "from": "pos", "data": "CZ0040300..."}, ...],
     "deviations": [{"code": "answer-split", "side": "terminal", "message": "..."}]}

`at` is in seconds from the first byte of the request; `data` holds the
bytes of one segment as Latin-1 text (one character per byte, so any byte
survives). Card numbers are masked before anything is written (masking.py).

`ReplayBook` answers requests from a recording: the recorded answer of the
matching request (same action, amount and currency, or simply the next one
in order), with its recorded delay and segmentation, echoes adjusted to the
new request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from .. import masking, money, tlv
from ..errors import CaisseApError
from ..messages import ECHOED_TAGS
from ..tlv import Field

FORMAT_VERSION = 1
POS, TERMINAL = "pos", "terminal"  # where a segment comes from
DIRECTIONS = (POS, TERMINAL)


class RecordingError(CaisseApError, ValueError):
    """A recording that cannot be read or written; the message names the file and line."""


@dataclass(frozen=True)
class Segment:
    """Bytes as one read or one write carried them, `at` seconds into the transaction."""

    at: float
    direction: str  # POS or TERMINAL
    data: bytes

    def to_json(self) -> dict[str, object]:
        return {"at": round(self.at, 6), "from": self.direction,
                "data": self.data.decode("latin-1")}


def masked_segments(segments: Sequence[Segment], numbers: Iterable[str]) -> list[Segment]:
    """Segments with the full card `numbers` masked in each direction's stream."""
    numbers = list(numbers)
    if not numbers:
        return list(segments)
    masked = list(segments)
    for direction in DIRECTIONS:
        places = [i for i, segment in enumerate(segments) if segment.direction == direction]
        pieces = masking.mask_segments([segments[i].data for i in places], numbers)
        for i, piece in zip(places, pieces, strict=True):
            masked[i] = Segment(segments[i].at, direction, piece)
    return masked


def transaction_entry(*, txn_id: int, mode: str, peer: str, received_at: str | None,
                      request: Sequence[Field], answer: Sequence[Field] | None, status: str,
                      reason: str | None, decided_by: str | None,
                      outcome: Mapping[str, object] | None, latency: float | None,
                      segments: Sequence[Segment],
                      deviations: Sequence[Mapping[str, object]] = ()) -> dict[str, object]:
    """One transaction line, card numbers masked in its fields and its segments."""
    numbers = masking.full_card_numbers([*request, *(answer or ())])
    return {
        "type": "transaction",
        "id": txn_id,
        "mode": mode,
        "peer": peer,
        "received_at": received_at,
        "request": [list(f) for f in masking.mask_fields(request)],
        "answer": None if answer is None else [list(f) for f in masking.mask_fields(answer)],
        "status": status,
        "reason": reason,
        "decided_by": decided_by,
        "outcome": None if outcome is None else dict(outcome),
        "latency_s": None if latency is None else round(latency, 6),
        "segments": [s.to_json() for s in masked_segments(segments, numbers)],
        "deviations": [dict(d) for d in deviations],
    }


class RecordFile:
    """A recording being written: `start(header)`, then a line per transaction.

    Opened first, so that a file that cannot be written stops the server
    before it listens. Each line is flushed as it is written: a recording is
    read while the session goes on, and must survive the process being killed.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        try:
            self._file: TextIO = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed at shutdown)
        except OSError as error:
            raise RecordingError(f"cannot write the recording {self.path}: "
                                 f"{error.strerror}") from None

    def start(self, header: Mapping[str, object]) -> None:
        self.write({"type": "recording", "version": FORMAT_VERSION, **header})

    def write(self, entry: Mapping[str, object]) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# --- Reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedTransaction:
    """One transaction of a recording, as read back."""

    request: list[Field]
    answer: list[Field] | None
    status: str
    segments: list[Segment]
    latency: float | None = None
    line: int = 0
    mode: str = "simulated"  # or "proxied", "replayed": who answered

    @property
    def key(self) -> tuple[str | None, int | None, str | None]:
        return request_key(self.request)

    def answer_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.direction == TERMINAL]

    def request_end(self) -> float:
        """When the last byte of the request came before the answer started."""
        answer_start = next((s.at for s in self.segments if s.direction == TERMINAL), None)
        ends = [s.at for s in self.segments if s.direction == POS
                and (answer_start is None or s.at <= answer_start)]
        return max(ends, default=0.0)


def request_key(fields: Iterable[Field]) -> tuple[str | None, int | None, str | None]:
    """What matches a request to a recorded one: action, amount (as a number), currency."""
    values = dict(fields)
    amount = values.get("CB")
    units = int(amount) if amount and amount.isascii() and amount.isdigit() else None
    return values.get("CD"), units, values.get("CE")


@dataclass
class Recording:
    header: dict[str, object]  # the header line, as read
    transactions: list[RecordedTransaction] = field(default_factory=list)
    source: str = ""  # the file it was read from

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Recording:
        """Read a recording; RecordingError naming the file and line if it is not one."""
        name = os.fspath(path)
        try:
            with open(name, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except OSError as error:
            raise RecordingError(f"cannot read the recording {name}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise RecordingError(f"{name} is not a recording (not UTF-8 text)") from None
        recording: Recording | None = None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if recording is None:
                    if not (isinstance(entry, dict) and entry.get("type") == "recording"):
                        raise ValueError("the first line is not a recording header")
                    recording = cls(entry, source=name)
                elif isinstance(entry, dict) and entry.get("type") == "transaction":
                    recording.transactions.append(_transaction(entry, number))
            except (ValueError, KeyError, TypeError, tlv.FrameError) as error:
                raise RecordingError(f"{name}:{number}: not a recording line: {error}") from None
        if recording is None:
            raise RecordingError(f"{name} is empty: no recording header")
        return recording


def _fields(value: object) -> list[Field]:
    if not isinstance(value, list) or not all(
            isinstance(f, list) and len(f) == 2 and all(isinstance(p, str) for p in f)
            for f in value):
        raise ValueError("fields must be a list of [tag, value] pairs")
    return [(tag, text) for tag, text in value]


def _transaction(entry: dict[str, object], line: int) -> RecordedTransaction:  # JSON read back
    segments = []
    items = entry.get("segments") or []
    if not isinstance(items, list):
        raise TypeError(f"segments must be a list, not {type(items).__name__}")
    for item in items:
        if not isinstance(item, dict):
            raise TypeError(f"a segment must be an object, not {type(item).__name__}")
        if item["from"] not in DIRECTIONS:
            raise ValueError(f"a segment comes from {item['from']!r}, not pos or terminal")
        segments.append(Segment(float(item["at"]), item["from"], item["data"].encode("latin-1")))
    answer = entry.get("answer")
    latency = entry.get("latency_s")
    if not (latency is None or isinstance(latency, (int, float, str))):
        raise TypeError(f"latency_s must be a number, not {type(latency).__name__}")
    return RecordedTransaction(_fields(entry["request"]),
                               None if answer is None else _fields(answer),
                               str(entry["status"]), segments,
                               None if latency is None else float(latency), line,
                               str(entry.get("mode", "simulated")))


# --- Replaying --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayedAnswer:
    """What to do for one request, from the recording.

    `writes`: (delay after the previous write, or after the request for the
    first, bytes) for each recorded segment of the answer; empty for a
    recorded no-answer. `hang_up`: close after the writes (after `delay`
    when there are none).
    """

    writes: list[tuple[float, bytes]]
    fields: list[Field] | None
    status: str
    hang_up: bool = False
    delay: float = 0.0
    source_line: int = 0


class ReplayBook:
    """The answers of a recording, handed out for new requests.

    By match (default): the first unused recorded transaction with the same
    action, amount and currency; once each has been used, the last one again.
    In order (`in_order`): the recorded transactions one after the other,
    whatever the requests; past the last one, nothing matches.
    """

    def __init__(self, recording: Recording, in_order: bool = False):
        self.in_order = in_order
        self._recorded = [t for t in recording.transactions if t.status != "dropped"]
        self._used: set[int] = set()
        self._next = 0

    def answer_for(self, request: Sequence[Field]) -> ReplayedAnswer | None:
        """The recorded answer to play for `request`, or None if the recording has none."""
        chosen = self._choose(request)
        if chosen is None:
            return None
        return replayed_answer(chosen, request)

    def _choose(self, request: Sequence[Field]) -> RecordedTransaction | None:
        if self.in_order:
            if self._next >= len(self._recorded):
                return None
            self._next += 1
            return self._recorded[self._next - 1]
        key = request_key(request)
        matching = [i for i, t in enumerate(self._recorded) if t.key == key]
        if not matching:
            return None
        unused = [i for i in matching if i not in self._used]
        chosen = unused[0] if unused else matching[-1]
        self._used.add(chosen)
        return self._recorded[chosen]


def replayed_answer(recorded: RecordedTransaction, request: Sequence[Field]) -> ReplayedAnswer:
    """The recorded answer, its echoes adjusted to `request`, cut as it was recorded."""
    segments = recorded.answer_segments()
    start = recorded.request_end()
    if recorded.answer is None or not segments:
        delay = recorded.latency if recorded.latency is not None else 0.0
        return ReplayedAnswer([], None, recorded.status, recorded.status == "hang-up",
                              max(delay, 0.0), recorded.line)
    fields = adjust_echoes(recorded.request, recorded.answer, request)
    original = b"".join(s.data for s in segments)
    frame = _reframe(original, recorded.answer, fields)
    writes, previous = [], start
    cuts = _cut_points([len(s.data) for s in segments], len(frame))
    for segment, (begin, end) in zip(segments, cuts, strict=True):
        writes.append((max(segment.at - previous, 0.0), frame[begin:end]))
        previous = segment.at
    return ReplayedAnswer([w for w in writes if w[1]], fields, recorded.status,
                          source_line=recorded.line)


def _reframe(original: bytes, recorded: Sequence[Field], fields: Sequence[Field]) -> bytes:
    """The answer's bytes for the adjusted fields, keeping what surrounded the recorded frame
    (a line end after it, say)."""
    old = tlv.encode_unchecked(recorded)
    new = tlv.encode_unchecked(fields)
    at = original.find(old)
    if at < 0:  # the recorded bytes are not the fields' encoding: play the fields alone
        return new
    return original[:at] + new + original[at + len(old):]


def _cut_points(sizes: Sequence[int], new_total: int) -> list[tuple[int, int]]:
    """Where to cut the new answer: at the recorded offsets, the last segment taking what
    the echoes added or removed."""
    cuts, start = [], 0
    for index, size in enumerate(sizes):
        end = new_total if index == len(sizes) - 1 else min(start + size, new_total)
        cuts.append((start, end))
        start = end
    return cuts


def adjust_echoes(recorded_request: Sequence[Field], recorded_answer: Sequence[Field],
                  request: Sequence[Field]) -> list[Field]:
    """The recorded answer with its echoes taken from `request`, in the recorded style.

    An echo the recorded terminal did not send is still not sent; one it
    changed (its own CZ) stays as recorded; CB keeps its recorded zero
    padding, and a partial approval the same share of the new amount.
    """
    before, now = dict(recorded_request), dict(request)
    adjusted = []
    for tag, value in recorded_answer:
        if tag in ECHOED_TAGS and value == before.get(tag):
            if tag not in now:
                continue
            value = now[tag]
        elif tag == "CB":
            value = _amount_echo(value, before.get("CB"), now.get("CB"))
        adjusted.append((tag, value))
    return adjusted


def _amount_echo(answered: str, requested: str | None, new: str | None) -> str:
    digits = [t for t in (answered, requested, new) if t and t.isascii() and t.isdigit()]
    if new is None or len(digits) != 3:
        return answered if new is None else new
    old_asked, given = int(requested), int(answered)  # type: ignore[arg-type]
    units = int(new) if given == old_asked or old_asked == 0 else int(new) * given // old_asked
    text = money.format_minor_units(units)
    return text.zfill(len(answered)) if answered.startswith("0") else text
