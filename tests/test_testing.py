"""caisse_ap.testing: the simulated terminal a POS project starts from its own tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from caisse_ap import client, tlv
from caisse_ap.messages import PaymentRequest
from caisse_ap.terminal.behaviour import SettingsError
from caisse_ap.terminal.words import DecidedBy, TransactionStatus
from caisse_ap.testing import (
    Event,
    SimulatedTerminalError,
    Transaction,
    simulated_terminal,
)

ROOT = Path(__file__).resolve().parent.parent

# The reactor thread of conftest.py is the one caisse_ap.testing shares.
pytestmark = pytest.mark.usefixtures("reactor_thread")


def raw_pos_payment(host: str, port: int, amount: int) -> dict[str, str]:
    """A POS of its own: a plain socket, as a project's code under test would do."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(PaymentRequest(amount=amount).encode())
        data = b""
        while True:
            data += sock.recv(1024)
            try:
                return dict(tlv.decode(data))
            except tlv.FrameError:
                continue


def test_context_manager_like_a_pos_project():
    with simulated_terminal() as terminal:
        assert terminal.host == "127.0.0.1" and terminal.port > 0
        assert terminal.web_url == f"http://127.0.0.1:{terminal.web_port}"
        terminal.next("refused")
        terminal.next("approved", payment_type="cbcontactless")
        assert raw_pos_payment(terminal.host, terminal.port, 1250)["AF"] == "04"
        assert raw_pos_payment(terminal.host, terminal.port, 1250)["CC"] == "00B"
        assert raw_pos_payment(terminal.host, terminal.port, 1250)["CC"] == "001"
        journal = terminal.transactions()
        assert [t.status for t in journal] == [TransactionStatus.APPROVED,
                                               TransactionStatus.APPROVED,
                                               TransactionStatus.DECLINED]
        assert all(isinstance(t, Transaction) for t in journal)
        assert journal[2].reason_code == "04" and journal[2].decided_by is DecidedBy.QUEUE
        assert journal[2]["reason"]["code"] == "04"  # the API's JSON object, read as such
        assert journal[0].amount == Decimal("12.50") and journal[0].currency == "EUR"
        port = terminal.port
    # Stopped: nothing listens any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_settings_given_at_start_and_changed_later():
    with simulated_terminal(mode="failure", failure_type="timeout", seller_contract="777") as t:
        assert raw_pos_payment(t.host, t.port, 100)["AF"] == "08"
        assert t.settings()["seller_contract"] == "777"
        assert t.settings(mode="success")["mode"] == "success"
        assert raw_pos_payment(t.host, t.port, 100)["CG"] == "777"


def test_bad_settings_fail_before_anything_starts():
    with pytest.raises(SettingsError) as caught, simulated_terminal(duration="long"):
        pass
    assert caught.value.field == "duration"


def test_api_errors_are_exceptions_naming_the_field():
    with simulated_terminal() as terminal:
        with pytest.raises(SimulatedTerminalError) as caught:
            terminal.next("perhaps")
        assert caught.value.status == 400 and caught.value.field == "outcome"
        with pytest.raises(SimulatedTerminalError) as missing:
            terminal.transaction(12345)
        assert missing.value.status == 404


def test_two_terminals_at_once_and_stop_is_idempotent():
    with simulated_terminal() as first, simulated_terminal(mode="failure") as second:
        assert first.port != second.port and first.web_port != second.web_port
        assert client.pay(client.make_request("1.00"), *first.address).status == "approved"
        assert client.pay(client.make_request("1.00"), *second.address).status == "declined"
        first.stop()
        first.stop()
        assert second.status()["counters"]["declined"] == 1


def test_the_fixture_comes_from_the_installed_plugin(simulated_terminal, request):
    plugin = request.config.pluginmanager.get_plugin("caisse_ap")  # the pytest11 entry point
    assert plugin is not None and plugin.__name__ == "caisse_ap.pytest_plugin"
    simulated_terminal.next("no-answer")
    result = client.pay(client.make_request("9.99"), *simulated_terminal.address, timeout=0.3)
    assert result.status == "unknown"
    assert simulated_terminal.transactions()[0].status is TransactionStatus.NO_ANSWER


def test_events_are_typed(simulated_terminal):
    with simulated_terminal.events() as events:
        client.pay(client.make_request("4.00"), *simulated_terminal.address, timeout=10)
        received = events.get("request")
        answered = events.get("answer")
    assert isinstance(received, Event) and received.event == "request"
    assert received.transaction.status is TransactionStatus.PENDING
    assert answered.transaction.status is TransactionStatus.APPROVED
    assert answered["data"]["id"] == answered.transaction.id


@pytest.mark.slow
def test_importing_the_module_imports_neither_pytest_nor_twisted():
    probe = ("import sys, caisse_ap.testing; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pytest', 'twisted'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


POS_PROJECT_CODE = '''\
import socket

from caisse_ap import tlv


def pay(host, port, cents):
    """The POS project's own payment code, under test."""
    request = tlv.encode([("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01"),
                          ("CB", f"{cents:02d}"), ("CD", "0"), ("CE", "978")])
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        answer = dict(tlv.decode(sock.recv(1024)))
    return "paid" if answer["AE"] == "10" else "refused " + answer["AF"]
'''
POS_PROJECT_TESTS = '''\
from caisse_ap.testing import simulated_terminal

from pos import pay


def test_paid(simulated_terminal):
    assert pay(simulated_terminal.host, simulated_terminal.port, 1250) == "paid"


def test_refused(simulated_terminal):
    simulated_terminal.next("refused")
    assert pay(simulated_terminal.host, simulated_terminal.port, 1250) == "refused 04"
    assert simulated_terminal.transactions()[0].decided_by == "queue"


def test_amount_rules_with_the_context_manager():
    with simulated_terminal(amount_rules=True) as terminal:
        assert pay(terminal.host, terminal.port, 1253) == "refused 11"
'''


@pytest.mark.slow
def test_a_pos_project_uses_the_plugin(tmp_path):
    """A separate project, its own pytest run, no conftest.py: installing is enough."""
    (tmp_path / "pos.py").write_text(POS_PROJECT_CODE)
    (tmp_path / "test_pos.py").write_text(textwrap.dedent(POS_PROJECT_TESTS))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
