"""The documentation site builds with ``mkdocs build --strict``.

Strict mode turns every MkDocs warning into an error: a broken link or anchor,
a page missing from the navigation or a navigation entry without a page, a
docstring mkdocstrings cannot render. The build needs the ``docs`` extra
(``pip install -e ".[docs]"``). Without it the test is skipped with the reason
shown, except under ``CI=true``, where a skipped build would hide a broken site,
so it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules the build imports: MkDocs, the theme, mkdocstrings and its Python handler.
NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe")


def _missing() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site, in a temporary directory (the build runs once per test run)."""
    missing = _missing()
    if missing:
        reason = (
            f"the docs build needs {', '.join(missing)}: "
            'install the docs extra with pip install -e ".[docs]"'
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(
            f"mkdocs build --strict failed (exit status {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return out


@pytest.mark.timeout(600)
def test_site_builds_strictly(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "tutorial" / "index.html").is_file()


@pytest.mark.timeout(600)
def test_api_reference_is_rendered_from_docstrings(site: Path) -> None:
    page = (site / "reference" / "consumer" / "index.html").read_text()
    assert 'id="channels_runtime.consumer.AsyncConsumer"' in page
    assert 'id="channels_runtime.consumer.AsyncConsumer.as_asgi"' in page


@pytest.mark.timeout(600)
def test_sphinx_roles_do_not_leak_into_the_reference(site: Path) -> None:
    """docs/_ext/sphinx_markup.py turns ``:class:`X``` roles into links or code."""
    leaks = []
    for page in sorted((site / "reference").glob("**/*.html")):
        text = page.read_text()
        for marker in (":class:`", ":func:`", ":meth:`", ":mod:`", ":attr:`", "<autoref "):
            if marker in text:
                leaks.append(f"{page.relative_to(site)}: {marker}")
    assert not leaks, "unconverted markup in the API reference:\n" + "\n".join(leaks)


@pytest.mark.timeout(600)
def test_release_notes_include_the_changelog(site: Path) -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first_entry = next(line for line in changelog.splitlines() if line.startswith("## "))
    page = (site / "changelog" / "index.html").read_text()
    assert first_entry.removeprefix("## ").strip() in page
    assert "--8&lt;--" not in page, "the snippet marker was not replaced"
