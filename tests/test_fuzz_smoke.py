"""A bounded fuzz smoke over real sockets: mutated requests never break the terminal.

A few thousand frames, each a valid request mutated at random (seed printed;
set CAISSE_AP_FUZZ_SEED to replay one), each sent on its own connection that
the POS then half-closes. Checked: no traceback (no error logged), every
answer parses and fits the tag table (no duplicate tag, sizes respected), at
most one answer per request start (one if there is none), and a valid payment is served after.
Run with `-s` to see the figures.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
from pathlib import Path

from conftest import TIMEOUT

from caisse_ap import tags, tlv

FRAMES = [case["frame"].encode() for case in
          json.loads((Path(__file__).parent / "frames.json").read_text())["valid"]]
BASES = FRAMES + [frame + b"CK003100CF005FUZZY" for frame in FRAMES]
COUNT = 2500
TIME_BOUND = 60.0  # seconds: a slow machine checks fewer frames rather than time out
REQUEST_START = re.compile(rb"CZ[0-9]{3}")
INSERTS = [b"CZ", b"CZ004", b"\r\n", b"\x00", b"\xff", b"999", b"000", b"ZT", b"AE00210"]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(8)
        if kind == 0 and data:  # a byte changed
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:  # a slice removed
            del data[at:at + rng.randint(1, 12)]
        elif kind == 2:  # something inserted
            data[at:at] = rng.choice(INSERTS)
        elif kind == 3:  # a slice repeated
            data[at:at] = data[at:at + rng.randint(1, 20)]
        elif kind == 4:  # a length digit changed
            lengths = [m.start() + 2 for m in re.finditer(rb"[A-Z]{2}[0-9]{3}", data)]
            if lengths:
                data[rng.choice(lengths) + rng.randrange(3)] = rng.choice(b"0123456789")
        elif kind == 5:  # cut short
            del data[at:]
        elif kind == 6:  # another request after it
            data += rng.choice(BASES)
        else:  # a value made huge
            data[at:at] = b"QQ999" + b"x" * 999
    return bytes(data)


def exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send data, half-close, and read until the terminal closes."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def answers_in(received: bytes) -> list[list[tuple[str, str]]]:
    """The answers written, one after the other: each starts with CZ (FrameError if any
    does not parse)."""
    decoder = tlv.FrameDecoder()
    decoder.feed(received)
    answers = []
    while (answer := decoder.next_message()) is not None:
        answers.append(answer)
    last = decoder.finish()
    return answers + ([last] if last else [])


def test_fuzz_smoke(start_terminal, pos, caplog):
    seed = int(os.environ.get("CAISSE_AP_FUZZ_SEED", time.time_ns() % 2**32))
    print(f"\nfuzz smoke: seed {seed} (CAISSE_AP_FUZZ_SEED={seed} replays it)")
    rng = random.Random(seed)
    terminal = start_terminal({"duration": 0})
    figures = {"frames": 0, "answers": 0, "approved": 0, "refused": 0, "unanswered": 0}
    started = time.monotonic()
    with caplog.at_level("WARNING"):
        while figures["frames"] < COUNT and time.monotonic() - started < TIME_BOUND:
            data = mutate(rng, rng.choice(BASES))
            received = exchange(terminal.address, data)
            assert received.startswith(b"CZ004") or not received, (data, received)
            answers = answers_in(received)
            # Never more answers than requests: the request starts sent, or one for a
            # connection that sent none (its first bytes get the one AF=09).
            requests = max(1, len(REQUEST_START.findall(data)))
            assert len(answers) <= requests, (data, received)
            # The first bytes of a connection are a request attempt: answered, whatever they are.
            assert answers or not data.strip(b"\r\n"), (data, received)
            for answer in answers:
                for tag, value in answer:
                    assert tags.fits(tag, value), (data, tag, value)
                if "ZT" in dict(answer):
                    assert all(tags.fits(t, v) for t, v in tlv.nested(dict(answer)["ZT"]))
                status = dict(answer)["AE"]
                figures["approved" if status in ("10", "11") else "refused"] += 1
            figures["frames"] += 1
            figures["answers"] += len(answers)
            figures["unanswered"] += not answers
    elapsed = time.monotonic() - started
    print("fuzz smoke: " + ", ".join(f"{count} {name}" for name, count in figures.items())
          + f" in {elapsed:.1f} s")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert figures["frames"] >= 200  # even a slow machine checks a fair number
    answer = dict(pos(terminal).exchange(FRAMES[0]))  # still serving
    assert answer["AE"] == "10"
