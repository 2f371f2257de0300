"""/metrics: the terminals of the server in Prometheus's text format (docs/api.md).

Made with the official client library, prometheus_client, in a registry of
this console's own (two consoles in one process never mix). What a scrape
reads is taken from the terminals then (a custom collector): transactions
by terminal and outcome, connections open, the journal's state and the
rows waiting for it. Only the answer latency is counted as it happens: an
observer of each terminal puts every answer's time in a histogram.

The command line's terminal is `terminal="main"`; a farm terminal its id.
The journal, which holds every terminal's transactions, is reported once,
as main's.
A read like the others: with a token, it needs it (or the console's cookie).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.web import resource, server

from ..journal import Rows
from ..service import FINAL_STATUSES, Terminal, Transaction
from .api import READING, ApiError, ControlApi, error_response

MAIN = "main"
# Seconds from a request's first byte to its answer: immediate answers to the 180 s a
# POS waits at most.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   180.0)

# Each terminal to report, by its label: the terminal and its journal.
Terminals = Callable[[], Iterable[tuple[str, Terminal, Rows | None]]]


class _Latency:
    """A terminal's observer: the time of each answer into the histogram."""

    def __init__(self, histogram: Histogram, name: str):
        self.child = histogram.labels(terminal=name)

    def transaction_finished(self, transaction: Transaction) -> None:
        if transaction.answered_at is not None:
            self.child.observe(transaction.answered_at - transaction.received_at)


class _State(Collector):
    """What a scrape reads from the terminals at that moment."""

    def __init__(self, terminals: Terminals):
        self.terminals = terminals

    def collect(self) -> Iterator[Metric]:
        transactions = CounterMetricFamily(
            "caisse_ap_transactions", "Transactions finished, by terminal and outcome",
            labels=["terminal", "outcome"])
        connections = GaugeMetricFamily("caisse_ap_connections_open",
                                        "POS connections open", labels=["terminal"])
        state = GaugeMetricFamily("caisse_ap_journal_failing",
                                  "1 when the journal cannot write its file", labels=["terminal"])
        waiting = GaugeMetricFamily("caisse_ap_journal_rows_waiting",
                                    "Transactions not yet written by the journal",
                                    labels=["terminal"])
        for name, terminal, journal in self.terminals():
            for status in FINAL_STATUSES:
                transactions.add_metric([name, str(status)], terminal.counts[status])
            connections.add_metric([name], len(terminal.connections))
            if journal is not None:
                state.add_metric([name], int(journal.failing))
                waiting.add_metric([name], journal.waiting)
        yield from (transactions, connections, state, waiting)


class Metrics:
    """The registry of one console, and the observers it adds to terminals."""

    def __init__(self, terminals: Terminals):
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("caisse_ap_answer_seconds",
                                 "Time from a request's first byte to its answer",
                                 ["terminal"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_State(terminals))
        self._observers: dict[str, tuple[Terminal, _Latency]] = {}

    def watch(self, name: str, terminal: Terminal) -> None:
        observer = _Latency(self.latency, name)
        terminal.observers.append(observer)
        self._observers[name] = (terminal, observer)

    def forget(self, name: str) -> None:
        terminal, observer = self._observers.pop(name)
        if observer in terminal.observers:
            terminal.observers.remove(observer)
        self.latency.remove(name)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class MetricsPage(resource.Resource):
    """GET /metrics, guarded by the API's token like its reads."""

    isLeaf = True

    def __init__(self, metrics: Metrics, api: ControlApi):
        super().__init__()
        self.metrics = metrics
        self.api = api

    def render(self, request: server.Request) -> bytes:
        if request.method not in READING:
            return error_response(request, ApiError(405, "Use GET.",
                                                    headers={"Allow": "GET, HEAD"}))
        if not self.api.authenticated(request):
            return error_response(request, ApiError(
                401, "This call needs the header 'Authorization: Bearer <token>' with the "
                     "server's --web-token.",
                headers={"WWW-Authenticate": 'Bearer realm="caisse-ap-ip"'}))
        body = self.metrics.text()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return b"" if request.method == b"HEAD" else body
