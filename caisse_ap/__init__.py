"""caisse-ap-ip: Caisse-AP over IP for point-of-sale developers.

Paying, in three lines (docs/library.md has the asyncio and Twisted forms):

    from caisse_ap import PaymentTerminal, Outcome
    result = PaymentTerminal("192.168.1.50").pay("12.50", currency="EUR")
    if result.outcome is Outcome.APPROVED: ...

`SerialPaymentTerminal(device)` offers the same actions and results over a
serial link speaking Concert E+ (a USB terminal, or the simulated one on a
pty). Also public: `encode`, `decode`, `FrameDecoder` and `FrameError` (framing),
the modules `messages` (requests and answers), `tags` (labels) and `money`
(amounts and currencies), and `caisse_ap.testing` (a simulated terminal for
a POS project's tests).

The payment names are loaded on first use (PEP 562), so that `import
caisse_ap` stays as light as the framing core: the command-line client's
start-up time depends on it.
"""

from __future__ import annotations

from .errors import CaisseApError, InvalidRequest, TerminalUnreachable
from .tlv import FrameDecoder, FrameError, decode, encode

TYPE_CHECKING = False  # typing itself costs start-up time
if TYPE_CHECKING:
    from .client import PaymentTerminal
    from .concert_pos import SerialPaymentTerminal
    from .messages import Action
    from .payment import Outcome, PaymentResult

__version__ = "1.0.0"

__all__ = [
    "Action",
    "CaisseApError",
    "FrameDecoder",
    "FrameError",
    "InvalidRequest",
    "Outcome",
    "PaymentResult",
    "PaymentTerminal",
    "SerialPaymentTerminal",
    "TerminalUnreachable",
    "__version__",
    "decode",
    "encode",
]

def __getattr__(name: str) -> object:
    """The payment names, imported on first use (each a plain import)."""
    if name == "PaymentTerminal":
        from .client import PaymentTerminal
        return PaymentTerminal
    if name == "SerialPaymentTerminal":
        from .concert_pos import SerialPaymentTerminal
        return SerialPaymentTerminal
    if name in ("Outcome", "PaymentResult"):
        from . import payment
        return getattr(payment, name)
    if name == "Action":
        from .messages import Action
        return Action
    raise AttributeError(f"module 'caisse_ap' has no attribute {name!r}")
