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
from .client import ERROR, UNKNOWN, WAIT_TICK, OptionError, PaymentResult, _judge
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
from .messages import PaymentRequest, TerminalAnswer

log = logging.getLogger("caisse_ap.concert_pos")

DEFAULT_BAUD = 9600
READ_SIZE = 4096


def prepare(request: PaymentRequest, long_answer: bool = True) -> ConcertRequest:
    """The E+ request for `request`, or OptionError saying what E+ cannot carry."""
    try:
        return ConcertRequest.from_payment_request(request, long_answer)
    except ConcertError as error:
        raise OptionError(str(error), "serial") from None


def speed(baud: int) -> int:
    """The termios constant for `baud` bits per second, or OptionError."""
    constant = getattr(termios, f"B{baud}", None)
    if constant is None:
        raise OptionError(f"{baud} bauds is not a serial speed this system knows", "baud")
    return constant


def configure(fd: int, baud: int = DEFAULT_BAUD) -> None:
    """Raw 8N1 at `baud`, no modem control, no flow control; stale input dropped.

    Raises OptionError (a ValueError) for an unknown speed, termios.error for
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


def pay(request: PaymentRequest, device: str, *, long_answer: bool = True,
        baud: int = DEFAULT_BAUD, timeout: float = 180.0, timings: LinkTimings | None = None,
        on_wait: Callable[[float], None] | None = None) -> PaymentResult:
    """Send `request` as Concert E+ on `device` (a path) and read the answer.

    Raises OptionError, before anything is sent, for a request E+ cannot
    carry (see prepare). Never raises for device or protocol trouble: that is
    in the result's status (ERROR: nothing reached the terminal; UNKNOWN: it
    may have) and problem. `timeout` counts from the terminal's ACK of the
    request; `on_wait` hears the seconds elapsed about every second meanwhile.
    """
    message = prepare(request, long_answer).encode()
    started = time.monotonic()
    received = bytearray()

    def result(status: str, answer: TerminalAnswer | None = None,
               problem: str | None = None) -> PaymentResult:
        return PaymentResult(status, request, concert.frame(message), answer=answer,
                             answer_frame=bytes(received), problem=problem,
                             elapsed_s=time.monotonic() - started)

    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as error:
        return result(ERROR, problem=f"cannot open {device}: {error.strerror}; nothing was sent")
    try:
        configure(fd, baud)
    except termios.error as error:
        os.close(fd)
        return result(ERROR, problem=f"{device} is not a serial device: {error.args[-1]}; "
                                     "nothing was sent")
    try:
        answer_message, failure = _exchange(fd, message, received, timeout, timings, on_wait,
                                            started)
    except OSError as error:
        # Some bytes may have gone out, even the whole request: the outcome is not known.
        return result(UNKNOWN, problem=f"{device}: {error.strerror or error} during the "
                                       "exchange")
    finally:
        os.close(fd)
    if answer_message is None:
        status, problem = failure
        return result(status, problem=problem)
    answer = TerminalAnswer.parse(ConcertAnswer.parse(answer_message).caisse_ap_fields())
    status, problem = _judge(request, answer)
    return result(status, answer, problem)


def _exchange(fd: int, message: bytes, received: bytearray, timeout: float,
              timings: LinkTimings | None, on_wait: Callable[[float], None] | None,
              started: float) -> tuple[bytes | None, tuple[str, str]]:
    """(the answer message, ("", "")), or (None, (status, problem)) when none came."""
    link = ConcertLink(Role.POS, time.monotonic, timings)
    link.send(message)
    answer_deadline: float | None = None  # once the terminal has the request
    try:
        while True:
            event = link.next_event()
            _write_all(fd, link.data_to_send())  # ENQ, a frame, ACK, EOT...
            if isinstance(event, NeedData):
                if answer_deadline is not None and time.monotonic() >= answer_deadline:
                    return None, (UNKNOWN, f"no answer within {timeout:g} s")
                _read(fd, link, received, _wait(event.deadline, answer_deadline, on_wait))
                if on_wait is not None and answer_deadline is not None:
                    on_wait(time.monotonic() - started)
            elif isinstance(event, MessageSent):
                answer_deadline = time.monotonic() + timeout
            elif isinstance(event, SendFailed):
                if event.frame_sent:
                    return None, (UNKNOWN, f"the terminal did not acknowledge: {event.reason}")
                return None, (ERROR, f"the terminal does not answer: {event.reason}; "
                                     "nothing was sent")
            elif isinstance(event, MessageReceived):
                return event.message, ("", "")
            elif isinstance(event, (FrameRejected, ReceiveFailed)):
                log.warning("serial link: %s", event.reason)
            elif isinstance(event, BytesIgnored):
                log.warning("serial link: ignored %s", concert.describe_frame(event.data))
    except KeyboardInterrupt:
        if link.state is concert.LinkState.AWAITING_ENQ_ACK:
            raise  # the request has not gone out: the command line says nothing was sent
        return None, (UNKNOWN, "interrupted while waiting for the answer")


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
