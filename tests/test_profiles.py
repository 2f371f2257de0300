"""Terminal profiles: the loader and its checks, golden answers of each built-in
profile checked against its source, the tag table kept by any accepted profile,
and the client reading each dialect from a real terminal."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import socket
import struct
import threading
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_process import ServerProcess, run_server

from caisse_ap import client, client_cli, tags, tlv
from caisse_ap.messages import Outcome, PaymentRequest, RequestError, TerminalAnswer
from caisse_ap.terminal import behaviour, cli, profiles
from caisse_ap.terminal.behaviour import OutcomeSpec, TerminalSettings
from caisse_ap.terminal.profiles import ProfileError
from caisse_ap.testing import simulated_terminal

NOW = datetime(2026, 12, 1, 21, 5, 0)
BUILT_IN = ("standard", "fidecoin", "ingenico", "nepting", "payxpert")
DEBIT = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
# PayXpert's own example request (Concert V3 page, "Debit ... only Customer ticket").
PAYXPERT_DEBIT = "CZ0040320CJ012323540032810CA0011CB0042500CD0010CE003978CK003100"


def settings_of(name: str, **changes) -> TerminalSettings:
    return TerminalSettings().updated({"profile": name, **changes})


def answer(settings: TerminalSettings, frame: str, outcome: str = "approved",
           previous: behaviour.Card | None = None) -> tuple[behaviour.TerminalReply, dict]:
    """The reply to `frame` under `settings`, as a terminal builds it, and its fields."""
    try:
        request = PaymentRequest.parse(frame, None, settings.accepted_actions)
    except RequestError as error:
        reply = behaviour.error_reply(error.fields, error.reason, settings)
    else:
        if request.immediate:
            reply = behaviour.immediate_reply(request, settings, None, random.Random(1), NOW)
        else:
            reply = behaviour.reply(request, OutcomeSpec(outcome), settings, random.Random(1),
                                    NOW, previous)
    tlv.encode(reply.fields)  # every answer is a valid frame
    return reply, dict(reply.fields)


def with_fields(frame: str, **fields: str) -> str:
    """`frame` with fields replaced or added."""
    values = dict(tlv.decode(frame))
    values.update(fields)
    return tlv.encode(list(values.items())).decode()


def receipt_of(fields: dict) -> str:
    ak = dict(tlv.nested(fields["ZT"]))["AK"]
    return base64.b64decode(ak).decode("latin-1")


# --- The loader ---------------------------------------------------------------------


def test_built_in_profiles_all_load_and_cite_a_source():
    found = profiles.builtins()
    assert tuple(found) == BUILT_IN  # the standard one first
    for profile in found.values():
        assert profile.source and profile.label
    assert found["standard"].differences() == []
    assert found["payxpert"].source.endswith("/841842689/Concert+V3")


def test_built_in_profiles_say_their_source_in_french_for_the_console():
    english = re.compile(r"\b(this project|issue|seed|authors|as gathered|frames captured)\b",
                         re.I)
    for profile in profiles.builtins().values():
        shown = profile.to_json()["source_fr"]
        assert shown == profile.source_fr, profile.name
        # A cited document keeps its title, in quotes; the rest is French.
        assert english.search(re.sub(r"«[^»]*»|https?://\S+", "", shown)) is None, shown
    assert "« Local API for Nepting - API »" in profiles.builtins()["nepting"].source_fr


def test_source_fr_is_optional_and_checked():
    base = 'name = "x"\nlabel = "X"\nsource = "notes"\n'
    assert profiles.parse(base).to_json()["source_fr"] == "notes"  # the source as it is
    assert profiles.parse(base + 'source_fr = "relevé du 12/03"\n').source_fr == "relevé du 12/03"
    with pytest.raises(ProfileError) as refused:
        profiles.parse(base + 'source_fr = "deux\\nlignes"\n', "x.toml")
    assert "source_fr" in str(refused.value) and "x.toml:4" in str(refused.value)


def test_default_settings_use_the_standard_profile_and_answer_as_before():
    settings = TerminalSettings()
    assert settings.profile.name == "standard"
    assert settings.accepted_actions == {"0", "1", "2", "3"}


def test_choosing_a_profile_sets_its_values_unless_given_too():
    nepting = settings_of("nepting")
    assert (nepting.seller_contract, nepting.pad_amount, nepting.answer_version) == (
        "1234567", False, None)
    ingenico = settings_of("ingenico", seller_contract="99", answer_version="0320")
    assert (ingenico.seller_contract, ingenico.answer_version, ingenico.pad_amount) == (
        "99", "0320", True)
    assert ingenico.to_dict()["profile"] == "ingenico"
    with pytest.raises(behaviour.SettingsError) as caught:
        TerminalSettings().updated({"profile": "/etc/passwd"})
    assert caught.value.field == "profile"


BAD_PROFILES = [
    ('name = "x"\nlabel = "y"\n', 1, "needs a source"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[contract]\nlength = 12\n', 5,
     "does not fit CG"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n\n[failure.details]\n"04" = "' + "X" * 49 + '"\n',
     6, "does not fit AF"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[failure.details]\n"99" = "A"\n', 5,
     "not a AF code"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\nversion = "301"\n', 5,
     "does not fit CZ"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\norder = ["CJ", "CZ"]\n', 5,
     "must start with CZ"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\nimmediate_status = "01"\n', 5,
     "must be 10 or 11"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[contract]\nlength = 7\ndefault = "123"\n', 6,
     "is not 7 characters"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[actions]\n"0" = "debit"\n"7" = "debit"\n', 6,
     "not in the tag table's CD codes"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[card]\nmask = "5"\n', 5, "not a digit"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.AQ]\nvalue = "' + "S" * 21 + '"\n', 5,
     "does not fit AQ"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.AA]\nvalue = "1"\n', 4,
     "builds itself"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.XY]\nfill = "time"\n'
     'value = "' + "%Y" * 300 + '"\n', 6, "does not fit XY"),  # 1200 characters a time
    ('name = "x"\nlabel = "y"\nsource = "z"\nsurprise = 1\n', 4, "unknown key surprise"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer\n', 4, "not valid TOML"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\npad_amount = "yes"\n', 5,
     "must be true or false"),
    ('name = "X Y"\nlabel = "y"\nsource = "z"\n', 1, "lower-case letters"),
    ('name = "x"\nlabel = "y"\nsource = "z"\nsilent = [1]\n', 4, "list of texts"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\nversion = "03a1"\n', 5,
     "must be 4 digits"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\norder = ["CZ", "c"]\n', 5,
     "not a tag"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\norder = ["CZ", "AE", "AE"]\n', 5,
     "names a tag twice"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[card]\nshown_first = 7\n', 5, "0 to 6"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[card]\nshown_last = 5\n', 5, "0 to 4"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[failure]\nfields = ["AA"]\n', 5,
     "AC and ZT only"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[failure.details]\n"04" = "REFUSÉE"\n', 5,
     "printable ASCII"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[actions]\n"0" = "refund-twice"\n', 5,
     "choose from debit"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.xy]\nvalue = "1"\n', 4,
     "two upper-case letters"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.XY]\nfill = "random"\n', 5,
     "not one of constant"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.XY]\nvalue = "1"\non = []\n', 6,
     "on must list"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[extra_tags.XY]\nfill = "transaction-id"\n'
     'length = 99999999999\n', 6, "length 99999999999 does not fit XY"),
    ('name = "x"\nlabel = "y"\nsource = "z"\n[answer]\nimmediate_status_busy = "02"\n', 5,
     "not a AE code"),
    ('name = "x"\nlabel = "y\\tz"\nsource = "z"\n', 2, "one line of printable text"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD_PROFILES)
def test_a_profile_contradicting_the_tag_table_is_refused_with_file_line_and_reason(
        tmp_path, text, line, reason):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        profiles.load(path)
    assert caught.value.where == f"{path}:{line}"
    assert reason in caught.value.reason


def test_a_missing_file_is_refused_a_file_with_a_built_in_name_loads_beside_it(
        tmp_path, monkeypatch):
    """A user who copies payxpert.toml to change one value keeps its name: the copy loads,
    keyed "payxpert (copy.toml)", and the built-in one stays as it is. (Until this, a
    built-in's name was refused: "is a built-in profile's; choose another".)"""
    monkeypatch.setattr(profiles, "_loaded", {})
    with pytest.raises(ProfileError) as caught:
        profiles.find(str(tmp_path / "missing.toml"))
    assert "cannot read the profile" in caught.value.reason
    path = tmp_path / "copy.toml"
    path.write_text('label = "y"\nsource = "z"\nname = "payxpert"\n[answer]\nversion = "0310"\n')
    copy = profiles.find(str(path))
    assert (copy.name, copy.file, copy.key) == ("payxpert", "copy.toml", "payxpert (copy.toml)")
    assert profiles.available()["payxpert (copy.toml)"] is copy
    assert profiles.available()["payxpert"] is profiles.builtin("payxpert")
    settings = TerminalSettings().updated({"profile": "payxpert (copy.toml)"})
    assert settings.profile is copy and settings.to_dict()["profile"] == "payxpert (copy.toml)"
    assert copy.to_json()["name"] == "payxpert (copy.toml)"
    assert copy.to_json()["file"] == "copy.toml"


@pytest.mark.slow
def test_the_server_refuses_to_start_on_a_bad_profile_file(tmp_path):
    path = tmp_path / "long-cg.toml"
    path.write_text('name = "long-cg"\nlabel = "y"\nsource = "z"\n\n[contract]\n'
                    'length = 7\ndefault = "12345678901"\n')
    done = run_server("--profile", str(path), "--no-web")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{path}:7: contract.default '12345678901' does not fit CG" in done.stderr


HEAD = 'name = "hostile"\nlabel = "y"\nsource = "z"\n'


def _hostile(tmp_path, kind: str) -> tuple[str, int, str]:
    """(path, line, words of the reason) of a hostile profile file of `kind`."""
    path = tmp_path / f"{kind}.toml"
    if kind == "fifo":
        os.mkfifo(path)
        return str(path), 1, "not a regular file"
    if kind == "device":
        return "/dev/zero", 1, "not a regular file"
    if kind == "directory":
        return str(tmp_path), 1, "not a regular file"
    if kind == "too big":
        path.write_text(HEAD + "# " + "x" * (profiles.MAX_SIZE) + "\n")
        return str(path), 1, "over 1024 KiB"
    if kind == "deep arrays":
        path.write_text(HEAD + "silent = " + "[" * 100_000 + "\n")
        return str(path), 4, "nested too deeply"
    if kind == "deep tables":
        path.write_text(HEAD + "\n[answer]\nx = " + "{a = " * 20_000 + "1" + "}" * 20_000 + "\n")
        return str(path), 6, "nested too deeply"
    if kind == "huge integer":
        path.write_text(HEAD + "\n[contract]\nlength = " + "9" * 5000 + "\n")
        return str(path), 1, "not valid TOML"
    path.write_bytes(HEAD.encode() + b'\n# caf\xe9\n')  # not UTF-8
    return str(path), 5, "not UTF-8"


HOSTILE_KINDS = ["fifo", "device", "directory", "too big", "deep arrays", "deep tables",
                 "huge integer", "latin-1"]


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_a_hostile_profile_file_is_refused_with_file_line_and_reason(tmp_path, kind):
    path, line, words = _hostile(tmp_path, kind)
    with pytest.raises(ProfileError) as caught:
        profiles.find(path)
    assert caught.value.where == f"{path}:{line}" and words in caught.value.reason


@pytest.mark.parametrize("kind", ["fifo", "deep arrays"])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_the_server_refuses_a_hostile_profile_in_one_line_and_exit_2(tmp_path, kind):
    path, line, words = _hostile(tmp_path, kind)
    done = run_server("--profile", path, "--no-web", timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{path}:{line}: " in done.stderr and words in done.stderr


def test_command_line_settings_override_the_profile():
    args = cli.build_parser([]).parse_args(["--profile", "ingenico", "--answer-version", "0320"])
    settings = cli.settings_from_args(args)
    assert (settings.answer_version, settings.pad_amount) == ("0320", True)
    args = cli.build_parser([]).parse_args(["--profile", "nepting", "--pad-amount"])
    settings = cli.settings_from_args(args)
    assert (settings.pad_amount, settings.seller_contract) == (True, "1234567")
    assert cli.settings_from_args(cli.build_parser([]).parse_args([])).to_dict() == (
        TerminalSettings().to_dict())  # no profile given: nothing changes


def test_unknown_profile_name_is_a_usage_error():
    assert cli.main(["--profile", "verifone"]) == 2


@pytest.mark.slow
def test_list_profiles_prints_name_label_and_source_one_a_line():
    done = run_server("--list-profiles")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(BUILT_IN)
    payxpert = profiles.builtin("payxpert")
    assert f"payxpert\t{payxpert.label}\t{payxpert.source}" in lines


# --- Golden answers, field by field against each source -----------------------------


def test_standard_answers_as_before():
    settings = settings_of("standard")
    _, approved = answer(settings, DEBIT)
    assert approved["CZ"] == "0300" and approved["CB"] == "11245"
    assert re.fullmatch(r"497010######\d{4}|497401######\d{4}|513283######\d{4}"
                        r"|535110######\d{4}", approved["AA"])
    assert "AL" not in approved and approved["CG"] == "424242"
    _, refused = answer(settings, DEBIT, "refused")
    assert (refused["AE"], refused["AF"]) == ("01", "04") and "AC" not in refused
    _, immediate = answer(settings, with_fields(DEBIT, BA="1"))
    assert immediate["AE"] == "11"
    for code in "0123":
        _, done = answer(settings, with_fields(DEBIT, CD=code))
        assert done["AE"] == "10"
    _, unknown = answer(settings, with_fields(DEBIT, CD="4"))
    assert (unknown["AE"], unknown["AF"]) == ("01", "12")


def test_ingenico_answers_0301_and_pads_the_amount_like_the_captured_frames():
    settings = settings_of("ingenico")
    reply, approved = answer(settings, DEBIT)
    assert reply.fields[0] == ("CZ", "0301")  # "an Ingenico answers 0301 to a 0300 request"
    assert approved["CB"] == "0000011245"  # the captured frame's padding
    _, cheque = answer(settings, with_fields(DEBIT, CC="00C"), "abandon")
    assert (cheque["AE"], cheque["AF"]) == ("01", "04")  # every cheque failure
    _, cheque_ok = answer(settings, with_fields(DEBIT, CC="00C"))
    assert cheque_ok["CC"] == "00C" and "AA" not in cheque_ok
    _, refund = answer(settings, with_fields(DEBIT, CD="1"))
    assert (refund["AE"], refund["CD"]) == ("10", "1")
    _, immediate = answer(settings, with_fields(DEBIT, BA="1"))
    assert immediate["AE"] == "11"  # silent: standard kept


def test_nepting_contract_failures_and_cd_table_as_documented():
    settings = settings_of("nepting")
    reply, approved = answer(settings, with_fields(DEBIT, CK="100"))
    # the documented example
    assert tlv.encode([("CG", approved["CG"])], bare=True) == b"CG0071234567"
    _, refused = answer(settings, with_fields(DEBIT, CK="100"), "refused")
    assert (refused["AE"], refused["AF"]) == ("01", "04")
    assert re.fullmatch(r"\d{6}", refused["AC"])  # failures carry AC...
    text = receipt_of(refused)  # ...and the receipt
    assert "OPERATION NON EFFECTUEE" in text and "MOTIF 04" in text
    _, no_receipt = answer(settings, DEBIT, "refused")
    assert "ZT" not in no_receipt and "AC" in no_receipt
    _, cancellation = answer(settings, with_fields(DEBIT, CD="2"))
    assert (cancellation["AE"], cancellation["AF"]) == ("01", "12")  # "not implemented"
    for code in "013":
        _, done = answer(settings, with_fields(DEBIT, CD=code), previous=reply.card)
        assert done["AE"] == "10"


def test_payxpert_answers_its_example_request_like_its_example_answer():
    settings = settings_of("payxpert")
    reply, fields = answer(settings, PAYXPERT_DEBIT)
    order = [tag for tag, _ in reply.fields]
    shown = ["CZ", "CJ", "CA", "CB", "CD", "CE", "AE", "AF", "CI", "ZT"]  # the doc's answer
    assert [tag for tag in order if tag in shown] == shown
    assert (fields["CZ"], fields["CJ"], fields["CA"], fields["CB"], fields["CD"],
            fields["CE"]) == ("0320", "323540032810", "1", "2500", "0", "978")
    assert (fields["AE"], fields["AF"]) == ("10", "01")
    assert re.fullmatch(r"\*{12}\d{4}", fields["AA"]) and fields["AL"] == "1"
    assert dict(tlv.nested(fields["ZT"]))["CK"] == "100"
    assert "TICKET CLIENT" in receipt_of(fields)
    assert re.fullmatch(r"\d{13}", fields["AP"]) and re.fullmatch(r"\d{12}", fields["ID"])
    assert 2 <= len(fields["AQ"]) <= 20


def test_payxpert_immediate_answer_is_10_and_receipt_options_follow_ck():
    settings = settings_of("payxpert")
    _, immediate = answer(settings, with_fields(PAYXPERT_DEBIT, BA="1"))
    assert immediate["AE"] == "10"  # "the request successfully reached the terminal"
    _, merchant = answer(settings, with_fields(PAYXPERT_DEBIT, CK="110"))
    assert "TICKET COMMERCANT" in receipt_of(merchant)
    assert "TICKET CLIENT" not in receipt_of(merchant)
    _, both = answer(settings, with_fields(PAYXPERT_DEBIT, CK="120"))
    assert "TICKET CLIENT" in receipt_of(both) and "TICKET COMMERCANT" in receipt_of(both)
    _, html = answer(settings, with_fields(PAYXPERT_DEBIT, CK="101"))
    assert receipt_of(html).startswith("<html>")
    text = TerminalAnswer.parse(list(html.items())).receipt  # read back as text
    assert "TICKET CLIENT A CONSERVER" in text and "<" not in text
    _, refused = answer(settings, PAYXPERT_DEBIT, "refused")
    assert (refused["AE"], refused["AF"]) == ("01", "04") and "AQ" in refused
    for code in "0123":
        _, done = answer(settings, with_fields(PAYXPERT_DEBIT, CD=code))
        assert done["AE"] == "10"


def test_fidecoin_af_detail_matches_its_example_and_cd_table():
    settings = settings_of("fidecoin")
    reply, refused = answer(settings, DEBIT, "refused")
    assert tlv.encode([("AF", refused["AF"])], bare=True).startswith(
        b"AF02904148HOLDER INVALID")
    read = TerminalAnswer.parse(list(refused.items()))
    assert (read.reason.code, read.reason.details) == ("04", "148HOLDER INVALID")
    first, approved = answer(settings, with_fields(DEBIT, CK="100"))
    assert approved["CG"] == "1234567"
    _, consultation = answer(settings, with_fields(DEBIT, CD="3", CK="100"),
                             previous=first.card)
    assert consultation["AA"] == approved["AA"]  # the last transaction's card
    assert "CONSULTATION" in receipt_of(consultation)
    _, pre_authorisation = answer(settings, with_fields(DEBIT, CD="4", CK="100"))
    assert pre_authorisation["AE"] == "10"
    assert "PRE-AUTORISATION" in receipt_of(pre_authorisation)


# Each built-in profile's facts, from its source (or the standard's where it is silent):
# answer version to a 0300 request, CB of 112.45, CG, card mask, AL, AF on approval,
# status for BA=1, fields added to a refusal, AF of a cheque failure, the CD codes done.
FACTS = {
    "standard": ("0300", "11245", "424242", r"\d{6}#{6}\d{4}", None, None, "11", set(), "04",
                 "0123"),
    "ingenico": ("0301", "0000011245", "424242", r"\d{6}#{6}\d{4}", None, None, "11", set(),
                 "04", "0123"),
    "nepting": ("0300", "11245", "1234567", r"\d{6}#{6}\d{4}", None, None, "11", {"AC", "ZT"},
                "04", "013"),
    # PayXpert's tag list has no CG: none is sent (None)
    "payxpert": ("0300", "11245", None, r"\*{12}\d{4}", "1", "01", "10", {"AQ", "AP"},
                 "04", "0123"),
    "fidecoin": ("0300", "11245", "1234567", r"\d{6}#{6}\d{4}", None, None, "11", set(), "04",
                 "01234"),
}
CASES = ("approval", "refusal", "cheque", "cheque-failure", "refund", "immediate", "receipt",
         *(f"CD={code}" for code in "01234"))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", BUILT_IN)
def test_golden_answers_of_each_profile_field_by_field(name, case):
    (version, amount, contract, mask, pan_type, approval_af, immediate, added, cheque_af,
     codes) = FACTS[name]
    settings = settings_of(name)
    frame, outcome = {
        "approval": (DEBIT, "approved"), "refusal": (with_fields(DEBIT, CK="100"), "refused"),
        "cheque": (with_fields(DEBIT, CC="00C"), "approved"),
        "cheque-failure": (with_fields(DEBIT, CC="00C"), "abandon"),
        "refund": (with_fields(DEBIT, CD="1"), "approved"),
        "immediate": (with_fields(DEBIT, BA="1"), "approved"),
        "receipt": (with_fields(DEBIT, CK="100"), "approved"),
    }.get(case, (with_fields(DEBIT, CD=case[-1]), "approved"))
    first, _ = answer(settings, DEBIT)
    reply, fields = answer(settings, frame, outcome, previous=first.card)
    sent = dict(tlv.decode(frame))
    assert reply.fields[0] == ("CZ", version)
    assert (fields["CJ"], fields["CA"], fields["CE"], fields["CB"]) == (
        sent["CJ"], sent["CA"], sent["CE"], amount)
    read = TerminalAnswer.parse(reply.fields)
    as_sent = PaymentRequest.parse(frame, None, frozenset(tags.ACTIONS))
    assert read.echo_mismatches(as_sent) == []  # a POS finds its echoes, CB as a number
    if case.startswith("CD=") and case[-1] not in codes:
        assert (fields["AE"], fields["AF"]) == ("01", "12")
        return
    if case == "immediate":
        assert fields["AE"] == immediate and "AA" not in fields
        assert read.outcome_for(PaymentRequest(11245, immediate=True)) is Outcome.ACCEPTED
    elif case in ("refusal", "cheque-failure"):
        assert fields["AE"] == "01"
        assert fields["AF"][:2] == (cheque_af if case == "cheque-failure" else "04")
        assert read.reason.code == fields["AF"][:2]
        assert {"AC", "ZT", "AP", "AQ"} & set(fields) == (added if case == "refusal" else
                                                           added - {"AC", "ZT"})
    elif case == "cheque":
        assert (fields["AE"], fields["CC"]) == ("10", "00C") and "AA" not in fields
    else:
        assert fields["AE"] == "10" and fields.get("AF") == approval_af
        assert re.fullmatch(mask, fields["AA"]) and fields.get("AL") == pan_type
        assert fields.get("CG") == contract
        if case == "receipt":
            assert "TICKET CLIENT A CONSERVER" in read.receipt
        if case in ("refund", "CD=1"):
            assert fields["CD"] == "1"


# --- Any accepted profile keeps the tag table ---------------------------------------

printable = st.text(st.characters(min_codepoint=33, max_codepoint=126).filter(
    lambda c: c not in '"\\'), min_size=0, max_size=60)


@st.composite
def profile_texts(draw) -> str:
    lines = ['name = "generated"', 'label = "generated"', 'source = "hypothesis"', "[answer]"]
    if draw(st.booleans()):
        lines.append(f'version = "{draw(st.from_regex(r"[0-9]{3,5}", fullmatch=True))}"')
    lines.append(f"pad_amount = {str(draw(st.booleans())).lower()}")
    lines.append(f"amount_width = {draw(st.integers(2, 12) | st.integers(0, 14))}")
    order = draw(st.lists(st.sampled_from(sorted(tags.TAGS)), unique=True, max_size=8))
    lines.append(f"order = {['CZ', *[t for t in order if t != 'CZ']]!r}".replace("'", '"'))
    if draw(st.booleans()):
        lines.append(f'approval_reason = "{draw(st.sampled_from(["01", "00", "99"]))}"')
    lines.append(f'immediate_status = "{draw(st.sampled_from(["10", "11"]))}"')
    if draw(st.booleans()):
        lines.append(f'immediate_status_busy = "{draw(st.sampled_from(["01", "11", "02"]))}"')
    if draw(st.booleans()):
        lines.append(f"cf_max = {draw(st.integers(0, 100))}")
    lines += ["[card]", f'mask = "{draw(st.sampled_from(["*", "#", "X"]))}"',
              f"shown_first = {draw(st.integers(0, 6))}", f"shown_last = {draw(st.integers(0, 4))}"]
    if draw(st.booleans()):
        lines.append('pan_type = "1"')
    length = draw(st.integers(1, 12))
    default = "7" * draw(st.just(length) | st.integers(1, 12))  # mostly the right length
    lines += ["[contract]", f"length = {length}", f'default = "{default}"']
    lines += ["[failure]", f"fields = {draw(st.lists(st.sampled_from(['AC', 'ZT'])))!r}"
              .replace("'", '"')]
    lines.append("[failure.details]")
    for code in draw(st.lists(st.sampled_from(sorted(tags.FAILURE_REASONS)), unique=True,
                              max_size=4)):
        lines.append(f'"{code}" = "{draw(printable)}"')
    lines.append("[actions]")
    for code in draw(st.lists(st.sampled_from("01234"), unique=True, min_size=1)):
        lines.append(f'"{code}" = "{draw(st.sampled_from(profiles.ACTION_KINDS))}"')
    lines += ["[receipt]", f"tickets = {str(draw(st.booleans())).lower()}",
              f"html = {str(draw(st.booleans())).lower()}"]
    for tag in draw(st.lists(st.sampled_from(["AP", "AQ", "ID", "XY"]), unique=True)):
        fill = draw(st.sampled_from(profiles.FILLS))
        value = draw(st.sampled_from(["%Y%m%d", "%H%M%S", "SERIAL42"]) | printable)
        lines += [f"[extra_tags.{tag}]", f'fill = "{fill}"', f'value = "{value}"',
                  f"length = {draw(st.integers(1, 20) | st.integers(0, 30))}",
                  f"on = {draw(st.lists(st.sampled_from(profiles.ANSWER_KINDS), min_size=1))!r}"
                  .replace("'", '"')]
    return "\n".join(lines) + "\n"


requests = st.builds(
    PaymentRequest,
    amount=st.integers(1, 10**12 - 1),
    action=st.sampled_from("01234"),
    immediate=st.booleans(),
    partial=st.booleans(),
    cheque=st.booleans(),
    reference=st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                  min_size=1, max_size=32),
    extra=st.lists(st.tuples(st.just("CK"), st.sampled_from(["100", "110", "120", "101",
                                                             "121", "000"])),
                   max_size=1).map(tuple),
)


@pytest.mark.slow  # a long property test
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=profile_texts(), request=requests,
       outcome=st.sampled_from(["approved", "partial", *behaviour.FAILURE_TYPES]),
       seed=st.integers(0, 2**32))
