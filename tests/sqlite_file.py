"""A migrated SQLite *file* as the ``default`` database, for tests that need tables.

The suite's ``:memory:`` database is private to each connection, but Django's
async ORM runs in worker threads (asgiref's on asyncio, the bridge's on trio)
and a live server runs in another process: they all need a file. Every
thread's connection shares one settings dict, so changing ``NAME`` there moves
them all — once each thread's open connection has been closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from django.core.management import call_command
from django.db import connections

from channels_runtime.compat.backend import ensure_bridge
from channels_runtime.sync import sync_to_async


def close_connections_everywhere() -> None:
    """Close the connections of this thread and of both backends' ORM worker threads."""

    async def close_in_worker() -> None:
        ensure_bridge()
        await sync_to_async(connections.close_all)()

    connections.close_all()
    anyio.run(close_in_worker, backend="asyncio")
    anyio.run(close_in_worker, backend="trio")


@contextmanager
def sqlite_file_database(
    path: Path, *, before_migrate: Callable[[], None] | None = None
) -> Iterator[Path]:
    """Point ``default`` at a fresh SQLite file at ``path``, migrate it, restore afterwards."""
    settings_dict = connections["default"].settings_dict
    old_name = settings_dict["NAME"]
    settings_dict["NAME"] = str(path)
    close_connections_everywhere()
    try:
        if before_migrate is not None:
            before_migrate()
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        yield path
    finally:
        close_connections_everywhere()
        settings_dict["NAME"] = old_name
