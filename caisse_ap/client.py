"""The command-line point of sale: send one payment request to a terminal, read its answer.

A blocking-socket edge around the protocol core: `messages.PaymentRequest`
builds the request, `tlv.FrameDecoder` finds the end of the answer and
`messages.TerminalAnswer` reads it. Other code (the web console's "test
payment" button) calls `pay()` and `result_to_json()` from a thread.

The client never resends a payment by itself: a time-out, an early close or
an answer it cannot trust is reported as an unknown outcome, to be checked on
the terminal. Twisted is never imported here, and iso4217 only for a currency
other than EUR, so that the command starts fast on the standard library.

The core modules that build on dataclasses (money, tags, messages) are
imported inside the functions that use them, not at the top: `--help` and a
usage error then cost little more than starting Python with argparse.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections import namedtuple
from collections.abc import Callable

from . import tlv  # light, and imported by the package anyway
from .tlv import Field, FrameError

TYPE_CHECKING = False  # typing itself is slow to import
if TYPE_CHECKING:
    from .messages import Action, PaymentRequest, TerminalAnswer

PROG = "caisse-ap-ip-client"

EXIT_DONE = 0  # approved, or accepted (immediate answer)
EXIT_DECLINED = 1  # the terminal says the operation was not done
EXIT_USAGE = 2
EXIT_UNKNOWN = 3  # outcome unknown or protocol error: check the terminal
EXIT_NOT_SENT = 4  # connection failed before anything was sent
EXIT_INTERRUPTED = 130  # Ctrl-C before the request was sent

# What a result's status means for the exit status (and for a script).
APPROVED, DECLINED, ACCEPTED = "approved", "declined", "accepted"
UNKNOWN = "unknown"  # the request may have reached the terminal
ERROR = "error"  # nothing was sent
EXIT_BY_STATUS = {
    APPROVED: EXIT_DONE,
    ACCEPTED: EXIT_DONE,
    DECLINED: EXIT_DECLINED,
    UNKNOWN: EXIT_UNKNOWN,
    ERROR: EXIT_NOT_SENT,
}

DEFAULT_TIMEOUT = 180.0  # a customer may take minutes; POS integrations wait about this long
DEFAULT_CONNECT_TIMEOUT = 5.0
WAIT_TICK = 1.0  # how often a waiting caller hears the elapsed time
# Once the answer holds AE at a field boundary it is complete, but a terminal
# that writes it in two segments split right after AE would lose its last
# fields. So the client reads what else arrives within this short grace and
# keeps the whole extra fields; it stops early at CR/LF or a close, so only a
# terminal that keeps the connection open silently costs these 50 ms. Fields
# arriving later still are lost: a trade-off against waiting on every answer.
TRAILING_GRACE = 0.05
RECV_SIZE = 4096

UNKNOWN_ADVICE = "check the terminal before trying again"
EXIT_HELP = """\
exit status:
  0  approved, or accepted (immediate answer)
  1  declined: the operation was not done
  2  usage error (bad option or amount)
  3  outcome unknown or protocol error (time-out, early close, malformed
     answer, echo mismatch): check the terminal before trying again
  4  connection failed before anything was sent
  130  interrupted (Ctrl-C) before anything was sent

A negative amount is a refund; write it attached: -a=-12,50 or -a -12,50.
The client never resends a payment by itself."""


class OptionError(ValueError):
    """A request option a user got wrong; `field` names it ("amount", "currency"...)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# --- building the request ---------------------------------------------------------------

def _digits(value: str, tag: str, what: str, field: str) -> str:
    """`value` if it is as many digits as the tag's size (tags.py), else OptionError."""
    from . import tags

    size = tags.tag(tag).max_size
    if not (len(value) == size and value.isascii() and value.isdigit()):
        raise OptionError(
            f"{what} {value!r} must be {size} digits (use --tag to send anything else)", field
        )
    return value


