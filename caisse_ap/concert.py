"""Concert E+ (V2): the fixed-length format of serial and USB terminals, sans-I/O.

Two parts, neither touching a device, a clock or a reactor:

- the messages: `ConcertRequest` (the POS's 34 characters) and `ConcertAnswer`
  (the terminal's 25 or 80), with their conversions to and from Caisse-AP
  fields, so that the simulated terminal decides an E+ request exactly as a
  Caisse-AP one and the command-line POS prints an E+ answer as it prints a
  Caisse-AP one (one set of tables, both directions);
- the link layer: `ConcertLink`, fed bytes and a clock, handing out typed
  events (the h11 pattern: `receive_data()`, `next_event()`, `send()`,
  `data_to_send()`, an explicit `state`), for either side of the cable.

Sources: the POS side of the `pyTeliumManager` and `pypostelium` packages
(what real point-of-sale software sends and reads), PayXpert's "Concert V2 -
Legacy" page. Where they disagree (PayXpert gives one-character delay and
authorisation fields and an answer that repeats them), this module does what
both POS packages send and read:

    request  POS(2) amount(8) answer-flag(1) mode(1) type(1) currency(3)
             private(10) delay(4: A010/A011) authorisation(4: B010/B011)  = 34
    answer   POS(2) status(1) amount(8) mode(1) [card data(55) if flag 1]
             currency(3) private(10)                                     = 25 or 80

Framed: STX message ETX LRC, the LRC being the XOR of the message and ETX
(28 and 83 bytes for the two answers, the sizes both packages read).

Link layer, each way: the sender writes ENQ, the receiver answers ACK; the
sender writes the frame, the receiver answers ACK (or NAK for a bad LRC or a
message of the wrong size: the sender sends it again); the sender ends with
EOT. A sender gets no answer or NAK: it tries again, `retries` times.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import money, tags
from .messages import PROTOCOL_VERSION, PaymentRequest
from .tlv import Field

STX, ETX, EOT, ENQ, ACK, NAK = b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x15"
CONTROL_NAMES = {STX: "STX", ETX: "ETX", EOT: "EOT", ENQ: "ENQ", ACK: "ACK", NAK: "NAK"}
ENCODING = "latin-1"  # E+ is ASCII; latin-1 keeps any stray byte, one character each

PROTOCOL = "concert-e+"  # how a transaction names this protocol (the API's "protocol")

REQUEST_SIZE = 34
SHORT_ANSWER_SIZE = 25
LONG_ANSWER_SIZE = 80
CARD_DATA_SIZE = 55
AMOUNT_DIGITS = 8
PRIVATE_SIZE = 10

# --- code tables (knowledge as data) ------------------------------------------------

SHORT_ANSWER, LONG_ANSWER = "0", "1"  # answer flag: without / with the card data
ANSWER_AT_END, ANSWER_AT_ONCE = "A010", "A011"  # delay field
NO_FORCED_AUTHORISATION, FORCED_AUTHORISATION = "B010", "B011"
CARD = "1"  # the payment mode of a card payment

# Payment mode (E+) <-> payment application CC (Caisse-AP), same networks.
MODE_TO_APPLICATION = {
    "0": "000", "1": "001", "2": "002", "3": "004", "5": "005", "6": "006",
    "8": "008", "9": "009", "A": "00A", "C": "00C", "U": "00U",
}
# An answer's CC back to a mode: the table above, plus the contactless applications.
APPLICATION_TO_MODE = {
    **{application: mode for mode, application in MODE_TO_APPLICATION.items()},
    "00B": "1", "00D": "2",
}
MODE_LABELS = {
    "0": "autre", "1": "carte bancaire", "2": "American Express", "3": "Cetelem",
    "5": "Cofinoga", "6": "Diners Club", "8": "Franfinance", "9": "JCB",
    "A": "Accord", "C": "chèque", "F": "Fintrax EMV", "O": "Moneo", "U": "UnionPay",
}
# Transaction type (E+) <-> action CD (Caisse-AP): the codes Concert kept.
TYPE_TO_ACTION = {"0": "0", "1": "1", "2": "2"}
ACTION_TO_TYPE = {action: kind for kind, action in TYPE_TO_ACTION.items()}
TYPE_LABELS = {"0": "débit", "1": "crédit (remboursement)", "2": "annulation",
               "4": "automatique"}
ANSWER_FLAG_LABELS = {SHORT_ANSWER: "réponse courte", LONG_ANSWER: "réponse avec données carte"}
DELAY_LABELS = {ANSWER_AT_END: "réponse en fin de transaction", ANSWER_AT_ONCE: "réponse immédiate"}
AUTHORISATION_LABELS = {NO_FORCED_AUTHORISATION: "autorisation selon le terminal",
                        FORCED_AUTHORISATION: "autorisation forcée"}

# Status (E+) <-> action status AE (Caisse-AP). E+ has no reason code: every
# operation not done is 7. 9 (named "not verified" by pyTeliumManager) is the
# answer given at once (A011), before the outcome is known.
STATUS_TO_ACTION_STATUS = {"0": "10", "7": "01", "9": "11"}
ACTION_STATUS_TO_STATUS = {ae: status for status, ae in STATUS_TO_ACTION_STATUS.items()}
STATUS_LABELS = {"0": "opération effectuée", "7": "opération non effectuée",
                 "9": "demande prise en compte (non vérifiée)"}

# The Caisse-AP field an E+ request stands for, of what E+ does not carry (CZ: the
# version this project writes).
REQUEST_POS_ID = "000000000000"  # E+ has no POS identifier (CJ)


class ConcertError(ValueError):
    """A message that is not E+, or a request that E+ cannot express; the text says why."""


def lrc(message: bytes) -> int:
    """The check byte of a frame: XOR of the message bytes and ETX."""
    check = ETX[0]
    for byte in message:
        check ^= byte
    return check


def frame(message: bytes) -> bytes:
    """STX message ETX LRC."""
    return STX + message + ETX + bytes([lrc(message)])


def _text(message: bytes | str) -> str:
    return message.decode(ENCODING) if isinstance(message, bytes) else message


def _fits_amount(units: str) -> bool:
    """Minor units that an E+ amount (8 digits) can hold."""
    return units.isascii() and units.isdigit() and len(units.lstrip("0")) <= AMOUNT_DIGITS


def _labelled(table: dict[str, str], code: str) -> str:
    return table.get(code, f"code inconnu '{code}'")


# --- messages ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ConcertRequest:
    """The POS's request, each field as its characters (read without judging them).

    What the values mean is judged once, by the Caisse-AP core, on the fields
    `caisse_ap_fields()` gives: a non-numeric amount gets the same refusal
    over both protocols.
    """

    pos_number: str = "01"
    amount: str = "00000000"  # minor units, 8 digits
    answer_flag: str = LONG_ANSWER
    payment_mode: str = CARD
    transaction_type: str = "0"
    currency: str = money.EUR.numeric
    private: str = " " * PRIVATE_SIZE
    delay: str = ANSWER_AT_END
    authorisation: str = NO_FORCED_AUTHORISATION

    WIDTHS = (("pos_number", 2), ("amount", 8), ("answer_flag", 1), ("payment_mode", 1),
              ("transaction_type", 1), ("currency", 3), ("private", 10), ("delay", 4),
              ("authorisation", 4))

    @classmethod
    def parse(cls, message: bytes | str) -> ConcertRequest:
        text = _text(message)
        if len(text) != REQUEST_SIZE:
            raise ConcertError(f"a request is {REQUEST_SIZE} characters, not {len(text)}")
        values, offset = {}, 0
        for name, width in cls.WIDTHS:
            values[name] = text[offset:offset + width]
            offset += width
        return cls(**values)

    def encode(self) -> bytes:
        text = "".join(getattr(self, name) for name, _ in self.WIDTHS)
        if len(text) != REQUEST_SIZE:
            raise ConcertError(f"a request is {REQUEST_SIZE} characters, not {len(text)}")
        return text.encode(ENCODING)

    @property
    def long_answer(self) -> bool:
        return self.answer_flag == LONG_ANSWER

    def described(self) -> list[list[str]]:
        """[name, value, label] per field, in frame order: what the console shows."""
        labels = {
            "answer_flag": _labelled(ANSWER_FLAG_LABELS, self.answer_flag),
            "payment_mode": _labelled(MODE_LABELS, self.payment_mode),
            "transaction_type": _labelled(TYPE_LABELS, self.transaction_type),
            "delay": _labelled(DELAY_LABELS, self.delay),
            "authorisation": _labelled(AUTHORISATION_LABELS, self.authorisation),
        }
        return [[name, getattr(self, name), labels.get(name, "")] for name, _ in self.WIDTHS]

    def caisse_ap_fields(self) -> list[Field]:
        """The Caisse-AP request this one stands for (for the simulated terminal).

        CZ and CJ, which E+ lacks, are constants; the answer flag has no
        Caisse-AP field (the E+ answer is shaped from this request); a type or
        mode without equivalent is passed on as is, for the core to refuse.
        """
        fields = [
            ("CZ", PROTOCOL_VERSION),
            ("CJ", REQUEST_POS_ID),
            ("CA", self.pos_number),
            ("CE", self.currency),
            ("BA", "1" if self.delay == ANSWER_AT_ONCE else "0"),
            ("CD", TYPE_TO_ACTION.get(self.transaction_type, self.transaction_type)),
        ]
        application = MODE_TO_APPLICATION.get(self.payment_mode)
        if application is not None:
            fields.append(("CC", application))
        fields.append(("CB", self.amount))
        if self.authorisation == FORCED_AUTHORISATION:
            fields.append(("BB", "1"))
        if self.private.strip():
            fields.append(("CF", self.private))
        return fields

    @classmethod
    def from_payment_request(cls, request: PaymentRequest,
                             long_answer: bool = True) -> ConcertRequest:
        """The E+ request for a Caisse-AP `PaymentRequest` (the POS side), or ConcertError."""
        values = dict(request.fields())
        problems = [f"{tags.tag(tag).name} ({tag})" for tag in values
                    if tag not in _CARRIED and values[tag] != _HARMLESS.get(tag)]
        if values.get("CC", "001") not in APPLICATION_TO_MODE:
            problems.append(f"payment application CC={values['CC']}")
        if problems:
            raise ConcertError(f"Concert E+ cannot carry: {', '.join(problems)}")
        kind = ACTION_TO_TYPE.get(values.get("CD", ""))
        if kind is None:
            raise ConcertError(f"Concert E+ has no transaction type for CD={values.get('CD')}")
        amount = values.get("CB", "")
        if not _fits_amount(amount):
            raise ConcertError(f"a Concert E+ amount is at most {AMOUNT_DIGITS} digits of "
                               "minor units")
        register, currency = values.get("CA", ""), values.get("CE", "")
        private = values.get("CF", "")
        if len(register) != 2 or len(currency) != 3 or len(private) > PRIVATE_SIZE:
            raise ConcertError(f"Concert E+ takes a 2-character register number, a 3-digit "
                               f"currency and at most {PRIVATE_SIZE} characters of reference")
        return cls(
            pos_number=register,
            amount=amount.zfill(AMOUNT_DIGITS)[-AMOUNT_DIGITS:],
            answer_flag=LONG_ANSWER if long_answer else SHORT_ANSWER,
            payment_mode=APPLICATION_TO_MODE[values.get("CC", "001")],
            transaction_type=kind,
            currency=currency,
            private=private.ljust(PRIVATE_SIZE),
            delay=ANSWER_AT_ONCE if values.get("BA") == "1" else ANSWER_AT_END,
            authorisation=(FORCED_AUTHORISATION if values.get("BB") == "1"
                           else NO_FORCED_AUTHORISATION),
        )


# The Caisse-AP request fields an E+ request carries (CZ and CJ: dropped, E+
# has none), and the values of others that ask for nothing (BF=0: no partial
# payment). A request with anything else (a receipt, a partial payment...)
# cannot go over E+.
_CARRIED = frozenset({"CZ", "CJ", "CA", "CB", "CD", "CE", "BA", "BB", "CC", "CF"})
_HARMLESS = {"BF": "0"}


@dataclass(frozen=True)
class ConcertAnswer:
    """The terminal's answer; `card_data` is None in the short answer."""

    pos_number: str
    status: str
    amount: str
    payment_mode: str
    currency: str
    private: str
    card_data: str | None = None

    @classmethod
    def parse(cls, message: bytes | str) -> ConcertAnswer:
        text = _text(message)
        if len(text) == SHORT_ANSWER_SIZE:
            card_data, rest = None, text[12:]
        elif len(text) == LONG_ANSWER_SIZE:
            card_data, rest = text[12:12 + CARD_DATA_SIZE], text[12 + CARD_DATA_SIZE:]
        else:
            raise ConcertError(f"an answer is {SHORT_ANSWER_SIZE} or {LONG_ANSWER_SIZE} "
                               f"characters, not {len(text)}")
        return cls(text[0:2], text[2], text[3:11], text[11], rest[0:3], rest[3:13], card_data)

    def encode(self) -> bytes:
        card = "" if self.card_data is None else self.card_data
        text = (self.pos_number + self.status + self.amount + self.payment_mode + card
                + self.currency + self.private)
        if len(text) not in (SHORT_ANSWER_SIZE, LONG_ANSWER_SIZE):
            raise ConcertError(f"an answer is {SHORT_ANSWER_SIZE} or {LONG_ANSWER_SIZE} "
                               f"characters, not {len(text)}")
        return text.encode(ENCODING)

    def described(self) -> list[list[str]]:
        """[name, value, label] per field, in frame order: what the console shows."""
        rows = [
            ["pos_number", self.pos_number, ""],
            ["status", self.status, _labelled(STATUS_LABELS, self.status)],
            ["amount", self.amount, ""],
            ["payment_mode", self.payment_mode, _labelled(MODE_LABELS, self.payment_mode)],
        ]
        if self.card_data is not None:
            rows.append(["card_data", self.card_data, ""])
        return rows + [["currency", self.currency, ""], ["private", self.private, ""]]

    @classmethod
    def from_caisse_ap(cls, request: ConcertRequest, answer: Iterable[Field],
                       immediate_status: str = "9") -> ConcertAnswer:
        """The E+ answer for the terminal's Caisse-AP answer to `request` (terminal side).

        The POS number, currency and private data are the request's, as sent;
        the amount is the answer's (or the request's if it does not fit); the
        card data is the masked card number, or the cheque's CMC7 line.
        What E+ cannot carry (reason code, receipt, expiry, authorisation
        number, AID, contract number) is left out. An answer that takes the
        request into account (AE=11, to A011) gets `immediate_status`: 9 by
        default, a guess (no public source shows one); a profile may say 0.
        """
        values = dict(answer)
        amount = values.get("CB", "")
        if not _fits_amount(amount):
            amount = request.amount
        card_data = None
        if request.long_answer:
            card_data = values.get("AA") or values.get("AD") or ""
            card_data = card_data[:CARD_DATA_SIZE].ljust(CARD_DATA_SIZE)
        return cls(
            pos_number=request.pos_number,
            status=(immediate_status if values.get("AE") == "11"
                    else ACTION_STATUS_TO_STATUS.get(values.get("AE", ""), "7")),
            amount=amount.zfill(AMOUNT_DIGITS)[-AMOUNT_DIGITS:],
            payment_mode=APPLICATION_TO_MODE.get(values.get("CC", ""), request.payment_mode),
            currency=request.currency,
            private=request.private,
            card_data=card_data,
        )

    def caisse_ap_fields(self) -> list[Field]:
        """The Caisse-AP answer fields this one stands for (for the POS's output).

        An unknown status gives no AE, which TerminalAnswer reads as unreadable.
        """
        fields: list[Field] = [("CA", self.pos_number)]
        action_status = STATUS_TO_ACTION_STATUS.get(self.status)
        if action_status is not None:
            fields.append(("AE", action_status))
        amount = self.amount
        if amount.isascii() and amount.isdigit():
            amount = money.format_minor_units(int(amount))
        fields += [("CB", amount), ("CE", self.currency)]
        application = MODE_TO_APPLICATION.get(self.payment_mode)
        if application is not None:
            fields.append(("CC", application))
        if self.card_data and self.card_data.strip():
            fields.append(("AA", self.card_data.strip()))
        if self.private.strip():
            fields.append(("CF", self.private.strip()))
        return fields


