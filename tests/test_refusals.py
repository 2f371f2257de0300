"""What a real terminal refuses, the simulated one refuses too, as its profile says: zero
amounts, payment applications (CC) it does not have, PayXpert's CB bounds; and what it
answers instead of a blanket approval (the application asked for, a chosen cheque
failure, the Concert E+ immediate status). Over real sockets (and the pty for E+)."""

from __future__ import annotations

import json

import pytest
import test_serial
import test_web_console
from server_process import ServerProcess, run_server
from test_serial import api, send_request, take_answer

from caisse_ap import concert, tags, tlv
from caisse_ap.concert import ConcertRequest
from caisse_ap.messages import PaymentRequest, TerminalAnswer
from caisse_ap.terminal import behaviour, profiles

serial_terminal = test_serial.serial_terminal  # the fixture: a terminal on a pty
browser = test_web_console.browser  # the fixture: Chromium, for the console

DEBIT = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
# Odoo's production module (OCA l10n_fr_pos_caisse_ap_ip): one-digit amounts, 0.01 EUR
ODOO_ONE_CENT = "CZ0040300CJ012012345678901CA00201CE003978CD0010CB0011"
ODOO_FIVE_CENTS = "CZ0040300CJ012012345678901CA00201CE003978CD0010CB0015"
# PayXpert's own example request (Concert V3 page, "Debit ... only Customer ticket").
PAYXPERT_DEBIT = "CZ0040320CJ012323540032810CA0011CB0042500CD0010CE003978CK003100"


def with_fields(frame: str, **fields: str) -> str:
    values = dict(tlv.decode(frame))
    values.update(fields)
    return tlv.encode(list(values.items())).decode()


def profile(text: str) -> profiles.Profile:
    return profiles.parse('name = "test"\nlabel = "test"\nsource = "this test"\n' + text)


def exchange(start_terminal, pos, frame: str, **settings) -> dict[str, str]:
    terminal = start_terminal({"duration": 0, **settings})
    return dict(pos(terminal).exchange(frame))


# --- 1. zero amount -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(profiles.builtins()))
@pytest.mark.parametrize("cb, cd", [("0", "0"), ("00", "0"), ("000000000000", "0"), ("0", "1")])
def test_a_zero_amount_is_refused_by_every_profile(start_terminal, pos, name, cb, cd):
    answer = exchange(start_terminal, pos, with_fields(DEBIT, CB=cb, CD=cd), profile=name)
    assert (answer["AE"], answer["AF"][:2]) == ("01", "09")
    assert not {"AA", "AC", "CC"} & set(answer)  # no card data: nothing was charged


def test_the_zero_amount_refusal_code_is_profile_data(start_terminal, pos):
    answer = exchange(start_terminal, pos, with_fields(DEBIT, CB="0"),
                      profile=profile('[request]\nzero_amount_reason = "05"\n'))
    assert (answer["AE"], answer["AF"]) == ("01", "05")


def test_a_duplicate_moves_no_money_and_is_answered_at_zero(start_terminal, pos):
    answer = exchange(start_terminal, pos, with_fields(DEBIT, CB="0", CD="3"))
    assert answer["AE"] == "10"


@pytest.mark.parametrize("frame", [ODOO_ONE_CENT, ODOO_FIVE_CENTS])
def test_odoos_one_digit_amounts_still_pay_on_the_standard_profile(start_terminal, frame):
    import socket

    terminal = start_terminal({"duration": 0})
    with socket.create_connection(terminal.address, timeout=10) as sock:
        sock.send(frame.encode("ascii"))
        data = sock.recv(1024)  # one read, as Odoo does
    answer = TerminalAnswer.parse(data)
    assert dict(answer.fields)["AE"] == "10"
    assert answer.echo_mismatches(PaymentRequest.parse(frame)) == []


# --- 2. payment applications (CC) ------------------------------------------------------------


