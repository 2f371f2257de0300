"""Caisse-AP connections as state machines, with no I/O (in the style of h11).

Over IP a message has no wrapper and no length: where it ends, how long late
fields may still join it and what a connection may still receive are
decided here, once, for each side:

- `PosConnection` is the point of sale's side: it reads the terminal's
  answer and says when it is whole;
- `TerminalConnection` is the terminal's side: it reads the POS's requests.

Each owns both directions of its connection: `send(frame)` gives the bytes
to write (the POS's request, the terminal's answer) and moves the state on;
`receive_data(data)` is fed the bytes received (`b""` when the peer closed)
and `next_event()` hands out what they make, one of a closed set of events
(`PosEvent`, `TerminalEvent`: an edge that handles them with `isinstance`
and `assert_never` is checked for completeness by mypy). Time is a `clock`
passed in (seconds, any origin): an event may carry a deadline at which the
caller calls `next_event()` again even if nothing arrived, so every timing
rule is tested without sockets or sleeps. The socket edges (client.py,
aio.py, twisted.py, terminal/edge.py) only move bytes and set timers.

Every state change of the terminal's side is in one table, `TRANSITIONS`
(as h11's _state.py): what may happen in each state and where it leads.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import tlv
from .errors import CaisseApError
from .messages import has_mandatory_fields
from .tlv import FIRST_TAG, LINE_ENDS, Field, FrameError


class LocalProtocolError(CaisseApError, RuntimeError):
    """This side was asked to do what its state does not allow (a bug of the caller):
    a second request on one exchange, an answer with no request in progress."""

ACTION_STATUS = "AE"  # the field that makes an answer whole
# Seconds of silence after which an answer already whole (AE read, at a field boundary)
# takes no more optional fields, when the terminal keeps the connection open and
# writes no line end. From a network fact: a lost TCP segment is sent again after the
# retransmission time-out, which Linux never lets fall below 200 ms (TCP_RTO_MIN) and
# adds to the smoothed round trip; 200 ms more cover a shop's Wi-Fi round trip and
# both hosts' scheduling. So one lost segment of optional fields still joins the
# answer; a segment later than this (two losses in a row) is not read.
TRAILING_GRACE = 0.4


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NeedData:
    """Read more bytes. If `deadline` is not None, call next_event() again at that clock
    time even if nothing arrives."""

    deadline: float | None = None


@dataclass(frozen=True)
class AnswerReceived:
    """The terminal's whole answer: its fields, trailing optional ones included.

    `frame` is its exact bytes (leading and ending line ends excluded).
    `dropped` holds bytes received after it that are not part of it (a cut
    or broken field, a second message), and `dropped_reason` says why, for
    a log line.
    """

    fields: list[Field]
    frame: bytes
    dropped: bytes = b""
    dropped_reason: str | None = None


@dataclass(frozen=True)
class AnswerUnreadable:
    """What was received cannot be read as an answer; `frame` holds those bytes."""

    error: FrameError
    frame: bytes


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection with nothing left to hand out."""


# What PosConnection.next_event() hands out.
PosEvent = NeedData | AnswerReceived | AnswerUnreadable | ConnectionClosed


# --- the point of sale's side -----------------------------------------------------------


class PosState(Enum):
    AWAITING_ANSWER = "awaiting answer"  # no action status (AE) read yet
    TRAILING = "trailing"  # AE read: optional fields may follow within the grace
    ANSWERED = "answered"  # AnswerReceived handed out
    ERROR = "error"  # AnswerUnreadable handed out
    CLOSED = "closed"  # ConnectionClosed handed out


_DONE = (PosState.ANSWERED, PosState.ERROR, PosState.CLOSED)


