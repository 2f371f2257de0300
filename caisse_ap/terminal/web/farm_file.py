"""`--terminals FILE`: the terminals of a shop, started with the farm (docs/api.md).

One TOML table per terminal; its name labels it unless it gives a label:

    [caisse-1]
    port = 8891              # 0 or none: a free port
    profile = "ingenico"
    label = "Caisse 1"
    [caisse-1.settings]      # any setting of PUT /api/settings
    mode = "failure"

The file is checked as a profile file is, before anything starts: a wrong
key or value is reported as `file:line: reason` (exit status 2). What the
API would refuse, the file cannot say either: each table becomes the body
of a POST /api/terminals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...tomlfile import decode, line_of
from ..behaviour import SettingsError, TerminalSettings
from ..options import UsageError

KEYS = ("port", "profile", "label", "settings")
LOWEST_PORT = 1024  # below: ports a test farm has no business taking (here and in the API)
MAX_LABEL = 64


@dataclass(frozen=True)
class TerminalSpec:
    """One table of the file: the body of its POST /api/terminals, and where it is."""

    where: str  # file:line of its table
    body: dict[str, object]


def load(path: str) -> tuple[TerminalSpec, ...]:
    """The file's terminals, checked; UsageError "file:line: reason" if one is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}:1: cannot read the terminals file: {error}") from None
    data = decode(text, path, _usage_error)
    if not data:
        raise UsageError(f"{path}:1: the file names no terminal (one [table] per terminal)")
    specs = []
    ports: dict[int, str] = {}
    for name, table in data.items():
        def fail(key: str | None, reason: str, section: str = name) -> UsageError:
            return UsageError(f"{path}:{line_of(text, section, key)}: {reason}")

        if not isinstance(table, dict):
            raise fail(None, f"{name!r} must be a table: [{name}] and its keys")
        specs.append(TerminalSpec(f"{path}:{line_of(text, name, None)}",
                                  _body(name, table, fail)))
        port = specs[-1].body.get("port")
        if isinstance(port, int) and port:
            if port in ports:
                raise fail("port", f"port {port} is already that of [{ports[port]}]")
            ports[port] = name
    return tuple(specs)


def _usage_error(where: str, reason: str) -> UsageError:
    return UsageError(f"{where}: {reason}")


def _body(name: str, table: dict[str, Any], fail: Callable[..., UsageError]
          ) -> dict[str, object]:
    for key in table:
        if key not in KEYS:
            raise fail(key, f"unknown key {key!r} in [{name}]; use {', '.join(KEYS)}")
    body: dict[str, object] = {"label": name}
    port = table.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) \
            or not (port == 0 or LOWEST_PORT <= port <= 65535):
        raise fail("port", f"port must be 0 (a free port) or a whole number from "
                           f"{LOWEST_PORT} to 65535, not {port!r}")
    body["port"] = port
    label = table.get("label", name)
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL \
            or not label.isprintable():
        raise fail("label", f"label must be one line of text of at most {MAX_LABEL} "
                            f"characters, not {label!r}")
    body["label"] = label.strip()
    settings = table.get("settings", {})
    if not isinstance(settings, dict):
        raise fail("settings", f"settings must be a table: [{name}.settings]")
    checked = TerminalSettings()
    if "profile" in table:
        try:
            checked = checked.updated({"profile": table["profile"]})
        except SettingsError as error:
            raise fail("profile", error.message) from None
        body["profile"] = table["profile"]
    try:
        checked.updated(settings)
    except SettingsError as error:
        raise fail(error.field, error.message, f"{name}.settings") from None
    body["settings"] = settings
    return body
