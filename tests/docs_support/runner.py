"""Execute one documentation page's Python blocks, in order, in a fresh interpreter.

Invoked by ``tests/test_docs.py`` as ``python runner.py PROJECT SETTINGS BACKEND``
with the page's steps as JSON on stdin. Each step is ``[kind, page, line, code, arg]``:

``code``
    Run in the page's namespace, shared by every block of the page. A block with
    a top-level ``await`` is code from inside a coroutine: it runs in an event loop
    on ``BACKEND`` ("asyncio" or "trio"), with the runtime's thread bridge set up as
    it is for a consumer. Zero-argument ``test_*`` functions the block defines are
    then called (async ones on ``BACKEND``).
``file``
    The contents of the project file ``arg`` (``rooms/consumers.py``): executed as
    that module and installed in ``sys.modules``, so later blocks import it. With
    ``arg`` ending in `` (excerpt)``, executed in a copy of the existing module's
    namespace instead, and its names copied to the page's namespace.
    Test modules (``test_*.py``) are written to a directory that pytest runs
    after the last step instead, with the stand-ins for pytest-django in
    ``pytest_django_standin.py``; ``conftest.py`` is also written there.
``settings``
    A settings fragment: executed in the page's settings namespace (which starts
    with ``BASE_DIR`` and ``SECRET_KEY``), then every value is applied with
    ``override_settings`` and checked by using it: apps are loaded, channel layers
    and database connections built, ``ASGI_APPLICATION`` imported.

Django is set up from ``SETTINGS`` with ``PROJECT`` on ``sys.path``, on a fresh
SQLite file in a temporary directory, migrated before the first step.
"""

from __future__ import annotations

import ast
import atexit
import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

project, settings_module, backend = sys.argv[1:4]
steps = json.load(sys.stdin)

base_dir = Path(tempfile.mkdtemp(prefix="docs-"))
atexit.register(shutil.rmtree, base_dir, ignore_errors=True)
sys.path.insert(0, project)
os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
os.environ["DOCS_BASE_DIR"] = str(base_dir)
os.environ["CHAT_DATABASE"] = str(base_dir / "db.sqlite3")
os.environ["PYTHONPATH"] = project  # for servers the snippets start

import anyio  # noqa: E402
import django  # noqa: E402

django.setup()

from django.apps import AppConfig, apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.utils import ConnectionHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from channels_runtime.compat.backend import ensure_bridge  # noqa: E402
from channels_runtime.layers import channel_layers  # noqa: E402
from channels_runtime.routing import get_default_application  # noqa: E402

call_command("migrate", run_syncdb=True, verbosity=0)

namespace: dict[str, Any] = {"__name__": "__docs__", "__builtins__": __builtins__}
settings_namespace: dict[str, Any] = {"BASE_DIR": base_dir, "SECRET_KEY": settings.SECRET_KEY}


def on_backend(function: Any, *args: Any) -> Any:
    async def main() -> Any:
        ensure_bridge()
        return await function(*args)

    return anyio.run(main, backend=backend)


def compiled(page: str, line: int, code: str) -> types.CodeType:
    # Padded so tracebacks point at the page's own line numbers.
    source = "\n" * (line - 1) + code
    return compile(source, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def call_tests(scope: dict[str, Any], before: set[str]) -> None:
    for name, function in list(scope.items()):
        if name in before or not name.startswith("test_") or not inspect.isfunction(function):
            continue
        if inspect.signature(function).parameters:
            continue  # wants pytest fixtures
        if inspect.iscoroutinefunction(function):
            on_backend(function)
        else:
            function()


def run_code(page: str, line: int, code: str) -> None:
    program = compiled(page, line, code)
    before = set(namespace)
    if program.co_flags & inspect.CO_COROUTINE:

        async def block() -> None:
            await eval(program, namespace)

        on_backend(block)
    else:
        exec(program, namespace)
    call_tests(namespace, before)


def run_file(page: str, line: int, code: str, path: str) -> None:
    if Path(path).name.startswith("test_"):
        test_file = base_dir / "tests" / path  # pytest runs these after the last step
        test_file.parent.mkdir(parents=True, exist_ok=True)
        test_file.write_text("\n" * (line - 1) + code)
        return
    if Path(path).name == "conftest.py":  # for those tests; a page may show it in parts
        conftest = base_dir / "tests" / path
        conftest.parent.mkdir(parents=True, exist_ok=True)
        with conftest.open("a") as file:
            file.write(code + "\n")
    path, excerpt, _ = path.partition(" (excerpt)")
    name = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    if excerpt:
        # Run in a copy of the module: the project keeps its own definitions (and
        # models); the page's namespace gets the excerpt's, for later blocks.
        scope = dict(vars(importlib.import_module(name)))
        models = {label: dict(found) for label, found in apps.all_models.items()}
        exec(compiled(page, line, code), scope)
        apps.all_models.update(models)
        apps.clear_cache()
        namespace.update({k: v for k, v in scope.items() if not k.startswith("__")})
        return
    else:
        module = types.ModuleType(name)
        module.__file__ = str(Path(project) / path)
        module.__package__ = name.rpartition(".")[0]
        sys.modules[name] = module
        if module.__package__:
            setattr(importlib.import_module(module.__package__), name.rpartition(".")[2], module)
    before = set(vars(module))
    exec(compiled(page, line, code), vars(module))
    call_tests(vars(module), before)


def run_settings(page: str, line: int, code: str) -> None:
    exec(compiled(page, line, code), settings_namespace)
    values = {name: value for name, value in settings_namespace.items() if name.isupper()}
    # Fragments list only some apps ("# ..."): load each, not the set as the registry.
    for entry in values.pop("INSTALLED_APPS", []):
        AppConfig.create(entry)
    with override_settings(**values):
        for name in values:
            assert getattr(settings, name) == values[name], name
        for alias, config in values.get("CHANNEL_LAYERS", {}).items():
            channel_layers.make_backend(alias)
            if "TEST_CONFIG" in config:
                channel_layers.make_test_backend(alias)
        if "DATABASES" in values:
            connections = ConnectionHandler(values["DATABASES"])
            for alias in values["DATABASES"]:
                connections[alias].ensure_connection()
            connections.close_all()
        if "ASGI_APPLICATION" in values:
            assert callable(get_default_application())


for kind, page, line, code, arg in steps:
    if kind == "code":
        run_code(page, line, code)
    elif kind == "file":
        run_file(page, line, code, arg)
    else:
        run_settings(page, line, code)
if any((base_dir / "tests").glob("**/test_*.py")):
    import pytest

    sys.path.insert(0, str(Path(__file__).parent))
    arguments = ["-q", "-p", "no:cacheprovider", "-p", "pytest_django_standin"]
    assert pytest.main([*arguments, str(base_dir / "tests")]) == 0, "the page's tests failed"
print(f"{len(steps)} steps ran on {backend}")