class PosConnection:
    """The POS's side of one exchange: the terminal's answer, read whatever its segmentation.

    An answer is whole once its action status (AE) has been read at a field
    boundary. Optional fields may still follow in later segments: they join
    it until the terminal is silent for `trailing_grace` seconds, writes a
    line end or a new message, or closes. Bytes that break the framing
    after AE end the answer there (they are `dropped`, never spoil it);
    before AE they make AnswerUnreadable. A field cut in the middle is never
    the end of an answer, whatever the silence: its rest is awaited until
    the terminal closes or the exchange's own time-out (`timed_out()`),
    which then make the AnswerUnreadable. Leading CR/LF are skipped.

    `send(frame)` gives the request's bytes to write, once, before any
    answer (a connection made for reading only may skip it).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 trailing_grace: float = TRAILING_GRACE, max_answer: int = tlv.MAX_BUFFER):
        self.clock = clock
        self.trailing_grace = trailing_grace
        self.max_answer = max_answer
        self.state = PosState.AWAITING_ANSWER
        self._buf = ""  # the answer's bytes as Latin-1 text, leading line ends stripped
        self._pos = 0  # start of the first field not yet read
        self._fields: list[Field] = []
        self._seen: set[str] = set()
        self._last_data_at = 0.0
        self._closed = False
        self._sent = False

    def send(self, frame: bytes) -> bytes:
        """The request: the bytes to write, in one write. Once per exchange, before the
        answer's first byte."""
        if self._sent or self._buf or self.state is not PosState.AWAITING_ANSWER:
            raise LocalProtocolError("a POS connection sends one request, before its answer")
        self._sent = True
        return frame

    def receive_data(self, data: bytes) -> None:
        """Bytes from the terminal; b"" when it closed the connection."""
        if not data:
            self._closed = True
            return
        if self.state in _DONE:
            return  # the exchange is over: what comes next is not read
        self._last_data_at = self.clock()
        self._buf += data.decode("latin-1")
        if not self._fields and self._pos == 0:
            self._buf = self._buf.lstrip(LINE_ENDS)

    def next_event(self) -> PosEvent:
        if self.state in _DONE:
            return ConnectionClosed() if self._closed else NeedData(None)
        try:
            ended_by = self._read_fields()
        except FrameError as error:
            if self.state is PosState.TRAILING:
                return self._answer(str(error))
            return self._error(error)
        if self.state is PosState.TRAILING:
            if ended_by is not None:
                return self._answer(f"they follow {ended_by}, which ends the answer")
            if len(self._buf) > self.max_answer:
                return self._answer(f"the answer exceeds {self.max_answer} bytes")
            if self.field_cut:  # a segment was lost or delayed: wait for the rest
                if self._closed:
                    return self._error(tlv.truncation_error(self._buf, self._pos,
                                                            len(self._buf)))
                return NeedData(None)
            deadline = self._last_data_at + self.trailing_grace
            if not self._closed and self.clock() < deadline:
                return NeedData(deadline)
            return self._answer("")
        if ended_by is not None:
            return self._error(FrameError(
                f"the answer ended at offset {self._pos} ({ended_by}) without an action "
                f"status ({ACTION_STATUS})", self._pos))
        if len(self._buf) > self.max_answer:
            return self._error(FrameError(f"answer exceeds {self.max_answer} bytes",
                                          self.max_answer))
        if self._closed:
            return self._at_close()
        return NeedData(None)

    @property
    def field_cut(self) -> bool:
        """Whether the action status was read and the bytes after it end in a cut field."""
        return self.state is PosState.TRAILING and self._pos < len(self._buf)

    def timed_out(self) -> AnswerUnreadable | None:
        """The exchange's time-out came: an answer whose last field stayed cut is unreadable
        (AnswerUnreadable); None when no answer was begun or nothing is cut."""
        if not self.field_cut:
            return None
        return self._error(tlv.truncation_error(self._buf, self._pos, len(self._buf)))

    def _read_fields(self) -> str | None:
        """Read the whole fields buffered; what ended the answer, or None if nothing did."""
        buf, end = self._buf, len(self._buf)
        while self._pos < end:
            if buf[self._pos] in LINE_ENDS:
                return "a line end"
            field = tlv.read_field(buf, self._pos, end)
            if field is None:
                return None
            tag, value, next_pos = field
            if tag == FIRST_TAG and self._fields:
                return "a second message"
            tlv.add_field(self._fields, self._seen, tag, value, self._pos)
            self._pos = next_pos
            if tag == ACTION_STATUS:
                self.state = PosState.TRAILING
        return None

    def _at_close(self) -> ConnectionClosed | AnswerUnreadable:
        if not self._buf:
            self.state = PosState.CLOSED
            return ConnectionClosed()
        if self._pos < len(self._buf):
            return self._error(tlv.truncation_error(self._buf, self._pos, len(self._buf)))
        return self._error(FrameError(
            f"the terminal closed the connection before the action status ({ACTION_STATUS})",
            self._pos))

    def _answer(self, reason: str) -> AnswerReceived:
        self.state = PosState.ANSWERED
        frame = self._buf[:self._pos].encode("latin-1")
        dropped = self._buf[self._pos:].strip(LINE_ENDS).encode("latin-1")
        return AnswerReceived(list(self._fields), frame, dropped, reason if dropped else None)

    def _error(self, error: FrameError) -> AnswerUnreadable:
        self.state = PosState.ERROR
        error.fields = error.fields or list(self._fields)
        return AnswerUnreadable(error, self._buf.encode("latin-1"))


