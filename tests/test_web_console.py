"""Browser tests of the web console, with Playwright driving Debian's Chromium.

Each test starts the real server (`caisse-ap-ip-server.py`) on ports chosen by
the OS, reads them from its start-up lines, and opens the console in a fresh
browser context. Payments come from the real command-line client
(`caisse-ap-ip-client.py`) in a subprocess. Nothing waits on a clock: the
tests wait for a line printed, a process that exits, or something shown on the
page (Playwright's `expect` polls the page until it holds).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import playwright.sync_api as playwright_api
import pytest
from server_process import ROOT, ServerProcess

expect = playwright_api.expect

CLIENT = ROOT / "caisse-ap-ip-client.py"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Upper bounds for things that normally take milliseconds; never slept on.
START_TIMEOUT_S = 30
CLIENT_TIMEOUT_S = 30
PAGE_TIMEOUT_MS = 10_000

# Skipped on a developer's machine without Chromium; in CI (CI=true), where
# .ci/run installs it, a missing browser fails the run instead. Slow: a browser
# and a server process (test_web_console_fr.py and test_serial_console.py share it).
pytestmark = [pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK) and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is missing (apt-get install chromium)",
), pytest.mark.slow]

class RunningServer(ServerProcess):
    """The server, its web console on 127.0.0.1 (the same `web_port` again to restart it)."""

    def __init__(self, *extra_args: str, web_port: int = 0):
        super().__init__("--web-host", "127.0.0.1", "--web-port", str(web_port), "-d", "0",
                         "--seed", "1", *extra_args, timeout=START_TIMEOUT_S)
        self.origin = f"http://127.0.0.1:{self.web_port}"

    def api(self, method: str, path: str, body: object = None, token: str | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.origin + path, data=data, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as response:
            return json.loads(response.read())


class ConsolePage:
    """A page of the console, with what it logged and every request it made."""

    def __init__(self, context, origin: str):
        self.origin = origin
        self.errors: list[str] = []
        self.foreign_requests: list[str] = []
        self.requests: list[str] = []
        allowed = urlsplit(origin).netloc
        context.on("request", lambda request: self._saw(request.url, allowed))
        self.page = context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(
            f"console: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _saw(self, url: str, allowed: str) -> None:
        self.requests.append(url)
        parts = urlsplit(url)
        if parts.scheme == "blob":  # blob:http://host:port/uuid, made by the page itself
            parts = urlsplit(url[len("blob:"):])
        if parts.scheme in ("data",):
            return
        if parts.scheme not in ("http", "https") or parts.netloc != allowed:
            self.foreign_requests.append(url)

    def open(self) -> None:
        self.page.goto(self.origin + "/")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "open")

    def assert_clean(self) -> None:
        assert self.errors == []
        assert self.foreign_requests == []


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server():
    running = RunningServer()
    yield running
    running.stop()


@pytest.fixture
def console(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR",
                                  accept_downloads=True)
    page = ConsolePage(context, server.origin)
    yield page
    context.close()


def run_client(server: RunningServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLIENT), "-d", "127.0.0.1", "-p", str(server.port),
         "--json", "--timeout", str(CLIENT_TIMEOUT_S), *args],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S + 10, cwd=ROOT,
    )


@contextlib.contextmanager
def client_paying(server: RunningServer, *args: str) -> Iterator[subprocess.Popen]:
    """The command-line client paying in the background; killed if the test ends first."""
    client = subprocess.Popen(
        [sys.executable, str(CLIENT), "-d", "127.0.0.1", "-p", str(server.port),
         "--json", "--timeout", str(CLIENT_TIMEOUT_S), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        yield client
    finally:
        if client.poll() is None:
            client.kill()
        if not client.stdout.closed:
            client.communicate()


def apply_settings(page, **values: str) -> None:
    """Choose values in the settings panel and apply them."""
    for name, value in values.items():
        field = page.locator(f"#set-{name}")
        if name == "mode":
            page.get_by_test_id("mode").select_option(value)
        elif field.evaluate("node => node.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#settings-message")).to_have_text("Réglages appliqués.")


def test_page_loads_from_the_server_alone_without_errors(console, server):
    console.open()
    page = console.page
    status = page.get_by_test_id("terminal-status")
    expect(status).to_contain_text(f"127.0.0.1:{server.port}")
    expect(page.locator("#current-mode")).to_have_attribute("data-mode", "success")
    # The selectors are filled from GET /api/status, not from a table of the page.
    modes = page.get_by_test_id("mode").locator("option")
    expect(modes).to_have_count(len(server.api("GET", "/api/status")["choices"]["modes"]))
    expect(page.locator("#set-failure_type option[value='refused']")).to_have_count(1)
    expect(page.get_by_test_id("transactions").get_by_test_id("transaction")).to_have_count(0)
    assert any(url.endswith("/api/events") for url in console.requests)
    console.assert_clean()


def test_a_client_payment_appears_live_with_its_fields(console, server):
    console.open()
    page = console.page
    page.evaluate("window.notReloaded = true")

    done = run_client(server, "-a", "12,50")
    assert done.returncode == 0, done.stdout + done.stderr

    rows = page.get_by_test_id("transactions").get_by_test_id("transaction")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text("12,50\u00a0€")
    expect(row).to_contain_text("Débit")
    expect(row).to_contain_text("127.0.0.1:")
    expect(row.locator(".badge")).to_have_text("Acceptée")
    expect(page.locator(".counter-approved .counter-value")).to_have_text("1")
    assert page.evaluate("window.notReloaded") is True

    row.locator("summary").click()
    detail = row.locator(".tx-detail")
    expect(detail).to_be_visible()
    expect(detail.locator("tr", has_text="CB").first).to_contain_text("montant")
    expect(detail.locator("tr", has_text="AE").first).to_contain_text("opération effectuée")
    expect(detail.locator("pre.frame").first).to_contain_text("CB0041250")
    console.assert_clean()


def test_refusal_chosen_in_the_page_declines_the_next_payment(console, server):
    console.open()
    page = console.page
    page.get_by_test_id("mode").select_option("failure")
    page.locator("#set-failure_type").select_option("refused")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#current-mode")).to_have_attribute("data-mode", "failure")
    expect(page.locator("#current-mode")).to_contain_text("Refusée")
    assert server.api("GET", "/api/settings")["failure_type"] in ("refused", "04")

    done = run_client(server, "-a", "8,00")
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["reason"]["code"] == "04"

    row = page.get_by_test_id("transaction").first
    expect(row.locator(".badge")).to_have_text("Refusée (04)")
    console.assert_clean()


def test_an_invalid_setting_is_shown_next_to_its_field(console, server):
    console.open()
    page = console.page
    before = server.api("GET", "/api/settings")
    page.locator("#set-seller_contract").fill("12345678901")  # 11 characters, 10 at most
    page.locator("#set-duration").fill("0.5")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#err-seller_contract")).not_to_be_empty()
    expect(page.locator("#set-seller_contract")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-duration")).to_be_empty()
    # Nothing changed on the server, not even the valid field sent with it.
    assert server.api("GET", "/api/settings") == before
    assert page.evaluate("document.activeElement.id") == "set-seller_contract"

    page.get_by_test_id("test-amount").fill("12,345")  # three decimals for the euro
    page.get_by_test_id("test-send").click()
    expect(page.locator("#err-test-amount")).not_to_be_empty()
    expect(page.get_by_test_id("test-result")).to_be_hidden()
    page.get_by_text("Autres options de la demande").click()
    page.locator("#test-destination").fill("no port here")
    page.get_by_test_id("test-amount").fill("1,00")
    page.get_by_test_id("test-send").click()
    expect(page.locator("#err-test-destination")).to_contain_text("hôte:port")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-errors.png"), full_page=True)
    assert [error for error in console.errors if "page error" in error] == []


def test_the_profile_selector_shows_differences_and_switches_live(console, server):
    console.open()
    page = console.page
    selector = page.get_by_test_id("profile")
    expect(selector.locator("option")).to_have_count(
        len(server.api("GET", "/api/status")["choices"]["profiles"]))
    differences = page.get_by_test_id("profile-differences")
    expect(differences).to_contain_text("Aucune différence")
    selector.select_option("payxpert")
    expect(differences).to_contain_text("payxpert-docs.atlassian.net")
    expect(differences.locator("tr", has_text="statut pour BA=1 (AE)")).to_contain_text("10")
    expect(differences.locator("tr", has_text="terminal occupé")).to_contain_text("01")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#settings-message")).to_have_text("Réglages appliqués.")
    assert server.api("GET", "/api/settings")["profile"] == "payxpert"

    done = run_client(server, "--immediate", "-a", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["fields"]["AE"]) == ("accepted", "10")
    done = run_client(server, "-a", "3")
    assert json.loads(done.stdout)["fields"]["AL"] == "1"
    console.assert_clean()


def test_card_keys_pick_the_read_mode_in_the_settings_scheme(console, server):
    console.open()
    page = console.page
    for payment_type, key, expected in (("amexcontact", "decision-contactless", ("00D", "2")),
                                        ("amexcontactless", "decision-approve", ("002", "1"))):
        server.api("PUT", "/api/settings", {"mode": "manual", "payment_type": payment_type})
        with client_paying(server, "-a", "3,00") as client:
            expect(page.get_by_test_id("pending")).to_be_visible()
            page.get_by_test_id(key).click()
            stdout, stderr = client.communicate(timeout=CLIENT_TIMEOUT_S)
        fields = json.loads(stdout)["fields"]
        assert (fields["CC"], fields["CI"]) == expected, stdout + stderr
        expect(page.get_by_test_id("pending")).to_be_hidden()
    console.assert_clean()


def test_refuse_on_the_terminal_screen_declines_the_waiting_payment(console, server):
    console.open()
    page = console.page
    apply_settings(page, mode="manual")
    expect(page.locator("#current-mode")).to_have_attribute("data-mode", "manual")

    with client_paying(server, "-a", "7,77") as client:
        pending = page.get_by_test_id("pending")
        expect(pending).to_be_visible()
        expect(pending.get_by_test_id("pending-amount")).to_have_text("7,77\u00a0€")
        expect(page.locator("#pending-countdown")).to_contain_text("s")
        expect(page.get_by_test_id("transaction").first.locator(".badge")).to_have_text(
            "En attente")
        page.get_by_test_id("decision-refuse").click()
        stdout, stderr = client.communicate(timeout=CLIENT_TIMEOUT_S)
    assert client.returncode == 1, stdout + stderr
    assert json.loads(stdout)["status"] == "declined"
    expect(page.get_by_test_id("pending")).to_be_hidden()
    expect(page.get_by_test_id("transaction").first.locator(".badge")).to_have_text(
        "Refusée (04)")
    journal = server.api("GET", "/api/transactions")["transactions"]
    assert journal[0]["decided_by"] == "manual"
    console.assert_clean()


def test_the_test_payment_form_shows_the_result(console, server):
    console.open()
    page = console.page
    page.get_by_test_id("test-amount").fill("3,20")
    page.get_by_test_id("test-send").click()
    result = page.get_by_test_id("test-result")
    expect(result).to_have_attribute("data-status", "approved")
    expect(result).to_contain_text("Paiement accepté")
    expect(result).to_contain_text("3,20")
    # The payment went through the terminal: the feed shows it too.
    expect(page.get_by_test_id("transaction").first).to_contain_text("3,20\u00a0€")
    console.assert_clean()


def test_the_journal_filters_and_exports(console, server):
    server.api("POST", "/api/next", {"outcome": "refused"})
    assert run_client(server, "-a", "1,51").returncode == 1
    assert run_client(server, "-a", "2,00").returncode == 0
    console.open()
    page = console.page
    rows = page.locator("#journal-body tr")
    expect(rows).to_have_count(2)
    page.locator("#journal-filter").select_option("declined")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("1,51")

    with page.expect_download() as download:
        page.locator("#export-csv").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8-sig").splitlines()
    # French headers and words for a spreadsheet (scripts read the JSON export's names).
    assert lines[0].startswith("N°;Reçue le (heure locale);")
    assert len(lines) == 2 and ";Refusée;04;" in lines[1]

    page.locator("#journal-filter").select_option("")
    expect(rows).to_have_count(2)
    with page.expect_download() as download:
        page.locator("#export-json").click()
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert [tx["amount"] for tx in exported["transactions"]] == ["2.00", "1.51"]
    console.assert_clean()


def test_screenshot_with_a_few_transactions(console, server):
    """Leaves artifacts/console.png (laptop) and artifacts/console-phone.png to look at."""
    server.api("POST", "/api/next", [
        {"outcome": "refused"}, {"outcome": "approved", "payment_type": "cbcontactless"},
    ])
    assert [run_client(server, "-a", amount).returncode
            for amount in ("24,90", "112,45", "5,00")] == [1, 0, 0]
    assert run_client(server, "-a", "3,00", "--refund").returncode == 0
    assert run_client(server, "-a", "1500", "-c", "XPF").returncode == 0
    console.open()
    page = console.page
    apply_settings(page, mode="manual")
    with client_paying(server, "-a", "42,00") as client:
        expect(page.get_by_test_id("pending")).to_be_visible()
        expect(page.locator(".counter-pending .counter-value")).to_have_text("1")
        page.get_by_test_id("transaction").filter(has_text="24,90").locator("summary").click()
        # The opened row fits the feed's box once its "toggle" event has run.
        page.wait_for_function("""() => {
          const feed = document.getElementById("feed");
          const row = feed.querySelector(".tx details[open]").parentElement;
          return row.getBoundingClientRect().bottom <= feed.getBoundingClientRect().bottom + 0.5;
        }""")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(ARTIFACTS / "console-phone.png"))
        page.get_by_test_id("decision-approve").click()
        assert client.wait(timeout=CLIENT_TIMEOUT_S) == 0
    assert (ARTIFACTS / "console.png").stat().st_size > 10_000
    expect(page.get_by_test_id("transaction")).to_have_count(6)
    console.assert_clean()


def test_the_page_shows_a_lost_stream_and_reconnects_by_itself(console, server):
    server.api("POST", "/api/next", {"outcome": "refused"})
    assert run_client(server, "-a", "6,66").returncode == 1
    console.open()
    page = console.page
    expect(page.get_by_test_id("transaction")).to_have_count(1)

    server.stop()
    expect(page.locator("#connection")).to_have_attribute("data-state", "lost")
    expect(page.get_by_test_id("terminal-status")).to_contain_text("déconnecté")

    # A new server on the same web port (the one the OS gave the first): the page
    # finds it again, without a reload, and shows that server's journal.
    page.evaluate("window.notReloaded = true")
    again = RunningServer(web_port=server.web_port)
    try:
        expect(page.locator("#connection")).to_have_attribute("data-state", "open",
                                                              timeout=20_000)
        expect(page.get_by_test_id("transaction")).to_have_count(0)
        assert run_client(again, "-a", "4,00").returncode == 0
        expect(page.get_by_test_id("transaction")).to_have_count(1)
        expect(page.get_by_test_id("transaction").first).to_contain_text("4,00\u00a0€")
        expect(page.get_by_test_id("terminal-status")).to_contain_text(
            f"127.0.0.1:{again.port}")
        assert page.evaluate("window.notReloaded") is True
    finally:
        again.stop()


def test_a_token_pasted_in_the_page_opens_the_console(browser):
    """With a token, nothing but the status is open: the page asks for the token first,
    then trades it for the event stream's cookie (HttpOnly, SameSite=Strict)."""
    server = RunningServer("--web-token", "s3cret-token")
    context = browser.new_context(locale="fr-FR")
    try:
        console = ConsolePage(context, server.origin)
        page = console.page
        page.goto(server.origin + "/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#token-panel")).to_be_visible()
        expect(page.locator("#token-input")).to_be_focused()
        expect(page.locator("#connection")).not_to_have_attribute("data-state", "open")

        page.locator("#token-input").fill("s3cret-token")
        page.locator("#token-form button[type=submit]").click()
        expect(page.locator("#token-panel")).to_be_hidden()
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        # The event stream is authenticated: a payment shows up live.
        assert run_client(server, "-a", "3,00").returncode == 0
        expect(page.get_by_test_id("transaction")).to_have_count(1)
        page.get_by_test_id("mode").select_option("failure")
        page.get_by_test_id("apply-settings").click()
        expect(page.locator("#settings-message")).to_have_text("Réglages appliqués.")
        assert server.api("GET", "/api/settings", token="s3cret-token")["mode"] == "failure"
        assert page.evaluate("sessionStorage.length") == 1
        cookie, = context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict",
                                                                            "/api/")
        assert page.evaluate("document.cookie") == ""  # out of reach of any script
        assert console.foreign_requests == []
    finally:
        context.close()
        server.stop()


