"""The documentation's code examples are real code.

Every ``python`` block in ``docs/`` must compile (top-level ``await`` allowed, as
snippets show code from inside a coroutine). A block directly preceded by the
comment ``<!-- test: run -->`` is a complete script and is run in a fresh
interpreter from the repository root; it must exit 0.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("**/*.md"))
BLOCK = re.compile(r"(?P<marker><!-- test: run -->\s*\n)?```python[^\n]*\n(?P<code>.*?)\n```", re.S)


def blocks() -> list[tuple[str, bool, str]]:
    found = []
    for page in DOCS:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", bool(match["marker"]), match["code"]))
    return found


ALL = blocks()


def test_docs_have_examples() -> None:
    assert len(ALL) > 20
    assert any(run for _, run, _ in ALL), "at least one documented script is run"


@pytest.mark.parametrize(("where", "code"), [(w, c) for w, _, c in ALL], ids=[w for w, _, _ in ALL])
def test_example_compiles(where: str, code: str) -> None:
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


RUNNABLE = [(where, code) for where, run, code in ALL if run]


@pytest.mark.parametrize(("where", "code"), RUNNABLE, ids=[w for w, _ in RUNNABLE])
def test_example_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