# --- the terminal's side -----------------------------------------------------------------

REQUEST_TIMEOUT = 2.0  # seconds of silence after which an unfinished request is refused
MAX_WAITING = 16  # requests read ahead of their answers on one connection
MAX_MESSAGE = tlv.MAX_BUFFER  # a request longer than this is refused and the connection closed
MAX_JUNK = tlv.MAX_BUFFER  # bytes without a request start after which the connection is closed
SHOWN_BYTES = 64  # how much of the dropped bytes an event keeps, for a log line


@dataclass(frozen=True)
class RequestReceived:
    """A whole request: answer it. `received_at` is the clock time of its first byte."""

    fields: list[Field]
    received_at: float


@dataclass(frozen=True)
class RequestExtended:
    """Optional fields of the request in progress arrived before its answer: `fields` is
    the whole request now."""

    fields: list[Field]


@dataclass(frozen=True)
class MalformedRequest:
    """A message that breaks the framing, or came cut short: answer it AE=01 AF=09 once.

    `error.fields` are the fields read before the problem, for the echoes.
    """

    error: FrameError
    received_at: float


@dataclass(frozen=True)
class BytesDropped:
    """Bytes that are no request and get no answer (rule: never more answers than
    requests): `size` of them, the first ones in `data`, and why, for a log line."""

    data: bytes
    size: int
    reason: str


@dataclass(frozen=True)
class CloseConnection:
    """Nothing more will be read: close once the answers are written.

    `peer_closed`: the POS ended its side (else the terminal gives up on it:
    an oversized message or a flood of bytes that are no request).
    """

    peer_closed: bool


# What TerminalConnection.next_event() hands out.
TerminalEvent = (RequestReceived | RequestExtended | MalformedRequest | BytesDropped
                 | CloseConnection | NeedData)

_NOTHING_YET = NeedData(None)


class TerminalState(Enum):
    """What the terminal expects of the next bytes from the POS."""

    # Members are singletons compared by identity: hashed by it too, in C, not by
    # Enum's __hash__ in Python (TRANSITIONS is looked up at every step of every request).
    __hash__ = object.__hash__

    FIRST = "first"  # a connection's first bytes: a request start, or bytes before one
    LEADING = "leading"  # bytes before the first request start: dropped if one follows
    BETWEEN = "between"  # after a message: only a request start (CZ + 3 digits) is read
    READING = "reading"  # a request started and is not whole yet
    OPEN = "open"  # the last request is whole; its optional fields may still come
    SKIPPING = "skipping"  # after a framing error: dropping bytes up to a request start
    CLOSING = "closing"  # nothing more is read


class Step(Enum):
    """What happens to the terminal's side: the inputs of TRANSITIONS."""

    __hash__ = object.__hash__  # as TerminalState's

    START = "a request starts"
    LEAD = "bytes that start no request begin the connection"
    WHOLE = "the request read holds its mandatory fields, and nothing follows them yet"
    END = "a line end or a new request ends the message"
    BROKEN = "bytes break the framing"
    NO_FIELD = "bytes between messages are not even a field"
    RESYNC = "a request start follows the bytes skipped"
    ANSWERED = "the open request's answer was written (or it ended without one)"
    GAVE_UP = "the POS went quiet, or closed, in the middle of a message"
    GIVE_UP_CONNECTION = "an oversized message, or a flood of bytes that are no request"


