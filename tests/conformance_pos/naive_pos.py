"""A deliberately naive point of sale, for the conformance kit's tests.

It makes every classic mistake at once: one recv(1024) for the whole answer,
a parser that trusts what it reads, no comparison of the echoes with the
request, and a second try when the terminal is slow. The kit must find each
of them. Usage: naive_pos.py HOST PORT AMOUNT (exit 0 approved, 1 refused,
3 unknown; a crash exits 1, as an uncaught Python exception does).
"""

import socket
import sys

TIMEOUT = 3.5  # seconds: shorter than the kit's --pos-timeout in the tests


def attempt(host: str, port: int, request: bytes) -> str:
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        return sock.recv(1024).decode("ascii")


def main() -> int:
    host, port, amount = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cents = str(round(float(amount) * 100))
    request = ("CZ0040300CJ012012345678901CA00201CE003978CD0010"
               f"CB{len(cents):03d}{cents}").encode("ascii")
    try:
        answer = attempt(host, port, request)
    except TimeoutError:
        answer = attempt(host, port, request)  # the mistake: a second payment request
    fields, i = {}, 0
    while i < len(answer):
        tag, size = answer[i:i + 2], int(answer[i + 2:i + 5])
        fields[tag] = answer[i + 5:i + 5 + size]
        i += 5 + size
    return {"10": 0, "01": 1}.get(fields.get("AE"), 3)


if __name__ == "__main__":
    sys.exit(main())