@dataclass
class ConcertExchange:
    """One E+ transaction as it went over the line, for the journal and the console.

    A transaction of the simulated terminal holds one (Transaction.exchange):
    its `request` and `answer` fields are the Caisse-AP equivalents, these the
    frames themselves. (Whether the POS took the answer is in the log: the
    journal records the transaction when it is answered.)
    """

    request: ConcertRequest
    request_frame: bytes
    answer: ConcertAnswer | None = None
    answer_frame: bytes | None = None
    protocol: str = PROTOCOL

    def answered(self, fields: Iterable[Field], immediate_status: str = "9") -> bytes:
        """Record the E+ answer for the terminal's Caisse-AP `fields`; its message.
        `immediate_status`: the profile's E+ status for an immediate answer."""
        self.answer = ConcertAnswer.from_caisse_ap(self.request, fields, immediate_status)
        message = self.answer.encode()
        self.answer_frame = frame(message)
        return message

    def to_json(self) -> dict[str, object]:
        answer = self.answer
        return {
            "request_frame": describe_frame(self.request_frame),
            "request": self.request.described(),
            "answer_frame": describe_frame(self.answer_frame) if self.answer_frame else None,
            "answer": answer.described() if answer else None,
        }


def describe_frame(data: bytes) -> str:
    """Bytes as people read them on a serial link: control characters by name."""
    out = []
    for byte in data:
        name = CONTROL_NAMES.get(bytes([byte]))
        if name is not None:
            out.append(f"<{name}>")
        elif 32 <= byte < 127:
            out.append(chr(byte))
        else:
            out.append(f"<{byte:02x}>")
    return "".join(out)


