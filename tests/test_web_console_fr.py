"""Browser tests of what a French POS developer does in the console (issue 15).

The same real server, client and Chromium as test_web_console.py, whose
fixtures and helpers are shared. Screenshots go to artifacts/ (git-ignored).
Every test that makes the API refuse something also checks that the API's
English `error` text never reaches the page.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import test_web_console as shared
from test_web_console import (
    ARTIFACTS,
    CLIENT_TIMEOUT_S,
    ConsolePage,
    apply_settings,
    client_paying,
    expect,
    run_client,
)

from caisse_ap.terminal.web.api import ERROR_CODES

# The fixtures of test_web_console.py: one Chromium per module, a server and a page per test.
pytestmark = shared.pytestmark
browser = shared.browser
server = shared.server
console = shared.console

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}


def api_errors(console: ConsolePage) -> list[str]:
    """The English `error` texts of every API refusal the page receives, as they come."""
    seen: list[str] = []

    def record(response) -> None:
        if "/api/" in response.url and response.status >= 400:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                seen.append(response.json()["error"])
    console.page.on("response", record)
    return seen


def assert_no_raw_error(page, errors: list[str]) -> None:
    shown = page.locator("body").inner_text()
    assert errors, "the test meant to make the API refuse something"
    assert [error for error in errors if error in shown] == []


def refuse_changes_with(body: dict):
    """A route handler: PUT answered 400 with `body`, as if the server had refused it."""
    def handle(route) -> None:
        if route.request.method == "PUT":
            route.fulfill(status=400, content_type="application/json", body=json.dumps(body))
        else:
            route.continue_()
    return handle


def screenshot(page, name: str, **options) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **options)
    return path


# --- French messages and safe input ----------------------------------------------------


def test_decimal_comma_round_trip(console, server):
    console.open()
    page = console.page
    apply_settings(page, duration="0,5")
    assert server.api("GET", "/api/settings")["duration"] == 0.5
    expect(page.locator("#set-duration")).to_have_value("0,5")
    expect(page.locator("#current-delay")).to_have_text("0,5\u00a0s")

    apply_settings(page, duration=" 1.25 ")  # a point works too, shown back with a comma
    assert server.api("GET", "/api/settings")["duration"] == 1.25
    expect(page.locator("#set-duration")).to_have_value("1,25")

    page.get_by_test_id("mode").select_option("manual")
    apply_settings(page, manual_timeout="2,5")
    assert server.api("GET", "/api/settings")["manual_timeout"] == 2.5
    expect(page.locator("#set-manual_timeout")).to_have_value("2,5")

    page.locator("#set-duration").fill("1,2,3")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#err-duration")).to_contain_text("nombre de secondes")
    expect(page.locator("#settings-message")).to_contain_text("« Délai avant réponse (s) »")
    assert server.api("GET", "/api/settings")["duration"] == 1.25
    console.assert_clean()


def test_blank_contract_is_refused_on_both_sides(console, server):
    console.open()
    page = console.page
    page.locator("#set-seller_contract").fill("   ")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#err-seller_contract")).to_contain_text("vide")
    assert server.api("GET", "/api/settings")["seller_contract"] == "424242"
    with pytest.raises(Exception) as refused:
        server.api("PUT", "/api/settings", {"seller_contract": "   "})
    answer = json.loads(refused.value.read())
    assert (refused.value.code, answer["code"], answer["field"]) == (400, "empty",
                                                                     "seller_contract")


def test_each_api_error_is_shown_in_french_next_to_its_field(console, server):
    errors = api_errors(console)
    console.open()
    page = console.page
    # Real refusals of the server first: a value too long, a currency, an amount.
    page.locator("#set-seller_contract").fill("12345678901")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#err-seller_contract")).to_have_text("10 caractères au plus.")
    expect(page.locator("#settings-message")).to_contain_text("« Contrat commerçant »")
    page.locator("#reset-settings").click()
    page.get_by_text("Devises, version, montant").click()
    page.locator("#set-currencies").fill("EUR, ZZZ")
    page.get_by_test_id("apply-settings").click()
    expect(page.locator("#err-currencies")).to_contain_text("ISO 4217")
    page.locator("#reset-settings").click()
    page.get_by_test_id("test-amount").fill("12,345")
    page.get_by_test_id("test-send").click()
    expect(page.locator("#err-test-amount")).to_contain_text("Montant non valide")
    expect(page.locator("#test-message")).to_contain_text("« Montant »")
    expect(page.get_by_test_id("test-result")).to_be_hidden()
    assert_no_raw_error(page, errors)

    # Then every code the API has, as if the server had answered it: the page
    # always says something of its own, never the English text, never "code ...".
    for code in ERROR_CODES:
        body = {"error": f"ENGLISH {code} sentence", "code": code, "field": "duration",
                "limits": {"min": 0, "max": 3600, "max_length": 10}}
        page.route("**/api/settings", refuse_changes_with(body))
        page.locator("#set-duration").fill("7")
        page.get_by_test_id("apply-settings").click()
        message = page.locator("#err-duration")
        expect(message).not_to_be_empty()
        text = message.inner_text()
        assert "ENGLISH" not in text and "code «" not in text, (code, text)
        page.unroute("**/api/settings")
    # The browser logs each 400 it got; no script failed.
    assert [error for error in console.errors if "page error" in error] == []


def test_test_payment_to_nowhere_is_explained_in_french(console, server):
    console.open()
    page = console.page
    page.get_by_text("Autres options de la demande").click()
    page.locator("#test-destination").fill("127.0.0.1:1")
    page.get_by_test_id("test-send").click()
    result = page.get_by_test_id("test-result")
    expect(result).to_have_attribute("data-status", "error")
    expect(result).to_contain_text("n’a pas pu être joint")
    assert "refused" not in result.inner_text().lower()


# --- Everything the API does ------------------------------------------------------------


def test_payment_types_are_told_apart(console, server):
    console.open()
    texts = console.page.locator("#set-payment_type option").all_inner_texts()
    assert len(set(texts)) == len(texts) == len(
        server.api("GET", "/api/status")["choices"]["payment_types"])
    assert any("piste magnétique" in text for text in texts)


def test_queue_editor_drives_the_next_payments(console, server):
    console.open()
    page = console.page
    queue = page.get_by_test_id("queue-item")
    page.get_by_test_id("queue-outcome").select_option("refused")
    page.get_by_test_id("queue-add").click()
    expect(queue).to_have_count(1)
    page.get_by_test_id("queue-outcome").select_option("approved")
    page.locator("#queue-payment_type").select_option("amexcontactless")
    page.locator("#queue-delay").fill("0,2")
    page.get_by_test_id("queue-add").click()
    expect(queue).to_have_count(2)
    expect(queue.nth(1)).to_contain_text("0,2\u00a0s")
    # Up with the second: the approval comes first.
    queue.nth(1).get_by_role("button", name="Monter l’issue 2").click()
    expect(queue.first).to_contain_text("American Express")
    assert [item["outcome"] for item in server.api("GET", "/api/next")["queue"]] == [
        "approved", "refused"]
    screenshot(page, "console-queue.png", full_page=True)

    first = run_client(server, "-a", "5,00")
    assert first.returncode == 0 and json.loads(first.stdout)["fields"]["CC"] == "00D"
    second = run_client(server, "-a", "5,00")
    assert second.returncode == 1 and json.loads(second.stdout)["reason"]["code"] == "04"
    expect(queue).to_have_count(0)

    page.get_by_test_id("queue-add").click()
    page.get_by_test_id("queue-add").click()
    expect(queue).to_have_count(2)
    queue.first.get_by_role("button", name="Retirer l’issue 1").click()
    expect(queue).to_have_count(1)
    page.get_by_test_id("queue-clear").click()
    expect(queue).to_have_count(0)
    assert server.api("GET", "/api/next")["queue"] == []
    console.assert_clean()


def test_rules_view_and_switch(console, server):
    console.open()
    page = console.page
    rules = server.api("GET", "/api/amount-rules")["rules"]
    expect(page.get_by_test_id("rule")).to_have_count(len(rules))
    expect(page.get_by_test_id("rules")).to_contain_text(",51")
    page.get_by_test_id("rules-switch").check()
    expect(page.locator("#rules-message")).to_have_text("Règles activées.")
    assert server.api("GET", "/api/settings")["amount_rules"] is True
    done = run_client(server, "-a", "10,51")
    assert done.returncode == 1 and json.loads(done.stdout)["reason"]["code"] == "04"
    page.get_by_test_id("rules-switch").uncheck()
    expect(page.locator("#rules-message")).to_have_text("Règles désactivées.")
    assert run_client(server, "-a", "10,51").returncode == 0
    console.assert_clean()


@pytest.mark.parametrize("outcome, args, check", [
    ("partial", ["--partial", "-a", "10,00"],
     lambda done: done.returncode == 0 and json.loads(done.stdout)["fields"]["CB"] == "500"),
    ("forbidden", ["-a", "10,00"],
     lambda done: done.returncode == 1 and json.loads(done.stdout)["reason"]["code"] == "05"),
    ("hang-up", ["-a", "10,00"],
     lambda done: json.loads(done.stdout)["status"] == "unknown"),
])
def test_the_keypad_offers_every_outcome(console, server, outcome, args, check):
    console.open()
    page = console.page
    apply_settings(page, mode="manual")
    with client_paying(server, *args) as client:
        expect(page.get_by_test_id("pending")).to_be_visible()
        page.get_by_test_id("other-outcome").select_option(outcome)
        page.get_by_test_id("other-decide").click()
        stdout, stderr = client.communicate(timeout=CLIENT_TIMEOUT_S)
    done = type("Done", (), {"returncode": client.returncode, "stdout": stdout})
    assert check(done), stdout + stderr
    expect(page.get_by_test_id("pending")).to_be_hidden()
    console.assert_clean()


# --- Developer tools --------------------------------------------------------------------


def test_receipt_is_a_ticket_and_rejouer_sends_the_request_again(console, server):
    console.open()
    page = console.page
    done = run_client(server, "-a", "4,56", "--receipt", "--reference", "R-9")
    assert done.returncode == 0, done.stderr
    row = page.get_by_test_id("transaction").first
    row.locator("summary").click()
    ticket = row.get_by_test_id("ticket")
    expect(ticket).to_contain_text("TICKET CLIENT A CONSERVER")
    expect(ticket).to_contain_text("4,56")
    # The receipt's base64 is folded in the fields table, not a long column.
    expect(row.locator(".long-value")).to_contain_text("caractères")
    ARTIFACTS.mkdir(exist_ok=True)
    ticket.screenshot(path=str(ARTIFACTS / "console-ticket.png"))

    row.get_by_test_id("replay").click()
    result = page.get_by_test_id("test-result")
    expect(result).to_have_attribute("data-status", "approved")
    expect(result).to_contain_text("4,56")
    expect(page.get_by_test_id("transaction")).to_have_count(2)
    again = server.api("GET", "/api/transactions")["transactions"][0]
    first = server.api("GET", "/api/transactions")["transactions"][1]
    sent = {tag: value for tag, value in again["request"]}
    assert {tag: value for tag, value in first["request"]} == sent
    assert sent["CF"] == "R-9" and sent["CK"].startswith("1")
    console.assert_clean()


def test_copy_a_frame(browser, server):
    context = browser.new_context(locale="fr-FR", permissions=["clipboard-read",
                                                                "clipboard-write"])
    try:
        console = ConsolePage(context, server.origin)
        console.open()
        page = console.page
        assert run_client(server, "-a", "1,00").returncode == 0
        row = page.get_by_test_id("transaction").first
        row.locator("summary").click()
        row.get_by_test_id("copy-frame").first.click()
        expect(row.get_by_test_id("copy-frame").first).to_have_text("Copié")
        frame = server.api("GET", "/api/transactions")["transactions"][0]["request_frame"]
        assert page.evaluate("navigator.clipboard.readText()") == frame
    finally:
        context.close()


def test_journal_rows_open_and_csv_opens_as_columns(console, server):
    server.api("POST", "/api/next", {"outcome": "refused"})
    assert run_client(server, "-a", "1,51").returncode == 1
    console.open()
    page = console.page
    page.locator("#journal-body [data-journal-id]").first.click()
    detail = page.get_by_test_id("journal-detail")
    expect(detail).to_contain_text("CB")
    expect(detail).to_contain_text("Refusée")
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    assert len(rows) == 1
    # French headers and words (issue's point: the CSV is for people; scripts read the JSON).
    assert (rows[0]["Montant"], rows[0]["Issue"], rows[0]["Code motif (AF)"]) == (
        "1,51", "Refusée", "04")
    assert "," in rows[0]["Durée (s)"] or rows[0]["Durée (s)"] == "0"

    server.stop()  # no stale file once the server is gone
    expect(page.locator("#connection")).to_have_attribute("data-state", "lost")
    page.locator("#export-csv").click()
    expect(page.locator("#journal-message")).to_contain_text("Export impossible")


def test_raw_log_download_has_the_frames_of_a_server_at_info(console, server):
    assert run_client(server, "-a", "2,22").returncode == 0
    console.open()
    page = console.page
    page.get_by_text("Journal brut du serveur").click()
    with page.expect_download() as download:
        page.get_by_test_id("raw-log").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert " DEBUG " in text and "sent b'CZ0040300" in text and "answered b'" in text
    assert " INFO " in text and "debit 2.22 EUR" in text
    expect(page.locator("#raw-log-message")).to_contain_text("lignes téléchargées")
    assert " DEBUG " not in server.output()  # stderr still at -l info

    def raw_log(query: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{server.origin}/api/log?{query}") as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
    assert raw_log("since=2999-01-01T00:00:00Z") == (200, b"")
    assert raw_log("until=2000-01-01T00:00:00%2B01:00") == (200, b"")
    status, body = raw_log("since=yesterday")
    assert status == 400 and json.loads(body)["code"] == "invalid_format"
    console.assert_clean()


# --- Test payments never lock the page --------------------------------------------------


def test_a_silent_terminal_can_be_cancelled_and_times_out(console, server):
    server.api("PUT", "/api/settings", {"mode": "no-answer"})
    console.open()
    page = console.page
    expect(page.locator("#test-timeout")).to_have_value("30")
    page.get_by_test_id("test-send").click()
    expect(page.locator("#test-elapsed")).to_contain_text("En attente de la réponse")
    expect(page.get_by_test_id("test-send")).to_be_disabled()
    screenshot(page, "console-test-waiting.png")
    page.get_by_test_id("test-cancel").click()
    expect(page.locator("#test-message")).to_contain_text("annulé")
    expect(page.get_by_test_id("test-send")).to_be_enabled()

    page.locator("#test-timeout").fill("0,5")
    page.get_by_test_id("test-send").click()
    result = page.get_by_test_id("test-result")
    expect(result).to_have_attribute("data-status", "unknown")
    expect(result).to_contain_text("Pas de réponse du terminal")
    console.assert_clean()


# --- Accessibility ---------------------------------------------------------------------


def test_phone_layout_shows_the_journal_columns(browser, server):
    assert run_client(server, "-a", "112,45").returncode == 0
    context = browser.new_context(viewport=PHONE, locale="fr-FR", is_mobile=True)
    try:
        console = ConsolePage(context, server.origin)
        console.open()
        page = console.page
        row = page.locator("#journal-body tr").first
        for label in ("Montant", "Issue"):
            cell = row.locator(f"td[data-label='{label}']")
            expect(cell).to_be_visible()
            box = cell.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (label, box)
        expect(row).to_contain_text("112,45")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        row.scroll_into_view_if_needed()
        screenshot(page, "console-phone-journal.png")
    finally:
        context.close()


FOCUS_CHECK = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const width = parseFloat(style.outlineWidth) || 0;
  const offset = parseFloat(style.outlineOffset) || 0;
  // What the ring is drawn on: the element itself when drawn inside it, else around it.
  let node = offset < 0 ? el : el.parentElement, background = null;
  while (node && node.nodeType === 1) {
    const colour = rgb(getComputedStyle(node).backgroundColor);
    if (colour.length === 3 || (colour.length === 4 && colour[3] > 0.9)) {
      background = colour;
      break;
    }
    node = node.parentElement;
  }
  const box = el.getBoundingClientRect();
  const reach = Math.max(width + offset, 0);
  const ring = {left: box.left - reach, right: box.right + reach,
                top: box.top - reach, bottom: box.bottom + reach};
  let clipped = null;
  for (let up = el.parentElement; up; up = up.parentElement) {
    const overflow = getComputedStyle(up);
    if (/(auto|scroll|hidden)/.test(overflow.overflowX + overflow.overflowY)) {
      const outer = up.getBoundingClientRect();
      if (ring.left < outer.left - 0.5 || ring.right > outer.right + 0.5 ||
          ring.top < outer.top - 0.5 || ring.bottom > outer.bottom + 0.5) {
        clipped = up.className;
        break;
      }
    }
  }
  return {id: el.id || el.className || el.tagName, style: style.outlineStyle, width,
          colour: rgb(style.outlineColor), background: background || [255, 255, 255], clipped};
}"""


