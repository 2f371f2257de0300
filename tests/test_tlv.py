"""Framing: caisse_ap.tlv encode, decode, nested and the streaming FrameDecoder."""

import json
from pathlib import Path

import pytest

import caisse_ap
from caisse_ap import tlv
from caisse_ap.messages import has_action_status
from caisse_ap.tlv import FrameDecoder, FrameError, decode, encode, nested

VECTORS = json.loads((Path(__file__).parent / "frames.json").read_text(encoding="utf-8"))
VALID = [(case["frame"], [tuple(f) for f in case["fields"]]) for case in VECTORS["valid"]]
VALID_IDS = [case["name"] for case in VECTORS["valid"]]

REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"


def never_complete(fields):
    return False


def error_of(call, *args, **kwargs) -> FrameError:
    with pytest.raises(FrameError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- frames.json ------------------------------------------------------------


@pytest.mark.parametrize(("frame", "fields"), VALID, ids=VALID_IDS)
def test_valid_vector_decodes_to_its_fields_in_order(frame, fields):
    assert decode(frame) == fields
    assert decode(frame.encode("ascii")) == fields


@pytest.mark.parametrize(("frame", "fields"), VALID, ids=VALID_IDS)
def test_valid_vector_encodes_back_to_the_same_bytes(frame, fields):
    assert encode(fields) == frame.encode("ascii")


@pytest.mark.parametrize(("frame", "fields"), VALID, ids=VALID_IDS)
def test_valid_vector_is_one_message_for_the_streaming_decoder(frame, fields):
    decoder = FrameDecoder(never_complete)
    decoder.feed(frame.encode("ascii"))
    assert decoder.next_message() is None
    assert decoder.finish() == fields


# name in frames.json -> (message, offset attribute, fields read before the problem)
INVALID = {
    "length is not three digits": ("length '00X' at offset 2 is not three digits", 2, []),
    "truncated length": ("length of AE at offset 2 is truncated: '00'", 2, []),
    "value shorter than its length": (
        "value of AE at offset 0 is truncated: 5 announced, 2 present", 0, []),
    "zero length": ("value of CZ at offset 0 is empty (length 000)", 2, []),
    "lower-case tag": ("tag 'cz' at offset 0 is not two upper-case letters", 0, []),
    "duplicate tag": ("duplicate tag CZ at offset 9", 9, [("CZ", "0320")]),
    "first field is not CZ": ("first field is AE at offset 0, expected CZ", 0, []),
    "not ASCII": (
        "value of CA at offset 9 has a byte that is not printable ASCII at offset 14",
        14, [("CZ", "0300")]),
}


def test_every_invalid_vector_has_an_expected_error():
    assert {case["name"] for case in VECTORS["invalid"]} == set(INVALID)


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda case: case["name"])
@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "utf-8 bytes"])
def test_invalid_vector_is_refused_with_problem_and_offset(case, as_bytes):
    message, offset, fields = INVALID[case["name"]]
    frame = case["frame"].encode("utf-8") if as_bytes else case["frame"]
    error = error_of(decode, frame)
    assert str(error) == message
    assert error.offset == offset
    assert error.fields == fields


STREAM_INVALID = [case for case in VECTORS["invalid"] if case["name"] != "duplicate tag"]


@pytest.mark.parametrize("case", STREAM_INVALID, ids=lambda case: case["name"])
def test_invalid_vector_is_refused_by_the_streaming_decoder(case):
    decoder = FrameDecoder(never_complete)
    decoder.feed(case["frame"].encode("utf-8"))
    with pytest.raises(FrameError) as caught:
        decoder.next_message()
        decoder.finish()
    assert str(caught.value) == INVALID[case["name"]][0]


def test_in_a_stream_a_second_cz_starts_the_next_message():
    decoder = FrameDecoder(never_complete)
    decoder.feed(b"CZ0040320CZ0040300")
    assert decoder.next_message() == [("CZ", "0320")]
    assert decoder.finish() == [("CZ", "0300")]


# --- decode: the other errors ----------------------------------------------


