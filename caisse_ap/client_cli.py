"""The command-line point of sale, caisse-ap-ip-client: argparse and printing over the library.

It builds a request with `caisse_ap.payment.make_request`, sends it with
`caisse_ap.PaymentTerminal` and prints the PaymentResult, for people or as
JSON (`payment.result_json`, which the web console's test payment returns too).

The library is imported inside the functions that use it, not at the top:
`--help` and a usage error then cost little more than starting Python with
argparse (bench/client_startup.py). Twisted is never imported, and iso4217
only for a currency other than EUR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import tlv  # light, and imported by the package anyway
from .errors import CaisseApError
from .i18n import N_, _, language, set_up_command
from .number_text import read_decimal
from .tlv import Field

TYPE_CHECKING = False  # typing itself costs start-up time
if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence
    from typing import NoReturn, TextIO

    from .client import PaymentTerminal
    from .concert_pos import SerialPaymentTerminal
    from .errors import TerminalUnreachable
    from .messages import PaymentRequest
    from .payment import PaymentResult

PROG = "caisse-ap-ip-client"

EXIT_DONE = 0  # approved, or accepted (immediate answer)
EXIT_DECLINED = 1  # the terminal says the operation was not done
EXIT_USAGE = 2
EXIT_UNKNOWN = 3  # outcome unknown or protocol error: check the terminal
EXIT_NOT_SENT = 4  # connection failed before anything was sent
EXIT_INTERRUPTED = 130  # Ctrl-C before the request was sent

# By Outcome (its word: the library is not imported for --help).
EXIT_BY_OUTCOME = {"approved": EXIT_DONE, "accepted": EXIT_DONE, "declined": EXIT_DECLINED,
                   "unknown": EXIT_UNKNOWN}
COLOURS = {"approved": "32", "accepted": "32", "declined": "31", "unknown": "33"}

DEFAULT_TIMEOUT = 180.0  # the library's (payment.DEFAULT_TIMEOUT), not imported for --help
DEFAULT_CONNECT_TIMEOUT = 5.0

UNKNOWN_ADVICE = N_("check the terminal before trying again")
EXIT_HELP = N_("""\
exit status:
  0  approved, or accepted (immediate answer)
  1  declined: the operation was not done
  2  usage error (bad option or amount)
  3  outcome unknown or protocol error (time-out, early close, malformed
     answer, echo mismatch): check the terminal before trying again
  4  connection failed before anything was sent
  130  interrupted (Ctrl-C) before anything was sent

