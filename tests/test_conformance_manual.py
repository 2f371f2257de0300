"""`caisse-ap-ip-server --conformance`: the conformance kit for a POS driven by hand.

The server runs as a process (its console is its standard input and output);
the POS is our command-line client; the "tester" is this test, answering what
the client printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from caisse_ap import i18n
from caisse_ap.conformance import catalogue
from caisse_ap.conformance.judge import WireRecord
from caisse_ap.conformance.session import ConformanceSession

pytestmark = pytest.mark.slow  # every test starts the server command

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30


def env_for(lang: str) -> dict[str, str]:
    """The environment with LANG alone naming the language of the messages."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return {**env, "LANG": lang}


@pytest.fixture
def french(monkeypatch):
    """In-process messages in French (the catalog is read again for the test)."""
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    i18n.translation.cache_clear()
    yield
    i18n.translation.cache_clear()


class ServerConsole:
    def __init__(self, *args: str, lang: str = "fr_FR.UTF-8"):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "caisse-ap-ip-server.py"), "-p", "0", "--host",
             "127.0.0.1", "--no-web", "--conformance", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env_for(lang))
        line = ""
        while "listening on" not in line:  # the readiness signal: the start-up line
            line = self.process.stderr.readline()
            assert line, "the server stopped before listening"
        self.port = int(re.search(r":(\d+)$", line.strip()).group(1))

    def read_until(self, marker: str) -> str:
        text = ""
        while marker not in text:
            line = self.process.stdout.readline()
            assert line, f"console closed before {marker!r}: {text}"
            text += line
        return text

    def answer(self, key: str) -> None:
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()

    def pay(self, amount: str = "12.50") -> int:
        return subprocess.run([sys.executable, str(ROOT / "caisse-ap-ip-client.py"), "-p",
                               str(self.port), "-a", amount, "--timeout", "2"],
                              capture_output=True, timeout=TIMEOUT).returncode


@pytest.fixture
def console():
    started: list[ServerConsole] = []

    def start(*args: str, lang: str = "fr_FR.UTF-8") -> ServerConsole:
        started.append(ServerConsole(*args, lang=lang))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(TIMEOUT)


def test_each_payment_gets_the_next_scenario_and_the_tester_is_judged(console, tmp_path):
    report = tmp_path / "conformite.html"
    server = console("--conformance-only", "approved,echo-amount,no-answer",
                     "--conformance-report", str(report), "--conformance-pos-timeout", "3")
    assert "Scénario 1/3 : Paiement accepté" in server.read_until("Payez")
    assert server.pay() == 0
    server.read_until("tapez ce qu'elle montre")
    server.answer("a")
    assert "réussi : attendu paiement accepté" in server.read_until("Payez")
    assert server.pay() == 3  # CB=125: our client does not take it
    server.read_until("tapez")
    server.answer("a")  # a tester whose POS showed "approved": that POS fails
    shown = server.read_until("Payez")
    assert "ÉCHEC : attendu issue inconnue, la caisse a montré paiement accepté" in shown
    assert "la marchandise peut partir sans être payée" in shown
    assert server.pay() == 3  # no answer within the client's 2 s
    server.read_until("tapez")
    server.answer("i")
    assert "2 / 3 scénarios réussis" in server.read_until("rapport :")
    assert server.process.wait(TIMEOUT) == 0
    page = report.read_text(encoding="utf-8")
    assert "1 échec(s)" in page and "Écho de CB différent" in page


def test_a_resend_is_seen_and_a_wrong_key_asked_again(console, tmp_path):
    server = console("--conformance-only", "no-answer", "--conformance-report",
                     str(tmp_path / "r.html"), "--conformance-pos-timeout", "3")
    server.read_until("Payez")
    server.answer("a")  # before any payment
    assert "aucun paiement n'est encore arrivé" in server.read_until("\n")
    assert server.pay() == 3
    server.read_until("tapez")
    assert server.pay() == 3  # the cashier (or the POS) tries again: a second request
    server.answer("x")
    assert "répondez a, r, i, e ou q" in server.read_until("\n")
    server.answer("i")
    assert "2 demandes pour une seule vente" in server.read_until("rapport :")