@pytest.mark.parametrize("application, scheme, read_mode", [
    ("001", behaviour.CB, "1"), ("00B", behaviour.CB, "2"), ("002", behaviour.AMEX, "1"),
    ("00D", behaviour.AMEX, "2"), ("006", behaviour.DINERS, "1"), ("009", behaviour.JCB, "1"),
    ("00U", behaviour.UNIONPAY, "1"), ("003", behaviour.CB, "1"),
    ("004", behaviour.PRIVATE_LABEL, "1"), ("00E", behaviour.CONECS, "1"),
    ("10E", behaviour.CONECS, "2"),
])
def test_an_application_the_terminal_has_is_answered_as_that_application(
        start_terminal, pos, application, scheme, read_mode):
    answer = exchange(start_terminal, pos, with_fields(DEBIT, CC=application))
    assert (answer["AE"], answer["CC"], answer["CI"]) == ("10", application, read_mode)
    assert answer["AA"][:6] in scheme.bins and len(answer["AA"]) == scheme.pan_length
    assert answer.get("AI") == (scheme.aid or None)


def test_indifferent_application_takes_the_payment_type_chosen(start_terminal, pos):
    answer = exchange(start_terminal, pos, with_fields(DEBIT, CC="000"),
                      payment_type="amexcontactless")
    assert (answer["CC"], answer["CI"]) == ("00D", "2")


@pytest.mark.parametrize("application", ["00V", "999", "ABC"])
def test_an_unknown_application_is_a_selection_error(start_terminal, pos, application):
    """Odoo 18 sends CC=00V for ANCV cheques-vacances: no "CB contact" approval for it."""
    answer = exchange(start_terminal, pos, with_fields(DEBIT, CC=application))
    assert (answer["AE"], answer["AF"]) == ("01", "10")
    assert "AA" not in answer and answer["CB"] == "11245"


def test_the_applications_a_terminal_has_are_profile_data(start_terminal, pos):
    only_cb = profile('[request]\napplications = ["001", "00B", "00C"]\n')
    terminal = start_terminal({"duration": 0, "profile": only_cb})
    connection = pos(terminal)
    assert dict(connection.exchange(with_fields(DEBIT, CC="002")))["AF"] == "10"
    assert dict(connection.exchange(with_fields(DEBIT, CC="00B")))["CC"] == "00B"
    assert dict(connection.exchange(with_fields(DEBIT, CC="00C")))["CC"] == "00C"
    assert profiles.builtin("standard").applications == tuple(tags.APPLICATIONS)


# --- 4. PayXpert's documented bounds -----------------------------------------------------------


def test_payxpert_answers_its_example_frame_field_by_field(start_terminal, pos):
    answer = pos(start_terminal({"duration": 0, "profile": "payxpert"})).exchange(PAYXPERT_DEBIT)
    values = dict(answer)
    sent = dict(tlv.decode(PAYXPERT_DEBIT))
    for tag in ("CZ", "CJ", "CA", "CB", "CD", "CE"):
        assert values[tag] == sent[tag], tag  # echoed as received
    assert (values["AE"], values["AF"]) == ("10", "01")
    assert "CG" not in values  # not in PayXpert's tag list


@pytest.mark.parametrize("cb, paid_by_standard", [("5", True), ("1", True), ("0000002500", True),
                                                  ("123456789012", True)])
def test_payxpert_takes_2_to_12_digits_echoed_as_received(start_terminal, pos, cb,
                                                          paid_by_standard):
    frame = with_fields(PAYXPERT_DEBIT, CB=cb)
    payxpert = exchange(start_terminal, pos, frame, profile="payxpert")
    standard = exchange(start_terminal, pos, frame)
    assert standard["AE"] == "10" and int(standard["CB"]) == int(cb)
    if len(cb) < 2:
        assert (payxpert["AE"], payxpert["AF"][:2]) == ("01", "09")
    else:
        assert payxpert["AE"] == "10" and payxpert["CB"] == cb  # as received, no re-padding


# --- 5. cheque failures ---------------------------------------------------------------------------

CHEQUE = with_fields(DEBIT, CC="00C")


def test_a_cheque_fails_04_by_default_and_as_chosen_by_ft(start_terminal, pos):
    default = exchange(start_terminal, pos, CHEQUE, mode="failure")
    assert (default["AE"], default["AF"]) == ("01", "04")  # what an Ingenico answers
    chosen = exchange(start_terminal, pos, CHEQUE, mode="failure", failure_type="forbidden")
    assert (chosen["AE"], chosen["AF"]) == ("01", "05")


