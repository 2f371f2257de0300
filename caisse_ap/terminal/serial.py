"""The simulated terminal on a serial line, speaking Concert E+ (V2).

`caisse-ap-ip-server --serial pty` opens a pseudo-terminal and prints its
path (`--serial-link PATH` adds a stable symlink to it), for a POS that talks
to a device; `--serial /dev/ttyUSB0 --baud 9600` opens a real port (a
null-modem cable to a real POS). It runs beside the TCP terminal, in the same
process, on the same `Terminal`: settings, outcome sources, journal, events
and console serve both.

How a request goes through: the link layer (concert.ConcertLink, fed by the
reactor) hands over an E+ request; `SerialTerminalLink` gives the Terminal
its Caisse-AP equivalent (ConcertRequest.caisse_ap_fields) with the E+
exchange attached, the Terminal decides and answers as for TCP, and `send()`
turns that Caisse-AP answer into the E+ answer (ConcertAnswer.from_caisse_ap)
and sends it over the link. So the Terminal's connection interface
(receive, drop; send, hang_up, transaction_done) serves the serial line
unchanged.

A serial line is not a connection: there is nothing to close. A hang-up
outcome answers nothing, like no-answer; a POS that starts a new request
while one is still being decided has given up on it (it is dropped).

The device's descriptor sits on the reactor (a small FileDescriptor), never
blocking it, without pyserial. Twisted is imported once a line opens, so that
`--help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .. import concert, tlv
from ..concert import (
    BytesIgnored,
    ConcertExchange,
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
from ..concert_pos import DEFAULT_BAUD, configure
from ..i18n import _
from . import debuglines
from .options import UsageError

if TYPE_CHECKING:  # the service imports Twisted, which --help does without
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

    from .service import Terminal, Transaction

log = logging.getLogger("caisse_ap.terminal.serial")

PTY = "pty"
READ_SIZE = 4096


# --- the command line's hooks -------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(_("serial line (Concert E+), beside TCP"))
    add = group.add_argument
    add("--serial", default=None, metavar=_("DEVICE"),
        help=_("also serve Concert E+ POS on a serial line: 'pty' for a new pseudo-terminal "
               "(its path is printed), or a device such as /dev/ttyUSB0"))
    add("--serial-link", default=None, metavar=_("PATH"),
        help=_("with --serial pty: a symlink to the pseudo-terminal at PATH, for POS "
               "configured with a fixed device path (replaced if it is a symlink)"))
    add("--baud", type=int, default=DEFAULT_BAUD, metavar=_("RATE"),
        help=_("speed of a real serial device (default: %s; 8 bits, no parity, "
               "1 stop bit)") % DEFAULT_BAUD)


@dataclass(frozen=True)
class SerialOptions:
    """The serial line to serve: `device` is PTY or a device path."""

    device: str
    link: str | None = None  # a symlink to the pty
    baud: int = DEFAULT_BAUD
    # A real device, opened when the options are read, so that a mistake stops the
    # command before anything listens (a pty opens in start()).
    opened: SerialDevice | None = None


def options_from_args(args: argparse.Namespace) -> SerialOptions | None:
    """The serial line the options name (None without --serial), checked."""
    if args.serial_link is not None and args.serial != PTY:  # without --serial too
        raise UsageError(_("--serial-link needs --serial pty (a device is used at its own "
                           "path)"))
    if args.serial is None:
        return None
    if args.serial == PTY:
        if args.serial_link is not None:
            _check_link_path(args.serial_link)
        return SerialOptions(args.serial, args.serial_link, args.baud)
    return SerialOptions(args.serial, None, args.baud,
                         SerialDevice.open_port(args.serial, args.baud))


def start(terminal: Terminal, options: SerialOptions,
          reactor: IReactorTime | None = None) -> SerialTerminalLink:
    """Serve the serial line (a pty opens here); `stop()` the link to close it."""
    device = options.opened
    if device is None:
        device = (SerialDevice.open_pty(options.link) if options.device == PTY
                  else SerialDevice.open_port(options.device, options.baud))
    link = SerialTerminalLink(terminal, device, reactor)
    link.start()
    where = f" (link {device.link})" if device.link else ""
    log.info("Concert E+ terminal on serial line %s%s", device.path, where)
    return link


# --- the device ---------------------------------------------------------------------------

class SerialDevice:
    """An open serial line: a real port, or the master side of a pseudo-terminal.

    For a pty, the slave side stays open here too, so that a POS closing it
    never leaves the master in a hung-up state: POS can come and go.
    """

    def __init__(self, fd: int, path: str, held: int | None = None, link: str | None = None):
        self.fd = fd
        self.path = path
        self._held = held
        self.link = link

    @classmethod
    def open_pty(cls, link: str | None = None) -> SerialDevice:
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes as they are: no echo, no line editing, no CR/LF changes
        os.set_blocking(master, False)
        device = cls(master, os.ttyname(slave), held=slave)
        if link is not None:
            try:
                _replace_symlink(device.path, link)
            except (OSError, UsageError):
                device.close()
                raise
            device.link = link
        return device

    @classmethod
    def open_port(cls, path: str, baud: int = DEFAULT_BAUD) -> SerialDevice:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as error:
            raise UsageError(_("--serial: cannot open %(path)s: %(why)s")
                             % {"path": path, "why": error.strerror}) from None
        try:
            configure(fd, baud)
        except termios.error as error:
            os.close(fd)
            raise UsageError(_("--serial: %(path)s is not a serial device (%(why)s); give "
                               "'pty' or a device such as /dev/ttyUSB0")
                             % {"path": path, "why": error.args[-1]}) from None
        except ValueError:
            os.close(fd)
            raise UsageError(_("--baud %(rate)s: not a serial speed (9600, 19200, 115200...)")
                             % {"rate": baud}) from None
        return cls(fd, path)

    def close(self) -> None:
        if self.link is not None:
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self.path:
                    os.unlink(self.link)
        for fd in (self.fd, self._held):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _check_link_path(link: str) -> None:
    """UsageError if a symlink cannot be made (or replaced) at `link`."""
    if os.path.lexists(link) and not os.path.islink(link):
        raise UsageError(_("--serial-link %s: exists and is not a symlink: give a new path")
                         % link)
    folder = os.path.dirname(os.path.abspath(link))
    if not os.path.isdir(folder):
        raise UsageError(_("--serial-link %(link)s: no folder %(folder)s")
                         % {"link": link, "folder": folder})


def _replace_symlink(target: str, link: str) -> None:
    _check_link_path(link)
    temporary = f"{link}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    try:
        os.symlink(target, temporary)
        os.replace(temporary, link)  # atomic: a POS never finds it missing
    except OSError as error:
        raise UsageError(f"--serial-link {link}: {error.strerror}") from None


@lru_cache(maxsize=1)
def _descriptor_class() -> type:
    """The reactor's view of a device (a class built on first use: Twisted loads then)."""
    from twisted.internet import abstract, main

    class _Descriptor(abstract.FileDescriptor):
        """The device's file descriptor on the reactor: reads go to `on_data`, writes are queued."""

        def __init__(self, reactor: Any, fd: int, on_data: Callable[[bytes], None]):
            super().__init__(reactor)
            self.fd = fd
            self.on_data = on_data
            self.connected = 1  # FileDescriptor.write() drops data otherwise

        def fileno(self) -> int:
            return self.fd

        def doRead(self) -> Any:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return None
            except OSError as error:
                if error.errno == errno.EIO:  # a real port unplugged
                    return main.CONNECTION_LOST
                raise
            if not data:
                return main.CONNECTION_DONE
            self.on_data(data)
            return None

        def writeSomeData(self, data: bytes) -> Any:
            try:
                return os.write(self.fd, data)
            except BlockingIOError:
                return 0
            except OSError:
                return main.CONNECTION_LOST

        def connectionLost(self, reason: Failure) -> None:
            super().connectionLost(reason)
            log.error("serial line closed: %s; the serial terminal stops", reason.getErrorMessage())

    return _Descriptor