@pytest.mark.parametrize("args, message", [
    (["--conformance-only", "nope"], "unknown scenario 'nope'"),
    (["--conformance-pos-timeout", "0"], "between 0 and 3600"),
])
def test_bad_conformance_options_exit_2(args, message):
    done = subprocess.run([sys.executable, str(ROOT / "caisse-ap-ip-server.py"), "-p", "0",
                           "--no-web", "--conformance", *args], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_only_without_conformance_is_refused():
    done = subprocess.run([sys.executable, str(ROOT / "caisse-ap-ip-server.py"), "-p", "0",
                           "--no-web", "--conformance-only", "approved"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and "--conformance-only needs --conformance" in done.stderr


def test_session_rules(french):
    session = ConformanceSession([catalogue.builtins()["refused"]])
    with pytest.raises(ValueError, match="no payment reached"):
        session.tester_says("r", 1.0, WireRecord())
    session.connection_started(1.0)
    with pytest.raises(ValueError, match="unknown answer"):
        session.tester_says("z", 2.0, WireRecord(requests=[b"CZ"]))
    verdict = session.tester_says("e", 2.0, WireRecord(requests=[b"CZ"]))
    assert not verdict.passed and "elle a affiché une erreur" in verdict.problems[0]
    assert session.finished and session.verdicts == [verdict]
    with pytest.raises(ValueError, match="at least one"):
        ConformanceSession([])


# --- the web console's page: the same session with buttons ---------------------------

CHROMIUM = "/usr/bin/chromium"
PAGE_TIMEOUT_MS = 10_000


def test_the_web_page_shows_the_scenario_and_takes_the_answer_by_button(tmp_path):
    from playwright.sync_api import expect, sync_playwright
    from server_process import ServerProcess

    report = tmp_path / "conformite.html"
    server = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", "--conformance",
                           "--conformance-only", "approved,echo-register",
                           "--conformance-report", str(report), timeout=TIMEOUT,
                           env=env_for("fr_FR.UTF-8"))  # the page's texts in French
    try:
        def pay() -> int:
            return subprocess.run([sys.executable, str(ROOT / "caisse-ap-ip-client.py"), "-p",
                                   str(server.port), "-a", "12.50", "--timeout", "2"],
                                  capture_output=True, timeout=TIMEOUT).returncode

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox", "--headless"])
            page = browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{server.web_port}/conformance.html")
            expect(page.locator("#scenario-title")).to_have_text("Paiement accepté")
            expect(page.locator("#scenario-step")).to_contain_text("Payez 12,50 €")
            accepted = page.get_by_role("button", name="Paiement accepté")
            expect(accepted).to_be_disabled()
            assert pay() == 0
            expect(page.locator("#scenario-step")).to_contain_text("Le terminal a joué")
            expect(page.locator("#scenario-wire")).to_contain_text("1 demande(s)")
            accepted.click()
            expect(page.locator("#verdicts li").first).to_contain_text("réussi")
            expect(page.locator("#scenario-title")).to_have_text("Écho de CA différent")
            assert pay() == 3
            expect(page.locator("#scenario-step")).to_contain_text("Le terminal a joué")
            accepted.click()  # a POS that shows "approved" here fails
            expect(page.locator("#verdicts")).to_contain_text("échoué")
            expect(page.locator("#verdicts")).to_contain_text("Comment corriger")
            expect(page.locator("#scenario-title")).to_have_text("Session finie")
            expect(page.locator("#summary")).to_have_text("1 / 2 réussi(s)")
            expect(page.locator("#scenario-description")).to_contain_text(str(report))
            browser.close()
        assert "1 échec(s)" in report.read_text(encoding="utf-8")
        assert server.process.poll() is None  # with the web console, it keeps serving
    finally:
        server.kill()


def _api(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
    from openapi_check import check_response

    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status, kind, answer = (response.status, response.headers.get("content-type"),
                                    json.loads(response.read()))
    except urllib.error.HTTPError as error:
        status, kind, answer = (error.code, error.headers.get("content-type"),
                                json.loads(error.read()))
    check_response(method, path, status, kind, answer)  # as docs/openapi.json says
    return status, answer


def test_the_conformance_api_refuses_what_cannot_be_answered():
    from server_process import ServerProcess

    plain = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", timeout=TIMEOUT)
    try:
        status, body = _api(plain.web_port, "GET", "/api/conformance")
        assert status == 404 and "--conformance" in body["error"]
    finally:
        plain.kill()
    session = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", "--conformance",
                            "--conformance-only", "refused", timeout=TIMEOUT,
                            env=env_for("fr_FR.UTF-8"))
    try:
        status, body = _api(session.web_port, "GET", "/api/conformance")
        assert status == 200 and body["current"]["name"] == "refused"
        assert "expect" not in body["current"]  # the tester is not told what to answer
        status, body = _api(session.web_port, "POST", "/api/conformance/answer",
                            {"shown": "refused"})
        assert status == 409 and "aucun paiement" in body["error"]
        status, body = _api(session.web_port, "POST", "/api/conformance/answer",
                            {"shown": "maybe"})
        assert status == 400 and body["field"] == "shown"
    finally:
        session.kill()


def test_the_tester_console_speaks_english_under_lang_c(console, tmp_path):
    server = console("--conformance-only", "approved", "--conformance-report",
                     str(tmp_path / "report.html"), "--conformance-pos-timeout", "3", lang="C")
    shown = server.read_until("Pay ")
    assert "Conformance kit: 1 scenarios, one per payment." in shown
    assert "Scenario 1/1: Approved payment (approved)" in shown and "Pay 12.50 EUR" in shown
    assert server.pay() == 0
    assert "a = payment approved" in server.read_until("q to finish")
    server.answer("a")
    assert "passed: expected approved, the POS showed approved" in (
        server.read_until("report:"))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in page and "POS driven by hand" in page


def test_the_session_payments_are_in_the_journal_and_the_main_console(tmp_path):
    """Each payment of a session is a transaction of the terminal: journaled (the journal
    file), listed by the console's API with the scenario that answered it."""

    from server_process import ServerProcess

    journal = tmp_path / "journal.jsonl"
    session = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", "--conformance",
                            "--conformance-only", "approved,refused,hang-up",
                            "--journal", str(journal), timeout=TIMEOUT)
    try:
        def pay() -> int:
            return subprocess.run([sys.executable, str(ROOT / "caisse-ap-ip-client.py"), "-p",
                                   str(session.port), "-a", "12.50", "--timeout", "3"],
                                  capture_output=True, timeout=TIMEOUT).returncode

        assert pay() == 0
        assert _api(session.web_port, "POST", "/api/conformance/answer",
                    {"shown": "approved"})[0] == 200
        assert pay() == 1
        assert _api(session.web_port, "POST", "/api/conformance/answer",
                    {"shown": "refused"})[0] == 200
        assert pay() == 3  # hang-up: the terminal closes without answering
        status, body = _api(session.web_port, "GET", "/api/transactions")
        assert status == 200
        listed = sorted(body["transactions"], key=lambda tx: tx["id"])
        assert [(tx["scenario"], tx["status"], tx["mode"], tx["decided_by"])
                for tx in listed] == [
            ("approved", "approved", "conformance", "scenario"),
            ("refused", "declined", "conformance", "scenario"),
            ("hang-up", "hang-up", "conformance", "scenario")]
        assert listed[1]["reason"]["code"] == "04" and listed[0]["answer"]
        assert listed[0]["amount"] == "12.50" and listed[2]["answer"] is None
    finally:
        session.kill()
    later = ServerProcess("--web-host", "127.0.0.1", "--web-port", "0", "--journal",
                          str(journal), timeout=TIMEOUT)  # the journal kept them
    try:
        status, body = _api(later.web_port, "GET", "/api/transactions")
        assert sorted((tx["id"], tx.get("scenario")) for tx in body["transactions"]) == [
            (1, "approved"), (2, "refused"), (3, "hang-up")]
    finally:
        later.kill()
