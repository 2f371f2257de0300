"""Both commands in French when the environment asks for it, in English otherwise.

The commands run as a user runs them (the launchers in subprocesses), with
LANG=fr_FR.UTF-8 or LANG=C and nothing else that names a language. The
French system locale need not be installed (it is not on the machine that
wrote these tests): gettext reads only the variables.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import ROOT, SERVER_SCRIPT, ServerProcess

CLIENT_SCRIPT = ROOT / "caisse-ap-ip-client.py"
TIMEOUT = 30.0
LANGUAGES = {"fr": "fr_FR.UTF-8", "en": "C"}
# Placeholders of %-formatting: %(name)s, %s, %r, %d.
PLACEHOLDER = re.compile(r"%(?:\([a-z_]+\))?[sdr]")

sys.path.insert(0, str(ROOT / "tools"))
catalog_tool = importlib.import_module("catalog")  # needs Babel (requirements-dev.txt)


def env_for(language: str, **more: str) -> dict[str, str]:
    """The environment with LANG alone naming the language (`more` may add others)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return {**env, "LANG": LANGUAGES.get(language, language), **more}


def run(script: Path, *args: str, language: str = "en", **more: str
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=TIMEOUT * 2, cwd=ROOT, env=env_for(language, **more))


def server(*args: str, language: str = "en", **more: str) -> subprocess.CompletedProcess:
    return run(SERVER_SCRIPT, *args, language=language, **more)


def client(*args: str, language: str = "en", **more: str) -> subprocess.CompletedProcess:
    return run(CLIENT_SCRIPT, *args, language=language, **more)


def one_line(text: str) -> str:
    """Help text with its wrapping undone, to find a sentence argparse cut."""
    return " ".join(text.split())


# --- The catalog --------------------------------------------------------------------


def test_every_message_of_the_code_has_its_french_form_and_the_mo_is_compiled():
    assert catalog_tool.problems(catalog_tool.read_catalog(),
                                 catalog_tool.code_messages()) == []


def test_french_forms_keep_every_placeholder():
    for message in catalog_tool.read_catalog():
        if message.id:
            assert (sorted(PLACEHOLDER.findall(message.string))
                    == sorted(PLACEHOLDER.findall(message.id))), message.id


def english_sentences() -> list[str]:
    """The catalog's English messages that read as words (not "CODE" or "%s"), with
    their placeholders as cut points: what must never show in French output."""
    pieces = []
    for message in catalog_tool.read_catalog():
        if not message.id or message.string == message.id:
            continue
        for piece in PLACEHOLDER.split(message.id):
            piece = " ".join(piece.split()).strip(" ,;:()")
            if len(piece) >= 12 and " " in piece and piece not in message.string:
                pieces.append(piece)
    return pieces


# --- Help, in each language ---------------------------------------------------------


@pytest.mark.parametrize("script", [SERVER_SCRIPT, CLIENT_SCRIPT], ids=["server", "client"])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_help_is_french_under_a_french_lang_with_no_english_sentence(script):
    done = run(script, "--help", language="fr")
    assert done.returncode == 0, done.stderr
    text = one_line(done.stdout)
    assert "usage :" in text and "afficher cette aide et quitter" in text
    assert [piece for piece in english_sentences() if piece in text] == []


@pytest.mark.parametrize("script", [SERVER_SCRIPT, CLIENT_SCRIPT], ids=["server", "client"])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_help_is_english_under_lang_c(script):
    done = run(script, "--help", language="en")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "show this help message and exit" in done.stdout
    assert "afficher" not in done.stdout and "par défaut" not in done.stdout


@pytest.mark.parametrize("variables, french", [
    ({"LANG": "C", "LC_MESSAGES": "fr_FR.UTF-8"}, True),
    ({"LANG": "fr_FR.UTF-8", "LC_ALL": "C"}, False),
    ({"LANG": "fr_CA.UTF-8"}, True),
    ({"LANG": "fr"}, True),
    ({"LANG": "de_DE.UTF-8"}, False),
    ({"LANG": "C", "LANGUAGE": "fr"}, True),
])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_the_language_follows_gettexts_variables(variables, french):
    done = server("--list-amount-rules", language=variables.pop("LANG"), **variables)
    assert done.returncode == 0, done.stderr
    assert ("Règles de montant" in done.stdout) is french, done.stdout


# --- Errors, listings and results, in each language -----------------------------------


@pytest.mark.parametrize("language, words", [
    ("fr", "caisse-ap-ip-server : erreur : argument -d/--duration : nombre de secondes"),
    ("en", "caisse-ap-ip-server: error: argument -d/--duration: duration must be a number"),
])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_server_errors_in_the_users_language(language, words):
    done = server("-d", "soon", language=language)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(words), done.stderr


@pytest.mark.parametrize("language, words", [
    ("fr", "arguments non reconnus : --bogus"), ("en", "unrecognized arguments: --bogus")])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_argparse_words_in_the_users_language(language, words):
    for done in (server("--bogus", language=language), client("--bogus", language=language)):
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("language", ["fr", "en"])
@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_list_profiles_says_where_facts_come_from_not_the_projects_history(language):
    done = server("--list-profiles", language=language)
    assert done.returncode == 0, done.stderr
    sources = [line.split("\t")[2] for line in done.stdout.splitlines()]
    assert len(sources) == 5 and all(sources)
    for history in ("issue", "seed project", "this project", "ticket", "projet d'origine"):
        assert history not in done.stdout.lower(), history
    assert ("docs/protocol.md, sections 4 et 5" in done.stdout) is (language == "fr")


