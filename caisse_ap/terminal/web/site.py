"""The twisted.web site of the terminal: the control API under /api/, the console at /.

The console's pages are static files shipped in `static/` (no build step, no
CDN). What every response gets: `Cache-Control: no-cache` (the console must
never run a stale script against a newer API), `X-Content-Type-Options:
nosniff` and a Content-Security-Policy that only allows this server. There is
no directory listing, no debug page and no stack trace: Twisted's own error
pages are replaced by short ones, JSON under /api/.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from twisted.web import resource, server

from .api import MAX_BODY, ControlApi

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


class LimitedRequest(server.Request):
    """A request whose body is refused past MAX_BODY (413), before any resource sees it."""

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
                self.channel.transport.abortConnection()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        for name, value in COMMON_HEADERS.items():
            self.setHeader(name, value)
        if self.body_too_large:
            body = json.dumps({"error": f"The request body is over {MAX_BODY // 1024} KiB.",
                               "code": "body_too_large", "field": None}).encode()
            self.setResponseCode(413)
            self.setHeader(b"Content-Type", b"application/json; charset=utf-8")
            self.setHeader(b"Connection", b"close")
            self.write(body)
            self.finish()
            return
        super().process()

    def processingFailed(self, reason: Any) -> None:
        # Never Twisted's page (which can show a traceback): log it, answer briefly.
        log.error("error serving %s: %s", self.path.decode(errors="replace"),
                  reason.getTraceback())
        body = b"Internal error; see the server log.\n"
        self.setResponseCode(500)
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"Content-Length", str(len(body)).encode())
        self.write(body)
        self.finish()


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
    childNotFound = PlainError()
    forbidden = PlainError(403, "Forbidden.")

    def directoryListing(self) -> resource.Resource:
        return PlainError()

    def createSimilarFile(self, path: Any) -> StaticFiles:
        similar = super().createSimilarFile(path)
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

    def log(self, request: server.Request) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("web %s %s %d", request.method.decode(errors="replace"),
                      request.uri.decode(errors="replace"), request.code)


def build_site(api: ControlApi, static_dir: Path | None = STATIC) -> server.Site:
    """The Site: `api` at /api/, the console's static files at / (if present)."""
    if static_dir is not None and static_dir.is_dir():
        root: resource.Resource = StaticFiles(str(static_dir))
    else:
        root = _ApiOnly()
    root.putChild(b"api", api)
    return QuietSite(root)
