"""The two commands agree: log levels, exit statuses, failure options, JSON output.

Both run as a user runs them (the launchers in subprocesses), the server on
OS-chosen ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from server_process import ROOT, ServerProcess, run_server

CLIENT = ROOT / "caisse-ap-ip-client.py"
TIMEOUT = 30.0
pytestmark = pytest.mark.slow  # every test runs a launcher in a process
# Lines Twisted writes by itself when a port opens or closes; nothing for a user.
TWISTED_NOISE = ("starting on", "Starting factory", "Stopping factory", "Closed)")


def run_client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLIENT), *args], capture_output=True,
                          timeout=TIMEOUT * 2, cwd=ROOT, env=env)


@pytest.fixture
def terminal(server_process):
    def start(*args: str) -> ServerProcess:
        return server_process("-d", "0", *args, timeout=TIMEOUT)

    return start


@pytest.fixture
def taken_port():
    """A port on 127.0.0.1 that something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("level", ["warn", "warning", "WARNING"])
def test_both_commands_take_warn_and_warning(terminal, level):
    assert run_server("-l", level, "--list-amount-rules").returncode == 0
    server = terminal("--no-web")
    done = run_client("-l", level, "-p", str(server.port), "-a", "1,00")
    assert done.returncode == 0, done.stderr


def test_failure_type_alone_switches_to_failure_mode_and_says_so(terminal):
    server = terminal("--no-web", "-ft", "refused")
    assert "mode failure" in server.startup_line and "AF=04" in server.startup_line
    assert "-ft refused without -f: failure mode" in server.output()
    done = run_client("-p", str(server.port), "-a", "2,00", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["reason"]["code"] == "04"


@pytest.mark.parametrize("other", [["--no-answer"], ["--hang-up"], ["--manual"]])
def test_failure_type_with_a_mode_that_never_fails_is_refused(other):
    result = run_server("-ft", "refused", *other)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "-ft" in result.stderr, result.stderr


@pytest.mark.parametrize("which", ["-p", "--web-port"])
def test_cannot_listen_is_one_line_and_status_2_whichever_port(taken_port, which):
    ports = {"-p": "0", "--web-port": "0", which: str(taken_port)}
    result = run_server("--host", "127.0.0.1", *(arg for pair in ports.items() for arg in pair))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{taken_port}" in lines[0], lines


def test_no_twisted_lines_in_the_log_at_info(terminal):
    server = terminal("--web-port", "0")
    assert run_client("-p", str(server.port), "-a", "1,00").returncode == 0
    assert server.stop() == 0
    output = server.output()
    assert "web console and control API on" in output and "stopped" in output
    assert [line for line in output.splitlines()
            if any(noise in line for noise in TWISTED_NOISE)] == []


def test_twisted_lines_stay_at_debug(terminal):
    server = terminal("--no-web", "-l", "debug")
    server.stop()
    assert any(noise in server.output() for noise in TWISTED_NOISE)


def test_json_is_utf8_whatever_the_locale(terminal):
    server = terminal("--no-web")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii",
           "PYTHONUTF8": "0"}
    done = run_client("-p", str(server.port), "-a", "3,00", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert "€".encode() in done.stdout and b"\\u" not in done.stdout
    assert json.loads(done.stdout.decode("utf-8"))["currency_symbol"] == "€"
