"""docs/library.md's examples, each run as written against a simulated terminal.

A python block is run in its own interpreter with the terminal's address in
place of 192.168.1.50 and 8888; the text block after it, if any, is what it
must print. The block that starts with `# test_pos.py` is a pytest file: it is
run by pytest, with no conftest.py (the plugin comes with the package).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from caisse_ap.testing import SimulatedTerminal, simulated_terminal

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "library.md"
BLOCK = re.compile(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?", re.DOTALL)
EXAMPLES = [(code, output) for code, output in BLOCK.findall(DOC.read_text(encoding="utf-8"))]
TEST_FILE = "# test_pos.py\n"


@pytest.fixture(scope="module")
def terminal(reactor_thread: object) -> Iterator[SimulatedTerminal]:
    with simulated_terminal() as running:
        yield running


def _pointed_at(code: str, terminal: SimulatedTerminal) -> str:
    return code.replace('"192.168.1.50", 8888', f'"{terminal.host}", {terminal.port}')


def test_the_page_has_an_example_of_each_client() -> None:
    codes = [code for code, _ in EXAMPLES]
    for module in ("from caisse_ap import", "from caisse_ap.aio import",
                   "from caisse_ap.twisted import"):
        assert any(module in code for code in codes), module
    assert any(code.startswith(TEST_FILE) for code in codes)


@pytest.mark.slow
@pytest.mark.parametrize("code, output", [example for example in EXAMPLES
                                          if not example[0].startswith(TEST_FILE)])
def test_example_prints_what_the_page_says(terminal: SimulatedTerminal, code: str,
                                           output: str) -> None:
    assert '"192.168.1.50", 8888' in code  # else it would not reach the terminal
    done = subprocess.run([sys.executable, "-c", _pointed_at(code, terminal)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == output


@pytest.mark.slow
def test_the_pytest_example_passes_without_conftest(tmp_path: Path) -> None:
    code = next(code for code, _ in EXAMPLES if code.startswith(TEST_FILE))
    (tmp_path / "test_pos.py").write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.slow
def test_the_readme_pos_project_passes(tmp_path: Path) -> None:
    """README's "Dans les tests d'un projet de caisse": ma_caisse.py and its tests, as is."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("ma_caisse.py", "test_paiement.py"):
        start = readme.index(f"```python\n# {name}")
        code = readme[start + len("```python\n"):readme.index("```", start + 3)]
        (tmp_path / name).write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