def test_any_accepted_profile_answers_within_the_tag_table(text, request, outcome, seed):
    try:
        profile = profiles.parse(text)
    except ProfileError:
        return
    settings = TerminalSettings().updated({"profile": profile})
    frame = tlv.encode(request.fields()).decode()
    try:
        parsed = PaymentRequest.parse(frame, None, settings.accepted_actions)
    except RequestError as error:
        reply = behaviour.error_reply(error.fields, error.reason, settings)
    else:
        rng, previous = random.Random(seed), None
        if parsed.immediate:
            reply = behaviour.immediate_reply(parsed, settings, None, rng, NOW)
        else:
            first = behaviour.reply(parsed, OutcomeSpec("approved"), settings, rng, NOW)
            previous = first.card
            reply = behaviour.reply(parsed, OutcomeSpec(outcome), settings, rng, NOW, previous)
    assert reply.fields[0][0] == "CZ"
    assert len({tag for tag, _ in reply.fields}) == len(reply.fields)
    for tag, value in reply.fields:
        info = tags.tag(tag)
        assert info.min_size <= len(value) <= info.max_size, (tag, value)
    tlv.decode(tlv.encode(reply.fields))  # a valid frame, ZT nested fields included


# --- The client reads every dialect from a real terminal ----------------------------


