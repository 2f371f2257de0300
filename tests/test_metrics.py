"""/metrics in Prometheus's text format (web/metrics.py), read back with the official
client library's own parser."""

from __future__ import annotations

import http.client
import json

from openapi_check import check_response
from prometheus_client.parser import text_string_to_metric_families

from caisse_ap import client
from caisse_ap.terminal import app
from caisse_ap.terminal.behaviour import TerminalSettings
from caisse_ap.terminal.web import WebOptions

TOKEN = "metrics-token"


def get(port: int, path: str, token: str | None = TOKEN, method: str = "GET"
        ) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read().decode()
        kind = response.headers.get("content-type")
        check_response(method, path, response.status, kind,
                       None if kind.startswith("text/") else json.loads(body or "null"))
        return response.status, kind, body
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_count_each_terminal_and_need_the_token(reactor_thread):
    options = app.TerminalOptions(TerminalSettings.from_dict({"duration": 0}),
                                  web=WebOptions("127.0.0.1", 0, TOKEN))
    running = reactor_thread.call(app.start, reactor_thread.reactor, options)
    try:
        web = running.console.web_address[1]
        assert get(web, "/metrics", token=None)[0] == 401
        assert get(web, "/metrics", token="wrong")[0] == 401
        assert client.pay(client.make_request("1.00"), *running.address).status == "approved"
        connection = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
        connection.request("POST", "/api/terminals",
                           body=json.dumps({"settings": {"mode": "failure", "duration": 0}}),
                           headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {TOKEN}"})
        port = json.loads(connection.getresponse().read())["port"]
        connection.close()
        for _ in range(2):
            assert client.pay(client.make_request("2.00"), "127.0.0.1", port).status == "declined"

        status, kind, text = get(web, "/metrics")
        assert status == 200 and kind.startswith("text/plain; version=")
        seen = samples(text)

        def value(name: str, **labels: str) -> float:
            return seen[name, tuple(sorted(labels.items()))]

        assert value("caisse_ap_transactions_total", terminal="main", outcome="approved") == 1
        assert value("caisse_ap_transactions_total", terminal="main", outcome="declined") == 0
        assert value("caisse_ap_transactions_total", terminal="t1", outcome="declined") == 2
        assert value("caisse_ap_answer_seconds_count", terminal="t1") == 2
        assert value("caisse_ap_answer_seconds_count", terminal="main") == 1
        assert value("caisse_ap_answer_seconds_bucket", terminal="t1", le="+Inf") == 2
        assert value("caisse_ap_connections_open", terminal="t1") == 0
        assert value("caisse_ap_journal_failing", terminal="main") == 0
        assert value("caisse_ap_journal_rows_waiting", terminal="main") >= 0
        assert get(web, "/metrics", method="HEAD")[0] == 200
    finally:
        reactor_thread.call(running.stop)
