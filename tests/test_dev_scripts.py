"""The README's two commands: ``examples/chat/serve`` and ``.ci/test`` (``.ci/devenv.py``).

Creating a virtualenv and installing into it takes half a minute and the network,
so the suite does not do it (CI does, every run: ``.ci/run`` calls ``.ci/test`` in a
fresh virtualenv). What runs here, for real: the check that decides whether pip
must run, against real installed distributions; ``examples/chat/serve`` pointed at
the suite's own virtualenv (``CHANNELS_RUNTIME_VENV``), which must install nothing,
migrate, serve the chat over HTTP on every worker class and stop on SIGINT; and
``.ci/test`` run from another directory, which must still find the suite, and
fail when pytest collects nothing.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from test_runserver import running

import channels_runtime

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "examples" / "chat" / "serve"
TEST = ROOT / ".ci" / "test"
TIMEOUT = 30.0


def _load_devenv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("devenv", ROOT / ".ci" / "devenv.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


devenv = _load_devenv()


def this_venv_env(**extra: str) -> dict[str, str]:
    """The scripts pointed at the virtualenv running this suite (nothing to create)."""
    return {"CHANNELS_RUNTIME_VENV": sys.prefix, "PYTHON": sys.executable, **extra}


def write_project(root: Path, dependencies: list[str], extras: dict[str, list[str]]) -> Path:
    lines = [
        "[project]",
        'name = "devenv-probe-not-installed"',
        'version = "1"',
        f"dependencies = {dependencies!r}",
        "[project.optional-dependencies]",
        *(f"{name} = {requirements!r}" for name, requirements in extras.items()),
    ]
    (root / "pyproject.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    return root


# -- the check that decides whether pip runs -----------------------------------------


def test_satisfied_requirements_are_not_reported(tmp_path: Path) -> None:
    project = write_project(tmp_path, ["pytest>=1", "anyio"], {"fast": ["httpx>=0.1"]})
    problems = devenv.missing_requirements(project, ("fast",), ["trio"])
    # The project itself is not installed (it is a probe); everything else is.
    assert problems == ["devenv-probe-not-installed (not installed)"]


def test_each_unmet_requirement_is_named(tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        ["pytest<1", "no-such-distribution-devenv-probe>=1"],
        {"a": ["devenv-probe-not-installed[b]"], "b": ["httpx>=999"]},
    )
    problems = devenv.missing_requirements(project, ("a", "nope"), ["anyio<0.1"])
    assert sorted(problems[1:]) == sorted(
        [
            f"pytest<1 ({_version('pytest')} installed)",
            "no-such-distribution-devenv-probe>=1 (not installed)",
            # Reached through the project's own extra "a", which names "b".
            f"httpx>=999 ({httpx.__version__} installed)",
            "devenv-probe-not-installed[nope] (no such extra in pyproject.toml)",
            f"anyio<0.1 ({_version('anyio')} installed)",
        ]
    )


def test_a_dependencys_extras_are_checked(tmp_path: Path) -> None:
    # psycopg[binary] needs psycopg-binary, which the test extra installs; its "c"
    # extra needs psycopg-c (a source build), which nothing here installs.
    project = write_project(tmp_path, ["psycopg[binary]>=3.1"], {})
    assert devenv.missing_requirements(project, (), []) == [
        "devenv-probe-not-installed (not installed)"
    ]
    project = write_project(tmp_path, ["psycopg[c]>=3.1"], {})
    psycopg = _version("psycopg")
    assert devenv.missing_requirements(project, (), []) == [
        "devenv-probe-not-installed (not installed)",
        f'psycopg-c=={psycopg}; implementation_name != "pypy" and extra == "c" (not installed)',
    ]


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


def test_more_extras_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHANNELS_RUNTIME_EXTRAS", raising=False)
    assert devenv.with_extra_extras(("tests", "docs")) == ("tests", "docs")
    monkeypatch.setenv("CHANNELS_RUNTIME_EXTRAS", "compat-graphql-ws, docs,redis")
    assert devenv.with_extra_extras(("tests", "docs")) == (
        "tests",
        "docs",
        "compat-graphql-ws",
        "redis",
    )


def test_this_virtualenv_needs_no_install_for_either_command() -> None:
    """Run as the scripts run it: a subprocess in the virtualenv's own interpreter."""
    if not Path(channels_runtime.__file__).resolve().is_relative_to(ROOT):
        pytest.skip(f"channels_runtime is not installed from this checkout ({ROOT})")
    venv = Path(sys.prefix)
    assert devenv.missing_in_venv(venv, devenv.SERVE_EXTRAS, []) == []
    assert devenv.missing_in_venv(venv, devenv.TEST_EXTRAS, []) == []
    # A requirement it does not meet is reported, so pip would run.
    [problem] = devenv.missing_in_venv(venv, devenv.SERVE_EXTRAS, ["anyio<0.1"])
    assert problem.startswith("anyio<0.1 (")


