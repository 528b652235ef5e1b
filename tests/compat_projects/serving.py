"""Serving a compat project in a test: its database, a real ``channels-runtime serve``.

Each test module prepares its project's SQLite file once (``prepare_compat``)
and serves it on each worker class. The expected message of an asyncio call on
trio is built here from the installed library's own source, so the tests pin
the exact text the server logs, line number included, without depending on
which release of the library the ``compat`` extra installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from e2e_app.harness import REPO, Server, base_env, cli_command

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]
TIMEOUT = 10


def project_env(database: Path, **extra: str) -> dict[str, str]:
    """The server's environment: the repository importable, no alias switch inherited."""
    env = base_env(COMPAT_DATABASE=str(database), **extra)
    env.pop("CHANNELS_RUNTIME_ALIAS", None)
    return env


def prepare(project: str, database: Path) -> None:
    """Create the project's tables and test data in ``database``."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "prepare_compat",
            "--settings",
            f"tests.compat_projects.{project}.settings",
        ],
        cwd=REPO,
        env=project_env(database),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prepared" in done.stdout, done.stdout + done.stderr


def serve(
    project: str,
    worker_class: str,
    tmp_path: Path,
    database: Path,
    health_path: str = "/health/",
) -> Server:
    """``channels-runtime serve`` of the project, started (answering ``health_path``)."""
    server = Server(
        [
            *cli_command(),
            "serve",
            f"tests.compat_projects.{project}.asgi",
            "-b",
            "127.0.0.1:0",
            "-k",
            worker_class,
            "--graceful-timeout",
            "2",
        ],
        log_path=tmp_path / f"serve-{project}-{worker_class}.log",
        env=project_env(database),
    )
    try:
        server.start(health_path=health_path)
    except BaseException:
        server.close()
        raise
    return server


def source_line(module: str, text: str) -> tuple[str, int]:
    """The file of an installed module, and the number of its first line containing ``text``.

    Found without importing the module (or its package): the libraries import
    ``channels``, which this test process need not load.
    """
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    assert spec is not None, module
    assert spec.submodule_search_locations, module
    path = Path(next(iter(spec.submodule_search_locations)), *rest)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if text in line:
            return str(path), number
    raise AssertionError(f"{text!r} is not in {path}: has the library changed?")


def asyncio_on_trio_message(api: str, caller: str, module: str, text: str) -> str:
    """What the server logs when ``caller`` (in ``module``, on the line with ``text``)
    calls the asyncio function ``api`` on trio."""
    filename, lineno = source_line(module, text)
    return (
        f"{api} cannot run on trio: it is called by {caller}, line {lineno} ({filename}), "
        "and needs a running asyncio event loop, which a trio worker does not have. "
        "Serve this application with an asyncio worker class instead: "
        "channels-runtime serve -k asyncio (or -k uvloop)."
    )
