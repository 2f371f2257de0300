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


# --- The same rules in French and in English (LANG=fr_FR.UTF-8, LANG=C) ----------------------

LANGUAGES = {"fr": "fr_FR.UTF-8", "en": "C"}
SERVER = ROOT / "caisse-ap-ip-server.py"


def in_language(language: str) -> dict[str, str]:
    """The environment with LANG alone naming the language (no French locale needed)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return {**env, "LANG": LANGUAGES[language]}


def server_in(language: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SERVER), *args], capture_output=True, text=True,
                          timeout=TIMEOUT * 2, cwd=ROOT, env=in_language(language))


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_number_option_takes_a_decimal_comma(language):
    """-d 0,5 as -d 0.5, and the other seconds of both commands; the client pays 1,50."""
    server = ServerProcess("--no-web", "-d", "0,5", "--idle-timeout", "2,5",
                           "--request-timeout", "1,5", timeout=TIMEOUT, env=in_language(language))
    try:
        assert "after 0.5 s" in server.startup_line  # the log line stays English
        done = subprocess.run(
            [sys.executable, str(CLIENT), "-p", str(server.port), "-a", "1,50", "--timeout",
             "2,5", "--connect-timeout", "0,5", "--json"],
            capture_output=True, timeout=TIMEOUT, cwd=ROOT, env=in_language(language))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["amount"] == "1.50"
    finally:
        server.kill()
    manual = server_in(language, "--manual", "--manual-timeout", "1,5", "--list-amount-rules")
    assert manual.returncode == 0, manual.stderr


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("args, words", [
    (["-d", "0,5,0"], {"fr": "-d/--duration : nombre de secondes attendu (0,5 ou 0.5)",
                       "en": "-d/--duration: duration must be a number of seconds"}),
    (["--idle-timeout", "1e3"],
     {"fr": "--idle-timeout : délai d'inactivité : nombre supérieur à 0 attendu (0,5 ou 0.5)",
      "en": "--idle-timeout: idle timeout must be a number above 0"}),
])
def test_a_number_that_is_not_one_names_the_option_and_the_form(language, args, words):
    done = server_in(language, *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert words[language] in done.stderr, done.stderr


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("args, words", [
    (["--serial-link", "link-to-nowhere"],
     {"fr": "--serial-link demande --serial pty", "en": "--serial-link needs --serial pty"}),
    (["--serial", "/dev/nonexistent"],
     {"fr": "--serial : impossible d'ouvrir /dev/nonexistent",
      "en": "--serial: cannot open /dev/nonexistent"}),
])
def test_bad_serial_options_are_refused_before_anything_listens(language, args, words,
                                                                tmp_path):
    """The web console and the terminal would say "on http://..." and "listening on":
    neither started, and the link was not made."""
    done = subprocess.run(
        [sys.executable, str(SERVER), "--host", "127.0.0.1", "-p", "0", "--web-port", "0",
         *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
        env=in_language(language))
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert words[language] in done.stderr
    assert "listening" not in done.stderr and "http://" not in done.stderr
    assert not (tmp_path / "link-to-nowhere").exists()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("args, words", [
    (["--reference", "café"],
     {"fr": ["argument --reference", "'café'", "ASCII imprimables", "sans accent"],
      "en": ["argument --reference", "'café'", "printable ASCII", "without accents"]}),
    (["--serial", "/dev/null", "--receipt"],
     {"fr": ["--receipt : impossible avec --serial", "retirez-le, ou payez par IP"],
      "en": ["--receipt: not possible with --serial", "drop it, or pay over IP"]}),
    (["-r", "1"],
     {"fr": ["-r/--register : numéro de caisse '1' : 2 chiffres attendus"],
      "en": ["-r/--register: register number '1' must be 2 digits"]}),
])
def test_client_errors_name_the_option_typed_and_what_it_takes(language, args, words):
    done = subprocess.run([sys.executable, str(CLIENT), *args], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT, env=in_language(language))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    for word in words[language]:
        assert word in done.stderr, (word, done.stderr)
    for internal in ("field 7", "receipt_mode", "Concert E+ cannot carry", "extra_fields"):
        assert internal not in done.stderr
