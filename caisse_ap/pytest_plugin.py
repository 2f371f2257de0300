"""The pytest plugin of caisse-ap-ip: the `simulated_terminal` fixture.

Installing the package registers it (entry point `pytest11`), so a POS
project's tests use the fixture with no `pytest_plugins` line:

    def test_refused_payment(simulated_terminal):
        simulated_terminal.next("refused")
        ...

With a running farm (docs/api.md), the fixture's terminal is a fresh one of
the farm's, deleted after the test: `--caisse-ap-farm URL` or the variable
CAISSE_AP_FARM_URL (its token: CAISSE_AP_FARM_TOKEN). Parallel workers
(pytest-xdist) then share one farm, each test with a terminal of its own.

Kept apart from caisse_ap.testing so that importing that one never imports
pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .testing import (
    FARM_TOKEN_VARIABLE,
    FARM_URL_VARIABLE,
    SimulatedTerminal,
    TerminalFarm,
    simulated_terminal,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--caisse-ap-farm", default=None, metavar="URL",
                     help="the simulated_terminal fixture takes a fresh terminal from the "
                          f"farm at URL (default: ${FARM_URL_VARIABLE}; token: "
                          f"${FARM_TOKEN_VARIABLE})")


@pytest.fixture(name="simulated_terminal")
def simulated_terminal_fixture(request: pytest.FixtureRequest) -> Iterator[SimulatedTerminal]:
    """A simulated terminal answering at once, stopped (or deleted from the farm) after
    the test."""
    url = request.config.getoption("--caisse-ap-farm") or os.environ.get(FARM_URL_VARIABLE)
    if url:
        farm = TerminalFarm(url, os.environ.get(FARM_TOKEN_VARIABLE) or None)
        with farm.terminal(label=request.node.nodeid[-64:]) as terminal:
            yield terminal
        return
    with simulated_terminal() as terminal:
        yield terminal