def make_request(amount: str, currency: str = "EUR", action: str | Action | None = None, *,
                 cheque: bool = False, register: str = "01", pos_id: str = "012345678901",
                 protocol_version: str = "0300", immediate: bool = False, partial: bool = False,
                 reference: str | None = None, receipt: bool = False,
                 extra: tuple[Field, ...] = ()) -> PaymentRequest:
    """A PaymentRequest from options as a person writes them, or OptionError.

    `amount` is text ("12,50", "12.50"); a negative amount is a refund.
    `action` is an Action or its name ("debit", "refund", "cancellation",
    "duplicate"); None means debit, or refund for a negative amount.
    """
    from . import money, tags
    from .messages import ACTION_BY_NAME, Action, PaymentRequest

    try:
        info = money.currency(currency)
        units = money.to_minor_units(amount, info, allow_negative=True)
    except money.CurrencyError as error:
        raise OptionError(str(error), "currency") from None
    except money.AmountError as error:
        raise OptionError(str(error), "amount") from None
    if isinstance(action, str) and not isinstance(action, Action):
        if action not in ACTION_BY_NAME:
            raise OptionError(
                f"unknown action {action!r}; use one of {', '.join(ACTION_BY_NAME)}", "action")
        action = ACTION_BY_NAME[action]
    if units < 0:
        if action not in (None, Action.REFUND):
            raise OptionError(
                f"a negative amount is a refund; it cannot be a {action.name.lower()}", "amount"
            )
        action, units = Action.REFUND, -units
    reference_tag = tags.tag("CF")
    if reference is not None and not (
            reference_tag.min_size <= len(reference) <= reference_tag.max_size):
        raise OptionError(f"the reference (CF) must be {reference_tag.min_size} to "
                          f"{reference_tag.max_size} characters", "reference")
    request = PaymentRequest(
        amount=units,
        currency=info.numeric,
        action=action or Action.DEBIT,
        register=_digits(register, "CA", "register number", "register"),
        pos_id=_digits(pos_id, "CJ", "POS identifier", "pos_id"),
        version=_digits(protocol_version, "CZ", "protocol version", "protocol_version"),
        immediate=immediate,
        partial=partial,
        cheque=cheque,
        reference=reference,
        receipt=receipt,
        extra=tuple(extra),
    )
    try:
        request.encode()  # refuse now what could not be sent (a non-ASCII reference...)
    except FrameError as error:
        raise OptionError(f"cannot build the request: {error}") from None
    return request


# --- talking to the terminal ------------------------------------------------------------


_RESULT_FIELDS = "status request request_frame answer answer_frame problem elapsed_s"


# A named tuple rather than a dataclass: see the module docstring on start-up time.
class PaymentResult(namedtuple("PaymentResult", _RESULT_FIELDS, defaults=(None, b"", None, 0.0))):
    """What came of one payment request.

    `status` (str) is APPROVED, DECLINED, ACCEPTED, UNKNOWN (the request may
    have reached the terminal: check it) or ERROR (nothing was sent).
    `request` is the PaymentRequest and `request_frame` its bytes as sent.
    `answer` is the TerminalAnswer, None when nothing readable came back;
    `answer_frame` holds every byte received. `problem` (str or None) says
    what went wrong for UNKNOWN and ERROR. `elapsed_s` counts from connecting.
    """

    __slots__ = ()

    @property
    def exit_status(self) -> int:
        return EXIT_BY_STATUS[self.status]


class _Reception:
    """What _receive_answer got: the bytes, and a message, a problem or a FrameError."""

    def __init__(self, received: bytearray):
        self.received = received
        self.message: list[Field] | None = None
        self.problem: str | None = None
        self.error: FrameError | None = None


