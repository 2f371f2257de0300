"""Caisse-AP connections as state machines, with no I/O (in the style of h11).

Over IP a message has no wrapper and no length: where it ends, how long late
fields may still join it and what a connection may still receive are
decided here, once, for each side:

- `PosConnection` is the point of sale's side: it reads the terminal's
  answer and says when it is whole;
- `TerminalConnection` is the terminal's side: it reads the POS's requests.

Each is fed the bytes received with `receive_data(data)` (`b""` when the
peer closed) and hands out events from `next_event()`. Time is a `clock`
passed in (seconds, any origin): an event may carry a deadline at which the
caller calls `next_event()` again even if nothing arrived, so every timing
rule is tested without sockets or sleeps. The socket edges (client.py,
terminal/server.py) only move bytes and set timers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import tlv
from .tlv import FIRST_TAG, LINE_ENDS, Field, FrameError

ACTION_STATUS = "AE"  # the field that makes an answer whole
TRAILING_GRACE = 0.05  # seconds an answer's optional fields may still take to come


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
class ProtocolError:
    """What was received cannot be read as an answer; `frame` holds those bytes."""

    error: FrameError
    frame: bytes


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection with nothing left to hand out."""


# --- the point of sale's side -----------------------------------------------------------


class PosState(Enum):
    AWAITING_ANSWER = "awaiting answer"  # no action status (AE) read yet
    TRAILING = "trailing"  # AE read: optional fields may follow within the grace
    ANSWERED = "answered"  # AnswerReceived handed out
    ERROR = "error"  # ProtocolError handed out
    CLOSED = "closed"  # ConnectionClosed handed out


_DONE = (PosState.ANSWERED, PosState.ERROR, PosState.CLOSED)


class PosConnection:
    """The POS's side of one exchange: the terminal's answer, read whatever its segmentation.

    An answer is whole once its action status (AE) has been read at a field
    boundary. Optional fields may still follow in later segments: they join
    it until the terminal is silent for `trailing_grace` seconds, writes a
    line end or a new message, or closes. Bytes that break the framing
    after AE end the answer there (they are `dropped`, never spoil it);
    before AE they make a ProtocolError, and so does a field cut short (the
    terminal stopped in the middle of writing it). Leading CR/LF are skipped.
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

    def next_event(self) -> NeedData | AnswerReceived | ProtocolError | ConnectionClosed:
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
            deadline = self._last_data_at + self.trailing_grace
            if not self._closed and self.clock() < deadline:
                return NeedData(deadline)
            if self._pos < len(self._buf):  # the terminal stopped in the middle of a field
                return self._error(tlv._truncation(self._buf, self._pos, len(self._buf)))
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

    def _read_fields(self) -> str | None:
        """Read the whole fields buffered; what ended the answer, or None if nothing did."""
        buf, end = self._buf, len(self._buf)
        while self._pos < end:
            if buf[self._pos] in LINE_ENDS:
                return "a line end"
            field = tlv._read_field(buf, self._pos, end)
            if field is None:
                return None
            tag, value, next_pos = field
            if tag == FIRST_TAG and self._fields:
                return "a second message"
            tlv._add(self._fields, self._seen, tag, value, self._pos, bare=False)
            self._pos = next_pos
            if tag == ACTION_STATUS:
                self.state = PosState.TRAILING
        return None

    def _at_close(self) -> ConnectionClosed | ProtocolError:
        if not self._buf:
            self.state = PosState.CLOSED
            return ConnectionClosed()
        if self._pos < len(self._buf):
            return self._error(tlv._truncation(self._buf, self._pos, len(self._buf)))
        return self._error(FrameError(
            f"the terminal closed the connection before the action status ({ACTION_STATUS})",
            self._pos))

    def _answer(self, reason: str) -> AnswerReceived:
        self.state = PosState.ANSWERED
        frame = self._buf[:self._pos].encode("latin-1")
        dropped = self._buf[self._pos:].strip(LINE_ENDS).encode("latin-1")
        return AnswerReceived(list(self._fields), frame, dropped, reason if dropped else None)

    def _error(self, error: FrameError) -> ProtocolError:
        self.state = PosState.ERROR
        error.fields = error.fields or list(self._fields)
        return ProtocolError(error, self._buf.encode("latin-1"))