_S, _T = Step, TerminalState
# Everything that changes the terminal side's state is here: (state, step) -> next state.
# A pair not in the table is a bug of the reader (LocalProtocolError).
TRANSITIONS: dict[tuple[TerminalState, Step], TerminalState] = {
    (_T.FIRST, _S.START): _T.READING,
    (_T.FIRST, _S.LEAD): _T.LEADING,  # answered only if no request start follows
    (_T.LEADING, _S.LEAD): _T.LEADING,
    (_T.BETWEEN, _S.START): _T.READING,
    (_T.BETWEEN, _S.NO_FIELD): _T.SKIPPING,
    (_T.READING, _S.WHOLE): _T.OPEN,  # late optional fields may still join it
    (_T.READING, _S.END): _T.BETWEEN,
    (_T.OPEN, _S.END): _T.BETWEEN,
    (_T.OPEN, _S.ANSWERED): _T.BETWEEN,  # late fields no longer join it
    (_T.READING, _S.BROKEN): _T.SKIPPING,  # one AF=09, then skip to a request start
    (_T.OPEN, _S.BROKEN): _T.SKIPPING,  # the request stands; what broke is dropped
    (_T.SKIPPING, _S.RESYNC): _T.BETWEEN,
    (_T.LEADING, _S.RESYNC): _T.BETWEEN,  # what came before it is dropped
    **{(state, _S.GAVE_UP): _T.BETWEEN for state in (_T.FIRST, _T.LEADING, _T.BETWEEN,
                                                     _T.READING, _T.OPEN, _T.SKIPPING)},
    (_T.CLOSING, _S.GAVE_UP): _T.CLOSING,
    **{(state, _S.GIVE_UP_CONNECTION): _T.CLOSING for state in _T},
}
del _S, _T

# A deadline (an unfinished request) or a close may be due in these even with nothing buffered.
_STATES_WITH_SOMETHING_DUE = frozenset({TerminalState.READING, TerminalState.LEADING,
                                        TerminalState.CLOSING})


class _Message:
    """A request being read, or whole and still open to late fields."""

    __slots__ = ("fields", "seen", "received_at", "size", "request")

    def __init__(self, received_at: float):
        self.fields: list[Field] = []
        # None while `fields` are those of a whole request read at once, shared with its
        # _Request: late fields copy them first (_read_fields).
        self.seen: set[str] | None = set()
        self.received_at = received_at
        self.size = 0
        self.request: _Request | None = None  # once whole: its place in the queue


class _Request:
    """A request (or a malformed message) waiting for its turn, or in progress."""

    __slots__ = ("fields", "received_at", "error", "seq")

    def __init__(self, seq: int, fields: list[Field], received_at: float,
                 error: FrameError | None = None):
        self.seq = seq  # its place among the events
        self.fields = fields
        self.received_at = received_at
        self.error = error

    def event(self) -> RequestReceived | MalformedRequest:
        if self.error is not None:
            return MalformedRequest(self.error, self.received_at)
        return RequestReceived(self.fields, self.received_at)


def _is_request_start(text: str, pos: int) -> bool:
    """Whether a request starts at pos: CZ and three digits."""
    length = text[pos + 2:pos + 5]
    return text.startswith(FIRST_TAG, pos) and len(length) == 3 and length.isdigit() \
        and length.isascii()


def _may_become_request_start(text: str) -> bool:
    """Whether text (shorter than a request start) could be the beginning of one."""
    return "CZ000".startswith(text[:2]) and (text[2:].isdigit() or not text[2:]) \
        and text[2:].isascii() and len(text) < 5