def _receive_answer(sock: socket.socket, timeout: float, started: float,
                    on_wait: Callable[[float], None] | None) -> _Reception:
    """Read until the answer is whole (fields including AE), the peer closes, or time runs out."""
    from .messages import has_action_status

    decoder = tlv.FrameDecoder(is_complete=has_action_status)
    reception = _Reception(bytearray())
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            size = len(reception.received)
            got = f" ({size} bytes, not a whole answer)" if size else ""
            reception.problem = f"no answer within {timeout:g} s{got}"
            return reception
        sock.settimeout(min(remaining, WAIT_TICK) if on_wait else remaining)
        try:
            chunk = sock.recv(RECV_SIZE)
        except TimeoutError:
            if on_wait:
                on_wait(time.monotonic() - started)
            continue
        except OSError as error:
            reception.problem = f"connection lost while waiting for the answer: {_reason(error)}"
            return reception
        try:
            if not chunk:
                reception.message = decoder.finish()
                if reception.message is None:
                    reception.problem = ("the terminal closed the connection without answering"
                                         if not reception.received else
                                         "the terminal closed the connection before a whole answer")
                elif not has_action_status(reception.message):
                    reception.problem = "the terminal closed the connection before a whole answer"
                return reception
            reception.received += chunk
            decoder.feed(chunk)
            reception.message = decoder.next_message()
        except FrameError as error:
            # Garbage or a cut field: nothing after it can be trusted, stop at once.
            reception.error = error
            return reception
        if reception.message is not None:
            return reception


def _read_trailing_fields(sock: socket.socket, reception: _Reception) -> list[Field]:
    """The answer plus whole fields that arrive within TRAILING_GRACE right after it."""
    message = reception.message or []
    received = reception.received
    # The decoder skips leading CR/LF; the answer's own bytes are its fields re-encoded.
    consumed = len(received) - len(received.lstrip(b"\r\n")) + len(tlv.encode(message))
    extra = bytes(received[consumed:])
    deadline = time.monotonic() + TRAILING_GRACE
    while b"\r" not in extra and b"\n" not in extra:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(RECV_SIZE)
        except OSError:  # time-out included: nothing more is coming soon
            break
        if not chunk:
            break
        received += chunk
        extra += chunk
    return message + _whole_extra_fields(extra, message)


def _whole_extra_fields(extra: bytes, message: list[Field]) -> list[Field]:
    text = extra.replace(b"\n", b"\r").split(b"\r")[0]  # a line end ends the answer
    if not text:
        return []
    try:
        more = tlv.decode(text, bare=True)
    except FrameError as error:
        _log("warning", "ignored %d bytes after the answer: %s", len(text), error)
        return []
    if more[0][0] == tlv.FIRST_TAG:
        _log("warning", "ignored a second message after the answer (%d bytes)", len(text))
        return []
    present = {tag for tag, _ in message}
    repeated = [tag for tag, _ in more if tag in present]
    if repeated:
        _log("warning", "ignored fields after the answer that repeat %s", ", ".join(repeated))
    return [(tag, value) for tag, value in more if tag not in present]


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _judge(request: PaymentRequest, answer: TerminalAnswer) -> tuple[str, str | None]:
    from .messages import Outcome

    if answer.outcome is Outcome.UNREADABLE:
        return UNKNOWN, f"unreadable answer: {answer.problem}"
    mismatches = answer.echo_mismatches(request)
    if mismatches:
        return UNKNOWN, f"the answer does not match the request ({'; '.join(mismatches)})"
    return answer.outcome_for(request).value, None


def _connect(host: str, port: int, connect_timeout: float) -> socket.socket | str:
    """A connected socket, or the reason there is none."""
    try:
        return socket.create_connection((host, port), timeout=connect_timeout)
    except socket.gaierror as error:
        return f"cannot find the address of {host!r}: {_reason(error)}"
    except TimeoutError:
        return f"cannot connect to {host}:{port}: no answer within {connect_timeout:g} s"
    except OSError as error:
        return f"cannot connect to {host}:{port}: {_reason(error)}"


