"""caisse-ap-ip: Caisse-AP over IP for point-of-sale developers.

The public API other tools use: `encode`, `decode` and `FrameError` (framing),
and the modules `messages` (requests and answers), `tags` (labels) and
`money` (amounts and currencies).
"""

from .tlv import FrameDecoder, FrameError, decode, encode

__version__ = "1.0.0"

__all__ = ["FrameDecoder", "FrameError", "__version__", "decode", "encode"]