def test_the_url_printed_with_the_token_opens_the_console(browser):
    server = RunningServer("--web-token", "from-the-url")
    context = browser.new_context(locale="fr-FR")
    try:
        console = ConsolePage(context, server.origin)
        console.page.goto(server.origin + "/#token=from-the-url")
        expect(console.page.locator("#connection")).to_have_attribute("data-state", "open")
        expect(console.page.locator("#token-panel")).to_be_hidden()
        assert "token" not in console.page.url  # taken out of the address bar and history
        console.assert_clean()
    finally:
        context.close()
        server.stop()


def test_no_token_panel_when_the_server_needs_none(console):
    console.open()
    expect(console.page.locator("#token-toggle")).to_be_hidden()
    console.assert_clean()


def test_interrupted_transactions_and_a_failing_journal_are_shown(browser, tmp_path):
    """Rows a killed server left pending come back interrupted: counted and in the journal."""
    from caisse_ap.testing import EventStream

    path = tmp_path / "journal.sqlite"
    killed = RunningServer("--journal", str(path), "-d", "60")
    with EventStream(killed.origin) as events, client_paying(killed, "-a", "7,00"):
        assert events.get("request")["data"]["status"] == "pending"
        killed.stop(signal.SIGKILL)
    server = RunningServer("--journal", str(path))
    context = browser.new_context(locale="fr-FR")
    try:
        console = ConsolePage(context, server.origin)
        console.open()
        page = console.page
        expect(page.locator(".counter-interrupted .counter-value")).to_have_text("1")
        page.locator("#journal-filter").select_option("interrupted")
        expect(page.locator("#journal-body tr")).to_have_count(1)
        expect(page.locator("#journal-body tr").first).to_contain_text("Interrompue")
        expect(page.locator("#journal-failing")).to_be_hidden()
        console.assert_clean()
    finally:
        context.close()
        server.stop()