# --- link layer ----------------------------------------------------------------------------

class Role(enum.Enum):
    """Which end of the cable: it decides the sizes of the messages received."""

    TERMINAL = "terminal"  # receives requests, sends answers
    POS = "pos"  # sends requests, receives answers


MESSAGE_SIZES = {
    Role.TERMINAL: frozenset({REQUEST_SIZE}),
    Role.POS: frozenset({SHORT_ANSWER_SIZE, LONG_ANSWER_SIZE}),
}


class LinkState(enum.Enum):
    IDLE = "idle"
    AWAITING_ENQ_ACK = "awaiting-enq-ack"  # sending: ENQ written
    AWAITING_FRAME_ACK = "awaiting-frame-ack"  # sending: frame written
    RECEIVING = "receiving"  # ENQ acknowledged, the frame is coming
    AWAITING_EOT = "awaiting-eot"  # frame acknowledged, the sender should close


@dataclass(frozen=True)
class LinkTimings:
    """Time-outs in seconds and the number of retries.

    pyTeliumManager waits 1 s for each ACK and for a whole answer;
    pypostelium 3 s ("the spec says up to 3 seconds to get the LRC").
    """

    ack: float = 2.0  # a sender waits this for ACK or NAK, after ENQ or a frame
    frame: float = 3.0  # a receiver waits this for the whole frame after its ACK or NAK
    eot: float = 2.0  # a receiver waits this for EOT after acknowledging the frame
    retries: int = 3  # a sender tries again this many times (ENQ, then frame)


