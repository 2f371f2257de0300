"""The POS side of Concert E+ (V2) over a serial device: one payment, blocking.

`pay(request, device)` turns a Caisse-AP `PaymentRequest` into its E+
request (`prepare`), runs the link layer (concert.ConcertLink) over the device, and
returns the same `PaymentResult` as a payment over IP: the E+ answer is read
as its Caisse-AP equivalent, so the command line prints it, judges it and
chooses its exit status the same way. `request_frame` and `answer_frame`
are the bytes that went over the line.

Standard library only (os, select, termios): the client never imports
Twisted, and pyserial is not needed for a pty or a USB-serial port.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import termios
import time
import tty
from collections.abc import Callable

from . import concert
from .client import WAIT_TICK
from .concert import (
    BytesIgnored,
    ConcertAnswer,
    ConcertError,
    ConcertLink,
    ConcertRequest,
    FrameRejected,
    LinkTimings,
    MessageReceived,
    MessageSent,
    NeedData,
    ReceiveFailed,
    Role,
    SendFailed,
)
from .errors import InvalidRequest, TerminalUnreachable
from .messages import PaymentRequest, TerminalAnswer
from .payment import DEFAULT_TIMEOUT, Actions, PaymentResult, payment_result

log = logging.getLogger("caisse_ap.concert_pos")

DEFAULT_BAUD = 9600
READ_SIZE = 4096


def prepare(request: PaymentRequest, long_answer: bool = True) -> ConcertRequest:
    """The E+ request for `request`, or InvalidRequest saying what E+ cannot carry."""
    try:
        return ConcertRequest.from_payment_request(request, long_answer)
    except ConcertError as error:
        raise InvalidRequest(str(error), "serial") from None


def speed(baud: int) -> int:
    """The termios constant for `baud` bits per second, or InvalidRequest."""
    constant = getattr(termios, f"B{baud}", None)
    if constant is None:
        raise InvalidRequest(f"{baud} bauds is not a serial speed this system knows", "baud")
    return int(constant)


def configure(fd: int, baud: int = DEFAULT_BAUD) -> None:
    """Raw 8N1 at `baud`, no modem control, no flow control; stale input dropped.

    Raises InvalidRequest (a ValueError) for an unknown speed, termios.error for
    a descriptor that is not a terminal.
    """
    constant = speed(baud)
    tty.setraw(fd)
    attributes = termios.tcgetattr(fd)
    attributes[2] = (attributes[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE)
                     | termios.CS8 | termios.CLOCAL | termios.CREAD)
    attributes[0] &= ~(termios.IXON | termios.IXOFF | termios.IXANY)
    attributes[4] = attributes[5] = constant
    termios.tcsetattr(fd, termios.TCSANOW, attributes)
    termios.tcflush(fd, termios.TCIOFLUSH)


class SerialPaymentTerminal(Actions[PaymentResult]):
    """A payment terminal on a serial device (a pty, /dev/ttyUSB0...), spoken to in Concert E+.

    The same actions and PaymentResult as `caisse_ap.PaymentTerminal` over IP;
    what E+ cannot carry (a receipt, a partial payment...) raises
    InvalidRequest before anything is sent, and a device that cannot be
    opened, or a terminal that never takes the request, TerminalUnreachable.
    """

    def __init__(self, device: str, *, baud: int = DEFAULT_BAUD, long_answer: bool = True,
                 timeout: float = DEFAULT_TIMEOUT, register: str = "01",
                 timings: LinkTimings | None = None,
                 on_wait: Callable[[float], None] | None = None) -> None:
        super().__init__(device, 0, timeout=timeout, register=register)
        speed(baud)
        self.device = device
        self.baud = baud
        self.long_answer = long_answer
        self.timings = timings
        self.on_wait = on_wait

    def check(self, request: PaymentRequest) -> None:
        """InvalidRequest if E+ cannot carry `request`."""
        prepare(request, self.long_answer)

    def send(self, request: PaymentRequest) -> PaymentResult:
        return pay(request, self.device, long_answer=self.long_answer, baud=self.baud,
                   timeout=self.timeout, timings=self.timings, on_wait=self.on_wait)


def pay(request: PaymentRequest, device: str, *, long_answer: bool = True,
        baud: int = DEFAULT_BAUD, timeout: float = DEFAULT_TIMEOUT,
        timings: LinkTimings | None = None,
        on_wait: Callable[[float], None] | None = None) -> PaymentResult:
    """Send `request` as Concert E+ on `device` (a path) and read the answer.

    Raises InvalidRequest, before anything is sent, for a request E+ cannot
    carry (see prepare), and TerminalUnreachable when nothing reached the
    terminal. Device or protocol trouble once the request may have reached
    it is an UNKNOWN result with its problem. `timeout` counts from the
    terminal's ACK of the request; `on_wait` hears the seconds elapsed about
    every second meanwhile.
    """
    message = prepare(request, long_answer).encode()
    started = time.monotonic()
    received = bytearray()

    def result(answer: TerminalAnswer | None = None,
               problem: str | None = None) -> PaymentResult:
        return payment_result(request, concert.frame(message), answer, bytes(received),
                              problem, time.monotonic() - started)

    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as error:
        raise TerminalUnreachable(device, 0, f"cannot open {device}: {error.strerror}") from None
    try:
        configure(fd, baud)
    except termios.error as error:
        os.close(fd)
        raise TerminalUnreachable(device, 0, f"{device} is not a serial device: "
                                             f"{error.args[-1]}") from None
    try:
        answer_message, problem = _exchange(fd, device, message, received, timeout, timings,
                                            on_wait, started)
    except TerminalUnreachable:
        raise
    except OSError as error:
        # Some bytes may have gone out, even the whole request: the outcome is not known.
        return result(problem=f"{device}: {error.strerror or error} during the exchange")
    finally:
        os.close(fd)
    if answer_message is None:
        return result(problem=problem)
    return result(TerminalAnswer.parse(ConcertAnswer.parse(answer_message).caisse_ap_fields()))


def _exchange(fd: int, device: str, message: bytes, received: bytearray, timeout: float,
              timings: LinkTimings | None, on_wait: Callable[[float], None] | None,
              started: float) -> tuple[bytes | None, str]:
    """(the answer message, ""), or (None, why none came): TerminalUnreachable when the
    terminal never took the request."""
    link = ConcertLink(Role.POS, time.monotonic, timings)
    link.send(message)
    answer_deadline: float | None = None  # once the terminal has the request
    try:
        while True:
            event = link.next_event()
            _write_all(fd, link.data_to_send())  # ENQ, a frame, ACK, EOT...
            if isinstance(event, NeedData):
                if answer_deadline is not None and time.monotonic() >= answer_deadline:
                    return None, f"no answer within {timeout:g} s"
                _read(fd, link, received, _wait(event.deadline, answer_deadline, on_wait))
                if on_wait is not None and answer_deadline is not None:
                    on_wait(time.monotonic() - started)
            elif isinstance(event, MessageSent):
                answer_deadline = time.monotonic() + timeout
            elif isinstance(event, SendFailed):
                if event.frame_sent:
                    return None, f"the terminal did not acknowledge: {event.reason}"
                raise TerminalUnreachable(device, 0, f"the terminal does not answer: "
                                                     f"{event.reason}")
            elif isinstance(event, MessageReceived):
                return event.message, ""
            elif isinstance(event, (FrameRejected, ReceiveFailed)):
                log.warning("serial link: %s", event.reason)
            elif isinstance(event, BytesIgnored):
                log.warning("serial link: ignored %s", concert.describe_frame(event.data))
    except KeyboardInterrupt:
        if link.state is concert.LinkState.AWAITING_ENQ_ACK:
            raise  # the request has not gone out: the command line says nothing was sent
        return None, "interrupted while waiting for the answer"


def _wait(link_deadline: float | None, answer_deadline: float | None,
          on_wait: Callable[[float], None] | None) -> float:
    deadlines = [d for d in (link_deadline, answer_deadline) if d is not None]
    wait = min(deadlines) - time.monotonic() if deadlines else WAIT_TICK
    if on_wait is not None:
        wait = min(wait, WAIT_TICK)
    return max(wait, 0.0)


def _read(fd: int, link: ConcertLink, received: bytearray, wait: float) -> None:
    readable, _, _ = select.select([fd], [], [], wait)
    if not readable:
        return
    try:
        data = os.read(fd, READ_SIZE)
    except BlockingIOError:
        return
    if not data:
        raise OSError(errno.EIO, "the device was closed")
    received += data
    link.receive_data(data)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        select.select([], [fd], [])
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            continue
        data = data[written:]