def test_proxied_payments_are_marked_with_their_deviations(browser):
    """--proxy in front of a terminal that pads CB and answers 0301: the console marks the
    payment as proxied and counts two deviations against the standard profile."""
    real = ServerProcess("--no-web", "-d", "0", "--profile", "ingenico",
                         timeout=START_TIMEOUT_S)
    middle = RunningServer("--proxy", f"127.0.0.1:{real.port}")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    try:
        console = ConsolePage(context, middle.origin)
        console.open()
        page = console.page
        assert run_client(middle, "-a", "12,50").returncode == 0
        row = page.get_by_test_id("transactions").get_by_test_id("transaction").first
        expect(row.get_by_test_id("origin")).to_have_text("proxy")
        expect(row.get_by_test_id("deviations")).to_have_text("⚠ 2 écarts")
        row.locator("summary").click()
        expect(row.locator(".deviations li")).to_have_count(2)
        expect(row.locator(".tx-detail")).to_contain_text("CB complété par des zéros")
        expect(row.locator(".tx-detail")).to_contain_text("terminal réel (proxy)")
        console.assert_clean()
    finally:
        context.close()
        middle.stop()
        real.stop()
    assert "proxy to the terminal at 127.0.0.1:" in middle.output()
    assert "deviates: CB padded with zeros" in middle.output()