def run_client(capsys, terminal, *args: str) -> tuple[int, str]:
    status = client_cli.main(["-p", str(terminal.address[1]), *args])
    out, _ = capsys.readouterr()
    return status, out


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_client_reads_each_profile_right(capsys, start_terminal, name):
    terminal = start_terminal({"profile": name, "duration": 0})
    status, out = run_client(capsys, terminal, "-a", "12,50", "--receipt")
    assert status == 0 and out.startswith("APPROVED  12.50 EUR")
    assert "--- receipt ---" in out
    status, out = run_client(capsys, terminal, "--immediate", "-a", "1")
    assert status == 0
    assert out.startswith("ACCEPTED by the terminal (immediate answer; not paid yet)")
    status, out = run_client(capsys, terminal, "-a", "-3", "--receipt")
    assert status == 0 and out.startswith("APPROVED  3.00 EUR (refund)")
    status, out = run_client(capsys, terminal, "--check", "-a", "5")
    assert status == 0 and out.startswith("APPROVED")
    terminal.update_settings({"mode": "failure", "failure_type": "refused"})
    status, out = run_client(capsys, terminal, "-a", "7", "--receipt")
    assert status == 1 and out.startswith("DECLINED — Refusée (AF=04")
    cancellation = profiles.builtin(name).actions.get("2")
    terminal.update_settings({"mode": "success"})
    status, out = run_client(capsys, terminal, "--cancel", "-a", "7")
    assert (status, out.split()[0]) == ((0, "APPROVED") if cancellation else (1, "DECLINED"))