# Events, frozen.

@dataclass(frozen=True)
class NeedData:
    """Read more; call next_event() again at `deadline` (clock time) if nothing comes."""

    deadline: float | None


@dataclass(frozen=True)
class MessageReceived:
    """A whole message, acknowledged; `frame` is its exact bytes."""

    message: bytes
    frame: bytes


@dataclass(frozen=True)
class MessageSent:
    """The peer acknowledged our message; EOT is written."""

    message: bytes


@dataclass(frozen=True)
class SendFailed:
    """The peer never acknowledged; EOT is written. `frame_sent`: the frame went out at least
    once (the peer may have read it)."""

    message: bytes
    reason: str
    frame_sent: bool


@dataclass(frozen=True)
class FrameRejected:
    """A frame answered with NAK (bad LRC, wrong size, cut, too long)."""

    data: bytes
    reason: str


@dataclass(frozen=True)
class ReceiveFailed:
    """An exchange the sender began and never finished (it vanished, or gave up)."""

    reason: str


@dataclass(frozen=True)
class BytesIgnored:
    """Bytes that mean nothing where they came (no ENQ before them, noise...)."""

    data: bytes


Event = (NeedData | MessageReceived | MessageSent | SendFailed | FrameRejected | ReceiveFailed
         | BytesIgnored)


