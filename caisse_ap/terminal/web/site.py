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

Slow clients: a request's line, headers and body must all arrive within
`request_timeout` seconds of its first byte (or of the connection), however
they trickle in, and at most `max_connections` connections are open at once
(more wait in the kernel's backlog, as on the POS port). Once a request is in,
no time-out applies to its answer: an event stream stays open as long as its
console reads it. Between two requests, twisted.web's idle time-out.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.web import http, resource, server

from .. import debuglines
from .api import MAX_BODY, ApiError, ControlApi, error_response
from .limits import MAX_CONNECTIONS, REQUEST_TIMEOUT

if TYPE_CHECKING:
    from twisted.python.failure import Failure
    from twisted.python.filepath import FilePath
    from typing_extensions import Unpack

with warnings.catch_warnings():
    # twisted.web.static builds its default HTML error pages with a deprecated
    # class as it is imported; this module replaces those pages anyway.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web import static

log = logging.getLogger("caisse_ap.terminal.web")

STATIC = Path(__file__).parent / "static"
IDLE_TIMEOUT = 60  # seconds a connection may stay silent between two requests
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
        self.names = {_canonical(name) for name in (*LOOPBACK_NAMES, listen_address, *names)}

    def allows(self, host_header: bytes | None) -> bool:
        host = _host_part(host_header)
        if host is None:
            return False
        if host in self.names:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True


# RFC 9110 section 7.2 (uri-host [":" port]): a bracketed IPv6 address, or a name or
# IPv4 address of letters, digits, dots and hyphens; then at most a port of digits.
HOST_HEADER = re.compile(rb"(?:\[(?P<ipv6>[0-9a-f:.]{2,45})\]|(?P<name>[a-z0-9.-]{1,253}))"
                         rb"(?::[0-9]{1,5})?")


def _canonical(name: str) -> str:
    """A name in lower case, an IP address in its usual form (IPv6 compressed)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _host_part(host_header: bytes | None) -> str | None:
    """The host of a Host header, lower-case: "[::1]:5000" -> "::1", "example:5000" ->
    "example"; None if the header is anything else (userinfo, a path, two ports...)."""
    if host_header is None:
        return None
    match = HOST_HEADER.fullmatch(host_header.strip(b" \t").lower())
    if match is None:
        return None
    if match["ipv6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["ipv6"].decode("ascii")))
        except ValueError:
            return None
    return match["name"].decode("ascii").rstrip(".")


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
        site = cast(LimitedChannel, self.channel).site  # set by Site.buildProtocol
        hosts = self.requestHeaders.getRawHeaders(b"host") or []
        # Exactly one Host (RFC 9110 section 7.2): with two, which one a proxy in front
        # read cannot be known.
        if len(hosts) != 1 or not site.hosts.allows(hosts[0]):
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

    def processingFailed(self, reason: Failure) -> None:
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

    def render(self, request: server.Request) -> bytes | int:
        # Files are read only: any other method gets a short 405 (twisted.web's would be an
        # HTML page, 501 for a method it does not know).
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return PlainError(405, "Method not allowed.").render(request)
        return cast(bytes | int, super().render(request))

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        # A file name is UTF-8 text without NUL: anything else names no file (the file
        # system calls would raise on a NUL).
        if b"\0" in path:
            return PlainError()
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return PlainError()
        return cast(resource.Resource, super().getChild(path, request))

    def directoryListing(self) -> resource.Resource:
        return PlainError()

    def createSimilarFile(self, path: FilePath[str]) -> StaticFiles:
        similar: StaticFiles = super().createSimilarFile(path)
        similar.contentTypes = self.contentTypes
        similar.indexNames = self.indexNames
        return similar


class _ApiOnly(resource.Resource):
    """The root when the console's files are missing: only /api/ exists."""

    def getChild(self, name: bytes, request: server.Request) -> resource.Resource:
        return PlainError()


class LimitedChannel(http.HTTPChannel):
    """An HTTP connection whose requests must arrive within the site's request_timeout.

    twisted.web's own time-out starts again with every byte: a client sending
    one byte a second would hold the connection for ever. This deadline does
    not move; it ends once the request is in (an answer may take long: an
    event stream is one)."""

    site: QuietSite
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channel_opened()
        self._start_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:
            self._start_deadline()  # the first byte of the next request
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._cancel_deadline()
        self.site.channel_closed()
        super().connectionLost(reason)

    def _start_deadline(self) -> None:
        self._deadline = self.callLater(self.site.request_timeout, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        transport = cast(ITCPTransport, self.transport)
        log.debug("web client %s: no whole request within %g s; closed", transport.getPeer(),
                  self.site.request_timeout)
        transport.abortConnection()


class SiteLimits(TypedDict, total=False):
    """QuietSite's limits, as build_site takes them."""

    max_connections: int
    request_timeout: float


class QuietSite(server.Site):
    """Requests are logged at debug level only: the console polls and streams.

    At `max_connections` open, it stops accepting (`port`, set once listening)
    until one closes."""

    # HTTP/1.1 only: no HTTP/2 negotiation to time as well (Twisted types this as its own
    # factory; any HTTPChannel serves).
    protocol = LimitedChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, root: resource.Resource, hosts: HostAllowlist, *,
                 max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT):
        super().__init__(root, timeout=IDLE_TIMEOUT)
        self.hosts = hosts
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.open_connections = 0
        # Set once listening: the reactor's TCP port, which Twisted types as an
        # IListeningPort, without the startReading and stopReading its ports have.
        self.port: Any = None

    def channel_opened(self) -> None:
        self.open_connections += 1
        if self.open_connections >= self.max_connections and self.port is not None:
            log.warning("web console: %d connections open, the limit: new ones wait until "
                        "one closes", self.open_connections)
            self.port.stopReading()

    def channel_closed(self) -> None:
        self.open_connections -= 1
        if self.open_connections == self.max_connections - 1 and self.port is not None:
            self.port.startReading()

    def log(self, request: http.Request) -> None:
        if debuglines.wanted(log):
            debuglines.debug(log, "web %s %s %d", request.method.decode(errors="replace"),
                             request.uri.decode(errors="replace"), request.code)


class LimitedPort(tcp.Port):
    """The console's listening port: it accepts, in one go, no more connections than the
    site has room for. Twisted accepts up to a hundred per read, and a stopReading made
    by the connection that fills the last place does not end that loop."""

    def doRead(self) -> None:
        site = cast(QuietSite, self.factory)  # Twisted types a Site as no factory of its own
        free = site.max_connections - site.open_connections
        if free <= 0:
            self.stopReading()
            return
        self.numberAccepts = min(self.numberAccepts, free)
        super().doRead()


def build_site(api: ControlApi, hosts: HostAllowlist,
               static_dir: Path | None = STATIC, **limits: Unpack[SiteLimits]) -> QuietSite:
    """The Site: `api` at /api/, the console's static files at / (if present), for the
    Host names `hosts` allows; `limits`: max_connections, request_timeout."""
    if static_dir is not None and static_dir.is_dir():
        root: resource.Resource = StaticFiles(str(static_dir))
    else:
        root = _ApiOnly()
    root.putChild(b"api", api)
    return QuietSite(root, hosts, **limits)