@pytest.mark.parametrize(("frame", "message", "offset", "fields"), [
    ("CZ0040300A", "tag at offset 9 is truncated: 'A'", 9, [("CZ", "0300")]),
    ("CZ0040300AE0", "length of AE at offset 11 is truncated: '0'", 11, [("CZ", "0300")]),
    ("CZ0040300AE00210CZ", "length of CZ at offset 18 is truncated: ''", 18,
     [("CZ", "0300"), ("AE", "10")]),
    ("AE0X", "length '0X' of AE at offset 2 is not digits", 2, []),
    ("CZ-010300", "length '-01' at offset 2 is not three digits", 2, []),
    ("CZ 040300", "length ' 04' at offset 2 is not three digits", 2, []),
    ("C1004030", "tag 'C1' at offset 0 is not two upper-case letters", 1, []),
    ("CZ0040300Ab00210", "tag 'Ab' at offset 9 is not two upper-case letters", 10,
     [("CZ", "0300")]),
    ("CZ0040300AE0021\x01", "value of AE at offset 9 has a byte that is not printable ASCII "
     "at offset 15", 15, [("CZ", "0300")]),
    ("CZ0040300AE002\x7f1", "value of AE at offset 9 has a byte that is not printable ASCII "
     "at offset 14", 14, [("CZ", "0300")]),
    # CR/LF is only accepted at the end: inside a message it is where a tag should be.
    ("CZ0040300\r\nAE00210", "tag '\\r\\n' at offset 9 is not two upper-case letters", 9,
     [("CZ", "0300")]),
    ("\r\nCZ0040300", "tag '\\r\\n' at offset 0 is not two upper-case letters", 0, []),
    ("", "empty frame", 0, []),
    ("\r\n", "empty frame", 0, []),
])
def test_decode_refuses_with_problem_and_offset(frame, message, offset, fields):
    error = error_of(decode, frame)
    assert str(error) == message
    assert error.offset == offset
    assert error.fields == fields


def test_non_ascii_byte_offset_is_a_byte_offset():
    error = error_of(decode, b"CZ0040300CA002\xc3\xa91")
    assert str(error).endswith("at offset 14")
    error = error_of(decode, b"CZ0040300CA00201CB002\xff\xfe")
    assert error.offset == 21


def test_trailing_line_ends_are_accepted():
    assert decode(REQUEST + b"\r\n") == decode(REQUEST)
    assert decode("CZ0040300\n\r\n") == [("CZ", "0300")]


def test_decode_accepts_bytes_like_and_str():
    expected = decode(REQUEST)
    assert decode(bytearray(REQUEST)) == expected
    assert decode(memoryview(REQUEST)) == expected
    assert decode(REQUEST.decode("ascii")) == expected


@pytest.mark.parametrize("frame", [None, 42, [("CZ", "0300")]])
def test_decode_refuses_other_types_as_a_programming_error(frame):
    with pytest.raises(TypeError, match="a frame is bytes or str"):
        decode(frame)


def test_bare_decode_allows_a_field_list_without_cz():
    assert decode("AE00210CK003100", bare=True) == [("AE", "10"), ("CK", "100")]
    assert str(error_of(decode, "AE00210")) == "first field is AE at offset 0, expected CZ"


def test_longest_value_decodes():
    frame = "CZ0040300AK999" + "x" * 999
    assert decode(frame) == [("CZ", "0300"), ("AK", "x" * 999)]


def test_package_root_re_exports_the_public_api():
    assert caisse_ap.decode("CZ0040300AE00210") == [("CZ", "0300"), ("AE", "10")]
    assert caisse_ap.encode is encode
    assert caisse_ap.FrameError is FrameError
    assert issubclass(FrameError, ValueError)


# --- ZT, the constructed tag ------------------------------------------------


def test_zt_value_is_text_and_nested_splits_it():
    fields = decode("CZ0040300AE00210ZT016CK003100AK003QUI")
    assert fields[2] == ("ZT", "CK003100AK003QUI")
    assert nested(fields[2][1]) == [("CK", "100"), ("AK", "QUI")]


def test_zt_may_hold_a_zt():
    inner = "AK003QUI"
    frame = f"CZ0040300ZT{len(inner) + 5:03d}ZT{len(inner):03d}{inner}"
    assert nested(nested(decode(frame)[1][1])[0][1]) == [("AK", "QUI")]


