"""caisse_ap.testing's client of a farm (TerminalFarm) and the simulated_terminal fixture
taking its terminal from a farm, four pytest-xdist workers at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from caisse_ap import client
from caisse_ap.terminal import app
from caisse_ap.terminal.behaviour import TerminalSettings
from caisse_ap.terminal.web import WebOptions
from caisse_ap.testing import FARM_TOKEN_VARIABLE, FARM_URL_VARIABLE, TerminalFarm

TOKEN = "farm-token"


@pytest.fixture
def farm_url(reactor_thread):
    options = app.TerminalOptions(TerminalSettings.from_dict({"duration": 0}),
                                  web=WebOptions("127.0.0.1", 0, TOKEN))
    running = reactor_thread.call(app.start, reactor_thread.reactor, options)
    yield running.web_url.rstrip("/")
    reactor_thread.call(running.stop)


def test_a_fresh_terminal_per_block_deleted_after(farm_url):
    farm = TerminalFarm(farm_url, TOKEN)
    with farm.terminal(profile="ingenico", label="remboursement") as terminal:
        assert terminal.settings()["profile"] == "ingenico"
        assert terminal.label == "remboursement"
        terminal.next("refused")
        with terminal.events() as events:
            result = client.pay(client.make_request("12.50"), terminal.host, terminal.port)
            assert result.status == "declined"
            assert events.get("answer").transaction.status == "declined"
        [seen] = terminal.transactions()
        assert seen.status == "declined" and seen.amount == Decimal("12.50")
        assert terminal.status()["terminal"]["port"] == terminal.port
        with farm.terminal() as other:
            assert other.port != terminal.port and other.transactions() == []
    states = {t["id"]: t["state"] for t in farm.terminals()}
    assert states == {terminal.id: "deleted", other.id: "deleted"}
    with pytest.raises(OSError):
        socket.create_connection(terminal.address, timeout=5).close()


INNER_TEST = '''
import json, os, socket

from caisse_ap import client


def meet(terminal, name):
    """Tell the outer test which worker holds which terminal, then wait for the others."""
    with socket.create_connection(("127.0.0.1", int(os.environ["BARRIER_PORT"])), 30) as s:
        s.sendall(json.dumps({"worker": os.environ["PYTEST_XDIST_WORKER"], "test": name,
                              "terminal": terminal.id, "port": terminal.port}).encode() + b"\\n")
        assert s.recv(1) == b"g"  # once all four are held at the same time


def test_{n}(simulated_terminal):
    simulated_terminal.settings(mode="failure")
    meet(simulated_terminal, "{n}")
    result = client.pay(client.make_request("{n}.00"), *simulated_terminal.address)
    assert result.status == "declined"
    assert [str(t.amount) for t in simulated_terminal.transactions()] == ["{n}.00"]
'''


class Barrier:
    """A TCP rendezvous: holds `count` connections, then releases them all at once."""

    def __init__(self, count: int, on_full: Callable[[], list[dict]]):
        self.count = count
        self.on_full = on_full  # what to look at while all are held
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.met: list[dict] = []
        self.held_at_once: list[dict] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        held = []
        while len(held) < self.count:
            connection, _ = self.server.accept()
            line = connection.makefile("rb").readline()
            self.met.append(json.loads(line))
            held.append(connection)
        self.held_at_once = self.on_full()
        for connection in held:
            connection.sendall(b"g")
            connection.close()


@pytest.mark.slow
def test_four_xdist_workers_each_with_its_own_terminal_of_one_farm(farm_url, tmp_path):
    for n in range(1, 5):
        (tmp_path / f"test_lane_{n}.py").write_text(INNER_TEST.replace("{n}", str(n)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    farm = TerminalFarm(farm_url, TOKEN)
    barrier = Barrier(4, lambda: [t for t in farm.terminals() if t["state"] == "listening"])
    barrier.thread.start()
    environment = {**os.environ, FARM_URL_VARIABLE: farm_url, FARM_TOKEN_VARIABLE: TOKEN,
                   "BARRIER_PORT": str(barrier.port)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "4", "-q", "-p",
                           "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    # Four workers, four terminals, all four listening at the same moment.
    assert len({met["worker"] for met in barrier.met}) == 4
    assert len({met["terminal"] for met in barrier.met}) == 4
    assert {t["id"] for t in barrier.held_at_once} == {met["terminal"] for met in barrier.met}
    # Each deleted after its test, its one transaction kept.
    after = {t["id"]: t for t in farm.terminals()}
    for met in barrier.met:
        assert after[met["terminal"]]["state"] == "deleted"
        assert after[met["terminal"]]["counters"]["declined"] == 1


@pytest.mark.slow
def test_the_readme_farm_example_passes(farm_url, tmp_path):
    """README's "Ferme de terminaux": its test file, against a running farm, as written."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for name in ("ma_caisse.py", "test_caisses.py"):
        start = readme.index(f"```python\n# {name}")
        code = readme[start + len("```python\n"):readme.index("```", start + 3)]
        code = code.replace('"http://127.0.0.1:5000", "secret"', f'"{farm_url}", "{TOKEN}"')
        (tmp_path / name).write_text(code, encoding="utf-8")
    assert farm_url in (tmp_path / "test_caisses.py").read_text()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert [t["state"] for t in TerminalFarm(farm_url, TOKEN).terminals()] == ["deleted"]