def test_client_shows_af_details_failure_receipt_and_accepted_immediate(capsys,
                                                                       start_terminal):
    terminal = start_terminal({"profile": "fidecoin", "duration": 0, "mode": "failure",
                               "failure_type": "refused"})
    status, out = run_client(capsys, terminal, "-a", "7")
    assert status == 1
    assert out.splitlines()[0] == "DECLINED — Refusée (AF=04: 148HOLDER INVALID)  7.00 EUR"
    terminal.update_settings({"profile": "nepting"})
    status, out = run_client(capsys, terminal, "-a", "7", "--receipt")
    assert status == 1 and "  AC " in out and "MOTIF 04" in out  # AC and receipt shown
    terminal.update_settings({"profile": "payxpert", "mode": "success"})
    status, out = run_client(capsys, terminal, "-a", "7")
    assert status == 0
    assert re.search(r"^  AA \*{12}\d{4} +numéro de carte masqué$", out, re.M)
    assert re.search(r"^  AL 1 +type de PAN", out, re.M)


def test_a_user_written_profile_file_works(tmp_path, capsys, start_terminal, monkeypatch):
    monkeypatch.setattr(profiles, "_loaded", {})  # the profiles read from files, for this test
    path = tmp_path / "shop.toml"
    path.write_text('name = "shop-terminal"\nlabel = "Our shop"\nsource = "our notes"\n'
                    '[answer]\nversion = "0310"\n[contract]\nlength = 8\ndefault = "87654321"\n'
                    '[extra_tags.ZZ]\nvalue = "hello"\n')
    profile = cli.profile_arg(str(path))
    assert profiles.available()["shop-terminal"] is profile
    args = cli.build_parser([]).parse_args(["--profile", str(path), "-sc", "11223344"])
    settings = cli.settings_from_args(args)
    assert (settings.profile.name, settings.answer_version, settings.seller_contract) == (
        "shop-terminal", "0310", "11223344")  # -sc still overrides the profile
    terminal = start_terminal(settings.updated({"duration": 0}))
    status, out = run_client(capsys, terminal, "-a", "2")
    assert status == 0
    assert re.search(r"^  ZZ hello +tag inconnu 'ZZ'$", out, re.M)  # kept and shown raw
    assert re.search(r"^  CZ 0310 ", out, re.M) and re.search(r"^  CG 11223344 ", out, re.M)


