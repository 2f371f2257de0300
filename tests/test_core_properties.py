"""Property tests of the framing (hypothesis): identities and "only FrameError"."""

import contextlib
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from caisse_ap import tlv
from caisse_ap.messages import has_action_status
from caisse_ap.tlv import FrameDecoder, FrameError, decode, encode, nested

PRINTABLE_ASCII = "".join(chr(code) for code in range(0x20, 0x7F))

# Enough examples to find the edges, few enough to keep the file within a few seconds.
FAST = settings(max_examples=100, deadline=None)

# Every two-letter tag but ZT, whose value must be fields: it is drawn apart below.
ALL_TAGS = [a + b for a in string.ascii_uppercase for b in string.ascii_uppercase]
tags = st.sampled_from([tag for tag in ALL_TAGS if tag != "ZT"])
non_cz_tags = st.sampled_from([tag for tag in ALL_TAGS if tag not in ("ZT", "CZ")])
values = st.one_of(
    st.text(PRINTABLE_ASCII, min_size=1, max_size=30),
    # The edges of the length field.
    st.sampled_from([1, 9, 10, 99, 100, 998, 999]).map(lambda n: "v" * n),
)
small_values = st.text(PRINTABLE_ASCII, min_size=1, max_size=12)


@st.composite
def zt_contents(draw):
    """A bare field list short enough to fit in one ZT value."""
    inner_tags = draw(st.lists(tags, min_size=1, max_size=4, unique=True))
    return [(tag, draw(small_values)) for tag in inner_tags]


@st.composite
def messages(draw):
    """A valid field list: CZ first, unique tags, sometimes a ZT given as fields."""
    other_tags = draw(st.lists(non_cz_tags, max_size=6, unique=True))
    fields = [("CZ", draw(values))] + [(tag, draw(values)) for tag in other_tags]
    if draw(st.integers(0, 3)) == 0:
        position = draw(st.integers(1, len(fields)))
        fields.insert(position, ("ZT", draw(zt_contents())))
    return fields


def as_decoded(fields):
    """What decode returns for these fields: ZT comes back as text."""
    return [(tag, value if isinstance(value, str) else encode(value, bare=True).decode())
            for tag, value in fields]


@FAST
@given(messages())
def test_encode_then_decode_gives_the_same_fields(fields):
    frame = encode(fields)
    decoded = decode(frame)
    assert decoded == as_decoded(fields)
    assert decode(frame.decode("ascii")) == decoded
    assert encode(decoded) == frame  # ZT given as text encodes the same
    for (tag, value), (_, text) in zip(fields, decoded, strict=True):
        if tag == "ZT":
            assert nested(text) == value


@FAST
@given(messages())
def test_the_terminals_unchecked_encoder_writes_what_encode_writes(fields):
    decoded = as_decoded(fields)
    assert tlv.encode_unchecked(decoded) == encode(decoded)


@FAST
@given(zt_contents())
def test_bare_encode_then_decode_gives_the_same_fields(fields):
    assert decode(encode(fields, bare=True), bare=True) == fields


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(cuts)
    return [stream[start:end]
            for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


separators = st.sampled_from(["", "", "\r\n", "\n", "\r", "\r\n\r\n"])


@settings(max_examples=75, deadline=None)
@given(st.lists(st.tuples(messages(), separators), min_size=1, max_size=3), st.data())
def test_stream_in_any_chunking_gives_what_decode_gives(parts, data):
    frames = [encode(fields) for fields, _ in parts]
    stream = b"".join(frame + separator.encode() for frame, (_, separator) in zip(
        frames, parts, strict=True))
    chunks = chunked(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))

    decoder = FrameDecoder(lambda fields: False)  # ends only at the next CZ, CR/LF or finish
    received = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (message := decoder.next_message()) is not None:
            received.append(message)
    last = decoder.finish()
    if last is not None:
        received.append(last)

    assert received == [decode(frame) for frame in frames]
    assert decoder.buffered == 0


@st.composite
def damaged_frames(draw):
    """A valid frame with one byte changed, inserted or removed: near misses."""
    frame = bytearray(encode(draw(messages())))
    at = draw(st.integers(0, len(frame) - 1))
    byte = draw(st.integers(0, 255))
    how = draw(st.sampled_from(["change", "insert", "remove"]))
    if how == "change":
        frame[at] = byte
    elif how == "insert":
        frame.insert(at, byte)
    else:
        del frame[at]
    return bytes(frame)


@st.composite
def reshuffled_frames(draw):
    """Whole fields of a valid frame, one repeated or the leading CZ dropped."""
    parts = [encode([field], bare=True) for field in draw(messages())]
    if draw(st.booleans()) or len(parts) == 1:
        copied = parts[draw(st.integers(0, len(parts) - 1))]
        parts.insert(draw(st.integers(1, len(parts))), copied)
    else:
        del parts[0]
    return b"".join(parts)


noise = st.one_of(st.binary(max_size=300), damaged_frames(), reshuffled_frames())


@FAST
@given(noise)
def test_random_bytes_into_decode_raise_only_frame_error(frame):
    for bare in (False, True):
        try:
            fields = decode(frame, bare=bare)
        except FrameError as error:
            assert str(error)
            assert error.offset is not None and 0 <= error.offset <= len(frame)
        else:
            assert fields  # whatever is accepted is a field list that encodes back
            assert encode(fields, bare=bare) == frame.rstrip(b"\r\n")


@FAST
@given(noise, st.data())
def test_random_bytes_into_the_stream_raise_only_frame_error(stream, data):
    rule = data.draw(st.sampled_from([None, has_action_status, lambda fields: False]))
    max_buffer = data.draw(st.sampled_from([64 * 1024, 40]))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    decoder = FrameDecoder(rule, max_buffer=max_buffer)
    for chunk in chunked(stream, cuts):
        try:
            decoder.feed(chunk)
            while decoder.next_message() is not None:
                pass
        except FrameError as error:
            assert str(error)
            assert decoder.buffered == 0  # dropped: ready for the next message
    with contextlib.suppress(FrameError):
        decoder.finish()
    assert decoder.buffered == 0


@FAST
@given(st.one_of(noise, messages().map(encode)))
def test_fast_path_agrees_with_the_careful_reader(frame):
    # decode takes a fast path for good frames; it must accept exactly what
    # the reader that explains errors accepts, with the same fields.
    text = frame.decode("latin-1")
    for bare in (False, True):
        try:
            careful = tlv._decode_fields(text, 0, len(text), bare)
        except FrameError:
            careful = None
        careful = careful or None  # no field at all: decode says "empty frame"
        fast = None
        if text.isascii() and text.isprintable():
            fast = tlv._valid_fields(text, 0, len(text), bare)
        if careful is None:
            assert not fast
        else:
            assert fast in (careful, None)
            assert decode(text, bare=bare) == careful
