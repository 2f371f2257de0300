"""The real server, caisse-ap-ip-server.py, in a subprocess: what the tests that run it share."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = ROOT / "caisse-ap-ip-server.py"


def run_server(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """The server run to its end: for options it refuses or answers without serving."""
    return subprocess.run([sys.executable, str(SERVER_SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


# Start-up lines giving the bound addresses, the terminal's last: "web console and
# control API on http://127.0.0.1:40124/", "...; listening on 127.0.0.1:40123".
WEB_LINE = re.compile(r"web console and control API on http://127\.0\.0\.1:(\d+)/")
TERMINAL_LINE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """caisse-ap-ip-server.py in a subprocess, listening on 127.0.0.1 and a free port.

    Its log (stdout and stderr together) is read by a thread for its whole
    life, since a full pipe would block it: `output()` is every line so far,
    `wait_for(text)` the next line holding text. The addresses come from the
    start-up lines: `port` and `address`, and `web_port` unless --no-web.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 30.0):
        self.timeout = timeout
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--host", "127.0.0.1", "-p", "0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=ROOT, env=env)
        self.lines: list[str] = []
        self._unread: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.web_port: int | None = None
        try:
            self.startup_line = self.wait_for("listening on")
        except BaseException:
            self.kill()
            raise
        self.port = int(TERMINAL_LINE.search(self.startup_line)[1])
        self.address = ("127.0.0.1", self.port)

    def _read(self) -> None:
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line)
                self._unread.put(line)
        self._unread.put(None)

    def wait_for(self, text: str) -> str:
        """The next line holding `text`; AssertionError if the server ends or says nothing."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self._unread.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"the server printed no {text!r}:\n{self.output()}")
            if match := WEB_LINE.search(line):
                self.web_port = int(match[1])
            if text in line:
                return line

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig`, wait for the exit (its status); output() is then complete."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()  # not left behind; the test fails on the exception
            raise
        self._reader.join(self.timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(self.timeout)
        self._reader.join(self.timeout)


@contextlib.contextmanager
def small_filesystem(directory: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted on `directory` (created), unmounted after: a disk
    that really fills (ENOSPC). Mounting needs root (CAP_SYS_ADMIN): without it,
    PermissionError saying so."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs",
                           str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs on {directory} (root needed): "
                              f"{done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to its last byte (ENOSPC); the filler's path."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(b"\0" * 4096)
    return filler
