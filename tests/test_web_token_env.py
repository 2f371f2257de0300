"""--web-token taken from CAISSE_AP_WEB_TOKEN, as the Docker image passes it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from server_process import ServerProcess

from caisse_ap.terminal import cli
from caisse_ap.terminal.web import TOKEN_VARIABLE

TIMEOUT = 10.0


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_the_variable_is_the_default_token(monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "from-env")
    assert parse().web_token == "from-env"
    assert parse("--web-token", "from-option").web_token == "from-option"


@pytest.mark.parametrize("value", [None, ""])
def test_no_token_when_the_variable_is_unset_or_empty(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(TOKEN_VARIABLE, value)
    assert parse().web_token is None


def test_help_names_the_variable():
    assert TOKEN_VARIABLE in cli.build_parser().format_help()


def test_a_bad_variable_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_VARIABLE, "has space")
    assert cli.main(["--list-amount-rules"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "printable ASCII without spaces" in err, err


def put_settings(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url + "api/settings", method="PUT", data=json.dumps({"duration": 0}).encode(),
        headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_the_server_started_with_the_variable_requires_it():
    environment = {**os.environ, TOKEN_VARIABLE: "s3cret-env"}
    server = ServerProcess("--web-port", "0", env=environment, timeout=TIMEOUT)
    try:
        url = f"http://127.0.0.1:{server.web_port}/"
        assert put_settings(url, {}) == 401
        assert put_settings(url, {"Authorization": "Bearer wrong"}) == 401
        assert put_settings(url, {"Authorization": "Bearer s3cret-env"}) == 200
    finally:
        server.stop()