A negative amount is a refund; write it attached: -a=-12,50 or -a -12,50.
The client never resends a payment by itself.""")
# The action's word in the human output (--json keeps the English name).
ACTION_WORDS = {"debit": N_("debit"), "refund": N_("refund"),
                "cancellation": N_("cancellation"), "duplicate": N_("duplicate")}


# The option that sets a request field, by InvalidRequest.field (payment.make_request's
# argument names), and by tag for what Concert E+ cannot carry (concert.uncarried).
# The amount's messages say "amount" already.
REQUEST_OPTIONS = {"currency": "-c/--currency",
                   "register": "-r/--register", "pos_id": "--pos-id",
                   "protocol_version": "--protocol-version", "reference": "--reference"}
SERIAL_OPTIONS = {"CK": "--receipt", "BF": "--partial"}


class OptionError(CaisseApError, ValueError):
    """A command-line option a user got wrong."""


# --- presenting the result ----------------------------------------------------------------


def result_to_json(result: PaymentResult) -> dict[str, object]:
    """The result as a JSON-ready dict: the object `--json` prints (payment.result_json)."""
    from .payment import result_json

    return result_json(result)


def unreachable_to_json(request: PaymentRequest, error: TerminalUnreachable,
                        elapsed_s: float) -> dict[str, object]:
    """What `--json` prints when nothing was sent (payment.unreachable_json)."""
    from .payment import unreachable_json

    return unreachable_json(request, error, elapsed_s)


def headline(result: PaymentResult) -> str:
    """The first line of the human output: what happened, for how much."""
    from .payment import Outcome, action_word, amount_parts, amount_text

    *_parts, amount = amount_parts(result.request, language())
    action = action_word(result.request)
    what = amount if action == "debit" else f"{amount} ({_(ACTION_WORDS.get(action, action))})"
    answer = result.answer
    if result.outcome is Outcome.APPROVED:
        granted = answer.amount if answer else None
        if granted is not None and granted < result.request.amount:
            *_parts, part = amount_text(str(granted), result.request.value("CE") or "",
                                        language())
            return (_("APPROVED  %(part)s of %(what)s (partial payment)")
                    % {"part": part, "what": what})
        return _("APPROVED  %s") % what
    if result.outcome is Outcome.ACCEPTED:
        return _("ACCEPTED by the terminal (immediate answer; not paid yet)  %s") % what
    if result.outcome is Outcome.DECLINED:
        reason = answer.reason if answer else None
        if reason is None:
            why = answer.missing_reason(result.request) if answer else _("no answer")
            return _("DECLINED — %(why)s  %(what)s") % {"why": why, "what": what}
        details = f": {reason.details}" if reason.details else ""
        return (_("DECLINED — %(label)s (AF=%(code)s%(details)s)  %(what)s")
                % {"label": reason.label, "code": reason.code, "details": details,
                   "what": what})
    return (_("UNKNOWN OUTCOME — %(problem)s; %(advice)s  %(what)s")
            % {"problem": result.problem_local, "advice": _(UNKNOWN_ADVICE), "what": what})


def _show_value(value: str, width: int = 40) -> str:
    return value if len(value) <= width else value[:width - 3] + "..."


def format_result(result: PaymentResult, colour: bool = False, raw: bool = False) -> str:
    """The human output: result line, each answer field with its label, receipt, frames."""
    from . import tags

    first = headline(result)
    if colour:
        first = f"\x1b[1;{COLOURS[result.outcome]}m{first}\x1b[0m"
    lines = [first]
    answer = result.answer
    if answer and answer.fields:
        shown = [(tag, _show_value(value)) for tag, value in answer.fields]
        width = max(len(value) for _tag, value in shown)
        lines += [f"  {tag} {value:<{width}}  {tags.field_label(tag, value)}".rstrip()
                  for tag, value in shown]
    if result.dropped_bytes:
        size = len(result.dropped_bytes)
        lines += [f"  Attention : {size} octet{'s' if size > 1 else ''} reçu"
                  f"{'s' if size > 1 else ''} après la réponse, illisible"
                  f"{'s' if size > 1 else ''} avec elle, ignoré{'s' if size > 1 else ''} : "
                  f"{_show_value(_printable(result.dropped_bytes))}"]
    receipt = answer.receipt if answer else None
    if receipt:
        lines += ["", _("--- receipt ---"), receipt.rstrip("\r\n"), "---------------"]
    if raw:
        received = _printable(result.answer_frame) if result.answer_frame else "-"
        lines += ["", _("sent:     %s") % _printable(result.request_frame),
                  _("received: %s") % received]
    return "\n".join(lines)


def _printable(frame: bytes) -> str:
    return repr(frame)[2:-1]  # bytes repr: CR/LF and non-ASCII bytes escaped


def wants_colour(stream: object) -> bool:
    """Colours only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


class ElapsedLine:
    """A live "waiting... 12 s" line on a terminal, erased when the answer comes."""

    def __init__(self, stream: TextIO, where: str) -> None:
        self.stream = stream
        self.where = where
        self.shown = False

    def update(self, elapsed: float) -> None:
        self.stream.write("\r" + _("waiting for the terminal at %(where)s... %(seconds)d s ")
                          % {"where": self.where, "seconds": int(elapsed)})
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# --- command line ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise OptionError(message)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(_("a port from 1 to 65535 is expected, not %r") % text)
    return int(text)


def _seconds(text: str) -> float:
    """Seconds above 0, with a decimal comma or point ("2,5")."""
    try:
        value = float(read_decimal(text))
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(
            _("a positive number of seconds is expected (2,5 or 2.5), not %r") % text)
    return value


def _printable_ascii(text: str, longest: int) -> bool:
    return text.isascii() and text.isprintable() and 0 < len(text) <= longest


def _reference(text: str) -> str:
    """--reference: what every terminal echoes (tags.PORTABLE_REFERENCE_SIZE)."""
    from .tags import PORTABLE_REFERENCE_SIZE

    if not 1 <= len(text) <= PORTABLE_REFERENCE_SIZE:
        raise argparse.ArgumentTypeError(
            _("1 to %(longest)d characters are expected, not %(length)d")
            % {"longest": PORTABLE_REFERENCE_SIZE, "length": len(text)})
    if not _printable_ascii(text, PORTABLE_REFERENCE_SIZE):
        raise argparse.ArgumentTypeError(
            _("cannot build the request with %r: the terminal takes printable ASCII "
              "characters only (letters without accents, digits, punctuation)") % text)
    return text