def contrast(first: list[float], second: list[float]) -> float:
    def luminance(colour: list[float]) -> float:
        channels = [c / 255 for c in colour[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_focus_is_visible_and_never_clipped(console, server):
    for amount in ("1,00", "2,00"):
        assert run_client(server, "-a", amount).returncode == 0
    console.open()
    page = console.page
    expect(page.get_by_test_id("transaction")).to_have_count(2)
    seen = set()
    for _ in range(200):  # every control of the page, until the journal's rows
        page.keyboard.press("Tab")
        focus = page.evaluate(FOCUS_CHECK)
        seen.add(focus["id"])
        assert focus["style"] != "none" and focus["width"] >= 2, focus
        assert contrast(focus["colour"], focus["background"]) >= 3, focus
        assert focus["clipped"] is None, focus
        if focus["id"] == "row-toggle":
            break
    # The walk went through the feed's rows (summary) and reached the journal's.
    assert {"SUMMARY", "row-toggle"} <= seen, seen
    screenshot(page, "console-focus.png")


def test_no_serious_accessibility_violation(browser, server):
    assert run_client(server, "-a", "3,00").returncode == 0
    # The page allows its own scripts only (CSP): axe comes in as a test tool.
    context = browser.new_context(locale="fr-FR", bypass_csp=True)
    try:
        for viewport in ({"width": 1366, "height": 768}, PHONE):
            console = ConsolePage(context, server.origin)
            page = console.page
            page.set_viewport_size(viewport)
            console.open()
            page.get_by_test_id("transaction").first.locator("summary").click()
            page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
            results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                       for v in results["violations"] if v["impact"] in ("serious", "critical")]
            assert serious == [], serious
            page.close()
    finally:
        context.close()


# --- Safe and French in every mode --------------------------------------------------------

# Words that are English only: none may reach the French page (raw frames, field
# values and the titles of cited documents aside).
ENGLISH = re.compile(r"\b(the|and|sent|expected|approved|declined|debit|refund|gathered|"
                     r"this project|issue \d|seed|authors|captured|padded|zeros|unknown|"
                     r"answer|request|received_at|answered_at|decided_by|reason_code|"
                     r"refused|connection|error|amount|missing|changed|not in)\b", re.I)
# The page's text as a person reads it, hidden parts included (they show later);
# frames, field values and options (profile labels cite documents) left out.
PAGE_TEXT = """() => {
  const copy = document.body.cloneNode(true);
  const left = "pre, code, td.value, .long-value, option, script";
  copy.querySelectorAll(left).forEach((n) => n.remove());
  return copy.textContent.replace(/\\s+/g, " ");
}"""


def english_in(page) -> list[str]:
    """Each English word of the page, with what surrounds it."""
    text = re.sub(r"--[a-z-]+", "", page.evaluate(PAGE_TEXT))  # option names are commands
    return sorted({text[max(m.start() - 30, 0):m.end() + 30] for m in ENGLISH.finditer(text)})


@contextlib.contextmanager
def proxy_console(browser, viewport=None):
    """A simulated terminal standing for the shop's real one (an Ingenico profile: it pads CB
    and answers 0301), a --proxy to it with its console, and a page open on it."""
    real = shared.ServerProcess("--no-web", "-d", "0", "--profile", "ingenico", "--seed", "2",
                                timeout=shared.START_TIMEOUT_S)
    middle = shared.RunningServer("--proxy", f"127.0.0.1:{real.port}")
    context = browser.new_context(viewport=viewport or {"width": 1366, "height": 768},
                                  locale="fr-FR")
    try:
        console = ConsolePage(context, middle.origin)
        console.open()
        yield real, middle, console
    finally:
        context.close()
        middle.stop()
        real.stop()


def test_behind_a_proxy_the_console_says_who_answers_and_confirms_real_payments(browser):
    with proxy_console(browser) as (real, middle, console):
        page = console.page
        real_name = f"127.0.0.1:{real.port}"
        expect(page.get_by_test_id("answered-by")).to_contain_text(
            f"Le terminal réel à {real_name}")
        expect(page.locator("#row-mode")).to_be_hidden()
        expect(page.locator("#row-delay")).to_be_hidden()
        expect(page.locator("#row-mode-setting")).to_be_hidden()
        expect(page.get_by_test_id("settings-upstream")).to_contain_text("écarts")
        expect(page.locator("#footer-note")).to_contain_text("les paiements sont réels")
        expect(page.get_by_test_id("test-upstream")).to_contain_text(real_name)
        expect(page.get_by_test_id("rules-switch")).to_be_disabled()
        expect(page.locator("#rules-state")).to_contain_text("Sans effet en mode proxy")
        # Behind the proxy the queue may hold the real terminal's answer, late or cut.
        assert {"terminal", "terminal-split"} <= set(
            page.locator("#queue-outcome option").evaluate_all("o => o.map((x) => x.value)"))

        assert run_client(middle, "-a", "10,00").returncode == 0
        rows = page.get_by_test_id("transaction")
        row = rows.first
        row.locator("summary").click()
        detail = row.locator(".tx-detail")
        expect(detail).to_contain_text("CB complété par des zéros : CB=")
        expect(detail).to_contain_text("pour 1000 envoyé")
        expect(detail).to_contain_text("CZ=0301 au lieu de 0300")

        # « Rejouer » is a real payment: it asks, naming the terminal and the amount.
        row.get_by_test_id("replay").click()
        dialog = page.get_by_test_id("confirm-real")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(real_name)
        expect(dialog).to_contain_text("10,00")
        assert english_in(page) == []
        screenshot(page, "console-proxy-confirm.png")
        page.get_by_test_id("confirm-real-cancel").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#test-message")).to_contain_text(f"{real_name} n’a rien reçu")
        assert len(middle.api("GET", "/api/transactions")["transactions"]) == 1

        row.get_by_test_id("replay").click()
        page.get_by_test_id("confirm-real-send").click()
        expect(page.get_by_test_id("test-result")).to_have_attribute("data-status", "approved")
        expect(rows).to_have_count(2)
        assert [t["mode"] for t in middle.api("GET", "/api/transactions")["transactions"]] == [
            "proxied", "proxied"]

        # The test payment too.
        page.get_by_test_id("test-amount").fill("3,00")
        page.get_by_test_id("test-send").click()
        expect(dialog).to_contain_text("3,00")
        page.get_by_test_id("confirm-real-send").click()
        expect(rows).to_have_count(3)
        assert english_in(page) == []
        screenshot(page, "console-proxy.png", full_page=True)
        console.assert_clean()


def test_behind_a_proxy_the_phone_layout_says_who_answers(browser):
    with proxy_console(browser, PHONE) as (real, middle, console):
        page = console.page
        expect(page.get_by_test_id("answered-by")).to_contain_text(f"127.0.0.1:{real.port}")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "console-proxy-phone.png")
        page.get_by_test_id("test-send").click()
        expect(page.get_by_test_id("confirm-real")).to_be_visible()
        box = page.get_by_test_id("confirm-real").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        screenshot(page, "console-proxy-phone-confirm.png")
        page.keyboard.press("Escape")  # closing the dialog is a no
        expect(page.locator("#test-message")).to_contain_text("n’a rien reçu")
        assert middle.api("GET", "/api/transactions")["transactions"] == []