def pay(request: PaymentRequest, host: str = "127.0.0.1", port: int = 8888,
        timeout: float = DEFAULT_TIMEOUT, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_wait: Callable[[float], None] | None = None) -> PaymentResult:
    """Send `request` to the terminal at host:port and read its answer.

    Never raises for network or protocol trouble: that is in the result's
    status and problem. `on_wait`, if given, is called about every second
    with the seconds elapsed while the answer is awaited. Safe to call from
    several threads at once (each call has its own socket).
    """
    from .messages import TerminalAnswer

    frame = request.encode()
    started = time.monotonic()

    def result(status: str, **details: object) -> PaymentResult:
        return PaymentResult(status, request, frame, elapsed_s=time.monotonic() - started,
                             **details)

    _log("debug", "connecting to %s:%d", host, port)
    sock = _connect(host, port, connect_timeout)
    if isinstance(sock, str):
        return result(ERROR, problem=f"{sock}; nothing was sent")
    with sock:
        try:
            sock.sendall(frame)
        except OSError as error:
            # Part of the request may have gone out: the outcome is not known.
            return result(UNKNOWN, problem=f"connection lost while sending: {_reason(error)}")
        _log("debug", "sent %d bytes", len(frame))
        try:
            reception = _receive_answer(sock, timeout, started, on_wait)
            if reception.message is not None and reception.problem is None:
                reception.message = _read_trailing_fields(sock, reception)
        except KeyboardInterrupt:
            return result(UNKNOWN, problem="interrupted while waiting for the answer")
    received = bytes(reception.received)
    _log("debug", "received %d bytes", len(received))
    if reception.error is not None:
        answer = TerminalAnswer.unreadable(reception.error)
    else:
        answer = TerminalAnswer.parse(reception.message) if reception.message else None
    if reception.problem is not None:
        return result(UNKNOWN, answer=answer, answer_frame=received, problem=reception.problem)
    status, problem = _judge(request, answer)
    return result(status, answer=answer, answer_frame=received, problem=problem)


def _log(level: str, message: str, *args: object) -> None:
    # logging costs startup time that `--help` should not pay: import it on first use.
    import logging

    getattr(logging.getLogger(__name__), level)(message, *args)


# --- presenting the result ----------------------------------------------------------------


def _amount_of(request: PaymentRequest) -> tuple[str, str, str | None, str]:
    """(amount, currency code, its symbol, text for people) of what was sent, even if --tag
    broke it."""
    return _amount_text(request.value("CB") or "", request.value("CE") or "")


def _amount_text(units: str, code: str) -> tuple[str, str, str | None, str]:
    from . import money

    try:
        info = money.currency(code)
        amount = format(money.from_minor_units(units, info), "f")
        return amount, info.alpha, info.symbol, money.format_amount(units, info, "en")
    except (money.AmountError, money.CurrencyError):
        return units, code, None, f"{units} (minor units) of currency {code}"


def _action_of(request: PaymentRequest) -> str:
    from .messages import ACTION_NAMES

    code = request.value("CD") or ""
    return ACTION_NAMES.get(code, code)


def result_to_json(result: PaymentResult) -> dict[str, object]:
    """The result as a JSON-ready dict: the object `--json` prints."""
    from . import tags

    amount, currency, symbol, _ = _amount_of(result.request)
    answer = result.answer
    reason = answer.reason if answer else None
    return {
        "status": result.status,
        "amount": amount,
        "currency": currency,
        "currency_symbol": symbol,
        "action": _action_of(result.request),
        "reason": {"code": reason.code, "label": reason.label, "details": reason.details}
        if reason else None,
        "fields": dict(answer.fields) if answer else {},
        "labels": ({tag: tags.field_label(tag, value) for tag, value in answer.fields}
                   if answer else {}),
        "receipt": answer.receipt if answer else None,
        "elapsed_s": round(result.elapsed_s, 3),
        "request": result.request_frame.decode("latin-1"),
        "answer": result.answer_frame.decode("latin-1") if result.answer_frame else None,
        "problem": result.problem,
    }


COLOURS = {APPROVED: "32", ACCEPTED: "32", DECLINED: "31", UNKNOWN: "33", ERROR: "31"}


def headline(result: PaymentResult) -> str:
    """The first line of the human output: what happened, for how much."""
    *_, amount = _amount_of(result.request)
    action = _action_of(result.request)
    what = amount if action == "debit" else f"{amount} ({action})"
    answer = result.answer
    if result.status == APPROVED:
        granted = answer.amount if answer else None
        if granted is not None and granted < result.request.amount:
            *_, part = _amount_text(str(granted), result.request.value("CE") or "")
            return f"APPROVED  {part} of {what} (partial payment)"
        return f"APPROVED  {what}"
    if result.status == ACCEPTED:
        return f"ACCEPTED by the terminal (immediate answer; not paid yet)  {what}"
    if result.status == DECLINED:
        reason = answer.reason if answer else None
        if reason is None:
            return f"DECLINED — {answer.missing_reason(result.request)}  {what}"
        details = f": {reason.details}" if reason.details else ""
        return f"DECLINED — {reason.label} (AF={reason.code}{details})  {what}"
    if result.status == UNKNOWN:
        return f"UNKNOWN OUTCOME — {result.problem}; {UNKNOWN_ADVICE}  {what}"
    return f"ERROR — {result.problem}"