@pytest.mark.parametrize(("frame", "message", "offset"), [
    ("CZ0040300ZT008AK005QUI",
     "inside ZT at offset 9: value of AK at offset 14 is truncated: 5 announced, 3 present", 14),
    ("CZ0040300ZT016CK003100CK003QUI",
     "inside ZT at offset 9: duplicate tag CK at offset 22", 22),
    ("CZ0040300ZT003abc",
     "inside ZT at offset 9: tag 'ab' at offset 14 is not two upper-case letters", 14),
    ("CZ0040300ZT005CK00", "value of ZT at offset 9 is truncated: 5 announced, 4 present", 9),
])
def test_malformed_zt_is_refused_with_its_offset_in_the_message(frame, message, offset):
    error = error_of(decode, frame)
    assert str(error) == message
    assert error.offset == offset
    assert error.fields == [("CZ", "0300")]


def test_nested_refuses_a_malformed_block():
    assert str(error_of(nested, "CK003100AK0")) == "length of AK at offset 10 is truncated: '0'"


# --- encode -------------------------------------------------------------------


def test_encode_pads_lengths_to_three_digits():
    assert encode([("CZ", "0300"), ("AE", "10")]) == b"CZ0040300AE00210"
    assert encode([("CZ", "0300"), ("AK", "x" * 999)])[9:14] == b"AK999"


@pytest.mark.parametrize(("fields", "message"), [
    ([("CZ", "0300"), ("Ae", "10")], "field 1: tag 'Ae' is not two upper-case letters"),
    ([("C", "0300")], "field 0: tag 'C' is not two upper-case letters"),
    ([("CZZ", "0300")], "field 0: tag 'CZZ' is not two upper-case letters"),
    ([("C1", "0300")], "field 0: tag 'C1' is not two upper-case letters"),
    ([("ÉÉ", "0300")], "field 0: tag 'ÉÉ' is not two upper-case letters"),
    ([(5, "0300")], "field 0: tag 5 is not two upper-case letters"),
    ([("CZ", "0300"), ("AE", "")], "field 1 (AE): value is empty"),
    ([("CZ", "0300"), ("AK", "x" * 1000)], "field 1 (AK): value is 1000 characters, over 999"),
    ([("CZ", "0300"), ("AE", "é")], "field 1 (AE): value has a byte that is not printable ASCII"),
    ([("CZ", "0300"), ("AE", "1\n")], "field 1 (AE): value has a byte that is not printable ASCII"),
    ([("CZ", "0300"), ("AE", "\x7f")],
     "field 1 (AE): value has a byte that is not printable ASCII"),
    ([("CZ", "0300"), ("AE", "10"), ("AE", "01")], "field 2: duplicate tag AE"),
    ([("AE", "10"), ("CZ", "0300")], "field 0: first field is AE, expected CZ"),
    ([], "no field to encode"),
    ([("CZ", 300)], "field 0 (CZ): value must be text, not int"),
    ([("CZ", "0300"), ("AK", [("AA", "1")])], "field 1 (AK): value must be text, not list"),
])
def test_encode_refuses_what_a_strict_peer_would(fields, message):
    error = error_of(encode, fields)
    assert str(error) == message
    assert error.offset is None


def test_bare_flag_allows_a_field_list_without_cz():
    assert encode([("AK", "QUI"), ("CK", "100")], bare=True) == b"AK003QUICK003100"


def test_encode_takes_zt_as_a_list_of_fields_or_as_text():
    expected = b"CZ0040300AE00210ZT016CK003100AK003QUI"
    inner = [("CK", "100"), ("AK", "QUI")]
    assert encode([("CZ", "0300"), ("AE", "10"), ("ZT", inner)]) == expected
    assert encode([("CZ", "0300"), ("AE", "10"), ("ZT", tuple(inner))]) == expected
    assert encode([("CZ", "0300"), ("AE", "10"), ("ZT", "CK003100AK003QUI")]) == expected


@pytest.mark.parametrize(("value", "message"), [
    ([("CK", "100"), ("CK", "101")], "field 1 (ZT): field 1: duplicate tag CK"),
    ([("ck", "100")], "field 1 (ZT): field 0: tag 'ck' is not two upper-case letters"),
    ([("AK", "")], "field 1 (ZT): field 0 (AK): value is empty"),
    ([], "field 1 (ZT): no field to encode"),
    ([("AK", "x" * 995)], "field 1 (ZT): value is 1000 characters, over 999"),
    # Text must already be whole fields: encode never writes a ZT that decode refuses.
    ("hello", "field 1 (ZT): tag 'he' at offset 0 is not two upper-case letters"),
    ("AK005QUI", "field 1 (ZT): value of AK at offset 0 is truncated: 5 announced, 3 present"),
    ("", "field 1 (ZT): value is empty"),
    ("AK003QUI\r\n", "field 1 (ZT): value has a byte that is not printable ASCII"),
    (5, "field 1 (ZT): value must be text or fields, not int"),
    (b"AK003QUI", "field 1 (ZT): value must be text or fields, not bytes"),
])
def test_encode_refuses_a_bad_zt(value, message):
    assert str(error_of(encode, [("CZ", "0300"), ("ZT", value)])) == message


