"""The conformance kit: its catalogue, its plans, and the three proofs that it judges
POS code rightly (our own client passes; a naive POS and Odoo's module fail what they
should, each with the reason).

Each proof is one run of the kit over the whole catalogue, scenarios side by side
(module-scoped fixtures), then one test per scenario reads its verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from caisse_ap import PaymentTerminal, conformance, i18n
from caisse_ap.conformance import catalogue, cli, plan
from caisse_ap.conformance.catalogue import ScenarioError
from caisse_ap.conformance.report import html_report, junit_report
from caisse_ap.messages import PaymentRequest, TerminalAnswer

ROOT = Path(__file__).resolve().parent.parent
POS_DIR = Path(__file__).resolve().parent / "conformance_pos"
POS_TIMEOUT = 5.0  # the kit's --pos-timeout in these tests; the POS below wait less
SCENARIOS = list(catalogue.builtins())
REQUEST = PaymentRequest(1250).fields()  # what a POS sends for 12.50 EUR



def start_kit(pos: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(ROOT / "caisse-ap-ip-conformance.py"),
                             "--pos", pos, "--pos-timeout", str(POS_TIMEOUT), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_for("fr_FR.UTF-8"))  # French output


def env_for(lang: str) -> dict[str, str]:
    """The environment with LANG alone naming the language of the messages."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return {**env, "LANG": lang}