def _show_value(value: str, width: int = 40) -> str:
    return value if len(value) <= width else value[:width - 3] + "..."


def format_result(result: PaymentResult, colour: bool = False, raw: bool = False) -> str:
    """The human output: result line, each answer field with its label, receipt, frames."""
    from . import tags

    first = headline(result)
    if colour:
        first = f"\x1b[1;{COLOURS[result.status]}m{first}\x1b[0m"
    lines = [first]
    answer = result.answer
    if answer and answer.fields:
        shown = [(tag, _show_value(value)) for tag, value in answer.fields]
        width = max(len(value) for _, value in shown)
        lines += [f"  {tag} {value:<{width}}  {tags.field_label(tag, value)}".rstrip()
                  for tag, value in shown]
    receipt = answer.receipt if answer else None
    if receipt:
        lines += ["", "--- receipt ---", receipt.rstrip("\r\n"), "---------------"]
    if raw:
        lines += ["", f"sent:     {_printable(result.request_frame)}",
                  f"received: {_printable(result.answer_frame) if result.answer_frame else '-'}"]
    return "\n".join(lines)


def _printable(frame: bytes) -> str:
    return repr(frame)[2:-1]  # bytes repr: CR/LF and non-ASCII bytes escaped


def wants_colour(stream: object) -> bool:
    """Colours only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


class ElapsedLine:
    """A live "waiting... 12 s" line on a terminal, erased when the answer comes."""

    def __init__(self, stream, where: str):
        self.stream = stream
        self.where = where
        self.shown = False

    def update(self, elapsed: float) -> None:
        self.stream.write(f"\rwaiting for the terminal at {self.where}... {int(elapsed)} s ")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# --- command line ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise OptionError(message)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _tag_option(text: str) -> Field:
    tag, sep, value = text.partition("=")
    if not sep or not tlv.is_tag(tag):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not XX=VALUE with XX two upper-case letters")
    if not (value.isascii() and value.isprintable() and 0 < len(value) <= tlv.MAX_VALUE_LENGTH):
        raise argparse.ArgumentTypeError(
            f"the value of {tag} must be 1 to 999 printable ASCII characters")
    return tag, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Send one Caisse-AP over IP payment request to a payment terminal\n"
                    "(real or simulated) and show its decoded answer.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("-l", "--log-level", default="info", type=str.lower,
        choices=["debug", "info", "warn", "warning", "error", "critical"], metavar="LEVEL",
        help="debug, info, warn (or warning), error or critical (default: info)")
    add("-d", "--destination", default="127.0.0.1", metavar="HOST",
        help="terminal address, an IP or a DNS name (default: 127.0.0.1)")
    add("-p", "--port", default=8888, type=_port, help="terminal TCP port (default: 8888)")
    add("-a", "--amount", default="112.45",
        help="amount, with '.' or ',' before the decimals; negative is a refund (default: 112.45)")
    add("-ck", "--check", action="store_true", help="print a cheque (CC=00C)")
    add("-c", "--currency", default="EUR", metavar="CODE",
        help="ISO 4217 alphabetic code (default: EUR)")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--refund", dest="action", action="store_const", const="refund",
                         help="refund (CD=1)")
    actions.add_argument("--cancel", dest="action", action="store_const", const="cancellation",
                         help="cancel a previous transaction (CD=2)")
    actions.add_argument("--duplicate", dest="action", action="store_const", const="duplicate",
                         help="reprint the last receipt (CD=3)")
    add("-r", "--register", default="01", metavar="NN",
        help="cash register number, CA (default: 01)")
    add("--pos-id", default="012345678901", metavar="DIGITS",
        help="POS protocol identifier, CJ, 12 digits (default: 012345678901)")
    add("--protocol-version", default="0300", metavar="NNNN",
        help="protocol version, CZ (default: 0300)")
    add("--immediate", action="store_true", help="ask for an immediate answer (BA=1)")
    add("--partial", action="store_true",
        help="accept a partial payment (BF=1; else BF is not sent)")
    add("--reference", metavar="TEXT",
        help="merchant reference echoed by the terminal (CF, 1 to 32 characters)")
    add("--receipt", action="store_true", help="ask for the customer receipt (CK=100) and print it")
    add("--tag", action="append", default=[], type=_tag_option, metavar="XX=VALUE",
        help="add or override any request field (repeatable)")
    add("--timeout", default=DEFAULT_TIMEOUT, type=_seconds, metavar="SECONDS",
        help="seconds to wait for the answer (default: 180)")
    add("--connect-timeout", default=DEFAULT_CONNECT_TIMEOUT, type=_seconds, metavar="SECONDS",
        help="seconds to wait for the connection (default: 5)")
    add("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    add("--raw", action="store_true", help="also print the frames sent and received")
    add("--serial", metavar="DEVICE",
        help="speak Concert E+ on this serial device (a pty, /dev/ttyUSB0...) instead of IP")
    add("--baud", type=int, default=9600, help="serial speed with --serial (default: 9600)")
    add("--short-answer", action="store_true",
        help="with --serial, ask for the short answer, without card data")
    return parser


def _attach_negative_amount(argv: list[str]) -> list[str]:
    """Let `-a -12,50` mean a refund: argparse would take "-12,50" for an option."""
    fixed = list(argv)
    for i, arg in enumerate(fixed[:-1]):
        following = fixed[i + 1]
        if arg in ("-a", "--amount") and following[:1] == "-" and following[1:2].isdigit():
            fixed[i:i + 2] = [f"--amount={following}"]
            break
    return fixed


def request_from_args(args: argparse.Namespace) -> PaymentRequest:
    return make_request(
        args.amount, args.currency, args.action, cheque=args.check, register=args.register,
        pos_id=args.pos_id, protocol_version=args.protocol_version, immediate=args.immediate,
        partial=args.partial, reference=args.reference, receipt=args.receipt,
        extra=tuple(args.tag),
    )


def _start_logging(level: str):
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    logger = logging.getLogger(__name__)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    return logger, handler


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(_attach_negative_amount(argv))
        request = request_from_args(args)
        if args.serial:  # what E+ cannot carry is a usage error
            from . import concert_pos
            concert_pos.prepare(request)
            concert_pos.speed(args.baud)
    except OptionError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_USAGE
    logger, handler = _start_logging(args.log_level)
    where = args.serial or f"{args.destination}:{args.port}"
    live = ElapsedLine(sys.stderr, where) if sys.stderr.isatty() else None
    try:
        if args.serial:
            result = concert_pos.pay(request, args.serial, long_answer=not args.short_answer,
                                     baud=args.baud, timeout=args.timeout,
                                     on_wait=live.update if live else None)
        else:
            result = pay(request, args.destination, args.port, args.timeout,
                         args.connect_timeout, on_wait=live.update if live else None)
    except KeyboardInterrupt:
        # Only possible before the request went out: after, pay() reports it.
        print(f"{PROG}: interrupted; nothing was sent", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if live:
            live.clear()
        logger.removeHandler(handler)
    try:
        _print_result(result, args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (`| head -1`) left: the exit status still tells the outcome.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return result.exit_status


def _print_result(result: PaymentResult, args: argparse.Namespace) -> None:
    if args.json:
        import json

        # JSON is UTF-8 (RFC 8259), whatever the locale: "€" and accents as they are.
        text = json.dumps(result_to_json(result), ensure_ascii=False) + "\n"
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            sys.stdout.write(text)
        else:
            sys.stdout.flush()
            buffer.write(text.encode("utf-8"))
        if result.problem:
            print(f"{PROG}: {result.problem}", file=sys.stderr)
    elif result.status == ERROR:
        print(f"{PROG}: {result.problem}", file=sys.stderr)
    else:
        print(format_result(result, colour=wants_colour(sys.stdout), raw=args.raw))