# --- FrameDecoder ---------------------------------------------------------------

ANSWER = b"CZ0040300CB00205CD0010ZT016CK003100AK003QUIAE00210"
ANSWER_FIELDS = decode(ANSWER)


@pytest.mark.parametrize("cut", range(1, len(ANSWER)))
def test_two_chunks_split_anywhere_give_the_message(cut):
    # Cuts fall inside tags, lengths, values and the ZT block.
    decoder = FrameDecoder(has_action_status)
    decoder.feed(ANSWER[:cut])
    assert decoder.next_message() is None
    decoder.feed(ANSWER[cut:])
    assert decoder.next_message() == ANSWER_FIELDS
    assert decoder.buffered == 0


@pytest.mark.parametrize("cut", range(17, 23))
def test_a_field_started_after_the_rule_is_met_is_waited_for(cut):
    answer = b"CZ0040300AE00210CB00205"
    decoder = FrameDecoder(has_action_status)
    decoder.feed(answer[:cut])
    assert decoder.next_message() is None
    decoder.feed(answer[cut:])
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10"), ("CB", "05")]


def test_byte_by_byte_feed_completes_only_on_the_last_byte():
    answer = b"CZ0040300CB00205ZT016CK003100AK003QUIAE00210"
    decoder = FrameDecoder(has_action_status)
    for i in range(len(answer) - 1):
        decoder.feed(answer[i:i + 1])
        assert decoder.next_message() is None
    decoder.feed(answer[-1:])
    assert decoder.next_message() == decode(answer)
    assert decoder.buffered == 0


def test_completeness_rule_decides_when_whole_fields_are_a_message():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300CB00205")
    assert decoder.next_message() is None  # whole fields, but no AE yet
    assert decoder.buffered == 16
    decoder.feed(b"AE00210")
    assert decoder.next_message() == [("CZ", "0300"), ("CB", "05"), ("AE", "10")]


def test_default_rule_takes_whole_fields_once_no_field_is_half_received():
    decoder = FrameDecoder()
    decoder.feed(b"CZ0040300AE0")
    assert decoder.next_message() is None
    decoder.feed(b"0210")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]
    decoder.feed(b"CB00205")
    with pytest.raises(FrameError, match="first field is CB at offset 0, expected CZ"):
        decoder.next_message()


def test_never_complete_messages_end_at_the_next_cz_or_at_finish():
    decoder = FrameDecoder(never_complete)
    decoder.feed(b"CZ0040300AE00210CZ0040301AE00201CZ0040302")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]
    assert decoder.next_message() == [("CZ", "0301"), ("AE", "01")]
    assert decoder.next_message() is None
    assert decoder.finish() == [("CZ", "0302")]
    assert decoder.finish() is None
    assert decoder.buffered == 0


def test_line_ends_are_skipped_between_and_after_messages():
    decoder = FrameDecoder(never_complete)
    decoder.feed(b"\r\n\nCZ0040300AE00210\r")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]  # CR ends it
    decoder.feed(b"\n\r\nCZ0040301AE00201\r\n")
    assert decoder.next_message() == [("CZ", "0301"), ("AE", "01")]
    assert decoder.next_message() is None
    assert decoder.finish() is None
    assert decoder.buffered == 0


def test_line_ends_after_a_complete_message_are_dropped():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300AE00210\r\n")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]
    assert decoder.next_message() is None
    assert decoder.buffered == 0


def test_several_messages_in_one_feed_with_a_rule():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300AE00210CZ0040301AE00201CZ0040302")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]
    assert decoder.next_message() == [("CZ", "0301"), ("AE", "01")]
    assert decoder.next_message() is None
    decoder.feed("AE00211")  # str is accepted too
    assert decoder.next_message() == [("CZ", "0302"), ("AE", "11")]


