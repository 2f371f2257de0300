"""The simulated Caisse-AP payment terminal.

- `behaviour`: pure; settings, outcomes and the answers a real terminal gives;
- `service`: the `Terminal` (transactions, outcome sources, observers);
- `outcomes`, `rules`, `journal`: the outcome queue and manual decisions, the
  amount rules, the transaction journal;
- `server`: the Twisted protocol, `start_terminal()` and `stop_terminal()`;
- `app`: the composition root, `start(reactor, TerminalOptions)`: a terminal
  with its journal, outcome sources and edges (TCP, web console, serial line,
  proxy, recording);
- `options`, `cli`: the command line, `caisse-ap-ip-server`.

docs/architecture.md draws the layers. Twisted is imported once a terminal
starts, never for `--help`.
"""

from .behaviour import (
    Decision,
    OutcomeSpec,
    SettingsError,
    TerminalReply,
    TerminalSettings,
)

__all__ = ["Decision", "OutcomeSpec", "SettingsError", "TerminalReply", "TerminalSettings"]