def test_a_cheque_failure_from_the_queue_rules_or_keypad_is_answered_as_chosen(
        start_terminal, pos):
    spec = behaviour.OutcomeSpec.parse("not-completed")  # as the queue, rules, keypad read it
    assert spec.chosen
    terminal = start_terminal({"duration": 0})
    terminal.outcome_sources.append(
        lambda txn, request: behaviour.Decision(spec, behaviour.DecidedBy.QUEUE))
    answer = dict(pos(terminal).exchange(CHEQUE))
    assert (answer["AE"], answer["AF"]) == ("01", "07")


# --- 6. Concert E+ immediate answer --------------------------------------------------------------


@pytest.mark.parametrize("status_line, expected", [("", b"9"), ('immediate_status = "0"\n', b"0")])
def test_the_e_plus_immediate_status_is_profile_data(serial_terminal, status_line, expected):
    chosen = profile("[concert]\n" + status_line)
    _, _, raw = serial_terminal({"duration": 0, "profile": chosen})
    send_request(raw, ConcertRequest(amount="00001250", delay=concert.ANSWER_AT_ONCE))
    answer = take_answer(raw)
    assert answer[3:4] == expected  # STX, POS number (2), then the status


# --- 7. a profile file bearing a built-in's name ----------------------------------------------


def test_a_copy_of_a_built_in_profile_loads_and_is_shown_with_its_file(tmp_path):
    source = profiles.builtin("payxpert").path.split(":", 1)[1]
    text = (profiles.PROFILE_DIR / source).read_text().replace(
        'immediate_status = "10"', 'immediate_status = "11"')
    path = tmp_path / "payxpert.toml"
    path.write_text(text)
    listed = run_server("--list-profiles", "--profile", str(path))
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("payxpert (payxpert.toml)\t") for line in listed.stdout.splitlines())
    server = ServerProcess("--profile", str(path), "-d", "0", "--web-port", "0")
    try:
        assert "profile payxpert (payxpert.toml)" in server.startup_line
        status = api(server, "GET", "/api/status")
        assert status["settings"]["profile"] == "payxpert (payxpert.toml)"
        names = {choice["name"]: choice for choice in status["choices"]["profiles"]}
        assert names["payxpert (payxpert.toml)"]["file"] == "payxpert.toml"
        assert names["payxpert (payxpert.toml)"]["label"].endswith("(payxpert.toml)")
        assert names["payxpert"]["file"] is None  # the built-in one stays
    finally:
        assert server.stop() == 0


def test_a_profile_derived_from_a_recording_named_like_a_built_in_loads(tmp_path):
    recording = tmp_path / "payxpert.jsonl"
    recording.write_text(json.dumps({"type": "recording", "version": 1}) + "\n")
    derived = run_server("--derive-profile", str(recording))
    assert derived.returncode == 0, derived.stderr
    path = tmp_path / "derived.toml"
    path.write_text(derived.stdout)
    listed = run_server("--list-profiles", "--profile", str(path))
    assert listed.returncode == 0, listed.stderr
    assert "payxpert (derived.toml)\t" in listed.stdout


def test_the_console_lists_the_copy_beside_the_built_in_and_applies_it(tmp_path, browser):
    from playwright.sync_api import expect
    from test_web_console import ConsolePage, RunningServer

    text = (profiles.PROFILE_DIR / "payxpert.toml").read_text().replace(
        'immediate_status = "10"', 'immediate_status = "11"')
    path = tmp_path / "payxpert.toml"
    path.write_text(text)
    server = RunningServer("--profile", str(path))
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    try:
        console = ConsolePage(context, server.origin)
        console.open()
        selector = console.page.get_by_test_id("profile")
        expect(selector).to_have_value("payxpert (payxpert.toml)")
        options = selector.locator("option")
        expect(options.filter(has_text="(payxpert.toml)")).to_have_count(1)
        expect(selector.locator('option[value="payxpert"]')).to_have_count(1)  # the built-in
        expect(console.page.get_by_test_id("profile-differences")).to_contain_text(
            "payxpert (payxpert.toml)")
        console.assert_clean()
    finally:
        context.close()
        assert server.stop() == 0