@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_amount_rules_listing_in_french():
    done = server("--list-amount-rules", language="fr")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Règles de montant (table par défaut) ; la première qui correspond décide :"
    assert "  centimes .51      refused (AF=04, Refusée)" in lines
    assert lines[-1].split() == ["tout", "le", "reste", "les", "réglages", "décident"]


@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_client_result_words_in_french_and_json_the_same_in_both_languages():
    terminal = ServerProcess("--no-web", "-d", "0", "-f", "-ft", "refused", env=env_for("en"))
    try:
        french = client("-p", str(terminal.port), "-a", "12,50", "--refund", language="fr")
        english = client("-p", str(terminal.port), "-a", "12,50", "--refund", language="en")
        assert (french.returncode, english.returncode) == (1, 1)
        assert french.stdout.startswith("REFUSÉ — Refusée (AF=04)  12,50 € (remboursement)")
        assert english.stdout.startswith("DECLINED — Refusée (AF=04)  12.50 EUR (refund)")
        documents = []
        for language in ("fr", "en"):
            done = client("-p", str(terminal.port), "-a", "12,50", "--json", language=language)
            assert done.returncode == 1, done.stderr
            documents.append(json.loads(done.stdout))
    finally:
        terminal.kill()
    # The same request, answered the same: only the terminal's own numbers and times differ.
    stable = ("status", "amount", "currency", "currency_symbol", "action", "reason", "request",
              "problem")
    assert [{key: doc[key] for key in stable} for doc in documents] == [
        {key: documents[1][key] for key in stable}] * 2
    assert documents[0].keys() == documents[1].keys()
    assert documents[0]["labels"].keys() == documents[1]["labels"].keys()
    assert documents[0]["status"] == "declined" and documents[0]["amount"] == "12.50"


@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_unreachable_terminal_in_french_and_json_untouched():
    done = client("-p", "1", "--connect-timeout", "0,5", language="fr")
    assert done.returncode == 4
    assert done.stderr.startswith("caisse-ap-ip-client : ") and "rien n'a été envoyé" in done.stderr
    document = client("-p", "1", "--connect-timeout", "0,5", "--json", language="fr")
    assert json.loads(document.stdout)["problem"].endswith("; nothing was sent")


@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_french_output_never_fails_on_an_encoding_without_accents():
    """LANG=fr_FR.UTF-8 without that locale installed, and an ASCII output: accents
    become '?', the command does not crash."""
    done = subprocess.run([sys.executable, str(CLIENT_SCRIPT), "-a", "0"], capture_output=True,
                          timeout=TIMEOUT, cwd=ROOT,
                          env=env_for("fr", PYTHONIOENCODING="ascii"))
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr
    assert done.stderr.startswith(b"caisse-ap-ip-client : le montant 0 est nul")


def test_the_compiled_catalog_ships_in_the_wheel():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    from fnmatch import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["caisse_ap"]
    shipped = catalog_tool.MO_FILE.relative_to(ROOT / "caisse_ap").as_posix()
    assert any(fnmatch(shipped, pattern) for pattern in patterns), patterns


@pytest.mark.slow  # starts a process (conftest: the quick loop has none)
def test_library_errors_stay_english_for_programs_and_carry_the_french_form():
    """str() of a request error is what programs and the API read: English whatever the
    locale; `local` is what the client shows."""
    code = ("from caisse_ap import payment\n"
            "try:\n"
            "    payment.make_request('12,505', register='01')\n"
            "except payment.InvalidRequest as error:\n"
            "    print(str(error)); print(error.local); print(error.field)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT, env=env_for("fr"))
    assert done.stdout.splitlines() == [
        "amount 12,505 has more decimals than EUR allows (2)",
        "le montant 12,505 a plus de décimales que EUR n'en permet (2)", "amount"]


@pytest.mark.slow
def test_unknown_outcome_line_is_all_french_and_its_json_problem_english():
    """The library's outcome problem stays English for programs and --json, and the
    client shows its French form: no English words inside the French line."""
    import socket

    with socket.socket() as silent:  # a terminal that takes the request and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = str(silent.getsockname()[1])
        french = client("-p", port, "--timeout", "0,5", language="fr")
        english = client("-p", port, "--timeout", "0.5", language="en")
        document = client("-p", port, "--timeout", "0,5", "--json", language="fr")
    assert (french.returncode, english.returncode, document.returncode) == (3, 3, 3)
    assert french.stdout.startswith("ISSUE INCONNUE — pas de réponse en 0.5 s ; vérifiez")
    assert "no answer" not in french.stdout
    assert [piece for piece in english_sentences() if piece in french.stdout] == []
    assert english.stdout.startswith("UNKNOWN OUTCOME — no answer within 0.5 s; check")
    assert json.loads(document.stdout)["problem"] == "no answer within 0.5 s"
    assert "pas de réponse en 0.5 s" in document.stderr


def test_an_echo_mismatch_problem_has_its_french_form(monkeypatch):
    from caisse_ap import i18n, tlv
    from caisse_ap.messages import TerminalAnswer
    from caisse_ap.payment import make_request, payment_result

    request = make_request("12.50")
    fields = [(tag, value) for tag, value in request.fields() if tag != "CB"]
    answer = TerminalAnswer.parse([*fields, ("CB", "000000009999"), ("AE", "10")])
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    i18n.translation.cache_clear()
    try:
        result = payment_result(request, request.encode(), answer, tlv.encode(answer.fields),
                                None, 0.1)
    finally:
        i18n.translation.cache_clear()
    assert str(result.outcome) == "unknown"
    assert result.problem == ("the answer does not match the request (CB echoed as "
                              "'000000009999', sent '1250')")
    assert result.problem_local == ("la réponse ne correspond pas à la demande (CB renvoyé "
                                    "'000000009999' au lieu de '1250')")
