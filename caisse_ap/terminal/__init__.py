"""The simulated Caisse-AP payment terminal.

- `behaviour`: pure; settings, outcomes and the answers a real terminal gives;
- `service`: the `Terminal` (transactions, outcome sources, observers);
- `server`: the Twisted protocol, `start_terminal()` and `stop_terminal()`;
- `cli`: the command line, `caisse-ap-ip-server`.

Twisted is imported by `service`, `server` and `cli` only.
"""

from .behaviour import (
    Decision,
    OutcomeSpec,
    SettingsError,
    TerminalReply,
    TerminalSettings,
)

__all__ = ["Decision", "OutcomeSpec", "SettingsError", "TerminalReply", "TerminalSettings"]
