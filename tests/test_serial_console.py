"""The web console shows serial (Concert E+) and IP (Caisse-AP) transactions side by side, each
with its frames decoded field by field: Playwright driving Debian's Chromium, as in
test_web_console.py, whose server and page helpers this reuses."""

from __future__ import annotations

import re
import subprocess
import sys

import playwright.sync_api as playwright_api
import pytest
from server_process import ROOT
from test_web_console import (  # noqa: F401  (browser is a fixture)
    CLIENT_TIMEOUT_S,
    ConsolePage,
    RunningServer,
    browser,
    pytestmark,
    run_client,
)

expect = playwright_api.expect
SERIAL_LINE = re.compile(r"Concert E\+ terminal on serial line (\S+)")


@pytest.fixture
def serial_server():
    running = RunningServer("--serial", "pty")
    running.pty = SERIAL_LINE.search(running.output())[1]
    yield running
    running.stop()


def test_serial_and_ip_payments_side_by_side(browser, serial_server):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    console = ConsolePage(context, serial_server.origin)
    try:
        console.open()
        page = console.page
        over_serial = subprocess.run(
            [sys.executable, str(ROOT / "caisse-ap-ip-client.py"), "--serial", serial_server.pty,
             "-a", "12,50", "--json", "--timeout", str(CLIENT_TIMEOUT_S)],
            capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S + 10, cwd=ROOT)
        assert over_serial.returncode == 0, over_serial.stdout + over_serial.stderr
        over_ip = run_client(serial_server, "-a", "3")
        assert over_ip.returncode == 0, over_ip.stdout + over_ip.stderr

        rows = page.get_by_test_id("transactions").get_by_test_id("transaction")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("127.0.0.1:")
        serial_row = rows.nth(1)
        expect(serial_row).to_contain_text(f"serial:{serial_server.pty}")
        expect(serial_row).to_contain_text("12,50\u00a0€")
        serial_row.locator("summary").click()
        detail = serial_row.locator(".tx-detail")
        expect(detail).to_contain_text("Concert E+ (liaison série)")
        expect(detail.locator("tr", has_text="payment_mode").first).to_contain_text(
            "carte bancaire")
        expect(detail.locator("tr", has_text="status").first).to_contain_text(
            "opération effectuée")
        expect(detail.locator("pre.frame").first).to_contain_text("<STX>0100001250110978")
        console.assert_clean()
    finally:
        context.close()