@pytest.mark.slow
def test_the_real_server_answers_with_a_user_profile_file(tmp_path, capsys):
    path = tmp_path / "till.toml"
    path.write_text('name = "till"\nlabel = "Till"\nsource = "our notes"\n'
                    '[answer]\nversion = "0310"\nimmediate_status = "10"\n')
    server = ServerProcess("--profile", str(path), "--no-web", "-d", "0")
    try:
        assert "profile till" in server.startup_line
        status = client_cli.main(["-p", str(server.port), "-a", "2", "--json"])
        result = json.loads(capsys.readouterr().out)
        assert (status, result["fields"]["CZ"]) == (0, "0310")
        status = client_cli.main(["-p", str(server.port), "-a", "2", "--immediate"])
        assert status == 0 and capsys.readouterr().out.startswith("ACCEPTED by the terminal")
    finally:
        assert server.stop() == 0


def test_immediate_ae10_is_accepted_not_approved_in_the_core():
    request = PaymentRequest(100, immediate=True)
    answer_10 = TerminalAnswer.parse("CZ0040300AE00210CA00201CB003100CD0010CE003978")
    assert answer_10.outcome is Outcome.APPROVED
    assert answer_10.outcome_for(request) is Outcome.ACCEPTED
    assert answer_10.outcome_for(PaymentRequest(100)) is Outcome.APPROVED