class ConcertLink:
    """One end of an E+ serial link: bytes and a clock in, events and bytes out.

    Feed what the device read with `receive_data()`; call `next_event()` until
    it returns NeedData, then write `data_to_send()`. `send(message)` queues a
    message: it goes out when the link is idle (after the exchange in
    progress). When both ends write ENQ at once, the POS has the line: a
    terminal gives up its answer (the POS gave up waiting for it), a POS
    ignores the terminal's ENQ.
    """

    def __init__(self, role: Role, clock: Callable[[], float] = time.monotonic,
                 timings: LinkTimings | None = None):
        self.role = role
        self.clock = clock
        self.timings = timings or LinkTimings()
        self.state = LinkState.IDLE
        self._sizes = MESSAGE_SIZES[role]
        self._max_frame = max(self._sizes) + 3
        self._received = bytearray()
        self._to_send = bytearray()
        self._events: deque[Event] = deque()
        self._ignored = bytearray()
        self._deadline: float | None = None
        self._frame = bytearray()  # the frame being received, from STX
        self._acknowledged: bytes | None = None  # last frame ACKed in this exchange
        self._rejections = 0
        self._outbox: deque[bytes] = deque()
        self._sending: bytes | None = None
        self._tries = 0
        self._frame_sent = False

    # --- the interface ---------------------------------------------------------

    def send(self, message: bytes) -> None:
        """Queue `message` (without STX/ETX/LRC) to be sent."""
        self._outbox.append(bytes(message))
        self._start_sending()

    def receive_data(self, data: bytes) -> None:
        self._received += data

    def data_to_send(self) -> bytes:
        data, self._to_send = bytes(self._to_send), bytearray()
        return data

    @property
    def busy(self) -> bool:
        """A message is being sent or waits to be."""
        return self._sending is not None or bool(self._outbox)

    def next_event(self) -> Event:
        if not self._events:
            if self._deadline is not None and self.clock() >= self._deadline:
                self._deadline = None
                self._time_out()
            position = 0
            while position < len(self._received) and not self._events:
                self._on_byte(bytes(self._received[position:position + 1]))
                position += 1
            del self._received[:position]
            self._flush_ignored()
        if self._events:
            return self._events.popleft()
        return NeedData(self._deadline)

    # --- bytes -------------------------------------------------------------------

    def _on_byte(self, byte: bytes) -> None:
        state = self.state
        if state is LinkState.AWAITING_ENQ_ACK:
            self._on_enq_answer(byte)
        elif state is LinkState.AWAITING_FRAME_ACK:
            self._on_frame_answer(byte)
        elif state is LinkState.RECEIVING and self._frame:
            self._on_frame_byte(byte)
        elif byte == ENQ:
            # A new exchange (or the sender trying its ENQ again): go ahead.
            self._flush_ignored()
            if state is not LinkState.RECEIVING:
                self._acknowledged = None
                self._rejections = 0
            self._write(ACK)
            self._enter(LinkState.RECEIVING, self.timings.frame)
        elif state is LinkState.IDLE:
            self._ignored += byte
        elif byte == STX:  # RECEIVING, or AWAITING_EOT: our ACK may have been lost
            self._flush_ignored()
            self._frame = bytearray(byte)
            self._enter(LinkState.RECEIVING, self.timings.frame)
        elif byte == EOT:
            # ENQ, ACK, EOT without a message is how a POS checks that the
            # terminal is there (pyTeliumManager's is_ok): nothing failed.
            self._enter(LinkState.IDLE, None)
            self._start_sending()
        else:
            self._ignored += byte

    def _on_frame_byte(self, byte: bytes) -> None:
        frame = self._frame
        if frame[-1:] == ETX:  # this byte is the LRC
            frame += byte
            self._frame = bytearray()
            self._frame_complete(bytes(frame))
        elif byte == STX:
            self._reject(bytes(frame), "cut frame: a new STX before ETX")
            self._frame = bytearray(byte)
        else:
            frame += byte
            if len(frame) > self._max_frame:
                self._frame = bytearray()
                self._reject(bytes(frame), f"no ETX within {self._max_frame} bytes")

    def _frame_complete(self, data: bytes) -> None:
        message = data[1:-2]
        if lrc(message) != data[-1]:
            self._reject(data, f"wrong LRC {data[-1]:02x}, expected {lrc(message):02x}")
        elif len(message) not in self._sizes:
            sizes = " or ".join(str(size) for size in sorted(self._sizes))
            self._reject(data, f"a message of {len(message)} characters, expected {sizes}")
        else:
            self._write(ACK)
            if data != self._acknowledged:  # else the same frame again: our ACK was lost
                self._events.append(MessageReceived(message, data))
            self._acknowledged = data
            self._enter(LinkState.AWAITING_EOT, self.timings.eot)

    def _reject(self, data: bytes, reason: str) -> None:
        self._write(NAK)
        self._events.append(FrameRejected(data, reason))
        self._rejections += 1
        if self._rejections > self.timings.retries:
            self._events.append(ReceiveFailed(f"{self._rejections} frames rejected"))
            self._enter(LinkState.IDLE, None)
            self._start_sending()
        else:
            self._enter(LinkState.RECEIVING, self.timings.frame)

    def _on_enq_answer(self, byte: bytes) -> None:
        if byte == ACK:
            self._tries = 0
            self._write_frame()
        elif byte == NAK:
            self._retry_enq("the peer answered NAK to ENQ")
        elif byte == ENQ and self.role is Role.TERMINAL:
            # The POS begins a new exchange instead of taking our answer: it
            # gave up on that transaction; it has the line.
            message, self._sending = self._sending, None
            assert message is not None  # an exchange of ours was under way
            self._events.append(SendFailed(message, "the POS sent ENQ instead of ACK: it began "
                                                    "a new exchange", False))
            self._enter(LinkState.IDLE, None)
            self._on_byte(byte)
        else:
            self._ignored += byte  # a POS keeps the line when the terminal sends ENQ too

    def _on_frame_answer(self, byte: bytes) -> None:
        if byte == ACK:
            message, self._sending = self._sending, None
            assert message is not None  # the frame just acknowledged
            self._write(EOT)
            self._events.append(MessageSent(message))
            self._enter(LinkState.IDLE, None)
            self._start_sending()
        elif byte == NAK:
            self._retry_frame("the peer answered NAK to the frame")
        else:
            self._ignored += byte

    # --- time ----------------------------------------------------------------------

    def _time_out(self) -> None:
        state = self.state
        if state is LinkState.AWAITING_ENQ_ACK:
            self._retry_enq(f"no answer to ENQ within {self.timings.ack:g} s")
        elif state is LinkState.AWAITING_FRAME_ACK:
            self._retry_frame(f"no answer to the frame within {self.timings.ack:g} s")
        elif state is LinkState.RECEIVING and self._frame:
            cut, self._frame = bytes(self._frame), bytearray()
            self._reject(cut, f"cut frame: no LRC within {self.timings.frame:g} s")
        elif state is LinkState.RECEIVING:
            self._events.append(ReceiveFailed(f"no frame within {self.timings.frame:g} s "
                                              "after ACK"))
            self._enter(LinkState.IDLE, None)
            self._start_sending()
        elif state is LinkState.AWAITING_EOT:  # the message is in: no EOT is no harm
            self._enter(LinkState.IDLE, None)
            self._start_sending()

    # --- sending ---------------------------------------------------------------------

    def _start_sending(self) -> None:
        if self.state is not LinkState.IDLE or self._sending is not None or not self._outbox:
            return
        self._sending = self._outbox.popleft()
        self._tries, self._frame_sent = 0, False
        self._write(ENQ)
        self._enter(LinkState.AWAITING_ENQ_ACK, self.timings.ack)

    def _retry_enq(self, reason: str) -> None:
        self._tries += 1
        if self._tries > self.timings.retries:
            self._give_up(reason)
        else:
            self._write(ENQ)
            self._enter(LinkState.AWAITING_ENQ_ACK, self.timings.ack)

    def _retry_frame(self, reason: str) -> None:
        self._tries += 1
        if self._tries > self.timings.retries:
            self._give_up(reason)
        else:
            self._write_frame()

    def _write_frame(self) -> None:
        assert self._sending is not None
        self._write(frame(self._sending))
        self._frame_sent = True
        self._enter(LinkState.AWAITING_FRAME_ACK, self.timings.ack)

    def _give_up(self, reason: str) -> None:
        message, self._sending = self._sending, None
        assert message is not None
        self._write(EOT)
        tries = self.timings.retries + 1
        self._events.append(SendFailed(message, f"{reason} ({tries} tries)", self._frame_sent))
        self._enter(LinkState.IDLE, None)
        self._start_sending()

    # --- helpers ---------------------------------------------------------------------

    def _enter(self, state: LinkState, timeout: float | None) -> None:
        self.state = state
        self._deadline = None if timeout is None else self.clock() + timeout

    def _write(self, data: bytes) -> None:
        self._to_send += data

    def _flush_ignored(self) -> None:
        if self._ignored:
            self._events.append(BytesIgnored(bytes(self._ignored)))
            self._ignored = bytearray()