def test_a_plain_simulator_offers_no_real_terminal_outcome(console, server):
    console.open()
    page = console.page
    expect(page.locator("#row-answered-by")).to_be_hidden()
    expect(page.locator("#row-mode")).to_be_visible()

    def offered(select: str) -> set[str]:
        return set(page.locator(f"#{select} option").evaluate_all("o => o.map((x) => x.value)"))
    assert "approved" in offered("queue-outcome")
    assert offered("queue-outcome") & {"terminal", "terminal-split"} == set()
    apply_settings(page, mode="manual")
    with client_paying(server, "-a", "6,00") as client:
        expect(page.get_by_test_id("pending")).to_be_visible()
        assert offered("other-outcome") & {"terminal", "terminal-split"} == set()
        page.get_by_test_id("decision-approve").click()
        client.communicate(timeout=CLIENT_TIMEOUT_S)
    assert client.returncode == 0
    assert english_in(page) == []
    console.assert_clean()


def test_a_replaying_server_names_its_recording(browser, tmp_path):
    path = tmp_path / "boutique.jsonl"
    path.write_text('{"type": "recording", "version": 1, "mode": "simulated"}\n')
    replaying = shared.RunningServer("--replay", str(path))
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="fr-FR")
    try:
        console = ConsolePage(context, replaying.origin)
        console.open()
        page = console.page
        expect(page.get_by_test_id("answered-by")).to_contain_text(f"L’enregistrement {path}")
        expect(page.locator("#mode-term")).to_have_text(
            "Mode (demandes absentes de l’enregistrement)")
        expect(page.locator("#row-mode")).to_be_visible()
        # The recording answers instead of a terminal: its answer may be delayed or cut.
        expect(page.locator("#queue-outcome option[value='terminal']")).to_have_text(
            "Réponse de l’enregistrement, retardée")
        assert english_in(page) == []
        page.locator(".status-card").screenshot(path=str(ARTIFACTS / "console-replay-status.png"))
        console.assert_clean()
    finally:
        context.close()
        replaying.stop()