def _tag_option(text: str) -> Field:
    tag, sep, value = text.partition("=")
    if not sep or not tlv.is_tag(tag):
        raise argparse.ArgumentTypeError(
            _("%r is not XX=VALUE with XX two upper-case letters") % text)
    if not _printable_ascii(value, tlv.MAX_VALUE_LENGTH):
        raise argparse.ArgumentTypeError(
            _("the value of %s must be 1 to 999 printable ASCII characters (no accents)") % tag)
    return tag, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=_("Send one Caisse-AP over IP payment request to a payment terminal\n"
                      "(real or simulated) and show its decoded answer."),
        epilog=_(EXIT_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("-l", "--log-level", default="info", type=str.lower,
        choices=["debug", "info", "warn", "warning", "error", "critical"], metavar=_("LEVEL"),
        help=_("debug, info, warn (or warning), error or critical (default: info)"))
    add("-d", "--destination", default="127.0.0.1", metavar=_("HOST"),
        help=_("terminal address, an IP or a DNS name (default: 127.0.0.1)"))
    add("-p", "--port", default=8888, type=_port, help=_("terminal TCP port (default: 8888)"))
    add("-a", "--amount", default="112.45", metavar=_("AMOUNT"),
        help=_("amount, with '.' or ',' before the decimals; negative is a refund "
               "(default: 112.45)"))
    add("-ck", "--check", action="store_true", help=_("print a cheque (CC=00C)"))
    add("-c", "--currency", default="EUR", metavar=_("CODE"),
        help=_("ISO 4217 alphabetic code (default: EUR)"))
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--refund", dest="action", action="store_const", const="refund",
                         help=_("refund (CD=1)"))
    actions.add_argument("--cancel", dest="action", action="store_const", const="cancellation",
                         help=_("cancel a previous transaction (CD=2)"))
    actions.add_argument("--duplicate", dest="action", action="store_const", const="duplicate",
                         help=_("reprint the last receipt (CD=3)"))
    add("-r", "--register", default="01", metavar="NN",
        help=_("cash register number, CA, 2 digits (default: 01)"))
    add("--pos-id", default="012345678901", metavar=_("DIGITS"),
        help=_("POS protocol identifier, CJ, 12 digits (default: 012345678901)"))
    add("--protocol-version", default="0300", metavar="NNNN",
        help=_("protocol version, CZ, 4 digits (default: 0300)"))
    add("--immediate", action="store_true", help=_("ask for an immediate answer (BA=1)"))
    add("--partial", action="store_true",
        help=_("accept a partial payment (BF=1; else BF is not sent)"))
    add("--reference", type=_reference, metavar=_("TEXT"),
        help=_("merchant reference echoed by the terminal (CF): 1 to 32 printable ASCII "
               "characters"))
    add("--receipt", action="store_true",
        help=_("ask for the customer receipt (CK=100) and print it"))
    add("--tag", action="append", default=[], type=_tag_option, metavar=_("XX=VALUE"),
        help=_("add or override any request field (repeatable)"))
    add("--timeout", default=DEFAULT_TIMEOUT, type=_seconds, metavar=_("SECONDS"),
        help=_("seconds to wait for the answer (default: 180)"))
    add("--connect-timeout", default=DEFAULT_CONNECT_TIMEOUT, type=_seconds,
        metavar=_("SECONDS"), help=_("seconds to wait for the connection (default: 5)"))
    add("--json", action="store_true",
        help=_("print one JSON object on stdout, nothing else (the same in every language)"))
    add("--raw", action="store_true", help=_("also print the frames sent and received"))
    add("--serial", metavar=_("DEVICE"),
        help=_("speak Concert E+ on this serial device (a pty, /dev/ttyUSB0...) instead "
               "of IP"))
    add("--baud", type=int, default=9600, metavar=_("RATE"),
        help=_("serial speed with --serial (default: 9600)"))
    add("--short-answer", action="store_true",
        help=_("with --serial, ask for the short answer, without card data"))
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
    """The request the options describe, or OptionError."""
    from .errors import InvalidRequest
    from .payment import make_request

    try:
        return make_request(
            args.amount, args.currency, args.action, cheque=args.check, register=args.register,
            pos_id=args.pos_id, protocol_version=args.protocol_version,
            immediate=args.immediate, partial=args.partial, reference=args.reference,
            receipt=args.receipt, extra_fields=args.tag,
        )
    except InvalidRequest as error:
        option = REQUEST_OPTIONS.get(error.field or "")
        message = error.local.replace("extra_fields", "--tag")  # in the user's language
        raise OptionError(_("%(option)s: %(message)s") % {"option": option, "message": message}
                          if option else message) from None


