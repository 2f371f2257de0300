"""The control plane's defences (issue 12): Host allowlist, token on reads, no 5xx, no banner.

Real HTTP against terminals on free ports (the session reactor, conftest.py);
the hypothesis test throws arbitrary JSON, numbers, strings and ids at every
endpoint of one terminal.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_process import ServerProcess, run_server
from test_api import Answer, assert_error, call

from caisse_ap import client
from caisse_ap.terminal.web.api import ERROR_CODES
from caisse_ap.terminal.web.site import HostAllowlist
from caisse_ap.testing import simulated_terminal

pytestmark = pytest.mark.usefixtures("reactor_thread")

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def terminal():
    with simulated_terminal() as running:
        yield running


@pytest.fixture(scope="module")
def guarded():
    with simulated_terminal(token=TOKEN) as running:
        yield running


def with_host(terminal, method: str, path: str, host: str, body=None,
              headers=None) -> Answer:
    """A request whose Host header is `host` (http.client would send 127.0.0.1:port)."""
    connection = http.client.HTTPConnection("127.0.0.1", terminal.web_port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True)
        connection.putheader("Host", host)
        data = None if body is None else json.dumps(body).encode()
        for name, value in {**({"Content-Type": "application/json"} if data else {}),
                            **(headers or {})}.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(data or b"")))
        connection.endheaders(data)
        return Answer(connection.getresponse())
    finally:
        connection.close()


# --- 1. Host allowlist ----------------------------------------------------------------------


def test_a_dns_rebinding_request_is_refused_before_any_handler(terminal):
    """The audit's request: Host and Origin both the attacker's name, pointed at 127.0.0.1."""
    answer = with_host(terminal, "PUT", "/api/settings", "evil.example:5000",
                       {"mode": "hang-up"}, {"Origin": "http://evil.example:5000"})
    assert_error(answer, 421, None, "--web-allowed-host")
    assert terminal.settings()["mode"] == "success"
    for path in ("/api/transactions", "/api/status", "/", "/app.js"):
        assert_error(with_host(terminal, "GET", path, "evil.example"), 421)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:5000"])
def test_loopback_names_are_answered(terminal, host):
    assert with_host(terminal, "GET", "/api/settings", host).status == 200


def test_a_request_without_host_is_refused(terminal):
    connection = http.client.HTTPConnection("127.0.0.1", terminal.web_port, timeout=10)
    connection.putrequest("GET", "/api/status", skip_host=True)
    connection.endheaders()
    answer = Answer(connection.getresponse())
    connection.close()
    assert_error(answer, 421)


def test_allowed_host_names_and_addresses():
    specific = HostAllowlist("192.0.2.10", ["console.example"])
    assert specific.allows(b"192.0.2.10:5000") and specific.allows(b"Console.Example")
    assert specific.allows(b"localhost:5000") and specific.allows(b"[::1]")
    assert not specific.allows(b"192.0.2.11:5000") and not specific.allows(b"evil.example")
    assert not specific.allows(None) and not specific.allows(b"")
    # Every address: the machine's (or a Docker host's) addresses, never a name.
    wildcard = HostAllowlist("0.0.0.0")
    assert wildcard.allows(b"198.51.100.7:5000") and wildcard.allows(b"[2001:db8::1]:80")
    assert not wildcard.allows(b"evil.example:5000") and not wildcard.allows(b"1.2.3.4.evil")


def test_the_web_allowed_host_option():
    with simulated_terminal() as running:
        assert with_host(running, "GET", "/api/settings", "console.example").status == 421
    from caisse_ap.terminal import cli

    args = cli.build_parser().parse_args(["--web-allowed-host", "Console.Example",
                                          "--web-allowed-host", "[2001:db8::1]"])
    assert args.web_allowed_host == ["console.example", "2001:db8::1"]


@pytest.mark.slow
@pytest.mark.parametrize("value", ["", "bad name", "evil.example/x", "a:b:c:z"])
def test_a_bad_allowed_host_is_one_line_and_status_2(value):
    done = run_server("--web-allowed-host", value)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--web-allowed-host" in done.stderr


# --- 2. The token protects reads -------------------------------------------------------------

READS = ["/api/settings", "/api/next", "/api/transactions", "/api/transactions/1",
         "/api/amount-rules", "/api/events"]


@pytest.mark.parametrize("path", READS)
def test_every_read_needs_the_token(guarded, path):
    answer = call(guarded, "GET", path)
    assert_error(answer, 401, None, "Authorization: Bearer")
    assert call(guarded, "GET", path, headers={"Authorization": "Bearer wrong"}).status == 401


def test_the_status_is_open_and_tells_only_that_a_token_is_needed(guarded, terminal):
    open_status = call(guarded, "GET", "/api/status")
    assert open_status.status == 200
    assert open_status.json == {"token_required": True, "journal": {"state": "ok"}}
    full = call(guarded, "GET", "/api/status", headers=BEARER).json
    assert full["token_required"] is True and "settings" in full and "counters" in full
    assert call(terminal, "GET", "/api/status").json["token_required"] is False


def session_cookie(guarded) -> str:
    answer = call(guarded, "POST", "/api/session", headers=BEARER)
    assert answer.status == 200 and answer.json == {"token_required": True}
    cookie = answer.headers["Set-Cookie"]
    for attribute in ("httponly", "samesite=strict", "path=/api/"):
        assert attribute in cookie.lower(), cookie
    return cookie.split(";")[0]


def test_the_session_cookie_opens_reads_and_the_event_stream_only(guarded):
    assert_error(call(guarded, "POST", "/api/session"), 401)
    cookie = {"Cookie": session_cookie(guarded)}
    assert call(guarded, "GET", "/api/transactions", headers=cookie).status == 200
    connection = http.client.HTTPConnection("127.0.0.1", guarded.web_port, timeout=10)
    connection.request("GET", "/api/events", headers=cookie)
    stream = connection.getresponse()
    assert stream.status == 200 and stream.readline() == b"retry: 2000\n"
    connection.close()
    # A write needs the header: a cookie is what a forged cross-site request would carry.
    assert_error(call(guarded, "PUT", "/api/settings", {"duration": 1}, headers=cookie), 401)
    forged = {"Cookie": "caisse-ap-ip-session=" + "0" * 64}
    assert_error(call(guarded, "GET", "/api/transactions", headers=forged), 401)


def test_a_session_without_a_token_sets_no_cookie(terminal):
    answer = call(terminal, "POST", "/api/session")
    assert answer.json == {"token_required": False} and "Set-Cookie" not in answer.headers


def test_the_helper_streams_events_with_its_token(guarded):
    with guarded.events() as events:
        client.pay(client.make_request("1.00"), *guarded.address, timeout=10)
        assert events.get("answer")["data"]["status"] == "approved"


# --- 3. No 500 ----------------------------------------------------------------------------------


def test_a_duration_too_big_for_a_float_is_400(terminal):
    """Was a 500: OverflowError converting the integer."""
    raw = b'{"duration":1' + b"0" * 400 + b"}"
    assert_error(call(terminal, "PUT", "/api/settings", raw=raw), 400, "duration")


def test_an_id_too_big_for_sqlite_is_404(terminal):
    """Was a 500: OverflowError binding the id."""
    big = "9" * 30
    assert_error(call(terminal, "GET", f"/api/transactions/{big}"), 404)
    assert_error(call(terminal, "POST", f"/api/transactions/{big}/decision",
                      {"outcome": "approved"}), 404)
    assert_error(call(terminal, "GET", f"/api/transactions?after={big}"), 400, "after")


HUGE = "9" * 5000  # over Python's 4,300-digit int() limit


def raw_status(terminal, request: bytes) -> int:
    """The status of one raw HTTP request (bytes as given: NUL, non-UTF-8...), read from its
    status line; 0 if the server closed without one."""
    import socket

    with socket.create_connection(("127.0.0.1", terminal.web_port), timeout=10) as connection:
        connection.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = connection.recv(4096)
            if not chunk:
                break
            head += chunk
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def raw_request(terminal, method: bytes, target: bytes, headers: dict[bytes, bytes] | None = None,
                body: bytes = b"") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1",
             f"Host: 127.0.0.1:{terminal.web_port}".encode(),
             f"Content-Length: {len(body)}".encode(), b"Connection: close"]
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_numbers_of_5000_digits_are_4xx(terminal):
    """Were 500s: int() refuses over 4,300 digits (ValueError)."""
    assert_error(call(terminal, "GET", f"/api/transactions?limit={HUGE}"), 400, "limit")
    assert_error(call(terminal, "GET", f"/api/transactions?after={HUGE}"), 400, "after")
    assert_error(call(terminal, "GET", f"/api/transactions/{HUGE}"), 404)
    assert_error(call(terminal, "POST", f"/api/transactions/{HUGE}/decision",
                      {"outcome": "approved"}), 404)
    request = raw_request(terminal, b"GET", b"/api/events", {b"Last-Event-ID": HUGE.encode()})
    assert raw_status(terminal, request) == 200  # the stream, from now on


@pytest.mark.parametrize("target, status", [
    (b"/index.html%00.js", 404), (b"/app.js%00", 404), (b"/%ff%fe.js", 404),
    (b"/api/transactions/1%00", 404), (b"/\xff.js", 400)])  # raw: twisted.web refuses it
def test_nul_and_non_utf8_paths_are_4xx(terminal, target, status):
    """/index.html%00.js was a 500: the file system refuses a NUL (ValueError)."""
    assert raw_status(terminal, raw_request(terminal, b"GET", target)) == status


@pytest.mark.parametrize("host", [
    "127.0.0.1:5000@evil.example", "[::1]x", "[::1]:5000:80", "127.0.0.1:", "127.0.0.1:abc",
    "127.0.0.1/x", "user@127.0.0.1", "127.0.0.1 evil.example", "[::1", "127.0.0.1:123456",
    "[evil.example]", "localhost\tx"])
def test_a_host_header_is_a_name_or_address_and_a_port_only(terminal, host):
    assert_error(with_host(terminal, "GET", "/api/settings", host), 421)


def test_two_host_headers_are_refused(terminal):
    request = raw_request(terminal, b"GET", b"/api/settings", {b"Host": b"evil.example"})
    assert raw_status(terminal, request) == 421
    request = raw_request(terminal, b"GET", b"/api/settings", {b"Host": b"127.0.0.1"})
    assert raw_status(terminal, request) == 421


@pytest.mark.parametrize("origin, status", [
    ("https://127.0.0.1:{port}", 403), ("ftp://127.0.0.1:{port}", 403),
    ("http://127.0.0.1:{port}/x", 403), ("http://[::1", 403),
    ("http://127.0.0.1:{port}", 200), ("HTTP://127.0.0.1:{port}", 200)])
def test_the_origin_scheme_is_compared_too(terminal, origin, status):
    answer = call(terminal, "DELETE", "/api/next",
                  headers={"Origin": origin.format(port=terminal.web_port)})
    assert answer.status == status, answer.raw


def test_a_lone_surrogate_is_400(terminal):
    """Was a 500: the error message could not be encoded in UTF-8."""
    assert_error(call(terminal, "PUT", "/api/settings", raw=b'{"\\ud800":1}'), 400, None,
                 "surrogate")
    assert_error(call(terminal, "POST", "/api/next", raw=b'{"outcome":"\\udfff"}'), 400)


def test_a_body_nested_too_deeply_is_400(terminal):
    """Was a 500: RecursionError in the JSON parser."""
    assert_error(call(terminal, "PUT", "/api/settings", raw=b"[" * 60000), 400, None,
                 "nested")


ENDPOINTS = [
    ("GET", "/api/status"), ("GET", "/api/settings"), ("PUT", "/api/settings"),
    ("GET", "/api/next"), ("POST", "/api/next"), ("DELETE", "/api/next"),
    ("GET", "/api/transactions"), ("GET", "/api/transactions/{id}"),
    ("POST", "/api/transactions/{id}/decision"), ("GET", "/api/amount-rules"),
    ("POST", "/api/test-payment"), ("POST", "/api/session"), ("DELETE", "/api/session"),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
settings_keys = st.sampled_from(["mode", "duration", "failure_type", "payment_type",
                                 "seller_contract", "amount_rules", "manual_timeout",
                                 "currencies", "answer_version", "pad_amount", "outcome",
                                 "delay", "amount", "currency", "action", "host", "port",
                                 "timeout", "cheque", "reference"])
bodies = json_values | st.dictionaries(settings_keys, json_values, max_size=4)
ids = st.integers(min_value=-10, max_value=10**30).map(str) | st.text(max_size=20)
queries = st.dictionaries(st.sampled_from(["limit", "after", "status", "x"]),
                          st.integers().map(str) | st.text(max_size=10), max_size=3)


@pytest.mark.slow  # a long property test
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies, text_id=ids, query=queries,
       raw=st.booleans())
def test_no_input_gets_a_5xx(fuzzed, no_test_payment_leaves_the_machine, endpoint, body,
                             text_id, query, raw):
    from urllib.parse import quote, urlencode

    method, path = endpoint
    path = path.replace("{id}", quote(text_id, safe=""))
    if query:
        path += "?" + urlencode(query)
    data = json.dumps(body, ensure_ascii=raw).encode("utf-8", "surrogatepass")
    answer = call(fuzzed, method, path, raw=data)
    assert answer.status < 500, (method, path, data, answer.raw)
    if answer.status >= 400:
        assert set(answer.json) - {"limits"} == {"error", "code", "field"}
        assert answer.json["code"] in ERROR_CODES


RAW_TARGETS = [path.replace("/{id}", "") for _, path in ENDPOINTS] + [
    "/api/transactions/", "/api/transactions/{x}", "/api/transactions/{x}/decision",
    "/api/events", "/api/log", "/", "/index.html", "/app.js", "/{x}", "/{x}.js"]
# Over int()'s 4,300 digits; three in a request line stay under twisted.web's 16 KiB a line.
huge_digits = st.integers(4301, 5000).map(lambda size: b"9" * size)
hostile = (huge_digits | st.binary(max_size=16)
           | st.sampled_from([b"\0", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"-1", b"1e9"]))
header_names = st.sampled_from([b"Last-Event-ID", b"Origin", b"Authorization", b"Cookie",
                                b"Content-Type", b"Accept", b"Host", b"X-Fuzz"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE"]),
       target=st.sampled_from(RAW_TARGETS), part=hostile, percent=st.booleans(),
       query=st.lists(st.tuples(st.sampled_from([b"limit", b"after", b"status", b"since",
                                                 b"x"]), hostile), max_size=2),
       headers=st.dictionaries(header_names, hostile, max_size=3), body=hostile)
def test_no_raw_request_gets_a_5xx(fuzzed, no_test_payment_leaves_the_machine, method, target,
                                   part, percent, query, headers, body):
    """Huge digit strings, NUL and non-UTF-8 bytes in the path, the query and the headers,
    as bytes on the wire: a 4xx (or 2xx), never a 5xx."""
    from urllib.parse import quote_from_bytes

    def encoded(value: bytes) -> bytes:  # percent-encoded, or raw but for what ends a line
        if percent:
            return quote_from_bytes(value, safe="").encode()
        return bytes(byte for byte in value if byte not in b" \r\n#?&=")

    path = target.encode().replace(b"{x}", encoded(part) or b"x")
    if query:
        path += b"?" + b"&".join(name + b"=" + encoded(value) for name, value in query)
    values = {name: bytes(byte for byte in value if byte not in b"\r\n") for name, value
              in headers.items()}
    status = raw_status(fuzzed, raw_request(fuzzed, method, path, values, body))
    assert 100 <= status < 500, (method, path, values, body[:40], status)


@pytest.fixture(scope="module")
def fuzzed():
    """A terminal of its own: the fuzzing changes its settings and queue at random."""
    with simulated_terminal() as running:
        yield running


@pytest.fixture
def no_test_payment_leaves_the_machine(monkeypatch):
    """A fuzzed test payment may name any host: answer it here instead."""
    monkeypatch.setattr(client, "pay", lambda request, *args: client.PaymentResult(
        client.ERROR, request, b"", None, b"", "not sent: a test"))


# --- Slow clients: a request time-out that does not move, a cap on connections ----------------


@pytest.fixture
def strict_server():
    server = ServerProcess("-d", "0", "--web-port", "0", "--web-request-timeout", "1",
                           "--web-max-connections", "4")
    yield server
    server.stop()


def closed_within(connection: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes `connection` within `seconds`, while we send it `trickle`
    one byte every 0.1 s (a slow header)."""
    deadline = time.monotonic() + seconds
    connection.settimeout(0.1)
    sent = 0
    while time.monotonic() < deadline:
        try:
            if trickle:
                connection.send(trickle[sent % len(trickle):][:1])
                sent += 1
            if connection.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


