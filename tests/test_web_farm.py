"""The console's overview of the farm (farm.js), in a real browser on a 390-px phone:
every terminal with its counters, a selector, and one farm terminal's page as today's."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import playwright.sync_api as playwright_api
from test_web_console import (  # noqa: F401 - browser is a fixture
    ConsolePage,
    RunningServer,
    apply_settings,
    browser,
)
from test_web_console import pytestmark as needs_chromium

from caisse_ap import client

expect = playwright_api.expect
pytestmark = needs_chromium  # chromium needed, and slow (a browser, a server process)
PHONE = {"width": 390, "height": 844}


def test_the_overview_lists_every_terminal_and_opens_one_on_a_phone(browser):  # noqa: F811
    server = RunningServer()
    context = browser.new_context(viewport=PHONE, locale="fr-FR", is_mobile=True)
    try:
        console = ConsolePage(context, server.origin)
        page = console.page
        # Without a farm terminal the page is today's: no overview.
        console.open()
        expect(page.get_by_test_id("farm")).to_be_hidden()
        lane = server.api("POST", "/api/terminals", {"label": "Caisse 1",
                                                     "settings": {"duration": 0}})
        server.api("POST", "/api/terminals", {"profile": "ingenico"})
        assert client.pay(client.make_request("7.00"), "127.0.0.1",
                          lane["port"]).status == "approved"

        console.open()
        farm = page.get_by_test_id("farm")
        expect(farm).to_be_visible()
        items = page.get_by_test_id("farm-list").locator("li")
        expect(items).to_have_count(3)
        expect(items.nth(0)).to_contain_text("Terminal principal")
        expect(items.nth(1)).to_contain_text("Caisse 1 (t1)")
        expect(items.nth(1)).to_contain_text(f"port {lane['port']}")
        expect(items.nth(1)).to_contain_text("1 acceptées")
        expect(items.nth(2)).to_contain_text("Terminal t2")
        # Nothing wider than the phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        page.get_by_test_id("farm-select").select_option("t1")
        page.wait_for_url("**/?terminal=t1")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#terminal-address")).to_contain_text(str(lane["port"]))
        expect(page.locator('#farm-list li[aria-current="page"]')).to_contain_text("Caisse 1")
        expect(page.get_by_test_id("farm-select")).to_have_value("t1")
        expect(page.get_by_test_id("transaction")).to_have_count(1)
        # The page of t1 changes t1, not the command line's terminal.
        apply_settings(page, mode="failure")
        assert server.api("GET", "/api/terminals/t1")["settings"]["mode"] == "failure"
        assert server.api("GET", "/api/settings")["mode"] == "success"
        assert client.pay(client.make_request("8.00"), "127.0.0.1",
                          lane["port"]).status == "declined"
        expect(page.get_by_test_id("transaction")).to_have_count(2)  # its event stream
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        console.assert_clean()
    finally:
        context.close()
        server.stop()


def test_the_journal_holds_every_terminal_and_filters_by_one(browser):  # noqa: F811
    server = RunningServer()
    context = browser.new_context(locale="fr-FR")
    try:
        lane = server.api("POST", "/api/terminals", {"label": "Caisse 1",
                                                     "settings": {"duration": 0}})
        assert client.pay(client.make_request("7.00"), "127.0.0.1",
                          lane["port"]).status == "approved"
        main_port = server.api("GET", "/api/status")["terminal"]["port"]
        assert client.pay(client.make_request("9.00"), "127.0.0.1",
                          main_port).status == "approved"
        console = ConsolePage(context, server.origin)
        console.open()
        page = console.page
        rows = page.locator("#journal-body tr")
        expect(rows).to_have_count(2)  # every terminal's, each naming its own
        expect(rows.nth(0).locator("td[data-label='Terminal']")).to_have_text("principal")
        expect(rows.nth(1).locator("td[data-label='Terminal']")).to_have_text("Caisse 1 (t1)")
        choose = page.get_by_test_id("journal-terminal")
        expect(choose).to_be_visible()
        choose.select_option("t1")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("7,00")
        # The CSV of the filter: that terminal's rows, its Terminal column, its name.
        with page.expect_download() as download:
            page.locator("#export-csv").click()
        assert "-t1-" in download.value.suggested_filename
        text = Path(download.value.path()).read_text(encoding="utf-8-sig")
        exported = list(csv.DictReader(io.StringIO(text), delimiter=";"))
        assert [(row["Montant"], row["Terminal"]) for row in exported] == [("7,00", "t1")]
        choose.select_option("main")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("9,00")
        choose.select_option("")
        with page.expect_download() as download:
            page.locator("#export-csv").click()
        text = Path(download.value.path()).read_text(encoding="utf-8-sig")
        assert [row["Terminal"] for row in csv.DictReader(io.StringIO(text), delimiter=";")] \
            == ["principal", "t1"]
        # The farm terminal's page reads its own rows, without the filter.
        page.goto(server.origin + "/?terminal=t1")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("7,00")
        expect(page.locator("#journal-terminal-field")).to_be_hidden()
        console.assert_clean()
    finally:
        context.close()
        server.stop()