def _terminal(args: argparse.Namespace, request: PaymentRequest
              ) -> PaymentTerminal | SerialPaymentTerminal:
    """The terminal the options point at, over IP or (--serial) Concert E+; OptionError for
    a request or a speed the serial link cannot carry."""
    from .errors import InvalidRequest

    if not args.serial:
        from .client import PaymentTerminal

        return PaymentTerminal(args.destination, args.port, timeout=args.timeout,
                               connect_timeout=args.connect_timeout)
    from .concert_pos import SerialPaymentTerminal

    try:
        terminal = SerialPaymentTerminal(args.serial, baud=args.baud, timeout=args.timeout,
                                         long_answer=not args.short_answer)
    except InvalidRequest:  # the speed
        raise OptionError(_("--baud %(rate)s: not a serial speed (9600, 19200, 115200...)")
                          % {"rate": args.baud}) from None
    _check_serial_request(request, args)
    try:
        terminal.check(request)  # anything else E+ cannot say, in the library's words
    except InvalidRequest as error:
        raise OptionError(f"--serial: {error}") from None
    return terminal


def _check_serial_request(request: PaymentRequest, args: argparse.Namespace) -> None:
    """OptionError naming the options whose fields Concert E+ cannot carry."""
    from .concert import ACTION_TO_TYPE, AMOUNT_DIGITS, PRIVATE_SIZE, uncarried

    options = [SERIAL_OPTIONS.get(tag, f"--tag {tag}") for tag in uncarried(request)]
    if (request.value("CD") or "") not in ACTION_TO_TYPE:
        options.append("--duplicate" if args.action == "duplicate" else "--tag CD")
    if options:  # what E+ cannot carry is a usage error
        raise OptionError(
            _("%(options)s: not possible with --serial, Concert E+ has no field for it; "
              "drop it, or pay over IP") % {"options": ", ".join(dict.fromkeys(options))})
    if len((request.value("CB") or "").lstrip("0")) > AMOUNT_DIGITS:
        raise OptionError(_("-a/--amount: Concert E+ (--serial) takes at most %d digits of "
                            "minor units (999999.99 EUR)") % AMOUNT_DIGITS)
    if len(request.value("CF") or "") > PRIVATE_SIZE:
        raise OptionError(_("--reference: Concert E+ (--serial) takes at most %d characters")
                          % PRIVATE_SIZE)


def _start_logging(level: str) -> tuple[logging.Logger, logging.Handler]:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    logger = logging.getLogger("caisse_ap")  # the library's loggers are below it
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    return logger, handler


def main(argv: Sequence[str] | None = None) -> int:
    set_up_command()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(_attach_negative_amount(argv))
        request = request_from_args(args)
        terminal = _terminal(args, request)
    except OptionError as error:
        print(_("%(prog)s: %(message)s") % {"prog": PROG, "message": error}, file=sys.stderr)
        return EXIT_USAGE
    from .errors import TerminalUnreachable

    logger, handler = _start_logging(args.log_level)
    live = ElapsedLine(sys.stderr, args.serial or f"{args.destination}:{args.port}") \
        if sys.stderr.isatty() else None
    terminal.on_wait = live.update if live else None
    started = time.monotonic()
    try:
        outcome: PaymentResult | TerminalUnreachable = terminal.send(request)
    except TerminalUnreachable as error:
        outcome = error
    except KeyboardInterrupt:
        # Only possible before the request went out: after, send() reports it.
        print(_("%s: interrupted; nothing was sent") % PROG, file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if live:
            live.clear()
        logger.removeHandler(handler)
    try:
        if isinstance(outcome, TerminalUnreachable):
            _print_unreachable(request, outcome, time.monotonic() - started, args)
        else:
            _print_result(outcome, args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (`| head -1`) left: the exit status still tells the outcome.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(outcome, TerminalUnreachable):
        return EXIT_NOT_SENT
    return EXIT_BY_OUTCOME[outcome.outcome]


def _print_json(document: dict[str, object]) -> None:
    import json

    # JSON is UTF-8 (RFC 8259), whatever the locale: "€" and accents as they are.
    text = json.dumps(document, ensure_ascii=False) + "\n"
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        buffer.write(text.encode("utf-8"))
        buffer.flush()


def _print_result(result: PaymentResult, args: argparse.Namespace) -> None:
    if args.json:
        _print_json(result_to_json(result))
        if result.problem:  # the JSON keeps it in English; the person reads it here
            print(_("%(prog)s: %(message)s") % {"prog": PROG, "message": result.problem_local},
                  file=sys.stderr)
    else:
        print(format_result(result, colour=wants_colour(sys.stdout), raw=args.raw))


def _print_unreachable(request: PaymentRequest, error: TerminalUnreachable, elapsed_s: float,
                       args: argparse.Namespace) -> None:
    if args.json:
        _print_json(unreachable_to_json(request, error, elapsed_s))
    print(_("%(prog)s: %(reason)s; nothing was sent") % {"prog": PROG, "reason": error.reason},
          file=sys.stderr)
