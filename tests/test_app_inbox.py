"""AppInbox: bounded for data, never full for the disconnect, cancel-safe (all backends)."""

from __future__ import annotations

import gc
from typing import Any

import anyio
import pytest

from channels_runtime.compat.hypercorn_fixes.app_inbox import AppInbox

pytestmark = pytest.mark.anyio

DISCONNECT = {"type": "websocket.disconnect", "code": 1006}


def frame(n: int) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": str(n), "bytes": None}


async def test_messages_come_out_in_order_then_the_disconnect_again_and_again(
    anyio_backend: Any,
) -> None:
    inbox = AppInbox(3)
    for n in range(3):
        await inbox.put(frame(n))
    await inbox.put(DISCONNECT)  # the queue is full: this must not wait
    assert inbox.disconnected
    assert [(await inbox.get())["text"] for _ in range(3)] == ["0", "1", "2"]
    assert await inbox.get() == DISCONNECT
    assert await inbox.get() == DISCONNECT


async def test_put_waits_for_room_and_gives_up_once_disconnected(anyio_backend: Any) -> None:
    inbox = AppInbox(1)
    await inbox.put(frame(0))
    outcome: list[str] = []

    async def blocked_put() -> None:
        await inbox.put(frame(1))
        outcome.append("returned")

    async with anyio.create_task_group() as group:
        group.start_soon(blocked_put)
        await anyio.wait_all_tasks_blocked()
        assert outcome == []  # no room
        await inbox.put(DISCONNECT)  # wakes the blocked put, which drops its message
        await anyio.wait_all_tasks_blocked()
        assert outcome == ["returned"]
    assert (await inbox.get())["text"] == "0"
    assert await inbox.get() == DISCONNECT  # frame 1 came after the disconnect: dropped


async def test_a_get_makes_room_for_a_waiting_put(anyio_backend: Any) -> None:
    inbox = AppInbox(1)
    await inbox.put(frame(0))
    async with anyio.create_task_group() as group:
        group.start_soon(inbox.put, frame(1))
        await anyio.wait_all_tasks_blocked()
        assert len(inbox) == 1
        assert (await inbox.get())["text"] == "0"
        await anyio.wait_all_tasks_blocked()
        assert len(inbox) == 1
    assert (await inbox.get())["text"] == "1"


async def test_cancelled_get_takes_nothing_and_cancelled_put_adds_nothing(
    anyio_backend: Any,
) -> None:
    inbox = AppInbox(1)
    with anyio.move_on_after(0.05):
        await inbox.get()
    await inbox.put(frame(0))
    with anyio.move_on_after(0.05):
        await inbox.put(frame(1))
    assert len(inbox) == 1
    assert (await inbox.get())["text"] == "0"
    with anyio.fail_after(1):
        async with anyio.create_task_group() as group:
            group.start_soon(inbox.put, frame(2))
    assert (await inbox.get())["text"] == "2"


async def test_a_waiting_get_is_woken_by_the_disconnect(anyio_backend: Any) -> None:
    inbox = AppInbox(10)
    got: list[dict[str, Any]] = []

    async def reader() -> None:
        got.append(await inbox.get())

    with anyio.fail_after(1):
        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            await inbox.put({"type": "http.disconnect"})
    assert got == [{"type": "http.disconnect"}]


def test_every_patch_point_exists_in_the_installed_hypercorn() -> None:
    from channels_runtime.compat import hypercorn_fixes

    assert hypercorn_fixes.missing_patch_points() == []


def _hypercorn_queues() -> int:
    """Hypercorn's own per-application receive queues alive now, on either backend."""
    import asyncio

    kinds: tuple[type, ...] = (asyncio.Queue,)
    try:
        import trio

        kinds += (trio.MemoryReceiveChannel,)
    except ImportError:
        pass
    gc.collect()
    # type(), not isinstance(): isinstance asks a Django LazyObject for its
    # __class__, which sets it up (and may fail) as a side effect.
    return sum(issubclass(type(obj), kinds) for obj in gc.get_objects())


async def test_hypercorn_s_own_queue_is_not_kept_beside_the_inbox(anyio_backend: Any) -> None:
    # spawn_app still makes Hypercorn's queue; what matters is that no running
    # application keeps it (an asyncio.Queue is four deques, about 3.3 KB).
    from hypercorn.config import Config

    from channels_runtime.compat.hypercorn_fixes import app_inbox

    app_inbox.install()
    if anyio_backend[0] == "trio":
        from hypercorn.trio.task_group import TaskGroup as TrioTaskGroup

        group: Any = TrioTaskGroup()
    else:
        import asyncio

        from hypercorn.asyncio.task_group import TaskGroup as AsyncioTaskGroup

        group = AsyncioTaskGroup(asyncio.get_running_loop())
    received: list[dict[str, Any]] = []
    all_received, release = anyio.Event(), anyio.Event()

    async def app(scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> None:
        received.append(await receive())
        if len(received) == 5:
            all_received.set()
        await release.wait()

    async def server_send(message: Any) -> None:
        pass

    before = _hypercorn_queues()
    async with group:
        puts = [
            await group.spawn_app(app, Config(), {"type": "websocket"}, server_send)
            for _ in range(5)
        ]
        for n, put in enumerate(puts):
            await put(frame(n))
        with anyio.fail_after(5):
            await all_received.wait()
        assert sorted(m["text"] for m in received) == ["0", "1", "2", "3", "4"]
        assert _hypercorn_queues() == before  # five applications running, no queue kept
        release.set()


async def test_message_waiting_says_whether_get_would_return_at_once(anyio_backend: Any) -> None:
    inbox = AppInbox(2)
    assert not inbox.message_waiting()
    await inbox.put(frame(0))
    assert inbox.message_waiting()
    await inbox.get()
    assert not inbox.message_waiting()
    await inbox.put(DISCONNECT)
    assert inbox.message_waiting()  # the disconnect, again and again


async def test_interrupt_replaces_what_is_queued_and_wakes_the_reader(anyio_backend: Any) -> None:
    inbox = AppInbox(1)
    going_away = {"type": "websocket.disconnect", "code": 1001}
    got: list[dict[str, Any]] = []
    async with anyio.create_task_group() as group:

        async def read() -> None:
            got.append(await inbox.get())

        group.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert inbox.interrupt(going_away)
    assert got == [going_away]
    # A put waiting for room gives up; later client messages are dropped.
    await inbox.put(frame(1))
    assert await inbox.get() == going_away


async def test_interrupt_drops_queued_messages_and_a_waiting_put(anyio_backend: Any) -> None:
    inbox = AppInbox(1)
    await inbox.put(frame(0))
    going_away = {"type": "websocket.disconnect", "code": 1001}
    async with anyio.create_task_group() as group:
        group.start_soon(inbox.put, frame(1))  # waits: no room
        await anyio.wait_all_tasks_blocked()
        assert inbox.interrupt(going_away)
    assert await inbox.get() == going_away


async def test_interrupt_after_the_clients_disconnect_changes_nothing(anyio_backend: Any) -> None:
    inbox = AppInbox(2)
    await inbox.put(frame(0))
    await inbox.put(DISCONNECT)
    assert not inbox.interrupt({"type": "websocket.disconnect", "code": 1001})
    assert (await inbox.get())["text"] == "0"
    assert await inbox.get() == DISCONNECT
