"""The pytest plugin of caisse-ap-ip: the `simulated_terminal` fixture.

Installing the package registers it (entry point `pytest11`), so a POS
project's tests use the fixture with no `pytest_plugins` line:

    def test_refused_payment(simulated_terminal):
        simulated_terminal.next("refused")
        ...

Kept apart from caisse_ap.testing so that importing that one never imports
pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import SimulatedTerminal, simulated_terminal


@pytest.fixture(name="simulated_terminal")
def simulated_terminal_fixture() -> Iterator[SimulatedTerminal]:
    """A simulated terminal answering at once, stopped after the test."""
    with simulated_terminal() as terminal:
        yield terminal
