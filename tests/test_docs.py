"""The documentation's code examples are real code, and they run.

Every ``python`` block in ``docs/`` must compile (top-level ``await`` allowed, as
snippets show code from inside a coroutine), and every block is executed:

* A block directly preceded by ``<!-- test: run -->`` is a complete script, run in
  a fresh interpreter from the repository root; it must exit 0.
* Every other block runs with the rest of its page, in order, in one fresh
  interpreter per page (``tests/docs_support/runner.py``) with Django set up on a
  migrated SQLite file. Pages outside the tutorial use the stand-in project in
  ``tests/docs_support/project``; tutorial pages and ``example-chat.md`` use the
  tutorial's finished project, ``examples/chat``. A block is, by kind:

  - a project file, when it starts with a ``# path/file.py`` comment or follows
    ``<!-- test: file path/file.py -->``: executed as that module (``(excerpt)``
    after the path: executed inside that module);
  - a settings fragment (``# settings.py``, or nothing but ``UPPER_CASE``
    assignments): executed, and the values applied and used;
  - otherwise code in the page's shared namespace. Zero-argument ``test_*``
    functions a block defines are called.

  A page whose code awaits (a top-level ``await``, or an async test) runs twice:
  on asyncio and on trio.
* ``<!-- test: code`` ... ``-->`` holds hidden code, run at that point of the
  page: setup a snippet assumes (``self`` in a method body), or checks of what
  the snippet claims. HTML comments do not show on the site.
* ``<!-- test: compile-only (reason) -->`` exempts a block that cannot run; each
  shows as a skipped test with its reason.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("**/*.md"))
RUNNER = ROOT / "tests" / "docs_support" / "runner.py"
STAND_IN = ("tests/docs_support/project", "myproject.settings")
TUTORIAL = ("examples/chat", "chat.settings")
#: Blocks that only compile. Each has a reason; keep the list short.
MAX_COMPILE_ONLY = 6

TOKEN = re.compile(
    r"^<!-- test: code\n(?P<hidden>.*?)\n-->$"
    r"|^<!-- test: (?P<marker>[^\n]*?) -->$"
    r"|^```python[^\n]*\n(?P<code>.*?)\n```$",
    re.S | re.M,
)
FILE_COMMENT = re.compile(r"# (?P<path>[\w/]+\.py(?: \(excerpt\))?)\n")
UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass
class Block:
    page: str
    line: int
    code: str
    kind: str  # "run", "compile-only", "code", "file", "settings"; "hidden" for comments
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _target_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_settings(code: str) -> bool:
    body = ast.parse(code).body
    assigned = False
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            continue
        targets = (
            statement.targets
            if isinstance(statement, ast.Assign)
            else [statement.target]
            if isinstance(statement, ast.AugAssign)
            else None
        )
        if not targets or not all(UPPER.match(_target_name(t) or "") for t in targets):
            return False
        assigned = True
    return assigned


def classify(page: str, line: int, code: str, marker: str | None) -> Block:
    if marker == "run":
        return Block(page, line, code, "run")
    if marker and marker.startswith("compile-only"):
        reason = re.fullmatch(r"compile-only \((?P<reason>.+)\)", marker)
        assert reason, f"{page}:{line}: give a reason: compile-only (reason)"
        return Block(page, line, code, "compile-only", reason["reason"])
    if marker and marker.startswith("file "):
        path = marker.removeprefix("file ")
    elif match := FILE_COMMENT.match(code):
        path = match["path"]
    else:
        path = ""
    assert marker is None or path, f"{page}:{line}: unknown marker {marker!r}"
    if path.endswith("settings.py") or (not path and _is_settings(code)):
        return Block(page, line, code, "settings")
    if path:
        return Block(page, line, code, "file", path)
    return Block(page, line, code, "code")


def parse(page: Path) -> list[Block]:
    text = page.read_text()
    name = str(page.relative_to(ROOT))
    found: list[Block] = []
    marker: str | None = None
    marker_end = 0
    for match in TOKEN.finditer(text):
        line = text.count("\n", 0, match.start("code" if match["code"] is not None else 0)) + 1
        if match["hidden"] is not None:
            found.append(Block(name, line + 1, match["hidden"], "hidden"))
        elif match["marker"] is not None:
            marker, marker_end = match["marker"], match.end()
        else:
            if marker is not None:
                between = text[marker_end : match.start()]
                assert not between.strip(), (
                    f"{name}:{line}: a marker must directly precede its block"
                )
            found.append(classify(name, line, match["code"], marker))
            marker = None
    assert marker is None, f"{name}: a marker without a block"
    return found


PAGES = {str(page.relative_to(ROOT)): parse(page) for page in DOCS}
ALL = [block for blocks in PAGES.values() for block in blocks if block.kind != "hidden"]


def _awaits(block: Block) -> bool:
    program = compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    return bool(program.co_flags & inspect.CO_COROUTINE) or "async def test_" in block.code


def _plain_file(block: Block) -> bool:
    name = Path(block.arg.partition(" ")[0]).name
    return block.kind == "file" and not (name == "conftest.py" or name.startswith("test_"))


def _page_runs() -> list[tuple[str, str]]:
    runs = []
    for page, blocks in PAGES.items():
        steps = [b for b in blocks if b.kind in ("code", "file", "settings", "hidden")]
        if not steps:
            continue
        # Test modules are run by pytest, on the backends their conftest.py chooses.
        if any(_awaits(b) for b in steps if b.kind in ("code", "hidden") or _plain_file(b)):
            runs += [(page, "asyncio"), (page, "trio")]
        else:
            runs.append((page, "sync"))
    return runs


PAGE_RUNS = _page_runs()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def test_docs_have_examples() -> None:
    assert len(ALL) > 20
    assert any(b.kind == "run" for b in ALL), "at least one documented script is run"


@pytest.mark.parametrize("block", ALL, ids=[b.where for b in ALL])
def test_example_compiles(block: Block) -> None:
    compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_compile_only_blocks_are_few() -> None:
    exempt = [f"{b.where}: {b.arg}" for b in ALL if b.kind == "compile-only"]
    assert len(exempt) <= MAX_COMPILE_ONLY, "\n".join(exempt)


SCRIPTS = [b for b in ALL if b.kind in ("run", "compile-only")]


@pytest.mark.parametrize("block", SCRIPTS, ids=[b.where for b in SCRIPTS])
def test_script_runs(block: Block, tmp_path: Path) -> None:
    if block.kind == "compile-only":
        pytest.skip(f"compile-only: {block.arg}")
    script = tmp_path / "example.py"
    script.write_text(block.code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{block.where} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize(("page", "backend"), PAGE_RUNS, ids=[f"{p}-{b}" for p, b in PAGE_RUNS])
def test_page_runs(page: str, backend: str) -> None:
    tutorial = page.startswith("docs/tutorial/") or page == "docs/example-chat.md"
    project, settings_module = TUTORIAL if tutorial else STAND_IN
    steps = [
        ["code" if b.kind == "hidden" else b.kind, b.page, b.line, b.code, b.arg]
        for b in PAGES[page]
        if b.kind in ("code", "file", "settings", "hidden")
    ]
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(ROOT / project), settings_module, backend],
        input=json.dumps(steps),
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{page} on {backend} failed:\n{result.stdout}\n{result.stderr}"