class TerminalConnection:
    """The terminal's side of one POS connection: requests in, in order, one at a time;
    their answers out.

    Rules (docs/protocol.md):
    - a request is whole once the bytes received end with whole fields that
      hold the mandatory ones; a line end or a new CZ also ends it;
    - optional fields that arrive after it is whole join it until its answer
      is written (`send()`, or `request_finished()` for a request that gets
      none); what breaks the framing after the mandatory fields is dropped,
      never answered;
    - after a message, only a request start (CZ and three digits, at a field
      boundary) is read; other bytes are dropped (BytesDropped);
    - bytes that start no request at the start of a connection (a stray
      byte, a NUL, a space, junk) are dropped too when a request start
      follows, so that one request never gets two answers; if none follows
      (silence for `request_timeout`, a close, a flood) they get the one
      MalformedRequest a broken first message gets;
    - a message that breaks the framing gets one MalformedRequest, then bytes
      are skipped up to the next request start;
    - an unfinished request is refused (MalformedRequest, or RequestReceived
      with what came) after `request_timeout` seconds of silence;
    - a message over `max_message` bytes is refused and the connection closed;
      `max_junk` bytes without a request start close it too;
    - at most `max_waiting` requests are read ahead of their answers, and
      none while `answers_blocked` (the POS does not read its answers):
      `wants_data` tells the I/O edge when to stop reading.
    """

    # One is made per POS connection: slots make it smaller and quicker to build and read.
    __slots__ = ("clock", "request_timeout", "max_waiting", "max_message", "max_junk", "state",
                 "answers_blocked", "_buf", "_pos", "_message", "_queue", "_current", "_notes",
                 "_seq", "_junk", "_leading_at", "_last_data_at", "_quiet_since",
                 "_peer_closed", "_close_handed_out")

    def __init__(self, clock: Callable[[], float] = time.monotonic, *,
                 request_timeout: float = REQUEST_TIMEOUT, max_waiting: int = MAX_WAITING,
                 max_message: int = MAX_MESSAGE, max_junk: int = MAX_JUNK):
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_waiting = max_waiting
        self.max_message = max_message
        self.max_junk = max_junk
        self.state = TerminalState.FIRST
        self.answers_blocked = False
        self._buf = ""  # bytes received and not yet read, as Latin-1 text
        self._pos = 0  # the first byte of _buf not yet read
        self._message: _Message | None = None  # READING or OPEN
        self._queue: deque[_Request] = deque()  # whole, waiting for their turn
        self._current: _Request | None = None  # handed out, not finished
        self._notes: deque[tuple[int, RequestExtended | BytesDropped]] = deque()
        self._seq = itertools.count()  # orders requests and notes as they happened
        self._junk = 0  # bytes dropped since the last request start
        self._leading_at = 0.0  # when the bytes before the first request start began
        self._last_data_at = clock()
        self._quiet_since = self._last_data_at  # silence counts from here
        self._peer_closed = False
        self._close_handed_out = False

    # --- the I/O edge calls these --------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the POS; b"" when it closed its side (half-close included)."""
        if not data:
            self._peer_closed = True
            return
        if self._peer_closed or self.state is TerminalState.CLOSING:
            return
        self._last_data_at = self._quiet_since = self.clock()
        text = data.decode("latin-1")
        self._buf = self._buf[self._pos:] + text if self._pos < len(self._buf) else text
        self._pos = 0
        self._read()

    def next_event(self) -> TerminalEvent:
        if not (self._buf or self._notes or self._queue or self._peer_closed) \
                and self.state not in _STATES_WITH_SOMETHING_DUE:
            return _NOTHING_YET  # the common case, between two requests
        if self._pos < len(self._buf):
            self._read()
        holding = self._holding()
        if holding and (self._peer_closed or (
                self.wants_data and self.clock() >= self._deadline())):
            self._give_up_waiting()
            holding = self._holding()
        # In the order things happened, except that a request waits for the one in progress.
        startable = self._current is None and self._queue
        if startable and (not self._notes or self._queue[0].seq < self._notes[0][0]):
            self._current = self._queue.popleft()
            return self._current.event()
        if self._notes:
            return self._notes.popleft()[1]
        if self._current is None and not self._queue and self._finished_reading():
            if not self._close_handed_out:
                self._close_handed_out = True
                return CloseConnection(self.state is not TerminalState.CLOSING)
            return NeedData(None)
        return NeedData(self._deadline() if holding and self.wants_data else None)

    def send(self, answer: bytes) -> bytes:
        """The answer to the request in progress: the bytes to write, in one write (some
        POS read it with a single recv). The request is over: late fields no longer join
        it, and the next one may be handed out."""
        if self._current is None:
            raise LocalProtocolError("an answer with no request in progress")
        self.request_finished()
        return answer

    def request_finished(self) -> None:
        """The request handed out last is over (answered, or not at all: no-answer and
        hang-up outcomes): later fields do not join it. Nothing if none is in progress."""
        finished, self._current = self._current, None
        if finished is None:
            return
        if self._waiting() + 1 >= self.max_waiting:
            self._reading_again()
        message = self._message
        if message is not None and message.request is finished:
            self._message = None
            if self.state is TerminalState.OPEN:
                self._go(Step.ANSWERED)

    def block_answers(self, blocked: bool) -> None:
        """Whether answers pile up unsent (the POS does not read them): stop reading then."""
        if self.answers_blocked and not blocked:
            self._reading_again()
        self.answers_blocked = blocked

    @property
    def wants_data(self) -> bool:
        """Whether the I/O edge should read from the POS now (else pause reading)."""
        return (self.state is not TerminalState.CLOSING and not self._peer_closed
                and not self.answers_blocked and self._waiting() < self.max_waiting)

    @property
    def peer_closed(self) -> bool:
        """Whether the POS closed its side (its FIN was read)."""
        return self._peer_closed

    @property
    def in_progress(self) -> bool:
        """Whether a request was handed out and is not finished."""
        return self._current is not None

    @property
    def waiting(self) -> int:
        """Requests read and not finished, the one in progress included."""
        return self._waiting()

    # --- state ----------------------------------------------------------------------

    def _go(self, step: Step) -> None:
        """The one place the state changes: by TRANSITIONS."""
        try:
            self.state = TRANSITIONS[self.state, step]
        except KeyError:
            raise LocalProtocolError(f"{step.value!r} cannot happen in state "
                                     f"{self.state.value!r}") from None

    # --- reading --------------------------------------------------------------------

    def _waiting(self) -> int:
        return len(self._queue) + (self._current is not None)

    def _reading_again(self) -> None:
        """Reading may resume: what the POS sent meanwhile was not read, so silence counts
        from now (no deadline runs while reading is paused)."""
        self._quiet_since = self.clock()

    def _read(self) -> None:
        """Read what is buffered, as far as the rules allow now."""
        while self._pos < len(self._buf):
            state = self.state
            if state is TerminalState.READING:
                if not self._read_fields():
                    return
            elif state is TerminalState.CLOSING:
                self._buf, self._pos = "", 0
            elif self._waiting() >= self.max_waiting:
                return  # read on once answers went out
            elif state is TerminalState.OPEN:
                if not self._read_fields():
                    return
            elif state is TerminalState.SKIPPING or state is TerminalState.LEADING:
                if not self._skip():
                    return
            elif not self._between_messages():
                return
        self._buf, self._pos = "", 0

    def _between_messages(self) -> bool:
        """At a message boundary (FIRST or BETWEEN): start a request, or drop what is no
        request. False when more bytes are needed to tell."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        while pos < end and buf[pos] in LINE_ENDS:
            pos += 1  # line ends that close messages: nothing to answer, nothing to log
        self._pos = pos
        if pos == end:
            return True
        if _is_request_start(buf, pos):
            self._start_message()
            return True
        if end - pos < 5 and _may_become_request_start(buf[pos:]):
            return False
        if self.state is TerminalState.FIRST:
            self._lead()
            return True
        try:
            field = tlv.read_field(buf, pos, end)
        except FrameError:
            self._go(Step.NO_FIELD)  # not even a field: look for a request start
            return True
        if field is None:
            return False  # a late field, cut: wait for its end
        self._drop(pos, field[2], "it follows a message already ended, and starts no request")
        return True

    def _start_message(self) -> None:
        self._junk = 0
        if self._pos:
            self._buf, self._pos = self._buf[self._pos:], 0  # error offsets count from here
        self._message = _Message(self._last_data_at)
        self._go(Step.START)

    def _read_fields(self) -> bool:
        """Read whole fields into the message (READING or OPEN). False: more bytes needed."""
        message = self._message
        assert message is not None
        buf, end = self._buf, len(self._buf)
        added = False
        if not message.fields and self._read_whole(message):
            added = True  # the common case: a whole request in one segment, read at once
        elif message.seen is None and self._pos < end:  # late fields: the request's own copy
            message.fields = list(message.fields)
            message.seen = {tag for tag, _ in message.fields}
        seen = message.seen
        try:
            while self._pos < end:
                pos = self._pos
                if buf[pos] in LINE_ENDS:
                    return self._end_message(added)
                field = tlv.read_field(buf, pos, end)
                if field is None:
                    break
                tag, value, next_pos = field
                if tag == FIRST_TAG and message.fields:
                    return self._end_message(added)
                assert seen is not None
                tlv.add_field(message.fields, seen, tag, value, pos)
                added = True
                self._pos = next_pos
                message.size += next_pos - pos
                if message.size > self.max_message:
                    return self._oversized()
        except FrameError as error:
            return self._broken(error, added)
        if self.state is TerminalState.OPEN:
            self._extended(added)
        elif self._pos == end and has_mandatory_fields(message.fields):
            self._queue_message()
            self._go(Step.WHOLE)
        return False

    def _read_whole(self, message: _Message) -> bool:
        """Fields up to the buffer's end (or its last line ends) that are a valid message,
        read in one go: the same fields, in the same state, as the loop of _read_fields
        would read one by one, at a fraction of the cost."""
        buf, pos = self._buf, self._pos
        if buf.find(FIRST_TAG, pos + tlv.HEADER) != -1:
            return False  # perhaps more messages (pipelined): each is read field by field
        end = len(buf.rstrip(LINE_ENDS))
        if end - pos > self.max_message:
            return False  # the loop says where it went over
        fields = tlv.whole_fields(buf, pos, end)
        if fields is None:
            return False  # the loop finds what is wrong, and where
        message.fields, message.seen = fields, None  # shared with its request, if whole
        message.size = end - pos
        self._pos = end
        return True

    def _end_message(self, added: bool) -> bool:
        """A line end or a new request ends the message."""
        if self.state is TerminalState.READING:
            self._queue_message()
        else:
            self._extended(added)
        self._message = None
        self._go(Step.END)
        return True

    def _enqueue(self, fields: list[Field], received_at: float,
                 error: FrameError | None = None) -> _Request:
        request = _Request(next(self._seq), fields, received_at, error)
        self._queue.append(request)
        return request

    def _queue_message(self) -> None:
        message = self._message
        assert message is not None
        fields = message.fields if message.seen is None else list(message.fields)
        message.request = self._enqueue(fields, message.received_at)

    def _extended(self, added: bool) -> None:
        """Late fields joined the open request."""
        message = self._message
        if not added or message is None or message.request is None:
            return
        message.request.fields = list(message.fields)
        if message.request is self._current:
            self._notes.append((next(self._seq), RequestExtended(message.request.fields)))

    def _broken(self, error: FrameError, added: bool) -> bool:
        """A framing error: one AF=09 for a request being read; after the mandatory fields
        (whatever the segmentation), the request stands and what follows is dropped.
        Then skip to a request start."""
        message = self._message
        assert message is not None
        if self.state is TerminalState.READING and has_mandatory_fields(message.fields):
            self._queue_message()
            self._go(Step.WHOLE)
        if self.state is TerminalState.READING:
            error.fields = error.fields or list(message.fields)
            self._enqueue(error.fields, message.received_at, error)
            self._pos += 1  # the request start that failed is not looked at again
        else:
            self._extended(added)
            self._drop(self._pos, self._pos + 1, f"late fields of a request: {error}")
        self._message = None
        if self.state is not TerminalState.CLOSING:  # _drop may have given up on the POS
            self._go(Step.BROKEN)
        return True

    def _oversized(self) -> bool:
        message = self._message
        assert message is not None
        error = FrameError(f"message exceeds {self.max_message} bytes", self.max_message,
                           message.fields)
        if self.state is TerminalState.READING:
            self._enqueue(error.fields, message.received_at, error)
        else:
            self._drop(self._pos, len(self._buf), f"late fields of a request: {error}")
        return self._close()

    def _skip(self) -> bool:
        """Drop bytes up to the next request start. False when more bytes are needed."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        found = buf.find(FIRST_TAG, pos)
        while found != -1 and not _is_request_start(buf, found):
            if end - found < 5 and _may_become_request_start(buf[found:]):
                break
            found = buf.find(FIRST_TAG, found + 1)
        if found == -1:
            found = end - 1 if buf.endswith("C") else end
        if found > pos:
            self._drop(pos, found, "they start no request" if self.state is TerminalState.LEADING
                       else "they follow a framing error, up to the next request start")
        if self.state is TerminalState.CLOSING:
            return True
        if _is_request_start(buf, found):
            self._go(Step.RESYNC)
            return True
        return False

    def _drop(self, start: int, end: int, reason: str) -> None:
        if end <= start:
            return
        data = self._buf[start:end].encode("latin-1")
        self._pos = end
        self._junk += len(data)
        flood = self._junk >= self.max_junk
        if flood:
            reason += f"; {self.max_junk} bytes without a request start: closing the connection"
        self._notes.append((next(self._seq), BytesDropped(data[:SHOWN_BYTES], len(data), reason)))
        if flood:
            if self.state is TerminalState.LEADING:
                self._refuse_leading()
            self._close()

    def _lead(self) -> None:
        """Bytes that start no request begin the connection (FIRST): skipped up to a
        request start, or answered once if none comes."""
        self._leading_at = self._last_data_at
        self._go(Step.LEAD)

    def _refuse_leading(self) -> None:
        """No request start followed the bytes that began the connection: they were the
        POS's first message, and get its one AF=09."""
        self._enqueue([], self._leading_at, FrameError(
            f"{self._junk} bytes that start no request (CZ and three digits)", 0, []))

    def _close(self) -> bool:
        self._message = None
        self._go(Step.GIVE_UP_CONNECTION)
        self._buf, self._pos = "", 0
        return True

    # --- waiting -------------------------------------------------------------------------

    def _holding(self) -> bool:
        """Whether bytes of an unfinished message (or fragment) wait for more."""
        if self.state is TerminalState.CLOSING:
            return False
        if self.state is TerminalState.READING or self.state is TerminalState.LEADING:
            return True
        # Bytes left unread because enough requests wait are no fragment.
        return self._pos < len(self._buf) and self._waiting() < self.max_waiting

    def _deadline(self) -> float:
        return self._quiet_since + self.request_timeout

    def _give_up_waiting(self) -> None:
        """The POS went quiet (or closed) in the middle of a message: take it as it is."""
        why = ("the POS closed the connection" if self._peer_closed
               else f"nothing more came within {self.request_timeout:g} s")
        buf, end = self._buf, len(self._buf)
        if self.state is TerminalState.READING:
            message = self._message
            assert message is not None
            if self._pos < end:
                error = tlv.truncation_error(buf, self._pos, end)
                error.fields = list(message.fields)
                self._enqueue(error.fields, message.received_at, error)
            else:
                self._enqueue(list(message.fields), message.received_at)
            self._buf, self._pos = "", 0
        elif self.state is TerminalState.SKIPPING:
            self._drop(self._pos, end, "they follow a framing error")
        elif self.state is TerminalState.LEADING or self.state is TerminalState.FIRST:
            if self.state is TerminalState.FIRST:  # a fragment of a request start, then nothing
                self._lead()
            self._drop(self._pos, end, f"they start no request: {why}")
            if self.state is TerminalState.LEADING:  # not closed by a flood meanwhile
                self._refuse_leading()
        else:
            self._drop(self._pos, end, f"a fragment that starts no request: {why}")
        self._message = None
        self._go(Step.GAVE_UP)

    def _finished_reading(self) -> bool:
        return self.state is TerminalState.CLOSING or (
            self._peer_closed and self._pos >= len(self._buf) and not self._holding())