@pytest.mark.parametrize("amount, words", [
    ("-5", "Le montant est négatif"),
    ("0", "Le montant est nul"),
    ("99999999999", "au-delà de 9 999 999 999,99 EUR"),
    ("12,345", "trop de décimales, EUR en a 2"),
])
def test_a_bad_test_amount_says_what_is_wrong(console, server, amount, words):
    errors = api_errors(console)
    console.open()
    page = console.page
    page.get_by_test_id("test-amount").fill(amount)
    page.get_by_test_id("test-send").click()
    message = page.locator("#err-test-amount")
    expect(message).not_to_be_empty()
    # Thin and non-breaking spaces group the digits: compared as plain spaces.
    assert words in re.sub(r"[\u00a0\u202f]", " ", message.inner_text())
    expect(page.locator("#test-message")).to_contain_text("« Montant »")
    assert_no_raw_error(page, errors)
    assert server.api("GET", "/api/transactions")["transactions"] == []


def test_every_profile_source_is_french(console, server):
    console.open()
    page = console.page
    profiles = server.api("GET", "/api/status")["choices"]["profiles"]
    assert len(profiles) >= 5
    for profile in profiles:
        page.get_by_test_id("profile").select_option(profile["name"])
        source = page.locator(".profile-source")
        expect(source).to_have_text(f"Source : {profile['source_fr']}")
        # A cited document keeps its title (« Local API for Nepting - API »), in quotes.
        text = re.sub(r"«[^»]*»|https?://\S+", "", source.inner_text())
        assert ENGLISH.search(text) is None, text
        assert english_in(page) == [], profile["name"]


