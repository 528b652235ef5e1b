"""asgiref and Django work on trio from their very first call, whoever makes it.

Each scenario runs in a fresh interpreter, so nothing another test did (a
consumer that installed the bridge, an earlier trio test) can make it pass:
the only channels_runtime code the scenario touches is ``import
channels_runtime``. The same scenario without that import shows the defect the
hooks remove (asgiref's ``no running event loop``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from channels_runtime.compat import bridge_hooks

BACKENDS = ["asyncio", "trio"]

# Django configured with a SQLite file, a model-free ORM query and a signal receiver.
_PRELUDE = """
import sys, threading
import anyio
import django
from django.conf import settings
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB}},
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    USE_TZ=True,
)
django.setup()
"""


def run_scenario(body: str, backend: str, tmp_path: Path, *, hooks: bool = True) -> str:
    """Run ``body`` (defines ``async def main()``) on ``backend`` in a new interpreter."""
    script = (
        f"DB = {str(tmp_path / 'db.sqlite3')!r}\n"
        + ("import channels_runtime\n" if hooks else "")
        + _PRELUDE
        + textwrap.dedent(body)
        + f"\nprint(anyio.run(main, backend={backend!r}))\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    if done.returncode != 0:
        return "FAILED: " + done.stderr.strip().splitlines()[-1]
    return done.stdout.strip().splitlines()[-1]


SYNC_TO_ASYNC = """
from asgiref.sync import sync_to_async

async def main():
    return await sync_to_async(lambda: "ran in " + threading.current_thread().name[:6])()
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_to_async_first_call(backend: str, tmp_path: Path) -> None:
    assert run_scenario(SYNC_TO_ASYNC, backend, tmp_path).startswith("ran in ")


def test_without_the_hooks_trio_fails(tmp_path: Path) -> None:
    # The defect the hooks exist for: asgiref alone on trio.
    result = run_scenario(SYNC_TO_ASYNC, "trio", tmp_path, hooks=False)
    assert result == "FAILED: RuntimeError: no running event loop"


@pytest.mark.parametrize("backend", BACKENDS)
def test_database_sync_to_async_and_async_orm_first_call(backend: str, tmp_path: Path) -> None:
    body = """
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from channels_runtime.db import database_sync_to_async

    async def main():
        await database_sync_to_async(call_command)("migrate", verbosity=0)
        await User.objects.acreate(username="ada")
        return await User.objects.acount()
    """
    assert run_scenario(body, backend, tmp_path) == "1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_asend_first_call(backend: str, tmp_path: Path) -> None:
    body = """
    from django.dispatch import Signal
    ping = Signal()

    def sync_receiver(sender, **kwargs):
        return "sync"

    async def async_receiver(sender, **kwargs):
        await anyio.sleep(0)
        return "async"

    ping.connect(sync_receiver)
    ping.connect(async_receiver)

    async def main():
        return sorted(response for _, response in await ping.asend(sender=None))
    """
    assert run_scenario(body, backend, tmp_path) == "['async', 'sync']"


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_to_sync_from_a_worker_thread_first_call(backend: str, tmp_path: Path) -> None:
    body = """
    from asgiref.sync import async_to_sync
    import sniffio

    async def where():
        await anyio.sleep(0)
        return sniffio.current_async_library()

    async def main():
        return await anyio.to_thread.run_sync(async_to_sync(where))
    """
    # The coroutine ran on the calling loop, not on a throwaway asyncio loop.
    assert run_scenario(body, backend, tmp_path) == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_thread_sensitive_context_first_call(backend: str, tmp_path: Path) -> None:
    body = """
    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    async def main():
        async with ThreadSensitiveContext():
            first = await sync_to_async(threading.get_ident)()
            second = await sync_to_async(threading.get_ident)()
        return first == second != threading.get_ident()
    """
    assert run_scenario(body, backend, tmp_path) == "True"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_orm_in_the_event_loop_is_refused(backend: str, tmp_path: Path) -> None:
    body = """
    from django.core.exceptions import SynchronousOnlyOperation
    from django.db import connection

    async def main():
        try:
            connection.cursor()
        except SynchronousOnlyOperation:
            return "refused"
        return "ran on the event loop thread"
    """
    assert run_scenario(body, backend, tmp_path) == "refused"


def test_asyncio_only_processes_never_import_trio(tmp_path: Path) -> None:
    body = """
    from asgiref.sync import async_to_sync, sync_to_async

    async def nested():
        return 1

    async def main():
        await sync_to_async(async_to_sync(nested))()
        return "trio" in sys.modules
    """
    assert run_scenario(body, "asyncio", tmp_path) == "False"


def test_hooks_keep_asgirefs_own_methods_for_asyncio() -> None:
    # Captured before anything patched asgiref: the bridge's asyncio path uses them.
    assert bridge_hooks.ORIGINAL_SYNC_TO_ASYNC_CALL.__module__ == "asgiref.sync"
    assert bridge_hooks.ORIGINAL_ASYNC_TO_SYNC_CALL.__module__ == "asgiref.sync"
    assert bridge_hooks.ORIGINAL_CONTEXT_AEXIT.__module__ == "asgiref.sync"
    bridge_hooks.install_hooks()  # idempotent
