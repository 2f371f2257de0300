"""Speed of the validating codec against a naive reference loop, in one run.

Decodes and encodes a typical request and a typical answer many times with
`caisse_ap.tlv` and with a naive codec written here (slices and int(), no
validation at all), and prints operations per second and their ratio. The
target is a validating decoder at 0.5x the naive loop or better.

The machine is shared and noisy, so the two codecs run in interleaved short
rounds (validating, naive, validating, naive...) and each figure is the
median over the rounds: a burst of load hits both sides alike.

Usage: python3 bench/codec.py [--seconds S]   (default 4 seconds in all)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

# Run from a plain clone without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caisse_ap import tlv  # noqa: E402

DECODER_TARGET = 0.5
ROUND_SECONDS = 0.02  # one timed batch; long enough for the clock, short against noise

# The request of the widely used open-source POS script (112.45 EUR).
REQUEST = b"CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB00511245"

# What a terminal answers to it when the card payment is approved.
ANSWER_FIELDS = [
    ("CZ", "0300"),
    ("CJ", "012345678901"),
    ("CA", "01"),
    ("CE", "978"),
    ("CD", "0"),
    ("CB", "11245"),
    ("AE", "10"),
    ("AF", "01"),
    ("CC", "001"),
    ("CI", "1"),
    ("AA", "497010XXXXXX1234"),
    ("AB", "2712"),
    ("AC", "A1B2C3"),
    ("AI", "A0000000421010"),
    ("CG", "4242424"),
]
ANSWER = tlv.encode(ANSWER_FIELDS)


def naive_decode(frame: bytes) -> list[tuple[str, str]]:
    """The shortest loop that reads fields: trusts every length, checks nothing."""
    text = frame.decode("latin-1")
    fields = []
    pos, end = 0, len(text)
    while pos < end:
        size = int(text[pos + 2:pos + 5])
        fields.append((text[pos:pos + 2], text[pos + 5:pos + 5 + size]))
        pos += 5 + size
    return fields


def naive_encode(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in fields).encode("ascii")


def _batch_size(function, argument) -> int:
    """Calls per batch so that one batch lasts about ROUND_SECONDS."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            function(argument)
        if time.perf_counter() - start >= ROUND_SECONDS / 4:
            return max(1, int(count * ROUND_SECONDS / (time.perf_counter() - start)))
        count *= 2


def _rate(function, argument, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function(argument)
    return count / (time.perf_counter() - start)


def _cases() -> list[tuple[str, object, object, object]]:
    request_fields = tlv.decode(REQUEST)
    return [
        ("decode request", tlv.decode, naive_decode, REQUEST),
        ("decode answer", tlv.decode, naive_decode, ANSWER),
        ("encode request", tlv.encode, naive_encode, request_fields),
        ("encode answer", tlv.encode, naive_encode, ANSWER_FIELDS),
    ]


def _check_agreement(cases) -> None:
    """Both codecs must do the same work, or the ratio means nothing."""
    for name, ours, naive, argument in cases:
        if ours(argument) != naive(argument):
            raise SystemExit(f"bench: {name}: the two codecs disagree")


def run(seconds: float) -> tuple[int, dict[str, tuple[float, float, float]]]:
    """Rounds until `seconds` have passed: (rounds, {case: (ours, naive, ratio)}).

    Each round times one batch of each codec back to back, the order
    alternating from round to round; the ratio is taken within the round (so
    both sides of it saw the same load), then the median over the rounds.
    """
    cases = _cases()
    _check_agreement(cases)
    sizes = {name: (_batch_size(ours, arg), _batch_size(naive, arg))
             for name, ours, naive, arg in cases}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in cases}
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 5 or time.perf_counter() < deadline:
        for name, ours, naive, argument in cases:
            ours_count, naive_count = sizes[name]
            if rounds % 2:
                naive_rate = _rate(naive, argument, naive_count)
                ours_rate = _rate(ours, argument, ours_count)
            else:
                ours_rate = _rate(ours, argument, ours_count)
                naive_rate = _rate(naive, argument, naive_count)
            samples[name].append((ours_rate, naive_rate))
        rounds += 1
    medians = {}
    for name, pairs in samples.items():
        medians[name] = (statistics.median(ours for ours, _ in pairs),
                         statistics.median(naive for _, naive in pairs),
                         statistics.median(ours / naive for ours, naive in pairs))
    return rounds, medians


def report(rounds: int, medians: dict[str, tuple[float, float, float]]) -> bool:
    print(f"request {len(REQUEST)} bytes, answer {len(ANSWER)} bytes;"
          f" medians over {rounds} interleaved rounds")
    print(f"{'operation':<16} {'validating ops/s':>17} {'naive ops/s':>12} {'ratio':>6}")
    met = True
    for name, (ours, naive, ratio) in medians.items():
        note = ""
        if name.startswith("decode"):
            ok = ratio >= DECODER_TARGET
            met = met and ok
            note = f"  (target {DECODER_TARGET}x: {'met' if ok else 'MISSED'})"
        print(f"{name:<16} {ours:>17,.0f} {naive:>12,.0f} {ratio:>5.2f}x{note}")
    print("decoder target " + ("met" if met else "missed"))
    return met


def _seconds(argv: list[str]) -> float:
    if not argv:
        return 4.0
    if len(argv) == 2 and argv[0] == "--seconds":
        try:
            value = float(argv[1])
        except ValueError:
            value = -1.0
        if 0 < value <= 600:
            return value
    print("usage: python3 bench/codec.py [--seconds S] (S between 0 and 600)", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    seconds = _seconds(sys.argv[1:] if argv is None else argv)
    return 0 if report(*run(seconds)) else 1  # like bench/server.py: 1 when a target is missed


if __name__ == "__main__":
    sys.exit(main())