@pytest.mark.slow
def test_a_header_sent_one_byte_at_a_time_is_cut_off(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.web_port)) as connection:
        started = time.monotonic()
        assert closed_within(connection, 5, b"GET /api/status HTTP/1.1\r\nX-Slow: ")
        assert 0.9 < time.monotonic() - started < 3


@pytest.mark.slow
def test_an_event_stream_outlives_the_request_time_out(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.web_port), timeout=10) as stream:
        stream.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{strict_server.web_port}"
                       "\r\nAccept: text/event-stream\r\n\r\n".encode())
        received = stream.recv(4096)
        assert received.startswith(b"HTTP/1.1 200")
        time.sleep(2.5)  # the time passing is the test: over twice the request time-out
        client.pay(client.make_request("4.20"), *strict_server.address, timeout=10)
        while b'"amount":"4.20"' not in received:
            chunk = stream.recv(65536)
            assert chunk, "the event stream was closed"
            received += chunk


@pytest.mark.slow
def test_connections_over_the_cap_wait_for_a_free_one():
    server = ServerProcess("-d", "0", "--web-port", "0", "--web-max-connections", "4")
    held = [socket.create_connection(("127.0.0.1", server.web_port)) for _ in range(4)]
    try:
        server.wait_for("4 connections open, the limit")
        waiting = socket.create_connection(("127.0.0.1", server.web_port), timeout=0.5)
        waiting.sendall(f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{server.web_port}\r\n"
                        "Connection: close\r\n\r\n".encode())
        with pytest.raises(TimeoutError):  # in the kernel's backlog: not answered
            waiting.recv(4096)
        held.pop().close()  # a free place: the waiting one is served
        waiting.settimeout(10)
        assert waiting.recv(4096).startswith(b"HTTP/1.1 200")
        waiting.close()
    finally:
        for connection in held:
            connection.close()
        server.stop()


@pytest.mark.slow
def test_bad_web_limits_are_one_line_and_status_2():
    for args in (["--web-max-connections", "0"], ["--web-request-timeout", "nan"],
                 ["--web-max-connections", "9" * 5000]):
        done = run_server(*args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr


# --- 6. No banner -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/status", "/", "/app.js", "/missing", "/api/nothing"])
def test_no_server_banner(terminal, path):
    answer = call(terminal, "GET", path)
    assert "Server" not in answer.headers, answer.headers
    assert "Server" not in with_host(terminal, "GET", path, "evil.example").headers
