"""Fresh-install check: what a user gets from the wheel, away from the checkout.

Builds the wheel, installs it in a new virtualenv in a temporary folder,
starts `caisse-ap-ip-server` there on free ports, checks that the web console's
page is served (its static files are in the wheel), pays with
`caisse-ap-ip-client` (exit status 0 expected), then stops the server with
SIGTERM. Then, as a POS project would: pytest installed beside the wheel,
docs/library.md's `test_pos.py` written in an empty folder (no conftest.py),
pytest run there: the simulated_terminal fixture comes with the package.
Run by .ci/run; prints one line per check and exits non-zero on the first
failure.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
TEST_FILE = "# test_pos.py\n"
PYTEST = "pytest>=8,<10"  # the range of the test extra


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], cwd=cwd, text=True,
                          capture_output=True, timeout=600)


def check(condition: bool, what: str, details: str = "") -> None:
    if not condition:
        print(f"fresh install: FAILED: {what}\n{details}", file=sys.stderr)
        sys.exit(1)
    print(f"fresh install: ok: {what}")


def wait_for_addresses(server: subprocess.Popen[str]) -> tuple[int, str]:
    """The terminal's port and the console's URL, read from the start-up lines."""
    port, console, seen = None, None, []
    for line in server.stderr:
        seen.append(line)
        if found := re.search(r"listening on [\d.]+:(\d+)", line):
            port = int(found.group(1))
        if found := re.search(r"web console and control API on (http://\S+)", line):
            console = found.group(1)
        if port and console:
            return port, console
    check(False, "server start-up lines", "".join(seen))
    raise AssertionError  # unreachable: check() exits


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="caisse-ap-fresh-") as temp:
        away = Path(temp)
        built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", away / "dist", ROOT,
                    cwd=away)
        wheels = list((away / "dist").glob("caisse_ap_ip-*.whl"))
        check(built.returncode == 0 and len(wheels) == 1, "wheel built", built.stderr)

        venv.create(away / "venv", with_pip=True)
        bin_dir = away / "venv" / "bin"
        installed = run(bin_dir / "python", "-m", "pip", "install", "-q", wheels[0], cwd=away)
        check(installed.returncode == 0, "wheel installed in a new virtualenv", installed.stderr)

        version = run(bin_dir / "python", "-m", "caisse_ap", "--version", cwd=away)
        check(version.stdout.startswith("caisse-ap-ip "), f"version: {version.stdout.strip()}",
              version.stderr)

        server = subprocess.Popen(
            [bin_dir / "caisse-ap-ip-server", "--host", "127.0.0.1", "-p", "0",
             "--web-port", "0", "-d", "0"],
            cwd=away, text=True, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            port, console = wait_for_addresses(server)
            with urllib.request.urlopen(console, timeout=TIMEOUT) as page:
                check(b"<html" in page.read().lower(), f"web console served at {console}")
            paid = run(bin_dir / "caisse-ap-ip-client", "-p", str(port), "-a", "12,50", "--json",
                       cwd=away)
            status = json.loads(paid.stdout or "{}").get("status")
            check(paid.returncode == 0 and status == "approved",
                  f"caisse-ap-ip-client paid 12,50 EUR: exit {paid.returncode}, {status}",
                  paid.stdout + paid.stderr)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(TIMEOUT)
        check(code == 0, f"server stopped on SIGTERM with exit status {code}")
        check_pos_project(bin_dir, away)
    return 0


def check_pos_project(bin_dir: Path, away: Path) -> None:
    """A POS project's tests use the fixture by installation alone, and see the types."""
    typed = run(bin_dir / "python", "-c",
                "import caisse_ap, pathlib; "
                "print((pathlib.Path(caisse_ap.__file__).parent / 'py.typed').is_file())",
                cwd=away)
    check(typed.stdout.strip() == "True", "py.typed shipped in the wheel", typed.stderr)
    installed = run(bin_dir / "python", "-m", "pip", "install", "-q", PYTEST, cwd=away)
    check(installed.returncode == 0, "pytest installed beside the wheel", installed.stderr)
    doc = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    start = doc.index("```python\n" + TEST_FILE) + len("```python\n")
    project = away / "pos-project"
    project.mkdir()
    (project / "test_pos.py").write_text(doc[start:doc.index("```", start)], encoding="utf-8")
    tested = run(bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
    check(tested.returncode == 0 and " passed" in tested.stdout,
          "docs/library.md's test_pos.py passes with no conftest.py: "
          + (tested.stdout.strip().splitlines() or ["?"])[-1], tested.stdout + tested.stderr)


if __name__ == "__main__":
    sys.exit(main())
