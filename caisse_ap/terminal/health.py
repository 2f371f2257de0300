"""`caisse-ap-ip-server --check-health HOST:PORT`: is a running terminal serving?

For a container's health check, with or without the web console. Listening
is not enough (the kernel accepts connections for a process that no longer
reads them), so the check connects, closes its sending side and waits for
the terminal to close in turn: that proves the terminal's event loop runs,
and the web API shares that loop. No request is sent, so nothing is
journalled.
"""

from __future__ import annotations

import argparse
import socket
import time

from ..i18n import _

CHECK_TIMEOUT = 4.0  # seconds; Docker's HEALTHCHECK gives the command 5


def address_arg(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or localhost:PORT."""
    host, _colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(_("HOST:PORT is expected, such as 127.0.0.1:8888, "
                                           "not %r") % text)
    return host, int(port)


def check(address: tuple[str, int], timeout: float = CHECK_TIMEOUT) -> str | None:
    """None when the terminal at `address` serves, else what is wrong (one line)."""
    deadline = time.monotonic() + timeout
    where = f"{address[0]}:{address[1]}"
    try:
        with socket.create_connection(address, timeout=timeout) as connection:
            connection.shutdown(socket.SHUT_WR)
            while True:
                connection.settimeout(max(deadline - time.monotonic(), 0.001))
                if not connection.recv(4096):
                    return None
    except ConnectionResetError:
        return None  # closed too: the terminal is serving
    except TimeoutError:
        return (_("the terminal at %(where)s accepted a connection but did not close it "
                  "within %(seconds)s s") % {"where": where, "seconds": format(timeout, "g")})
    except OSError as error:
        return (_("cannot reach the terminal at %(where)s: %(why)s")
                % {"where": where, "why": error.strerror or error})
