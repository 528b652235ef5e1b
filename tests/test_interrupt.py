"""``compat.interrupt.InterruptibleWait`` and the shutdown middleware's use of it.

The middleware relies on three properties, each tested on every backend:
an interrupted wait raises ``Interrupted`` and leaves the awaited queue's
message in place; an interruption never swallows a cancellation that came
from elsewhere; and a wait that is not interrupted behaves like a plain await.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from channels_runtime.compat.hypercorn_fixes.app_inbox import AppInbox
from channels_runtime.compat.interrupt import Interrupted, InterruptibleWait
from channels_runtime.server.shutdown import GOING_AWAY, GracefulShutdown

pytestmark = pytest.mark.anyio


async def test_plain_wait_returns_the_result(anyio_backend: Any) -> None:
    waiter = InterruptibleWait()

    async def call() -> int:
        await anyio.lowlevel.checkpoint()
        return 7

    assert await waiter.wait(call) == 7
    assert waiter.interrupt() is False  # nothing is waiting any more


async def test_interrupt_ends_the_wait_and_keeps_the_message(anyio_backend: Any) -> None:
    send_stream, receive_stream = anyio.create_memory_object_stream[str](10)
    waiter = InterruptibleWait()
    outcome: list[object] = []

    async def waiting() -> None:
        try:
            outcome.append(await waiter.wait(receive_stream.receive))
        except Interrupted:
            outcome.append("interrupted")

    async with send_stream, receive_stream, anyio.create_task_group() as group:
        group.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        assert waiter.interrupt() is True
        assert waiter.interrupt() is True  # a second request changes nothing
        await anyio.wait_all_tasks_blocked()
        assert outcome == ["interrupted"]
        # The queue is intact, and the same waiter works again afterwards.
        await send_stream.send("after")
        assert await waiter.wait(receive_stream.receive) == "after"
        # Nothing was left pending on this task: a later checkpoint is not cancelled.
        await anyio.lowlevel.checkpoint()


class _CancelSafeQueue:
    """A queue whose ``get`` leaves the item queued when cancelled after the wake-up,
    as the ASGI servers' receive queues do (anyio's memory streams hand an item to
    a waiting receiver directly, so a cancellation at that moment loses it)."""

    def __init__(self) -> None:
        self.items: deque[str] = deque()
        self._ready = anyio.Event()

    def put(self, item: str) -> None:
        self.items.append(item)
        self._ready.set()

    async def get(self) -> str:
        while not self.items:
            ready = self._ready
            await ready.wait()
            if ready is self._ready:
                self._ready = anyio.Event()
        return self.items.popleft()


async def test_interrupt_after_the_message_arrived_does_not_lose_it(anyio_backend: Any) -> None:
    """Message delivered and interrupt requested before the waiter resumes: either
    the waiter gets the message, or it is interrupted and the message stays queued."""
    queue = _CancelSafeQueue()
    waiter = InterruptibleWait()
    outcome: list[object] = []

    async def waiting() -> None:
        try:
            outcome.append(await waiter.wait(queue.get))
        except Interrupted:
            outcome.append("interrupted")

    async with anyio.create_task_group() as group:
        group.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        queue.put("hello")
        waiter.interrupt()
    if outcome == ["interrupted"]:
        assert list(queue.items) == ["hello"]
    else:
        assert outcome == ["hello"]
        assert not queue.items


async def test_a_cancellation_from_outside_is_not_swallowed(anyio_backend: Any) -> None:
    waiter = InterruptibleWait()
    reached_after = False

    async def waiting(scope_ready: anyio.Event, holder: list[anyio.CancelScope]) -> None:
        nonlocal reached_after
        with anyio.CancelScope() as scope:
            holder.append(scope)
            scope_ready.set()
            await waiter.wait(anyio.sleep_forever)
            reached_after = True

    ready = anyio.Event()
    holder: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as group:
        group.start_soon(waiting, ready, holder)
        await ready.wait()
        await anyio.wait_all_tasks_blocked()
        # Both at once: the outer scope's cancellation must win, not become Interrupted.
        holder[0].cancel()
        waiter.interrupt()
    assert reached_after is False
    assert holder[0].cancelled_caught


async def test_cancelling_the_task_group_cancels_an_interruptible_wait(anyio_backend: Any) -> None:
    waiter = InterruptibleWait()
    finished = False

    async def waiting() -> None:
        nonlocal finished
        await waiter.wait(anyio.sleep_forever)
        finished = True

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(waiting)
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()
    assert finished is False
    assert waiter.interrupt() is False


async def test_going_away_waits_for_a_frame_in_flight_and_drops_later_ones(
    anyio_backend: Any,
) -> None:
    """The close frame never overtakes a frame the application is writing, and
    frames the application sends after the server started going away are dropped."""
    release = anyio.Event()
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def server_receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def server_send(message: dict[str, Any]) -> None:
        if message.get("text") == "slow":
            await release.wait()
        sent.append(message)

    in_slow_send = anyio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append(await receive())
        await send({"type": "websocket.accept"})
        in_slow_send.set()
        await send({"type": "websocket.send", "text": "slow"})
        await send({"type": "websocket.send", "text": "after going away"})
        received.append(await receive())

    guard = GracefulShutdown(app)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(guard, {"type": "websocket", "path": "/"}, server_receive, server_send)
            await in_slow_send.wait()
            await anyio.wait_all_tasks_blocked()

            async def close() -> None:
                assert await guard.close_websockets(5.0) == 0

            group.start_soon(close)
            await anyio.wait_all_tasks_blocked()
            assert sent == [{"type": "websocket.accept"}]  # close waits for the slow frame
            release.set()
    assert sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "slow"},
        {"type": "websocket.close", "code": GOING_AWAY},
    ]
    assert received == [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": GOING_AWAY},
    ]
    assert guard.open_websockets == 0


async def test_going_away_interrupts_a_waiting_receive(anyio_backend: Any) -> None:
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    send_stream, receive_stream = anyio.create_memory_object_stream[dict[str, Any]](10)
    send_stream.send_nowait({"type": "websocket.connect"})

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append(await receive())
        await send({"type": "websocket.accept"})
        received.append(await receive())
        # The disconnect handler can still await: nothing is left cancelled.
        await anyio.sleep(0.01)
        received.append(await receive())

    guard = GracefulShutdown(app)
    with anyio.fail_after(5):
        async with send_stream, receive_stream, anyio.create_task_group() as group:
            group.start_soon(
                guard, {"type": "websocket", "path": "/"}, receive_stream.receive, server_send
            )
            await anyio.wait_all_tasks_blocked()
            assert await guard.close_websockets(5.0) == 0
    going_away = {"type": "websocket.disconnect", "code": GOING_AWAY}
    assert received == [{"type": "websocket.connect"}, going_away, going_away]
    assert sent == [{"type": "websocket.accept"}, {"type": "websocket.close", "code": GOING_AWAY}]


async def test_going_away_ends_an_inbox_receive_that_the_app_reads_unwrapped(
    anyio_backend: Any,
) -> None:
    """Under ``serve`` the server's receive is an AppInbox's get: the application
    gets it as it is (nothing of the guard on each message), and going away
    ends it through the inbox."""
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    inbox = AppInbox(10)
    await inbox.put({"type": "websocket.connect"})
    handed: list[Any] = []

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handed.append(receive)
        received.append(await receive())
        await send({"type": "websocket.accept"})
        received.append(await receive())
        await anyio.sleep(0.01)
        received.append(await receive())

    guard = GracefulShutdown(app)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(guard, {"type": "websocket", "path": "/"}, inbox.get, server_send)
            await anyio.wait_all_tasks_blocked()
            assert guard.open_websockets == 1
            assert await guard.close_websockets(5.0) == 0
    assert handed == [inbox.get]
    going_away = {"type": "websocket.disconnect", "code": GOING_AWAY}
    assert received == [{"type": "websocket.connect"}, going_away, going_away]
    assert sent == [{"type": "websocket.accept"}, {"type": "websocket.close", "code": GOING_AWAY}]


async def test_going_away_after_the_client_left_sends_no_close_frame(anyio_backend: Any) -> None:
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    inbox = AppInbox(10)
    await inbox.put({"type": "websocket.connect"})
    release = anyio.Event()

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append(await receive())
        await send({"type": "websocket.accept"})
        await release.wait()  # busy while the client goes and the server stops
        received.append(await receive())

    guard = GracefulShutdown(app)
    client_gone = {"type": "websocket.disconnect", "code": 1006}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(guard, {"type": "websocket", "path": "/"}, inbox.get, server_send)
            await anyio.wait_all_tasks_blocked()
            await inbox.put(client_gone)

            async def close() -> None:
                assert await guard.close_websockets(5.0) == 0

            group.start_soon(close)
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert received == [{"type": "websocket.connect"}, client_gone]
    assert sent == [{"type": "websocket.accept"}]