def _read_by_the_core(request: ConcertRequest) -> list[tlv.Field]:
    """The Caisse-AP fields of an E+ request, read by the core's decoder.

    A serial line carries any byte, and an E+ field holds what came (a
    private field of `é`, a NUL in the amount); a Caisse-AP value is printable
    ASCII. The same decoder as TCP's judges them: FrameError with the fields
    read before the bad one, which the terminal refuses (AE=01 AF=09, E+
    status 7) and the line goes on.
    """
    text = "".join(f"{tag}{len(value):03d}{value}" for tag, value in request.caisse_ap_fields())
    return tlv.decode(text)


# --- the terminal on the line ----------------------------------------------------------------

class SerialTerminalLink:
    """One serial line of the Terminal: E+ requests in, E+ answers out (a service.Connection)."""

    def __init__(self, terminal: Terminal, device: SerialDevice, reactor: Any = None,
                 timings: LinkTimings | None = None):
        self.terminal = terminal
        self.device = device
        self.reactor = reactor or terminal.reactor
        self.peer = f"serial:{device.link or device.path}"
        self.link = ConcertLink(Role.TERMINAL, self.reactor.seconds, timings)
        self.current: Transaction | None = None  # being decided
        self._exchange: ConcertExchange | None = None  # the last request's
        self._timer: IDelayedCall | None = None
        self._descriptor = _descriptor_class()(self.reactor, device.fd, self.data_received)

    def start(self) -> None:
        self._descriptor.startReading()

    def stop(self) -> None:
        self._cancel_timer()
        self._descriptor.stopReading()
        self._descriptor.stopWriting()
        self.device.close()

    # --- bytes in and out ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if debuglines.wanted(log):
            debuglines.debug(log, "%s read %s", self.peer, concert.describe_frame(data))
        self.link.receive_data(data)
        self._run_link()

    def _run_link(self) -> None:
        while True:
            event = self.link.next_event()
            if isinstance(event, NeedData):
                break
            self._handle(event)
        data = self.link.data_to_send()
        if data:
            if debuglines.wanted(log):
                debuglines.debug(log, "%s write %s", self.peer, concert.describe_frame(data))
            self._descriptor.write(data)
        self._set_timer(event.deadline)

    def _set_timer(self, deadline: float | None) -> None:
        self._cancel_timer()
        if deadline is not None:
            delay = max(deadline - self.reactor.seconds(), 0.0)
            self._timer = self.reactor.callLater(delay, self._time_passed)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _time_passed(self) -> None:
        self._timer = None
        self._run_link()

    def _handle(self, event: object) -> None:
        if isinstance(event, MessageReceived):
            self._request(event)
        elif isinstance(event, MessageSent):
            log.info("%s answer delivered", self.peer)
        elif isinstance(event, SendFailed):
            log.warning("%s answer not delivered: %s", self.peer, event.reason)
        elif isinstance(event, FrameRejected):
            log.warning("%s NAK to %s: %s", self.peer, concert.describe_frame(event.data),
                        event.reason)
        elif isinstance(event, ReceiveFailed):
            log.warning("%s exchange abandoned: %s", self.peer, event.reason)
        elif isinstance(event, BytesIgnored):
            log.warning("%s ignored %d bytes outside an exchange: %s", self.peer,
                        len(event.data), concert.describe_frame(event.data[:80]))

    def _request(self, event: MessageReceived) -> None:
        if self.current is not None:
            log.info("%s a new request: transaction %d is dropped", self.peer, self.current.id)
            dropped, self.current = self.current, None
            self.terminal.drop(dropped)
        request = ConcertRequest.parse(event.message)  # the link checked its size
        exchange = self._exchange = ConcertExchange(request, event.frame)
        try:
            fields = _read_by_the_core(request)
        except tlv.FrameError as error:  # answered as a malformed Caisse-AP request
            txn = self.terminal.receive_error(self, error, exchange=exchange)
        else:
            txn = self.terminal.receive(self, fields, exchange=exchange)
        if txn.pending:
            self.current = txn

    # --- service.Connection ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        """The Terminal's Caisse-AP answer: sent as its E+ equivalent."""
        exchange = self._exchange
        if exchange is None:
            return
        # Valid by construction (the Terminal encoded it): the core's decoder reads it back.
        message = exchange.answered(tlv.decode(data),
                                    self.terminal.settings.profile.concert_immediate_status)
        self.link.send(message)
        self._run_link()

    def hang_up(self) -> None:
        log.info("%s hang-up: a serial line cannot be closed; nothing is answered", self.peer)

    def transaction_done(self, transaction: Transaction) -> None:
        if self.current is transaction:
            self.current = None
