"""The twisted.web site of the terminal: the control API under /api/, the console at /.

The console's pages are static files shipped in `static/` (no build step, no
CDN). What every response gets: `Cache-Control: no-cache` (the console must
never run a stale script against a newer API), `X-Content-Type-Options:
nosniff` and a Content-Security-Policy that only allows this server; no
response names the server or its version. There is no directory listing, no
debug page and no stack trace: Twisted's own error pages are replaced by short
ones, JSON under /api/.

A request whose `Host` is not one of the server's own names is refused (421)
before any resource sees it: a DNS-rebinding page, whose name the attacker
points at 127.0.0.1, controls `Origin` and `Host` alike, but cannot make the
browser send a name the server accepts (see `HostAllowlist`).
"""

from __future__ import annotations

import ipaddress
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from twisted.internet.interfaces import ITCPTransport
from twisted.web import http, resource, server

from .. import debuglines
from .api import MAX_BODY, ApiError, ControlApi, error_response

with warnings.catch_warnings():
    # twisted.web.static builds its default HTML error pages with a deprecated
    # class as it is imported; this module replaces those pages anyway.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web import static

log = logging.getLogger("caisse_ap.terminal.web")

STATIC = Path(__file__).parent / "static"
# A client streaming a body past this is cut off rather than read to the end.
ABORT_BODY = 16 * MAX_BODY

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

COMMON_HEADERS = {
    b"Cache-Control": b"no-cache",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Content-Security-Policy": (
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


# Names of this machine whatever the address listened on.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::")


class HostAllowlist:
    """The names a request's `Host` may give: the loopback names, the address listened
    on and the `--web-allowed-host` names.

    Listening on every address (0.0.0.0, ::), any IP address is accepted too: the
    console is then reached by the addresses of the machine, or of a Docker host
    publishing the port, which the server cannot list. A rebinding page always
    comes through a name, never an IP address, so that opens nothing to it.
    """

    def __init__(self, listen_address: str, names: Iterable[str] = ()):
        self.any_address = listen_address in WILDCARD_ADDRESSES
        self.names = {name.lower() for name in (*LOOPBACK_NAMES, listen_address, *names)}

    def allows(self, host_header: bytes | None) -> bool:
        if host_header is None:
            return False
        host = _host_part(host_header.decode("latin-1").strip().lower())
        if host in self.names:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True


def _host_part(host: str) -> str:
    """The name part of a Host header: "[::1]:5000" -> "::1", "example:5000" -> "example"."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, _ = host.partition(":")
    return name


class LimitedRequest(server.Request):
    """A request whose Host is checked (421) and whose body is refused past MAX_BODY (413),
    before any resource sees it."""

    body_too_large = False
    _body_size = 0

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length if length is not None and length <= MAX_BODY else 0)
        if length is not None and length > MAX_BODY:
            self.body_too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > MAX_BODY:
            self.body_too_large = True
            if self._body_size > ABORT_BODY:
                cast(ITCPTransport, self.channel.transport).abortConnection()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        for name, value in COMMON_HEADERS.items():
            self.setHeader(name, value)
        site: QuietSite = cast(Any, self.channel).site  # set by Site.buildProtocol
        if not site.hosts.allows(self.getHeader(b"host")):
            self._refuse(ApiError(421, "This server does not answer to that host name; "
                                       "start it with --web-allowed-host NAME to allow it."))
        elif self.body_too_large:
            self.setHeader(b"Connection", b"close")
            self._refuse(ApiError(413, f"The request body is over {MAX_BODY // 1024} KiB."))
        else:
            super().process()

    def _refuse(self, error: ApiError) -> None:
        self.write(error_response(self, error))
        self.finish()

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            # twisted.web names itself and its version: tell an attacker nothing.
            self.responseHeaders.removeHeader(b"Server")
        super().write(data)

    def processingFailed(self, reason: Any) -> None:
        # Never Twisted's page (which can show a traceback): log it, answer briefly.
        # A bug if it happens: every bad input has a 4xx answer of its own.
        log.error("error serving %s: %s", self.path.decode(errors="replace"),
                  reason.getTraceback())
        self._refuse(ApiError(500, "Internal error; see the server log."))


class PlainError(resource.Resource):
    """A short plain-text error instead of Twisted's HTML pages."""

    isLeaf = True

    def __init__(self, code: int = 404, text: str = "Not found."):
        super().__init__()
        self.code = code
        self.text = text.encode() + b"\n"

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return self.text


class StaticFiles(static.File):
    """The console's files: no directory listing, explicit content types."""

    contentTypes = {**static.File.contentTypes, **CONTENT_TYPES}
    indexNames = ["index.html"]
    # Twisted types these as its own page classes; any resource serves.
    childNotFound = PlainError()  # type: ignore[assignment]
    forbidden = PlainError(403, "Forbidden.")  # type: ignore[assignment]

    def directoryListing(self) -> resource.Resource:
        return PlainError()

    def createSimilarFile(self, path: Any) -> StaticFiles:
        similar: StaticFiles = super().createSimilarFile(path)
        similar.contentTypes = self.contentTypes
        similar.indexNames = self.indexNames
        return similar


class _ApiOnly(resource.Resource):
    """The root when the console's files are missing: only /api/ exists."""

    def getChild(self, name: bytes, request: server.Request) -> resource.Resource:
        return PlainError()


class QuietSite(server.Site):
    """Requests are logged at debug level only: the console polls and streams."""

    requestFactory = LimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, root: resource.Resource, hosts: HostAllowlist):
        super().__init__(root)
        self.hosts = hosts

    def log(self, request: http.Request) -> None:
        if debuglines.wanted(log):
            debuglines.debug(log, "web %s %s %d", request.method.decode(errors="replace"),
                             request.uri.decode(errors="replace"), request.code)


def build_site(api: ControlApi, hosts: HostAllowlist,
               static_dir: Path | None = STATIC) -> server.Site:
    """The Site: `api` at /api/, the console's static files at / (if present), for the
    Host names `hosts` allows."""
    if static_dir is not None and static_dir.is_dir():
        root: resource.Resource = StaticFiles(str(static_dir))
    else:
        root = _ApiOnly()
    root.putChild(b"api", api)
    return QuietSite(root, hosts)
