"""Caisse-AP framing: fields <-> bytes, with no I/O.

A message is a run of TLV fields: a two-letter tag, a three-digit length and
a printable ASCII value of that length. Over IP there is no wrapper and no
overall length, so the end of a message is only known by parsing; the
streaming `FrameDecoder` below and the connections of connection.py do that.

Bytes are read as Latin-1 so that each byte is one character: offsets in
error messages are byte offsets, and any non-ASCII byte is caught by the
printable-ASCII check instead of by a Unicode error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .errors import CaisseApError

TYPE_CHECKING = False  # typing itself costs start-up time
if TYPE_CHECKING:
    from typing import Any

FIRST_TAG = "CZ"
CONSTRUCTED_TAGS = frozenset({"ZT"})
MAX_VALUE_LENGTH = 999
MAX_BUFFER = 64 * 1024
HEADER = 5  # tag (2) + length (3)
LINE_ENDS = "\r\n"

Field = tuple[str, str]

# The fast paths below check a tag or a length with one lookup in these
# tables instead of several str method calls per field.
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALID_TAGS = frozenset(first + second for first in _UPPER for second in _UPPER)
_LENGTH_OF = {f"{size:03d}": size for size in range(MAX_VALUE_LENGTH + 1)}  # "000" -> 0
_LENGTH_TEXT = {size: f"{size:03d}" for size in range(1, MAX_VALUE_LENGTH + 1)}  # no 0


class FrameError(CaisseApError, ValueError):
    """A frame that breaks the Caisse-AP framing rules.

    `offset` is the byte offset of the problem in the message (None when
    encoding); `fields` holds the fields read before the problem, so that a
    terminal can still echo them in its error answer.
    """

    def __init__(self, message: str, offset: int | None = None, fields: Iterable[Field] = ()):
        super().__init__(message)
        self.offset = offset
        self.fields = list(fields)


def is_tag(text: str) -> bool:
    """Whether text is a tag: two upper-case ASCII letters."""
    return len(text) == 2 and text.isascii() and text.isalpha() and text.isupper()


def _is_printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _first_bad_char(text: str) -> int:
    return next(i for i, char in enumerate(text) if not _is_printable_ascii(char))


def _not_printable(tag: str, pos: int, bad: int) -> FrameError:
    return FrameError(
        f"value of {tag} at offset {pos} has a byte that is not printable ASCII at offset {bad}",
        bad,
    )


def _check_header(buf: str, pos: int, end: int) -> None:
    """Raise FrameError if what is present of the header at `pos` is already wrong."""
    tag = buf[pos:min(pos + 2, end)]
    for i, char in enumerate(tag):
        if not ("A" <= char <= "Z"):
            raise FrameError(
                f"tag {tag!r} at offset {pos} is not two upper-case letters", pos + i
            )
    length = buf[pos + 2:min(pos + HEADER, end)]
    if length and not (length.isascii() and length.isdigit()):
        if len(length) == 3:
            raise FrameError(f"length {length!r} at offset {pos + 2} is not three digits", pos + 2)
        raise FrameError(f"length {length!r} of {tag} at offset {pos + 2} is not digits", pos + 2)


def read_field(buf: str, pos: int, end: int) -> tuple[str, str, int] | None:
    """Read the field at `pos` of `buf` (bytes as Latin-1 text, up to `end`): (tag, value,
    next position), or None if it is not all there yet. FrameError if what is there
    already breaks the framing. For readers of a stream (connection.py)."""
    if end - pos < HEADER:
        _check_header(buf, pos, end)
        return None
    tag = buf[pos:pos + 2]
    length = buf[pos + 2:pos + HEADER]
    if not (is_tag(tag) and length.isascii() and length.isdigit()):
        _check_header(buf, pos, end)
    size = int(length)
    if size == 0:
        raise FrameError(f"value of {tag} at offset {pos} is empty (length 000)", pos + 2)
    start = pos + HEADER
    if end - start < size:
        # Bytes already present must still be printable: garbage fails early.
        present = buf[start:end]
        if not _is_printable_ascii(present):
            raise _not_printable(tag, pos, start + _first_bad_char(present))
        return None
    value = buf[start:start + size]
    if not _is_printable_ascii(value):
        raise _not_printable(tag, pos, start + _first_bad_char(value))
    if tag in CONSTRUCTED_TAGS:
        try:
            _decode_fields(buf, start, start + size, bare=True)
        except FrameError as error:
            raise FrameError(f"inside {tag} at offset {pos}: {error}", error.offset) from None
    return tag, value, start + size


def truncation_error(buf: str, pos: int, end: int) -> FrameError:
    """The error for a message that ends (at `end`) in the middle of the field at `pos`."""
    if end - pos < HEADER:
        what = "tag" if end - pos < 2 else f"length of {buf[pos:pos + 2]}"
        at = pos if end - pos < 2 else pos + 2
        return FrameError(f"{what} at offset {at} is truncated: {buf[at:end]!r}", at)
    size = int(buf[pos + 2:pos + HEADER])
    present = end - pos - HEADER
    return FrameError(
        f"value of {buf[pos:pos + 2]} at offset {pos} is truncated: "
        f"{size} announced, {present} present",
        pos,
    )


def add_field(fields: list[Field], seen: set[str], tag: str, value: str, pos: int,
              bare: bool = False) -> None:
    """Append a field read at `pos` to a message's `fields` (their tags in `seen`):
    FrameError if it cannot be there (a duplicate tag; a first field that is not CZ,
    unless `bare`)."""
    if not fields and not bare and tag != FIRST_TAG:
        raise FrameError(f"first field is {tag} at offset {pos}, expected {FIRST_TAG}", pos)
    if tag in seen:
        raise FrameError(f"duplicate tag {tag} at offset {pos}", pos, fields)
    seen.add(tag)
    fields.append((tag, value))


def _decode_fields(buf: str, pos: int, end: int, bare: bool) -> list[Field]:
    fields: list[Field] = []
    seen: set[str] = set()
    try:
        while pos < end:
            field = read_field(buf, pos, end)
            if field is None:
                raise truncation_error(buf, pos, end)
            tag, value, next_pos = field
            add_field(fields, seen, tag, value, pos, bare)
            pos = next_pos
    except FrameError as error:
        # The fields before the problem, so that a terminal can echo them.
        error.fields = error.fields or list(fields)
        raise
    return fields


def _as_text(frame: bytes | bytearray | str) -> str:
    if type(frame) is bytes:  # the common case, without a copy
        return frame.decode("latin-1")
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame).decode("latin-1")
    if isinstance(frame, str):
        return frame
    raise TypeError(f"a frame is bytes or str, not {type(frame).__name__}")


def decode(frame: bytes | str, *, bare: bool = False) -> list[Field]:
    """Decode one whole message into its fields, in order.

    Strict: every framing rule is checked and the first broken one raises
    FrameError. Trailing CR/LF, which some POS append, is accepted. `bare`
    decodes a field list that need not start with CZ (the inside of ZT).
    The value of ZT is checked but returned as text; `nested()` splits it.
    """
    text = _as_text(frame).rstrip(LINE_ENDS)
    if text.isascii() and text.isprintable():
        fields = _valid_fields(text, 0, len(text), bare)
        if fields:
            return fields
    if not text:
        raise FrameError("empty frame", 0)
    # Something is wrong: the careful reader finds what, and where.
    return _decode_fields(text, 0, len(text), bare)


def _valid_fields(text: str, pos: int, end: int, bare: bool) -> list[Field] | None:
    """The fields of text[pos:end] if it is a valid message, else None.

    decode's fast path, for the common case of a good frame: the caller has
    checked that the whole text is printable ASCII; tags and lengths are
    checked by lookups in tables of the valid ones. It does not say what is
    wrong: _decode_fields does that.
    """
    if not bare and not text.startswith(FIRST_TAG, pos):
        return None
    fields: list[Field] = []
    append = fields.append
    while pos < end:
        start = pos + HEADER
        size = _LENGTH_OF.get(text[pos + 2:start])  # None too when the header is cut
        if not size:
            return None
        append((text[pos:pos + 2], text[start:start + size]))
        pos = start + size
    # Tags are checked all at once: cheaper than a lookup per field.
    tags = dict(fields)
    if pos > end or len(tags) != len(fields) or not _VALID_TAGS.issuperset(tags):
        return None  # a value cut short, a duplicate tag or an invalid one
    if not CONSTRUCTED_TAGS.isdisjoint(tags) and not _nested_values_valid(fields):
        return None
    return fields


def whole_fields(text: str, pos: int, end: int) -> list[Field] | None:
    """The fields of text[pos:end] if it is exactly a valid message (CZ first), else None.

    decode's fast check, for a stream reader that holds a whole message in one
    segment (the common case): None says only "read it field by field".
    """
    if pos or end != len(text):
        text = text[pos:end]
    if not (text.isascii() and text.isprintable()):
        return None
    return _valid_fields(text, 0, len(text), False)


def _nested_values_valid(fields: Iterable[Field]) -> bool:
    """Whether the value of each constructed tag (ZT) is a valid list of fields."""
    return all(_valid_fields(value, 0, len(value), True) is not None
               for tag, value in fields if tag in CONSTRUCTED_TAGS)


def nested(value: str) -> list[Field]:
    """The fields held by a constructed tag such as ZT."""
    return decode(value, bare=True)


def _constructed_value(tag: str, value: str | Iterable[Field], index: int) -> str:
    """The value of ZT as text: its fields encoded, or text that must be whole fields.

    Text is checked too, so that encode never writes a ZT that decode refuses.
    """
    if not isinstance(value, (str, list, tuple)):
        kind = type(value).__name__
        raise FrameError(f"field {index} ({tag}): value must be text or fields, not {kind}")
    try:
        if not isinstance(value, str):
            return encode(value, bare=True).decode("ascii")
        if value and _is_printable_ascii(value):  # else the common checks say why
            decode(value, bare=True)
        return value
    except FrameError as error:
        raise FrameError(f"field {index} ({tag}): {error}") from None


def _encode_value(tag: str, value: str | Iterable[Field], index: int) -> str:
    if tag in CONSTRUCTED_TAGS:
        value = _constructed_value(tag, value, index)
    elif not isinstance(value, str):
        kind = type(value).__name__
        raise FrameError(f"field {index} ({tag}): value must be text, not {kind}")
    if not value:
        raise FrameError(f"field {index} ({tag}): value is empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise FrameError(
            f"field {index} ({tag}): value is {len(value)} characters, over {MAX_VALUE_LENGTH}"
        )
    if not _is_printable_ascii(value):
        raise FrameError(f"field {index} ({tag}): value has a byte that is not printable ASCII")
    return value


def _valid_encoding(fields: list[Any] | tuple[Any, ...], bare: bool) -> bytes | None:
    """The message for `fields` if they are all valid text, else None.

    encode's fast path, for the common case (a terminal's answer, a POS's
    request): the message is built first, then checked as a whole with str
    methods and set operations instead of field by field. It does not say
    what is wrong: encode's careful loop does that.
    """
    try:
        # TypeError: a tag or value that is not text (ZT given as fields
        # included); KeyError: a value that is empty or too long.
        text = "".join([tag + _LENGTH_TEXT[len(value)] + value for tag, value in fields])
        tags = [tag for tag, _ in fields]
    except (TypeError, ValueError, KeyError):
        return None
    if not tags or (not bare and tags[0] != FIRST_TAG) or len(set(tags)) != len(tags):
        return None
    # Tags in the table are two letters, so the text is tags, lengths and values.
    if not (_VALID_TAGS.issuperset(tags) and text.isascii() and text.isprintable()):
        return None
    if not CONSTRUCTED_TAGS.isdisjoint(tags) and not _nested_values_valid(fields):
        return None
    return text.encode("ascii")


def encode_unchecked(fields: Iterable[Field]) -> bytes:
    """Encode fields already known to be valid, without checking them again.

    For a terminal's own answers, built from the fields of a decoded request
    and from values it made: checking them would cost as much as the rest of
    the answer. Anything else goes through encode(), which refuses what a
    strict peer would. Gives what encode() gives for valid fields; a value
    that is empty or too long still raises (KeyError).
    """
    parts: list[str] = []
    for tag, value in fields:  # a loop, not a comprehension: one call less (Python 3.11)
        parts += (tag, _LENGTH_TEXT[len(value)], value)
    return "".join(parts).encode("ascii")


def encode(fields: Iterable[tuple[str, str | Iterable[Field]]], *, bare: bool = False) -> bytes:
    """Encode (tag, value) pairs into a message, refusing anything a strict peer would.

    The value of a constructed tag (ZT) may be given as a list of fields.
    `bare` allows a field list that does not start with CZ.
    """
    if isinstance(fields, (list, tuple)):
        message = _valid_encoding(fields, bare)
        if message is not None:
            return message
    parts = []
    seen: set[str] = set()
    for index, (tag, value) in enumerate(fields):
        if not isinstance(tag, str) or not is_tag(tag):
            raise FrameError(f"field {index}: tag {tag!r} is not two upper-case letters")
        if index == 0 and not bare and tag != FIRST_TAG:
            raise FrameError(f"field 0: first field is {tag}, expected {FIRST_TAG}")
        if tag in seen:
            raise FrameError(f"field {index}: duplicate tag {tag}")
        seen.add(tag)
        text = _encode_value(tag, value, index)
        parts.append(f"{tag}{len(text):03d}{text}")
    if not parts:
        raise FrameError("no field to encode")
    return "".join(parts).encode("ascii")


def _always_complete(fields: list[Field]) -> bool:
    return True


class FrameDecoder:
    """Streaming decoder: feed it bytes as they arrive, take whole messages out.

    A message ends where the next one starts (a new CZ), at CR/LF, or when
    the bytes received so far are whole fields that satisfy `is_complete`
    (the caller's rule: "has AE" for a POS, "has the mandatory fields" for a
    terminal). CR/LF between and after messages are skipped.

    After a FrameError the buffered bytes are dropped, so the decoder is
    ready for the next message; the error's `fields` are those read before
    the problem, and its offset counts from the start of the message.

    It knows nothing of time: the socket edges use connection.py, whose
    state machines add late fields, grace periods, time-outs, resynchronisation
    and limits on top of the same field reader.
    """

    def __init__(self, is_complete: Callable[[list[Field]], bool] | None = None,
                 max_buffer: int = MAX_BUFFER):
        self.is_complete = is_complete or _always_complete
        self.max_buffer = max_buffer
        self._buf = ""
        self._pos = 0  # start of the first field not yet read
        self._fields: list[Field] = []
        self._seen: set[str] = set()

    @property
    def buffered(self) -> int:
        """How many bytes are held that are not yet part of a returned message."""
        return len(self._buf)

    def feed(self, data: bytes | str) -> None:
        self._buf += _as_text(data)
        if len(self._buf) > self.max_buffer:
            fields = self._fields
            self.reset()
            raise FrameError(f"message exceeds {self.max_buffer} bytes", self.max_buffer, fields)

    def reset(self) -> None:
        """Drop everything buffered."""
        self._buf = ""
        self._pos = 0
        self._fields = []
        self._seen = set()

    def next_message(self) -> list[Field] | None:
        """The next whole message, or None until more bytes arrive."""
        try:
            return self._next_message()
        except FrameError as error:
            error.fields = error.fields or list(self._fields)
            self.reset()
            raise

    def _next_message(self) -> list[Field] | None:
        if not self._fields:
            self._skip_line_ends()
        buf, end = self._buf, len(self._buf)
        while self._pos < end:
            if buf[self._pos] in LINE_ENDS and self._fields:
                return self._take(self._pos)
            field = read_field(buf, self._pos, end)
            if field is None:
                return None
            tag, value, next_pos = field
            if tag == FIRST_TAG and self._fields:
                return self._take(self._pos)
            add_field(self._fields, self._seen, tag, value, self._pos, bare=False)
            self._pos = next_pos
        if self._fields and self.is_complete(self._fields):
            return self._take(self._pos)
        return None

    def finish(self) -> list[Field] | None:
        """At end of stream: the last message if whole, None if nothing is left.

        Raises FrameError when the stream stopped in the middle of a field.
        """
        message = self.next_message()
        if message is not None:
            return message
        self._skip_line_ends()
        if self._pos < len(self._buf):
            error = truncation_error(self._buf, self._pos, len(self._buf))
            error.fields = list(self._fields)
            self.reset()
            raise error
        message, self._fields = self._fields or None, []
        self.reset()
        return message

    def _skip_line_ends(self) -> None:
        stripped = self._buf.lstrip(LINE_ENDS)
        if len(stripped) != len(self._buf):
            self._buf = stripped
            self._pos = 0

    def _take(self, pos: int) -> list[Field]:
        message = self._fields
        self._buf = self._buf[pos:]
        self._pos = 0
        self._fields = []
        self._seen = set()
        return message
