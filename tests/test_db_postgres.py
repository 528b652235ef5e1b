"""Connection lifecycle against a real PostgreSQL server (the ``pg`` alias).

Connections are counted in ``pg_stat_activity`` by their ``application_name``,
so the numbers are the server's own, not Django's idea of them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from django.db import connections

from channels_runtime.consumer import AsyncConsumer
from channels_runtime.db import (
    aclose_old_connections,
    connections_need_closing,
    database_sync_to_async,
    keep_connections_open,
)
from channels_runtime.exceptions import StopConsumer
from channels_runtime.sync import sync_to_async

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.anyio


def _monitor_dsn() -> str:
    s = connections.settings["pg"]
    return f"host={s['HOST']} port={s['PORT']} dbname={s['NAME']} user={s['USER']}" + (
        f" password={s['PASSWORD']}" if s["PASSWORD"] else ""
    )


@pytest.fixture(scope="module")
def monitor() -> Iterator[Any]:
    """A raw psycopg connection that watches the server from outside Django."""
    try:
        conn = psycopg.connect(_monitor_dsn(), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but is unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable ({exc}); set DATABASE_URL to run these tests")
    yield conn
    conn.close()


APP_NAME = connections.settings["pg"]["OPTIONS"]["application_name"]


def server_connections(monitor: Any) -> list[int]:
    rows = monitor.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
    ).fetchall()
    return [row[0] for row in rows]


async def wait_until_no_connections(monitor: Any) -> int:
    """Poll the server until this process has no connection; return the most seen.

    A backend whose client has just closed stays in ``pg_stat_activity`` for a
    moment while it exits, so "closed" is observed by waiting for it to go.
    """
    most = 0
    with anyio.fail_after(5):
        while count := len(server_connections(monitor)):
            most = max(most, count)
            await anyio.sleep(0.001)
    return most


def _close_pg_here() -> None:
    connections["pg"].close()


@pytest.fixture
async def pg_settings(monitor: Any) -> Any:
    """The pg alias's settings dict, restored afterwards with its connection closed.

    The connection lives in the thread-sensitive thread, so it is closed there,
    from the client side, as the consumer would.
    """
    settings_dict = connections.settings["pg"]
    saved = dict(settings_dict)
    yield settings_dict
    settings_dict.clear()
    settings_dict.update(saved)
    await sync_to_async(_close_pg_here)()
    await wait_until_no_connections(monitor)


def backend_pid() -> int:
    with connections["pg"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


class Pipe:
    def __init__(self) -> None:
        self.in_send, self.in_receive = anyio.create_memory_object_stream[dict](1000)
        self.out_send, self.out_receive = anyio.create_memory_object_stream[dict](1000)

    async def receive(self) -> dict[str, Any]:
        return await self.in_receive.receive()

    async def send(self, message: dict[str, Any]) -> None:
        await self.out_send.send(message)


class QueryConsumer(AsyncConsumer):
    """Uses the ORM the way async views do: plain thread-sensitive sync_to_async."""

    async def db_query(self, message: dict[str, Any]) -> None:
        pid = await sync_to_async(backend_pid)()
        await self.send({"type": "db.result", "pid": pid})

    async def db_stop(self, message: dict[str, Any]) -> None:
        raise StopConsumer()


async def run_consumer(pipe: Pipe, tg: anyio.abc.TaskGroup) -> None:
    tg.start_soon(QueryConsumer(), {"type": "test"}, pipe.receive, pipe.send)


async def query(pipe: Pipe) -> int:
    await pipe.in_send.send({"type": "db.query"})
    with anyio.fail_after(10):
        return int((await pipe.out_receive.receive())["pid"])


async def test_conn_max_age_0_holds_at_most_one_connection(
    monitor: Any, pg_settings: dict[str, Any]
) -> None:
    pg_settings["CONN_MAX_AGE"] = 0
    pipe = Pipe()
    most = 0
    pids = set()
    async with anyio.create_task_group() as tg:
        await run_consumer(pipe, tg)
        for _ in range(1000):
            pids.add(await query(pipe))
            most = max(most, await wait_until_no_connections(monitor))
        await pipe.in_send.send({"type": "db.stop"})
    assert most <= 1
    # Every message got a fresh connection: the previous one was closed.
    assert len(pids) > 900
    # ...and nothing is left open once the consumer is idle or gone.
    assert server_connections(monitor) == []


async def test_idle_consumer_holds_no_connection(monitor: Any, pg_settings: dict[str, Any]) -> None:
    pg_settings["CONN_MAX_AGE"] = 0
    pipe = Pipe()
    async with anyio.create_task_group() as tg:
        await run_consumer(pipe, tg)
        await query(pipe)
        # The connection goes once the handler has finished, without another message.
        await wait_until_no_connections(monitor)
        tg.cancel_scope.cancel()


async def test_conn_max_age_reuses_then_replaces(monitor: Any, pg_settings: dict[str, Any]) -> None:
    pg_settings["CONN_MAX_AGE"] = 1
    pipe = Pipe()
    async with anyio.create_task_group() as tg:
        await run_consumer(pipe, tg)
        first = {await query(pipe) for _ in range(20)}
        assert len(first) == 1, "a persistent connection should be reused across messages"
        assert len(server_connections(monitor)) == 1
        await anyio.sleep(1.2)
        replaced = await query(pipe)
        assert replaced not in first, "a connection older than CONN_MAX_AGE must be replaced"
        assert server_connections(monitor) == [replaced]
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("max_age", [0, 60])
async def test_connection_killed_by_server_is_replaced(
    monitor: Any, pg_settings: dict[str, Any], max_age: int
) -> None:
    pg_settings["CONN_MAX_AGE"] = max_age
    # Persistent connections need Django's health checks to notice a dead server side.
    pg_settings["CONN_HEALTH_CHECKS"] = max_age > 0
    pipe = Pipe()
    async with anyio.create_task_group() as tg:
        await run_consumer(pipe, tg)
        before = await query(pipe)
        if max_age:
            assert server_connections(monitor) == [before]
            monitor.execute("SELECT pg_terminate_backend(%s)", (before,))
        after = await query(pipe)
        assert after != before
        tg.cancel_scope.cancel()


async def _with_busy_sync_thread(check: Any) -> None:
    """Run ``check`` while the thread-sensitive thread is blocked by another call."""
    release = threading.Event()
    entered = threading.Event()

    def block() -> None:
        entered.set()
        release.wait(10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sync_to_async(block))
        await anyio.to_thread.run_sync(entered.wait, 5)
        try:
            await check()
        finally:
            release.set()


async def test_no_thread_hop_when_nothing_is_due(pg_settings: dict[str, Any]) -> None:
    pg_settings["CONN_MAX_AGE"] = 60
    await sync_to_async(backend_pid)()
    await aclose_old_connections()
    assert not connections_need_closing()

    async def returns_without_the_thread() -> None:
        # Had it hopped, it would wait behind the blocked thread and time out.
        with anyio.fail_after(1):
            await aclose_old_connections()

    await _with_busy_sync_thread(returns_without_the_thread)


async def test_thread_hop_when_a_connection_is_due(pg_settings: dict[str, Any]) -> None:
    pg_settings["CONN_MAX_AGE"] = 0
    await sync_to_async(backend_pid)()
    assert connections_need_closing()
    release = threading.Event()
    entered = threading.Event()
    released_at = finished_at = 0.0

    def block() -> None:
        entered.set()
        release.wait(10)

    async def close_pass() -> None:
        nonlocal finished_at
        await aclose_old_connections()
        finished_at = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sync_to_async(block))
        await anyio.to_thread.run_sync(entered.wait, 5)
        tg.start_soon(close_pass)
        await anyio.sleep(0.2)
        released_at = time.monotonic()
        release.set()
    # The pass had to wait for the thread the connection lives in.
    assert finished_at >= released_at
    assert not connections_need_closing()


async def test_database_sync_to_async_closes_before_and_after(
    monitor: Any, pg_settings: dict[str, Any]
) -> None:
    pg_settings["CONN_MAX_AGE"] = 0
    pid = await database_sync_to_async(backend_pid)()
    assert pid
    assert not connections_need_closing()
    await wait_until_no_connections(monitor)


async def test_keep_connections_open_switch(monitor: Any, pg_settings: dict[str, Any]) -> None:
    pg_settings["CONN_MAX_AGE"] = 0
    holder_entered = threading.Event()
    holder_release = threading.Event()

    def hold_from_another_thread() -> None:
        with keep_connections_open():
            holder_entered.set()
            holder_release.wait(10)

    with keep_connections_open():
        pid = await database_sync_to_async(backend_pid)()
        await aclose_old_connections()
        assert server_connections(monitor) == [pid], "the switch must keep the connection"
        thread = threading.Thread(target=hold_from_another_thread)
        thread.start()
        holder_entered.wait(5)
    # The other thread still holds the switch: still kept.
    await aclose_old_connections()
    assert server_connections(monitor) == [pid]
    holder_release.set()
    await anyio.to_thread.run_sync(thread.join)
    # Nobody holds it any more: the next pass closes the connection.
    await aclose_old_connections()
    assert not connections_need_closing()
    await wait_until_no_connections(monitor)


def test_keep_connections_open_is_thread_safe() -> None:
    from channels_runtime import db

    start = db._keep_depth

    def churn() -> None:
        for _ in range(10_000):
            with keep_connections_open():
                pass

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db._keep_depth == start


async def test_in_memory_sqlite_needs_no_close_pass() -> None:
    """Django never closes an in-memory SQLite connection, so no pass (and no hop) is due."""

    def touch_default() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")

    await sync_to_async(touch_default)()
    assert connections["default"].settings_dict["NAME"] == ":memory:"
    assert not connections_need_closing()


_OPENED_BEFORE_IMPORT = """
import sys
import django
from django.conf import settings

settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1],
                           "CONN_MAX_AGE": 0}},
    INSTALLED_APPS=[],
)
django.setup()
from django.db import connections

connections["default"].cursor().execute("SELECT 1")  # opened before the import below
assert "channels_runtime.db" not in sys.modules

from channels_runtime import db

assert db.close_pass_due(), "the connection opened before the import is not tracked"
db.close_old_connections()
assert connections["default"].connection is None
assert not db.close_pass_due()
print("ok")
"""


def test_connection_opened_before_import_is_tracked(tmp_path: Any) -> None:
    """A connection opened before ``channels_runtime.db`` was imported is still closed."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _OPENED_BEFORE_IMPORT, str(tmp_path / "db.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