def test_csv_is_french_with_local_times_and_says_its_limit(console, server):
    assert run_client(server, "-a", "7,25").returncode == 0
    console.open()
    page = console.page
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    assert "plus-recentes" not in download.value.suggested_filename
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    [row] = rows
    tx = server.api("GET", "/api/transactions")["transactions"][0]
    assert (row["N°"], row["Montant"], row["Opération"], row["Issue"], row["Origine"]) == (
        str(tx["id"]), "7,25", "Débit", "Acceptée", "simulateur")
    # Local time, as the browser's clock reads it, and its offset from UTC beside it.
    local = page.evaluate("""(iso) => { const d = new Date(iso);
        const p = (n) => String(n).padStart(2, "0");
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
               `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`; }""",
                          tx["received_at"])
    assert row["Reçue le (heure locale)"] == local
    assert re.fullmatch(r"UTC[+-]\d\d:\d\d", row["Décalage UTC"])
    assert ENGLISH.search(text.splitlines()[0]) is None  # headers
    expect(page.locator("#journal-message")).to_contain_text("tout ce que le journal en garde")

    # A long journal is read page by page (?before=): the export holds all of it...
    asked: list[str] = []
    page.route("**/api/transactions?*", journal_of(2500, asked))
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    assert "plus-recentes" not in download.value.suggested_filename
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    ids = [row["N°"] for row in csv.DictReader(io.StringIO(text), delimiter=";")]
    assert ids == [str(n) for n in range(2500, 0, -1)]
    assert [("before=" in url) for url in asked] == [False, True, True]
    expect(page.locator("#journal-message")).to_contain_text("2\u202f500 transactions")
    page.unroute("**/api/transactions?*")

    # ...up to 100,000 transactions: past that, the file and the page say where it stops.
    page.route("**/api/transactions?*", journal_of(150_000, []))
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    assert download.value.suggested_filename.endswith("-les-100000-plus-recentes.csv")
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    assert len(text.splitlines()) == 100_001  # the header and 100,000 rows
    expect(page.locator("#journal-message")).to_contain_text(
        "les 100\u202f000 transactions les plus récentes")