def finish(kit: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = kit.communicate(timeout=180)
    return kit.returncode, output


def run_kit(pos: str, *extra: str) -> tuple[int, str]:
    return finish(start_kit(pos, *extra))


def verdict_lines(output: str) -> dict[str, str]:
    """Each scenario's block of the kit's output: its line and its problems."""
    blocks: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith(("réussi", "ÉCHEC")):
            name = line.split()[1]
            blocks[name] = line
        elif line.startswith("        - ") and name:
            blocks[name] += "\n" + line
    return blocks


# --- the catalogue --------------------------------------------------------------------


def test_catalogue_has_at_least_24_scenarios_of_each_conclusion():
    scenarios = catalogue.builtins().values()
    assert len(scenarios) >= 24
    assert {s.expect for s in scenarios} == {"approved", "refused", "unknown"}
    for scenario in scenarios:
        assert scenario.title and scenario.title_en and scenario.description_en
        assert scenario.source and scenario.fact and scenario.fix


@pytest.mark.parametrize("text, where, reason", [
    ('name = "x"', ":1", "needs a title"),
    ('name = "x"\ntitle = "t"\ntitle_en = "t"\ndescription = "d"\ndescription_en = "d"\n'
     'fact = "f"\nsource = "s"\nfix = "f"\nexpect = "maybe"', ":9", "expect must be one of"),
    ('name = "x"\ntitle = "t"\ntitle_en = "t"\ndescription = "d"\ndescription_en = "d"\n'
     'fact = "f"\nsource = "s"\nfix = "f"\nexpect = "unknown"\n\n[network]\n'
     'trailer = "x"', ":12", "trailer must be line ends"),
    ('name = "x"\ntitle = "t"\ntitle_en = "t"\ndescription = "d"\ndescription_en = "d"\n'
     'fact = "f"\nsource = "s"\nfix = "f"\nexpect = "unknown"\n\n[terminal.fields]\n'
     'xy = "1"', ":12", "is not a tag"),
    ('name = "x"\ntitle = "t"\ntitle_en = "t"\ndescription = "d"\ndescription_en = "d"\n'
     'fact = "f"\nsource = "s"\nfix = "f"\nexpect = "unknown"\n\n[terminal]\n'
     'outcome = "approved"\nprofil = "ingenico"', ":13", "unknown key terminal.profil"),
    ('name = "x"\ntitle = "t"\ntitle_en = "t"\ndescription = "d"\ndescription_en = "d"\n'
     'fact = "f"\nsource = "s"\nfix = "f"\nexpect = "unknown"\n\n[network]\n'
     'pause = 60', ":12", "pause must be 0 to 10 seconds"),
    ("name = [", ":1", "not valid TOML"),
])
def test_a_wrong_scenario_is_refused_with_its_line(text, where, reason):
    with pytest.raises(ScenarioError) as error:
        catalogue.parse(text, "s.toml")
    assert error.value.where == "s.toml" + where
    assert reason in error.value.reason


def test_select_only_and_skip():
    assert [s.name for s in catalogue.select(["refused", "approved"])] == ["refused",
                                                                           "approved"]
    assert "approved" not in [s.name for s in catalogue.select(None, ["approved"])]
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        catalogue.select(["nope"])


# --- plans: what the terminal writes, computed without I/O --------------------------------


def make(name: str):
    return plan.make_plan(catalogue.builtins()[name], REQUEST, POS_TIMEOUT)


def test_split_plan_cuts_inside_the_named_fields_with_its_pauses():
    made = make("split-200ms")
    assert [w.after for w in made.writes] == [0.0, 0.2, 0.2, 0.2]
    assert b"".join(w.data for w in made.writes) == made.answer
    ends = [w.data[-3:] for w in made.writes[:-1]]
    assert ends[0].startswith(b"012") or b"CJ" in made.writes[0].data  # inside CJ's value
    assert made.writes[1].data.endswith(b"AE0021")  # inside AE's value
    assert TerminalAnswer.parse(made.answer).value("AE") == "10"


def test_byte_by_byte_plan_writes_one_byte_each_time():
    made = make("byte-by-byte")
    assert {len(w.data) for w in made.writes} == {1}
    assert len(made.writes) == len(made.answer)


def test_long_receipt_takes_the_status_past_1024_bytes():
    made = make("long-receipt")
    assert len(made.answer) > plan.ANSWER_LIMIT
    assert made.answer.index(b"AE002") > plan.ANSWER_LIMIT
    assert "TICKET CLIENT" in (TerminalAnswer.parse(made.answer).receipt or "")


def test_late_fields_come_after_their_pause_at_the_end():
    made = make("late-optional-fields")
    assert [w.after for w in made.writes] == [0.0, 1.0]
    assert made.writes[1].data.startswith(b"AA")
    assert b"AE00210" in made.writes[0].data


def test_answer_after_timeout_waits_past_the_pos_timeout():
    assert make("answer-after-timeout").writes[0].after == POS_TIMEOUT + 1.0


def test_hang_up_writes_part_of_the_answer_then_closes():
    made = make("hang-up-mid-answer")
    written = b"".join(w.data for w in made.writes)
    assert made.then == "close" and b"AE00210" in written and len(written) < len(made.answer)


def test_echo_and_trailer_plans():
    assert TerminalAnswer.parse(make("echo-register").answer).value("CA") == "02"
    assert make("trailing-crlf").answer.endswith(b"\r\n")
    assert TerminalAnswer.parse(make("padded-amount").answer).value("CB") == "000000001250"
    assert make("no-answer").writes == () and make("no-answer").then == "wait-close"


# --- proof (a): our own client passes ------------------------------------------------------


@pytest.fixture(scope="module")
def kit_runs(request):
    """The three proofs' kit runs, started together (their pauses overlap): our client,
    the naive POS and Odoo's module; by name, each (exit status, output). A failed
    download of Odoo's wheel fails Odoo's tests only."""
    kits = {
        "client": start_kit(f"{sys.executable} {ROOT / 'caisse-ap-ip-client.py'} "
                            "-d {host} -p {port} -a {amount} --timeout 4"),
        "naive": start_kit(f"{sys.executable} {POS_DIR / 'naive_pos.py'} {{host}} {{port}} "
                           "{amount}"),
    }
    runs: dict[str, object] = {}
    try:
        module = request.getfixturevalue("odoo_module")
    except pytest.fail.Exception as error:
        runs["odoo"] = error
    else:
        # Odoo's socket waits the POS's time-out minus 3 s: 7000 ms gives 4 s, within 5.
        kits["odoo"] = start_kit(f"{sys.executable} {POS_DIR / 'odoo_pos.py'} {module} "
                                 "{host} {port} {amount} 7000")
    runs.update({name: finish(kit) for name, kit in kits.items()})
    return runs


@pytest.fixture(scope="module")
def client_run(kit_runs):
    return kit_runs["client"]


@pytest.mark.slow
def test_our_client_passes_everything(client_run):
    status, output = client_run
    assert status == 0, output
    assert f"{len(SCENARIOS)} / {len(SCENARIOS)} scénarios réussis" in output


@pytest.mark.slow  # a run of the kit over the whole catalogue, with its pauses
@pytest.mark.parametrize("name", SCENARIOS)
def test_our_client_passes(client_run, name):
    assert verdict_lines(client_run[1])[name].startswith("réussi"), client_run[1]


# --- proof (b): a naive POS fails what it should, for the right reason ----------------------

NAIVE_FAILURES = {
    # one recv(1024): it reads a part of the answer
    "split-200ms": "au lieu de « paiement accepté »",
    "split-1s": "au lieu de « paiement accepté »",
    "byte-by-byte": "au lieu de « paiement accepté »",
    "long-receipt": "conclu « issue inconnue » au lieu de « paiement accepté »",
    "hang-up-mid-answer": "conclu « paiement accepté » au lieu de « issue inconnue »",
    # a parser that trusts what it reads: a crash looks like a refusal (exit 1)
    "trailing-crlf": "conclu « paiement refusé » au lieu de « paiement accepté »",
    "unreadable-answer": "conclu « paiement refusé » au lieu de « issue inconnue »",
    "reset": "conclu « paiement refusé » au lieu de « issue inconnue »",
    # no echo check
    "echo-register": "conclu « paiement accepté » au lieu de « issue inconnue »",
    "echo-amount": "conclu « paiement accepté » au lieu de « issue inconnue »",
    "echo-action": "conclu « paiement accepté » au lieu de « issue inconnue »",
    "echo-currency": "conclu « paiement accepté » au lieu de « issue inconnue »",
    # a second try when the terminal is slow
    "no-answer": "2 demandes pour une seule vente",
    "answer-after-timeout": "2 demandes pour une seule vente",
}


@pytest.fixture(scope="module")
def naive_run(kit_runs):
    return kit_runs["naive"]

@pytest.mark.slow  # a run of the kit over the whole catalogue, with its pauses
def test_naive_pos_fails_exactly_the_scenarios_it_should(naive_run):
    status, output = naive_run
    failed = {name for name, block in verdict_lines(output).items()
              if block.startswith("ÉCHEC")}
    assert status == 1
    assert failed == set(NAIVE_FAILURES), output


@pytest.mark.slow  # a run of the kit over the whole catalogue, with its pauses
@pytest.mark.parametrize("name", sorted(NAIVE_FAILURES))
def test_naive_pos_failure_says_why(naive_run, name):
    assert NAIVE_FAILURES[name] in verdict_lines(naive_run[1])[name]


# --- proof (c): Odoo's module, from its published wheel ----------------------------------

ODOO_WHEEL = "odoo-addon-l10n-fr-pos-caisse-ap-ip"
ODOO_FAILURES = {
    # one recv(1024): a split or long answer is read in part
    "split-200ms": "conclu « issue inconnue » au lieu de « paiement accepté »",
    "split-1s": "conclu « issue inconnue » au lieu de « paiement accepté »",
    "long-receipt": "conclu « issue inconnue » au lieu de « paiement accepté »",
    "hang-up-mid-answer": "conclu « paiement accepté » au lieu de « issue inconnue »",
    # the first recv() gets a few bytes: cut in a field (unknown) or in a length (it raises)
    "byte-by-byte": "conclu « issue inconnue »|ValueError: invalid literal for int()",
    # int() on what is not a length: the module raises, the cashier sees a server error
    "trailing-crlf": "ValueError: invalid literal for int()",
    "unreadable-answer": "ValueError: invalid literal for int()",
}


@pytest.fixture(scope="module")
def odoo_module(tmp_path_factory):
    """The module's payment code, from the wheel pip downloads (no dependencies): a
    failed download fails the test, it is never skipped."""
    where = tmp_path_factory.mktemp("odoo-wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                           "--dest", str(where), ODOO_WHEEL],
                          capture_output=True, text=True, timeout=300)
    wheels = list(where.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.fail(f"pip could not download {ODOO_WHEEL}: {done.stderr[-500:]}")
    member = "odoo/addons/l10n_fr_pos_caisse_ap_ip/models/pos_payment_method.py"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(member, where)
    return where / member


@pytest.fixture(scope="module")
def odoo_run(kit_runs):
    if isinstance(kit_runs["odoo"], BaseException):
        pytest.fail(str(kit_runs["odoo"]))
    return kit_runs["odoo"]

@pytest.mark.slow  # a run of the kit over the whole catalogue, with its pauses
def test_odoo_module_fails_what_its_code_gets_wrong(odoo_run):
    status, output = odoo_run
    failed = {name for name, block in verdict_lines(output).items()
              if block.startswith("ÉCHEC")}
    assert status == 1
    assert failed == set(ODOO_FAILURES), output
    assert len(verdict_lines(output)) == len(SCENARIOS)


@pytest.mark.slow  # a run of the kit over the whole catalogue, with its pauses
@pytest.mark.parametrize("name", sorted(ODOO_FAILURES))
def test_odoo_module_failure_says_why(odoo_run, name):
    block = verdict_lines(odoo_run[1])[name]
    assert any(reason in block for reason in ODOO_FAILURES[name].split("|")), block


# --- the Python entry: a callable, one test per scenario ----------------------------------


def pay(host: str, port: int, amount: str):
    return PaymentTerminal(host, port, timeout=4).pay(amount).outcome


@pytest.fixture(scope="module")
def library_verdicts():
    return {v.scenario.name: v for v in conformance.check(pay, pos_timeout=POS_TIMEOUT)}


@pytest.mark.slow  # a run of the kit over the whole catalogue, with its pauses
@pytest.mark.parametrize("name", SCENARIOS)
def test_library_client_passes(library_verdicts, name):
    verdict = library_verdicts[name]
    assert verdict.passed, verdict.problems


def test_check_one_reports_a_callable_that_raises():
    def broken(host: str, port: int, amount: str):
        raise RuntimeError("no terminal driver")

    verdict = conformance.check_one(broken, catalogue.builtins()["refused"], POS_TIMEOUT)
    assert not verdict.passed and verdict.concluded == "failure"
    assert "RuntimeError: no terminal driver" in verdict.problems[0]


# --- the command line and the reports ---------------------------------------------------


@pytest.mark.slow
def test_reports_are_written_and_the_exit_status_says_failed(tmp_path):
    page, junit = tmp_path / "r.html", tmp_path / "r.xml"
    status, output = run_kit(f"{sys.executable} {POS_DIR / 'naive_pos.py'} {{host}} {{port}} "
                             "{amount}", "--only", "approved,echo-amount", "--report",
                             str(page), "--junit", str(junit))
    assert status == 1, output
    text = page.read_text(encoding="utf-8")
    assert "1 échec(s)" in text and "Comparer CB au montant demandé" in text
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert suite.find("testcase[@name='echo-amount']/failure") is not None


def speak(monkeypatch, lang: str) -> None:
    """In-process messages in the language of `lang` (the catalog is read again)."""
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", lang)
    i18n.translation.cache_clear()


@pytest.fixture(autouse=True)
def french(monkeypatch):
    """The command line speaks French when the locale is French (English otherwise)."""
    speak(monkeypatch, "fr_FR.UTF-8")
    yield
    i18n.translation.cache_clear()


@pytest.mark.slow
def test_result_lines_in_english_under_an_english_locale(capsys, monkeypatch):
    speak(monkeypatch, "en_GB.UTF-8")
    status = cli.main(["--pos", f"{sys.executable} {ROOT / 'caisse-ap-ip-client.py'} "
                       "-p {port} -a {amount} --timeout 4", "--only", "refused"])
    out = capsys.readouterr().out
    assert status == 0 and "1 / 1 scenarios passed" in out
    assert "passed  refused" in out and "expected: refused" in out
    assert cli.main(["--list"]) == 0
    assert "Refused payment (AF=04)" in capsys.readouterr().out


@pytest.mark.slow
def test_all_passed_exits_0(capsys):
    status = cli.main(["--pos", f"{sys.executable} {ROOT / 'caisse-ap-ip-client.py'} "
                       "-d {host} -p {port} -a {amount} --timeout 4",
                       "--only", "approved", "--skip", "refused"])
    assert status == 0
    assert "1 / 1 scénarios réussis" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    ([], "--pos COMMANDE est requis"),
    (["--pos", "pay {host}"], "--pos doit contenir {port}"),
    (["--pos", "pay {port} {nope}"], "seuls {host}, {port} et {amount}"),
    (["--pos", "pay {port}", "--only", "nope"], "scénario inconnu 'nope'"),
    (["--pos", "pay {port}", "--pos-timeout", "0"], "entre 0 et 3600"),
    (["--bogus"], "arguments non reconnus"),
])
def test_bad_options_give_one_line_and_status_2(capsys, args, message):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    ([], "--pos COMMAND is required"),
    (["--pos", "pay {port}", "--only", "nope"], "unknown scenario 'nope'"),
    (["--pos", "pay {port}", "--pos-timeout", "0"], "between 0 and 3600"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_options_in_english_under_lang_c(capsys, monkeypatch, args, message):
    speak(monkeypatch, "C")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("caisse-ap-ip-conformance: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_an_address_that_cannot_be_listened_on_gives_status_2(capsys):
    assert cli.main(["--pos", "true {port}", "--host", "192.0.2.1", "--only", "approved"]) == 2
    assert "impossible d'attendre la caisse sur 192.0.2.1" in capsys.readouterr().err


def test_list(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == len(SCENARIOS) and "no-answer" in out


def test_html_report_escapes_what_the_pos_printed():
    verdict = conformance.judge(catalogue.builtins()["approved"],
                                conformance.PosRun(5, 0.1, "<script>x</script>"),
                                conformance.WireRecord(requests=[b"CZ0040300"]))
    page = html_report([verdict], "pos <cmd>", 5)
    assert "<script>x" not in page and "&lt;script&gt;" in page
    assert "code 5" in page and junit_report([verdict]).count("<failure") == 1


def test_docs_explain_every_scenario_in_both_languages():
    text = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    french, english = text.split("# Conformance kit for points of sale (English)")
    for scenario in catalogue.builtins().values():
        assert f"| `{scenario.name}` |" in french and scenario.description in french
        assert f"| `{scenario.name}` |" in english and scenario.description_en in english


# --- the language of the kit: French under a French locale, English otherwise ----------


def test_every_builtin_scenario_has_its_fact_and_fix_in_english():
    for scenario in catalogue.builtins().values():
        assert scenario.fact_en and scenario.fix_en, scenario.name
        assert scenario.fact_en != scenario.fact and scenario.fix_en != scenario.fix


def _sample_verdicts():
    scenarios = catalogue.builtins()
    return [conformance.judge(scenarios["approved"], conformance.PosRun(0, 0.2),
                              conformance.WireRecord(requests=[b"CZ0040300"], connections=1,
                                                     closed_by_pos=1)),
            conformance.judge(scenarios["echo-amount"], conformance.PosRun(0, 0.3),
                              conformance.WireRecord(requests=[b"CZ0040300"] * 2))]


def test_html_report_and_problems_in_french_under_a_french_locale():
    verdicts = _sample_verdicts()
    page = html_report(verdicts, "pos", 5)
    echo = catalogue.builtins()["echo-amount"]
    assert '<html lang="fr">' in page and "Rapport de conformité Caisse-AP sur IP" in page
    assert "1 échec(s)" in page and echo.title in page and echo.fix in page
    assert echo.fix_en not in page and "Why it matters" not in page
    assert "la caisse a conclu « paiement accepté » au lieu de « issue inconnue »" in page
    assert "la caisse a envoyé 2 demandes pour une seule vente" in page


def test_html_report_and_problems_in_english_under_lang_c(monkeypatch):
    speak(monkeypatch, "C")
    verdicts = _sample_verdicts()
    page = html_report(verdicts, "pos", 5)
    echo = catalogue.builtins()["echo-amount"]
    assert '<html lang="en">' in page and "Caisse-AP over IP conformance report" in page
    assert "1 failure(s)" in page and "Why it matters" in page
    assert echo.title_en in page and echo.fact_en in page and echo.fix_en in page
    assert echo.fix not in page and "Rapport" not in page and "réussi" not in page
    assert ('the POS concluded "approved" instead of "unknown outcome"'
            in verdicts[1].problems[0])
    assert "the POS sent 2 requests for one sale" in verdicts[1].problems[1]


def test_junit_has_the_same_structure_in_both_languages(monkeypatch):
    french = ElementTree.fromstring(junit_report(_sample_verdicts()))
    speak(monkeypatch, "C")
    english = ElementTree.fromstring(junit_report(_sample_verdicts()))
    for suite in (french, english):
        assert (suite.tag, suite.get("tests"), suite.get("failures")) == ("testsuite", "2", "1")
        assert [case.get("name") for case in suite] == ["approved", "echo-amount"]
        assert suite.find("testcase[@name='echo-amount']/failure") is not None
    assert "instead of" in english.find(".//failure").get("message")
    assert "au lieu de" in french.find(".//failure").get("message")


@pytest.mark.parametrize("lang, words", [
    ("fr_FR.UTF-8", ("Paiement refusé (AF=04)", "paiement refusé", "usage :")),
    ("C", ("Refused payment (AF=04)", "refused ", "usage:")),
])
def test_list_and_help_follow_the_locale(capsys, monkeypatch, lang, words):
    speak(monkeypatch, lang)
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert words[0] in out and words[1] in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert capsys.readouterr().out.startswith(words[2])