# --- The control API switches profiles live -----------------------------------------


def api_call(running, method: str, path: str, body=None) -> tuple[int, dict]:
    """One request to the running terminal's control API: status and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", running.web_port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data,
                           headers={"Content-Type": "application/json"} if data else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_api_switches_profiles_live(reactor_thread):
    call = api_call

    def pay(running, **options):
        return client.pay(client.make_request("1.00", **options), *running.address, timeout=10)

    with simulated_terminal(seed=5) as running:
        status, body = call(running, "GET", "/api/status")
        listed = {p["name"]: p for p in body["choices"]["profiles"]}
        assert list(listed) == list(BUILT_IN)
        points = {d["point"]: d["profile"] for d in listed["payxpert"]["differences"]}
        assert points["statut pour BA=1 (AE)"] == "10"
        assert body["settings"]["profile"] == "standard"
        assert pay(running, immediate=True).answer.value("AE") == "11"

        status, body = call(running, "PUT", "/api/settings", {"profile": "payxpert"})
        assert status == 200 and body["profile"] == "payxpert"
        assert call(running, "GET", "/api/settings")[1]["profile"] == "payxpert"
        result = pay(running, immediate=True)
        assert (result.answer.value("AE"), result.status) == ("10", "accepted")
        assert pay(running).answer.value("AL") == "1"

        status, body = call(running, "PUT", "/api/settings", {"profile": "nepting"})
        assert body["seller_contract"] == "1234567"
        assert pay(running).answer.seller_contract == "1234567"
        status, body = call(running, "PUT", "/api/settings", {"profile": "no-such"})
        assert status == 400 and body["field"] == "profile"
        assert call(running, "GET", "/api/settings")[1]["profile"] == "nepting"


# --- BA=1 while another transaction is in progress ----------------------------------

BUSY_STATUS = {"standard": "11", "ingenico": "11", "nepting": "11", "payxpert": "01",
               "fidecoin": "11"}


@pytest.mark.parametrize("name", BUILT_IN)
def test_immediate_answer_while_busy_is_the_profiles_busy_status(name):
    settings = settings_of(name)
    request = PaymentRequest.parse(with_fields(DEBIT, BA="1", CK="100"))
    free = behaviour.immediate_reply(request, settings, None, random.Random(1), NOW)
    busy = behaviour.immediate_reply(request, settings, None, random.Random(1), NOW, busy=True)
    fields = dict(busy.fields)
    assert fields["AE"] == BUSY_STATUS[name] and "AF" not in fields
    assert busy.status == ("declined" if BUSY_STATUS[name] == "01" else "accepted")
    assert dict(free.fields)["AE"] == profiles.builtin(name).immediate_status
    # the echoes are those of any answer
    assert (fields["CJ"], fields["CA"], int(fields["CB"]), fields["CD"], fields["CE"]) == (
        "012345678901", "01", 11245, "0", "978")
    if name == "payxpert":  # PayXpert's example of an operation not done: AE00201
        assert b"AE00201" in tlv.encode(busy.fields)
        assert set(fields) - set(dict(tlv.decode(DEBIT))) == {"AE", "AP", "AQ"}


class _Seen:
    """An observer that lets a test wait for the terminal to receive or finish a request."""

    def __init__(self) -> None:
        self.received, self.dropped = threading.Event(), threading.Event()

    def request_received(self, txn) -> None:
        self.received.set()

    def transaction_finished(self, txn) -> None:
        if txn.status == "dropped":
            self.dropped.set()


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_client_reads_the_busy_answer_to_an_immediate_request(capsys, start_terminal, pos,
                                                                   reactor_thread, name):
    terminal = start_terminal({"profile": name, "duration": 600})
    seen = _Seen()
    reactor_thread.call(terminal.observers.append, seen)
    first = pos(terminal)
    first.send(DEBIT)  # a payment in progress: the customer is typing the PIN
    assert seen.received.wait(10)
    assert len(reactor_thread.call(lambda: terminal.pending)) == 1
    status, out = run_client(capsys, terminal, "--immediate", "-a", "4")
    if BUSY_STATUS[name] == "01":
        assert status == 1
        assert out.splitlines()[0] == ("DECLINED — not taken by the terminal (busy: AE=01 to an "
                                       "immediate request)  4.00 EUR")
    else:
        assert status == 0 and out.startswith("ACCEPTED by the terminal")
    # The POS crashes (a reset: a plain close would still get its answer, as a half-close
    # does): the payment is dropped and the terminal is free again.
    first.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.close()
    assert seen.dropped.wait(10)
    assert reactor_thread.call(lambda: terminal.pending) == []
    status, out = run_client(capsys, terminal, "--immediate", "-a", "4")
    assert status == 0 and out.startswith("ACCEPTED by the terminal")


# --- CF: longer in requests than in answers -----------------------------------------

LONG_REFERENCE = "REF-" + "0123456789" * 3 + "XYZ"  # 37 characters


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_answers_cf_is_cut_to_the_profiles_maximum(name):
    cf_max = {"nepting": 32}.get(name)  # HiPay: CF "1 to 32" in answers, 1 to 99 in requests
    settings = settings_of(name)
    for outcome in ("approved", "refused"):
        _, fields = answer(settings, with_fields(DEBIT, CF=LONG_REFERENCE), outcome)
        assert fields["CF"] == LONG_REFERENCE[:cf_max]
    _, immediate = answer(settings, with_fields(DEBIT, CF=LONG_REFERENCE, BA="1"))
    assert immediate["CF"] == LONG_REFERENCE[:cf_max]
    _, unknown_action = answer(settings, with_fields(DEBIT, CF=LONG_REFERENCE, CD="7"))
    assert unknown_action["AF"] == "12" and unknown_action["CF"] == LONG_REFERENCE[:cf_max]
    _, short = answer(settings, with_fields(DEBIT, CF="R1"))
    assert short["CF"] == "R1"  # a CF within the maximum is echoed whole


def test_a_user_profile_sets_the_answers_cf_maximum_within_the_tag_table():
    base = 'name = "x"\nlabel = "y"\nsource = "z"\n[answer]\n'
    profile = profiles.parse(base + "cf_max = 5\n")
    _, fields = answer(TerminalSettings().updated({"profile": profile}),
                       with_fields(DEBIT, CF="ABCDEFGH"))
    assert fields["CF"] == "ABCDE"
    for bad in (0, 100):
        with pytest.raises(ProfileError) as caught:
            profiles.parse(base + f"cf_max = {bad}\n", "mine.toml")
        assert caught.value.where == "mine.toml:5"
        assert f"answer.cf_max {bad} does not fit CF" in caught.value.reason


def test_the_client_shows_the_cut_cf_and_still_approves(capsys, start_terminal):
    terminal = start_terminal({"profile": "nepting", "duration": 0})
    status, out = run_client(capsys, terminal, "-a", "3", "--tag", f"CF={LONG_REFERENCE}",
                             "--json")
    result = json.loads(out)
    assert (status, result["status"]) == (0, "approved")
    assert result["fields"]["CF"] == LONG_REFERENCE[:32]


# --- CG: a profile's length holds every contract number -----------------------------


@pytest.mark.slow
def test_a_contract_number_of_another_length_than_the_profiles_cg_is_refused():
    nepting = settings_of("nepting", seller_contract="7654321")  # 7, as CG0071234567
    assert nepting.seller_contract == "7654321"
    with pytest.raises(behaviour.SettingsError) as caught:
        nepting.updated({"seller_contract": "424242"})
    assert caught.value.field == "seller_contract"
    assert str(caught.value) == ("seller_contract '424242' must be 7 characters long: CG has 7 "
                                 "on profile nepting")
    # back to the standard profile: its contract comes back, any length goes again
    assert nepting.updated({"profile": "standard"}).updated(
        {"seller_contract": "12"}).seller_contract == "12"
    done = run_server("--profile", "fidecoin", "-sc", "12", "--no-web")
    assert done.returncode == 2
    assert done.stderr == ("caisse-ap-ip-server: error: seller_contract '12' must be 7 "
                           "characters long: CG has 7 on profile fidecoin\n")


def test_the_api_refuses_a_contract_number_of_another_length_than_the_profiles(
        reactor_thread):
    with simulated_terminal(seed=3) as running:
        status, body = api_call(running, "PUT", "/api/settings", {"profile": "nepting"})
        assert (status, body["seller_contract"]) == (200, "1234567")
        status, body = api_call(running, "PUT", "/api/settings", {"seller_contract": "99"})
        assert status == 400 and body["field"] == "seller_contract"
        assert api_call(running, "GET", "/api/settings")[1]["seller_contract"] == "1234567"
        status, body = api_call(running, "PUT", "/api/settings",
                                {"profile": "standard", "seller_contract": "99"})
        assert (status, body["seller_contract"]) == (200, "99")


# --- The client CLI under every profile: each CD code, receipt options, cheque failure ----


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_client_reads_each_cd_code_and_receipt_option_of_each_profile(capsys,
                                                                          start_terminal, name):
    profile = profiles.builtin(name)
    terminal = start_terminal({"profile": name, "duration": 0})
    assert run_client(capsys, terminal, "-a", "7")[0] == 0  # a card to reprint or consult
    status, out = run_client(capsys, terminal, "--duplicate", "-a", "7", "--receipt")
    assert status == 0 and out.startswith("APPROVED  7.00 EUR (duplicate)")
    header = {"duplicate": "*** DUPLICATA ***", "consultation": "CONSULTATION"}
    assert header[profile.actions["3"]] in out  # the receipt says what CD=3 did here
    status, out = run_client(capsys, terminal, "-a", "7", "--tag", "CD=4")
    if "4" in profile.actions:  # Fidecoin: pre-authorisation
        assert status == 0 and out.startswith("APPROVED  7.00 EUR")
    else:
        assert status == 1 and out.startswith("DECLINED — ") and "(AF=12)" in out
    # CK second digit 2 (both tickets), third digit 1 (HTML): read back as text
    status, out = run_client(capsys, terminal, "-a", "7", "--receipt", "--tag", "CK=121")
    receipt = out.split("--- receipt ---\n", 1)[1]
    assert status == 0 and "<" not in receipt
    assert "TICKET CLIENT A CONSERVER" in receipt
    assert ("TICKET COMMERCANT A CONSERVER" in receipt) == profile.receipt_tickets
    terminal.update_settings({"mode": "failure", "failure_type": "abandon"})
    status, out = run_client(capsys, terminal, "--check", "-a", "7")
    assert status == 1
    code = profile.cheque_reason
    detail = profile.failure_details.get(code, "").strip()  # Fidecoin's AF detail
    shown = f"AF={code}: {detail}" if detail else f"AF={code}"
    assert out.startswith(f"DECLINED — Refusée ({shown})  7.00 EUR")


# --- The command line on profile files: one line and status 2, whatever the file -----


def bad_profile_files(tmp_path) -> dict[str, tuple[str, str]]:
    """Bad profile files by case: their path and what the error line says."""
    (tmp_path / "binary.toml").write_bytes(b"name = \"\xff\xfe\"\n")
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "broken.toml").write_text('name = "x"\nlabel = \n')
    (tmp_path / "types.toml").write_text('name = "x"\nlabel = "y"\nsource = "z"\n'
                                         '[answer]\norder = "CZ"\n')
    (tmp_path / "two-lines.toml").write_text('name = "x"\nlabel = "y\\nz"\nsource = "z"\n')
    return {
        "missing": (str(tmp_path / "missing.toml"), "missing.toml:1: cannot read the profile"),
        "binary": (str(tmp_path / "binary.toml"), "binary.toml:1: cannot read the profile"),
        "directory": (str(tmp_path / "dir.toml"), "dir.toml:1: cannot read the profile"),
        "not TOML": (str(tmp_path / "broken.toml"), "broken.toml:2: not valid TOML"),
        "wrong type": (str(tmp_path / "types.toml"), "types.toml:5: answer.order must be a list"),
        "two lines": (str(tmp_path / "two-lines.toml"),
                      "two-lines.toml:2: label must be one line of printable text"),
    }


@pytest.mark.slow
def test_a_bad_profile_file_is_one_line_and_status_2_even_with_list_profiles(tmp_path):
    for case, (path, said) in bad_profile_files(tmp_path).items():
        for args in (("--list-profiles", "--profile", path), ("--profile", path, "--no-web")):
            done = run_server(*args)
            assert done.returncode == 2, (case, args)
            assert done.stdout == "" and done.stderr.count("\n") == 1, (case, done.stderr)
            assert done.stderr.startswith("caisse-ap-ip-server: error: argument --profile: ")
            assert said in done.stderr, (case, done.stderr)


@pytest.mark.slow
def test_list_profiles_lists_a_profile_file_given_too(tmp_path):
    path = tmp_path / "till.toml"
    path.write_text('name = "till"\nlabel = "Our till"\nsource = "our notes"\n')
    done = run_server("--list-profiles", "--profile", str(path))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [*(
        f"{p.name}\t{p.label}\t{p.source}" for p in profiles.builtins().values()),
        "till\tOur till\tour notes"]


toml_scalars = (st.integers(-2**63, 2**63 - 1) | st.integers(-2, 1000) | st.booleans()
                | st.text(max_size=60) | st.floats(allow_nan=False, allow_infinity=False)
                | st.sampled_from([*profiles.FILLS, *profiles.ACTION_KINDS, "01", "10", "*",
                                   "%Y%m%d"]))
toml_values = toml_scalars | st.lists(toml_scalars | st.sampled_from(["CZ", "AE", "AC", "ZT"]),
                                      max_size=4)
PROFILE_KEYS = ["name", "label", "source", "silent", "version", "pad_amount", "amount_width",
                "order", "approval_reason", "immediate_status", "immediate_status_busy",
                "cf_max", "mask", "shown_first", "shown_last", "pan_type", "length", "default",
                "fields", "cheque_reason", "04", "0", "4", "9", "tickets", "html", "fill",
                "value", "on", "details", "AQ", "amount_min_digits", "amount_max_digits",
                "zero_amount_reason", "applications", "amount_as_received", "send"]
SECTIONS = ["", "answer", "card", "contract", "failure", "failure.details", "actions",
            "receipt", "extra_tags.AQ", "extra_tags.XY", "extra_tags", "other", "request",
            "concert"]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value) if isinstance(value, str) else str(value)


@pytest.mark.slow  # a long property test
@settings(max_examples=400, deadline=None)
@given(tables=st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(PROFILE_KEYS) | st.text(min_size=1, max_size=5),
                    toml_values, max_size=6),
    max_size=5))
def test_any_profile_text_is_a_profile_or_a_profile_error(tables):
    lines = []
    if "" not in tables:  # a good head, so that the tables' checks are reached
        lines = ['name = "fuzz"', 'label = "Fuzz"', 'source = "hypothesis"']
    for section, values in sorted(tables.items()):  # the top-level table first
        if section:
            lines.append(f"[{section}]")
        lines += [f"{json.dumps(key)} = {toml_value(value)}" for key, value in values.items()]
    text = "\n".join(lines) + "\n"
    try:
        profile = profiles.parse(text, "fuzz.toml")
    except ProfileError as error:
        assert re.fullmatch(r"fuzz\.toml:\d+", error.where) and error.reason
        assert int(error.where.split(":")[1]) <= max(1, len(lines))
        return
    assert profile.name and "\n" not in profile.label + profile.source
    TerminalSettings().updated({"profile": profile})  # usable as it is


# --- docs/profiles.md's side-by-side table says what the files do --------------------

DOC_ROWS = {  # the table's rows, by their first cell: the Profile.summary() points they show
    "version `CZ`": ["version de réponse (CZ)"],
    "`CB`": ["montant (CB)"],
    "ordre des champs": ["ordre des champs"],
    "carte `AA`": ["carte masquée (AA)", "type de PAN (AL)"],
    "`AF`": ["AF sur une acceptation", "détails de AF"],
    "`CG`": ["contrat (CG)"],
    "échecs": ["champs ajoutés aux échecs", "champs supplémentaires"],
    "échec d'un chèque": ["échec d'un chèque (AF)"],
    "`BA=1`": ["statut pour BA=1 (AE)", "statut pour BA=1, terminal occupé (AE)"],
    "codes `CD`": ["codes CD"],
    "`CF` dans la réponse": ["CF dans la réponse"],
    "`CK` 2e et 3e chiffres": ["tickets (CK, 2e chiffre)", "ticket HTML (CK, 3e chiffre)"],
    "champs en plus": ["champs supplémentaires"],
    "`CB` reçu": ["chiffres de CB acceptés", "montant nul (AF)"],
    "applications `CC`": ["applications (CC)"],
    "réponse immédiate E+ (`A011`)": ["statut E+ d'une réponse immédiate (A011)"],
}


def test_the_docs_side_by_side_table_matches_the_profile_files():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "profiles.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    columns = [cell.split("`")[1] for cell in header[1:]]
    assert sorted(columns) == sorted(BUILT_IN)
    rows = {}
    for line in table[1:]:
        first, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[first] = dict(zip(columns, cells, strict=True))
    assert set(rows) == set(DOC_ROWS)  # every point the profiles may change has its row
    shown = {point for points in DOC_ROWS.values() for point in points}
    assert shown == set(profiles.builtin("standard").summary())
    for first, points in DOC_ROWS.items():
        for name in BUILT_IN[1:]:
            differs = {d["point"] for d in profiles.builtin(name).differences()} & set(points)
            cell = rows[first][name]
            says_standard = cell in ("standard", "–") or cell.startswith("standard ")
            # a cell saying "standard" is a profile keeping it; a difference is shown
            assert not (says_standard and differs), (first, name, cell, differs)
            if not says_standard and not differs:
                assert "(documenté)" in cell, (first, name, cell)  # same, but from the source


def test_one_toml_reader_for_profiles_scenarios_and_the_farm_file(tmp_path):
    """Profiles, the kit's scenarios and the farm's --terminals file are read by one
    public reader (caisse_ap.tomlfile): the same bad TOML is reported at the same line."""
    from caisse_ap import tomlfile
    from caisse_ap.conformance import catalogue
    from caisse_ap.terminal.options import UsageError
    from caisse_ap.terminal.web import farm_file

    text = 'name = "x"\n\n[answer]\nversion = = 1\n'
    with pytest.raises(profiles.ProfileError) as profile_error:
        profiles.parse(text, "p.toml")
    with pytest.raises(catalogue.ScenarioError) as scenario_error:
        catalogue.parse(text, "s.toml")
    path = tmp_path / "shop.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as farm_error:
        farm_file.load(str(path))
    assert profile_error.value.where == "p.toml:4"
    assert scenario_error.value.where == "s.toml:4"
    assert str(farm_error.value).startswith(f"{path}:4: not valid TOML")
    assert tomlfile.line_of(text, "answer", "version") == 4
    for module in (profiles, catalogue, farm_file):
        assert not hasattr(module, "_Reader") and not hasattr(module, "_line_of")