def journal_of(count: int, asked: list[str]):
    """A route handler: GET /api/transactions as a journal of `count` approved payments
    answers it, page by page (limit, before), newest first."""
    def handle(route) -> None:
        url = urlsplit(route.request.url)
        query = parse_qs(url.query)
        asked.append(url.query)
        before = int(query.get("before", [count + 1])[0])
        limit = int(query["limit"][0])
        ids = range(before - 1, max(before - 1 - limit, 0), -1)
        rows = [{"id": n, "status": "approved", "received_at": "2026-12-01T20:00:00.000+00:00",
                 "amount": "1.00", "currency": "EUR", "deviations": []} for n in ids]
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"transactions": rows}))
    return handle


ROW_INSIDE_FEED = """(text) => {
  const feed = document.getElementById("feed");
  const row = Array.from(feed.querySelectorAll(".tx")).find((r) => r.textContent.includes(text));
  const outer = feed.getBoundingClientRect(), inner = row.getBoundingClientRect();
  return inner.top >= outer.top - 0.5 && inner.bottom <= outer.bottom + 0.5;
}"""


def test_an_opened_feed_row_shows_its_whole_answer_frame(browser, server):
    # The tallest row (a receipt) lowest in the feed, under the others.
    assert run_client(server, "-a", "4,56", "--receipt").returncode == 0
    for amount in ("1,00", "2,00", "3,00", "5,00"):
        assert run_client(server, "-a", amount).returncode == 0
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="fr-FR")
    try:
        console = ConsolePage(context, server.origin)
        console.open()
        page = console.page
        row = page.get_by_test_id("transaction").filter(has_text="4,56")
        row.locator("summary").click()
        answer = row.locator(".frame-block").nth(1).locator("pre.frame")
        expect(answer).to_be_visible()
        expect(row.locator(".ticket")).to_be_visible()

        # The whole row, answer frame and ticket included, inside the feed's box (polled:
        # the box grows on the row's "toggle" event).
        page.wait_for_function(ROW_INSIDE_FEED, arg="4,56", timeout=5000)
        page.locator(".feed-card").screenshot(path=str(ARTIFACTS / "console-feed-open.png"))
        console.assert_clean()
    finally:
        context.close()