# -- examples/chat/serve ---------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop", "trio"])
def test_serve_command_serves_the_chat_and_stops_on_sigint(
    tmp_path: Path, worker_class: str
) -> None:
    if not Path(channels_runtime.__file__).resolve().is_relative_to(ROOT):
        pytest.skip(f"channels_runtime is not installed from this checkout ({ROOT})")
    env = this_venv_env(CHAT_DATABASE=str(tmp_path / "chat.sqlite3"))
    args = [str(SERVE), "--bind", "127.0.0.1:0", "--worker-class", worker_class]
    # Run from elsewhere: the command finds the example itself.
    with running(args, cwd=tmp_path, env=env) as server:
        base = server.wait_for(r"(http://127\.0\.0\.1:\d+)", timeout=TIMEOUT).group(1)
        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            index = http.get("/")
            assert index.status_code == 200
            page = http.get("/chat/lobby/")
            assert page.status_code == 200
            assert '<h1 id="room-title">#lobby</h1>' in page.text
        server.signal(signal.SIGINT)
        assert server.wait_exit(TIMEOUT) == 0, server.output
    output = server.output
    assert "Applying auth." in output  # migrations ran against the fresh database
    assert "installing" not in output  # the virtualenv had everything: no pip
    assert "Traceback" not in output, output


def test_serve_command_refuses_a_bad_flag_with_servings_status(tmp_path: Path) -> None:
    """Flags reach ``channels-runtime serve`` unchanged, including bad ones (status 2)."""
    env = {**os.environ, **this_venv_env(CHAT_DATABASE=str(tmp_path / "chat.sqlite3"))}
    result = subprocess.run(
        [str(SERVE), "--worker-class", "no-such-loop"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no-such-loop" in result.stderr


# -- .ci/test ---------------------------------------------------------------------------


def run_test_command(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if not Path("/usr/bin/chromium").exists() and os.environ.get("CI") != "true":
        pytest.skip(".ci/test would install Chromium first (.ci/install-browser)")
    if not Path(channels_runtime.__file__).resolve().is_relative_to(ROOT):
        pytest.skip(f"channels_runtime is not installed from this checkout ({ROOT})")
    return subprocess.run(
        [str(TEST), "-p", "no:cacheprovider", *args],
        env={**os.environ, **this_venv_env()},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_test_command_runs_the_suite_from_any_directory() -> None:
    # From the folder the serve command works in, where a plain pytest finds nothing.
    result = run_test_command(
        ["tests/test_django_versions.py", "-k", "flags_say_what"], ROOT / "examples" / "chat"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_test_command_fails_when_no_test_is_collected(tmp_path: Path) -> None:
    result = run_test_command(["tests/test_django_versions.py", "-k", "no_such_test"], tmp_path)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "pytest collected no test: that is a failure" in result.stderr
