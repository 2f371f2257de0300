"""caisse-ap-ip-server.py as a user runs it: options, errors, startup, signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from server_process import ROOT, SERVER_SCRIPT, ServerProcess, run_server

from caisse_ap import tlv
from caisse_ap.messages import PaymentRequest, TerminalAnswer
from caisse_ap.terminal import cli

DEBIT = "CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"
TIMEOUT = 10.0
# These tests are about the terminal alone: no web console.
NO_WEB = ["--no-web"]


@pytest.fixture
def server():
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        started.append(ServerProcess(*NO_WEB, *args, timeout=TIMEOUT))
        return started[-1]

    yield start
    for each in started:
        each.kill()


def pos(terminal: ServerProcess) -> socket.socket:
    return socket.create_connection(terminal.address, timeout=TIMEOUT)


def timed_stop(terminal: ServerProcess, sig: int = signal.SIGTERM) -> tuple[int, float]:
    """The exit status after `sig`, and how long the server took to exit."""
    start = time.monotonic()
    code = terminal.stop(sig)
    return code, time.monotonic() - start


@pytest.mark.slow
def test_help_lists_every_option():
    result = run_server("--help")
    assert result.returncode == 0
    for option in ("-p", "--port", "-f", "--failure", "-ft", "--failure-type", "-d",
                   "--duration", "-pt", "--payment-type", "-sc", "--seller-contract", "-l",
                   "--log-level", "--host", "--no-answer", "--hang-up", "--answer-version",
                   "--pad-amount", "--currencies", "--seed", "--idle-timeout",
                   "--max-connections", "--request-timeout", "cbcontactless",
                   "amexcontactless"):
        assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", result.stdout), option


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["-p", "70000"], ["-p", "x"], ["-ft", "sometimes"], ["-ft", "14"], ["-d", "-1"],
    ["-d", "soon"], ["-pt", "visa"], ["-sc", "12345678901"], ["-l", "loud"],
    ["--answer-version", "3"], ["--currencies", "EUR,ZZZ"], ["--idle-timeout", "0"],
    ["--max-connections", "0"], ["--host", "not an address"], ["-f", "--no-answer"],
    ["--request-timeout", "0"], ["--request-timeout", "soon"],
    ["--bogus"],
])
def test_bad_values_give_one_line_and_status_2(args):
    result = run_server(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("caisse-ap-ip-server: error:"), lines
    assert "Traceback" not in result.stderr


def test_main_returns_status_2_in_process(capsys):
    assert cli.main(["-d", "never"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["--version"]) == 0


def test_options_become_settings():
    args = cli.build_parser([]).parse_args(
        ["-f", "-ft", "04", "-d", "1.5", "-pt", "amexcontactless", "-sc", "99", "--pad-amount",
         "--answer-version", "0301", "--currencies", "EUR,840"])
    settings = cli.settings_from_args(args)
    assert settings.to_dict() == {
        "mode": "failure", "failure_type": "refused", "duration": 1.5,
        "payment_type": "amexcontactless", "seller_contract": "99", "answer_version": "0301",
        "pad_amount": True, "currencies": ["978", "840"], "amount_rules": False,
        "manual_timeout": 60.0, "profile": "standard"}
    for flag, mode in (("--no-answer", "no-answer"), ("--hang-up", "hang-up"), (None, "success")):
        parsed = cli.build_parser([]).parse_args([flag] if flag else [])
        assert cli.settings_from_args(parsed).mode == mode
    defaults = cli.build_parser([]).parse_args([])
    assert (defaults.host, defaults.port, defaults.log_level) == ("0.0.0.0", 8888, "info")


@pytest.mark.slow
def test_done_when_frame_and_log_line(server):
    terminal = server("-d", "0")
    assert "mode success" in terminal.startup_line
    with pos(terminal) as sock:
        sock.sendall(DEBIT.encode())
        answer = TerminalAnswer.parse(sock.recv(1024))
    assert answer.outcome.value == "approved"
    answer.check_echoes(PaymentRequest.parse(DEBIT))
    line = terminal.wait_for("debit")
    assert "112.45 EUR" in line and "approved" in line and "127.0.0.1:" in line
    code, elapsed = timed_stop(terminal)
    assert code == 0


@pytest.mark.slow
def test_original_options_on_the_wire(server):
    terminal = server("-f", "-ft", "refused", "-d", "0", "-sc", "777", "--answer-version",
                      "0301", "--pad-amount")
    assert "AF=04" in terminal.startup_line
    with pos(terminal) as sock:
        sock.sendall(DEBIT.encode())
        values = dict(tlv.decode(sock.recv(1024)))
    assert (values["CZ"], values["AE"], values["AF"], values["CB"]) == (
        "0301", "01", "04", "000000011245")


@pytest.mark.slow
def test_seed_makes_cards_reproducible(server):
    cards = []
    for _ in range(2):
        terminal = server("-d", "0", "--seed", "42", "-pt", "amexcontact")
        with pos(terminal) as sock:
            sock.sendall(DEBIT.encode())
            values = dict(tlv.decode(sock.recv(1024)))
        cards.append((values["AA"], values["AB"], values["AC"]))
        terminal.stop()
    assert cards[0] == cards[1] and cards[0][0].startswith("37")


@pytest.mark.slow
def test_debug_logs_raw_frames(server):
    terminal = server("-d", "0", "-l", "debug")
    with pos(terminal) as sock:
        sock.sendall(DEBIT.encode())
        sock.recv(1024)
    assert DEBIT in terminal.wait_for("sent b'")
    assert "AE00210" in terminal.wait_for("answered b'")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_answers_pending_transactions_and_exits(server, sig):
    terminal = server("-d", "30", "-l", "debug")
    with pos(terminal) as sock:
        sock.sendall(DEBIT.encode())
        terminal.wait_for("sent b'")  # the terminal has the request
        code, elapsed = timed_stop(terminal, sig)
        data = sock.recv(1024)
    assert code == 0 and elapsed < 2.0
    assert TerminalAnswer.parse(data).outcome.value == "approved"
    assert "approved" in terminal.output()


@pytest.mark.slow
def test_port_in_use_is_one_line(server):
    terminal = server("-d", "0")
    result = run_server("--host", "127.0.0.1", "-p", str(terminal.address[1]), *NO_WEB)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "cannot listen" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a POSIX system")
def test_launcher_runs_from_another_directory(tmp_path):
    result = subprocess.run([sys.executable, str(SERVER_SCRIPT), "--version"], capture_output=True,
                            text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert result.returncode == 0 and "caisse-ap-ip-server" in result.stdout


# --- --check-health (issue 12) ----------------------------------------------------------------


@pytest.mark.slow
def test_check_health_of_a_serving_terminal_without_web():
    server = ServerProcess("--no-web")
    try:
        done = run_server("--check-health", f"127.0.0.1:{server.port}")
        assert (done.returncode, done.stdout) == (0, "healthy\n"), done.stderr
        done = run_server("--check-health", f"localhost:{server.port}")
        assert done.returncode == 0
    finally:
        server.stop()
    assert "Traceback" not in server.output()


@pytest.mark.slow
def test_check_health_when_nothing_listens_or_nothing_serves():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = run_server("--check-health", f"127.0.0.1:{port}")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "cannot reach the terminal" in done.stderr
    # Listening, but no loop reads: a wedged process. The check gives up in time.
    with socket.socket() as wedged:
        wedged.bind(("127.0.0.1", 0))
        wedged.listen()
        from caisse_ap.terminal import health

        problem = health.check(wedged.getsockname(), timeout=0.5)
    assert "did not close it within 0.5 s" in problem


@pytest.mark.slow
@pytest.mark.parametrize("value", ["8888", "host:", ":8888", "host:99999", "h:x"])
def test_check_health_bad_address_is_one_line_and_status_2(value):
    done = run_server("--check-health", value)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.slow
def test_the_docker_health_check_command_works_with_no_web():
    """The Dockerfile's HEALTHCHECK, run as written against a terminal with --no-web."""
    import json

    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                if line.strip().startswith("CMD [\"caisse-ap-ip-server\", \"--check-health\""))
    command = json.loads(line.strip()[len("CMD"):])
    assert command[:3] == ["caisse-ap-ip-server", "--check-health", "127.0.0.1:8888"]
    server = ServerProcess("--no-web")
    try:
        done = run_server(*command[1:-1], f"127.0.0.1:{server.port}")
        assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    done = run_server(*command[1:-1], f"127.0.0.1:{server.port}")
    assert done.returncode == 1  # stopped: unhealthy