def test_buffer_past_64_kib_raises_and_is_dropped():
    decoder = FrameDecoder(never_complete)
    assert decoder.max_buffer == tlv.MAX_BUFFER == 64 * 1024
    decoder.feed(b"CZ0040300")
    decoder.feed(b"x" * (64 * 1024 - 9))  # exactly 64 KiB held: still fine
    assert decoder.buffered == 64 * 1024
    error = error_of(decoder.feed, b"x")
    assert str(error) == "message exceeds 65536 bytes"
    assert error.offset == 65536
    assert decoder.buffered == 0


def test_custom_buffer_bound_keeps_the_fields_read():
    decoder = FrameDecoder(never_complete, max_buffer=20)
    decoder.feed(b"CZ0040300AE00210")
    assert decoder.next_message() is None
    error = error_of(decoder.feed, b"CB00205")
    assert str(error) == "message exceeds 20 bytes"
    assert error.fields == [("CZ", "0300"), ("AE", "10")]
    assert decoder.buffered == 0


def test_state_is_reset_after_an_error_so_the_next_message_decodes():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300xx0")
    error = error_of(decoder.next_message)
    assert str(error) == "tag 'xx' at offset 9 is not two upper-case letters"
    assert error.fields == [("CZ", "0300")]
    assert decoder.buffered == 0
    decoder.feed(b"CZ0040300AE00210")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]


def test_duplicate_tag_in_the_stream_names_its_offset_in_the_message():
    decoder = FrameDecoder(never_complete)
    decoder.feed(b"CZ0040300AE00210CZ0040300AE00210AE00201")
    assert decoder.next_message() == [("CZ", "0300"), ("AE", "10")]
    error = error_of(decoder.next_message)
    assert str(error) == "duplicate tag AE at offset 16"
    assert error.fields == [("CZ", "0300"), ("AE", "10")]


def test_garbage_fails_early_without_waiting_for_the_whole_field():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300AE005\x00")
    error = error_of(decoder.next_message)
    assert error.offset == 14
    decoder.feed(b"c")
    assert "tag 'c' at offset 0" in str(error_of(decoder.next_message))


def test_finish_on_a_truncated_message_raises_with_the_fields_read():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300CB0020")
    assert decoder.next_message() is None
    error = error_of(decoder.finish)
    assert str(error) == "value of CB at offset 9 is truncated: 2 announced, 1 present"
    assert error.fields == [("CZ", "0300")]
    assert decoder.buffered == 0
    assert decoder.finish() is None


@pytest.mark.parametrize(("tail", "message"), [
    (b"C", "tag at offset 9 is truncated: 'C'"),
    (b"CB0", "length of CB at offset 11 is truncated: '0'"),
])
def test_finish_names_a_truncated_header(tail, message):
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"CZ0040300" + tail)
    assert str(error_of(decoder.finish)) == message


def test_finish_returns_whole_fields_left_without_the_rule():
    decoder = FrameDecoder(has_action_status)
    decoder.feed(b"\r\nCZ0040300CB00205\r\n")
    assert decoder.finish() == [("CZ", "0300"), ("CB", "05")]
    assert decoder.finish() is None


def test_reset_drops_everything():
    decoder = FrameDecoder(never_complete)
    decoder.feed(b"CZ0040300AE002")
    decoder.next_message()
    decoder.reset()
    assert decoder.buffered == 0
    assert decoder.finish() is None


@pytest.mark.parametrize("frame", [
    "CZ0040300AE0021",  # value runs past the end
    "CZ0040300AE0",  # header runs past the end
    "CZ0040300AE000",  # empty value
    "CZ0040300AE00210AE00201",  # duplicate
    "CZ0040300ZT003abc",  # bad ZT contents
    "AE00210",  # not CZ first
    "CZ0040300ae00210",  # lower-case tag
    "CZ00403001E00210",  # digit in tag
    "CZ0040300AE0x210",  # letter in length
])
def test_every_shortcut_refusal_reaches_the_careful_reader(frame):
    # Printable ASCII frames go through decode's fast path first; each of its
    # refusals must still end in a FrameError that says what is wrong.
    assert tlv._valid_fields(frame, 0, len(frame), False) is None
    error = error_of(decode, frame)
    assert "offset" in str(error)
