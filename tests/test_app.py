"""The composition root: app.start() builds a terminal from its options; several run in
one process, each with its own port, journal, console and outcome queue."""

from __future__ import annotations

import json
import urllib.request

from caisse_ap import client
from caisse_ap.terminal import app
from caisse_ap.terminal.behaviour import TerminalSettings
from caisse_ap.terminal.outcomes import OutcomeQueue
from caisse_ap.terminal.web import WebOptions


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_two_terminals_in_one_process_keep_apart(reactor_thread):
    reactor = reactor_thread.reactor

    def start(mode: str) -> app.RunningTerminal:
        options = app.TerminalOptions(TerminalSettings.from_dict({"mode": mode, "duration": 0}),
                                      web=WebOptions("127.0.0.1", 0))
        return app.start(reactor, options)

    approving = reactor_thread.call(start, "success")
    refusing = reactor_thread.call(start, "failure")
    try:
        assert approving.address != refusing.address
        assert approving.web_url != refusing.web_url
        # The outcome sources in the documented order, each terminal its own.
        assert approving.terminal.outcome_sources == [approving.queue, approving.rules,
                                                      approving.manual]
        assert isinstance(approving.queue, OutcomeQueue) and approving.queue is not refusing.queue
        assert client.pay(client.make_request("1.00"), *approving.address).status == "approved"
        for _ in range(2):
            assert client.pay(client.make_request("2.00"), *refusing.address).status == "declined"
        assert [t["status"] for t in get(approving.web_url + "api/transactions")[
            "transactions"]] == ["approved"]
        assert [t["status"] for t in get(refusing.web_url + "api/transactions")[
            "transactions"]] == ["declined", "declined"]
        assert approving.journal.count() == 1 and refusing.journal.count() == 2
    finally:
        reactor_thread.call(approving.stop)
        reactor_thread.call(refusing.stop)
    assert approving.web_url is None and refusing.web_url is None  # consoles closed
    assert not approving.terminal.connections and approving.journal.count() == 1

