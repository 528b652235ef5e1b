"""A consumer that calls asyncio on trio fails with an error naming the call and the fix.

Each consumer below makes one kind of asyncio call from a handler, the way
libraries written for Channels do. On asyncio (and uvloop) the call works; on
trio the consumer fails with :class:`AsyncioCallOnTrio`, whose message names
the asyncio API, the function and line that called it, and what to do, with
the original error as its cause.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from channels_runtime.compat.asyncio_on_trio import (
    ADVICE,
    AsyncioCallOnTrio,
    find_asyncio_call,
)
from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.testing import WebsocketCommunicator

pytestmark = pytest.mark.anyio


def line_of(function: Any, text: str) -> int:
    """The line number of the first line of ``function`` containing ``text``."""
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


class CreatesTask(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        coro = self.reply("from a task")
        try:
            task = asyncio.create_task(coro)
        except RuntimeError:
            coro.close()  # never started: keep "never awaited" out of the test's warnings
            raise
        await task

    async def reply(self, text: str) -> None:
        await self.send(text_data=text)


class AsksForTheLoop(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        loop = asyncio.get_running_loop()
        await self.send(text_data=type(loop).__name__)


class Sleeps(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await asyncio.sleep(float(text_data or 0))
        await self.send(text_data="slept")


class UsesAQueue(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queue.put_nowait("queued")
        await self.send(text_data=await queue.get())
        await queue.get()  # empty: waits on a future of the running loop


class FailsOtherwise(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("no running event loop, says the application itself")


def on_trio(anyio_backend: Any) -> bool:
    return bool(anyio_backend[0] == "trio")


async def run(consumer: type[AsyncWebsocketConsumer], text: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    connected, _ = await comm.connect()
    assert connected
    await comm.send_to(text_data=text)
    return comm


def expected(api: str, function: Any, text: str) -> str:
    lineno = line_of(function, text)
    caller = f"{function.__module__}.{function.__qualname__}"
    return (
        f"{api} cannot run on trio: it is called by {caller}, line {lineno} ({__file__}), "
        f"and needs a running asyncio event loop, which a trio worker does not have. {ADVICE}"
    )


async def fails_on_trio(comm: WebsocketCommunicator) -> AsyncioCallOnTrio:
    with pytest.raises(AsyncioCallOnTrio) as raised:
        await comm.receive_from()
    assert comm.future.done()
    assert raised.value.__cause__ is not None
    return raised.value


async def test_create_task(anyio_backend: Any) -> None:
    comm = await run(CreatesTask, "hello")
    if not on_trio(anyio_backend):
        assert await comm.receive_from() == "from a task"
        await comm.disconnect()
        return
    error = await fails_on_trio(comm)
    assert str(error) == expected(
        "asyncio.create_task()", CreatesTask.receive, "asyncio.create_task("
    )
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == "no running event loop"
    assert (error.api, error.caller) == (
        "asyncio.create_task()",
        f"{__name__}.CreatesTask.receive",
    )


async def test_get_running_loop_named_by_its_line(anyio_backend: Any) -> None:
    comm = await run(AsksForTheLoop, "hello")
    if not on_trio(anyio_backend):
        assert "Loop" in await comm.receive_from()
        await comm.disconnect()
        return
    error = await fails_on_trio(comm)
    assert str(error) == expected(
        "the asyncio call in `loop = asyncio.get_running_loop()`",
        AsksForTheLoop.receive,
        "asyncio.get_running_loop()",
    )


@pytest.mark.parametrize("seconds", ["0.01", "0"])
async def test_sleep(anyio_backend: Any, seconds: str) -> None:
    # A positive sleep asks for the loop; sleep(0) yields to it bare, which trio refuses.
    comm = await run(Sleeps, seconds)
    if not on_trio(anyio_backend):
        assert await comm.receive_from() == "slept"
        await comm.disconnect()
        return
    error = await fails_on_trio(comm)
    assert str(error) == expected("asyncio.sleep()", Sleeps.receive, "asyncio.sleep(")
    assert isinstance(error.__cause__, RuntimeError if seconds != "0" else TypeError)


async def test_queue_without_a_loop(anyio_backend: Any) -> None:
    comm = await run(UsesAQueue, "hello")
    assert await comm.receive_from() == "queued"
    if not on_trio(anyio_backend):
        assert await comm.receive_nothing()
        await comm.disconnect()
        return
    error = await fails_on_trio(comm)
    assert str(error) == expected(
        "asyncio.Queue.get()", UsesAQueue.receive, "await queue.get()  # empty"
    )
    assert isinstance(error.__cause__, AttributeError)


async def test_other_errors_pass_unchanged(anyio_backend: Any) -> None:
    comm = await run(FailsOtherwise, "hello")
    with pytest.raises(RuntimeError) as raised:
        await comm.receive_from()
    assert comm.future.done()
    assert type(raised.value) is RuntimeError
    assert str(raised.value) == "no running event loop, says the application itself"


def test_find_asyncio_call_goes_by_the_error_it_is_given() -> None:
    def fail() -> None:
        raise RuntimeError("no running event loop")

    try:
        fail()
    except RuntimeError as exc:
        # asyncio's C functions raise exactly this with no frame of their own, so the
        # innermost frame is taken as the caller.
        found = find_asyncio_call(exc)
        assert found is not None
        assert found.caller.endswith("fail")
    for unrelated in (
        ValueError("no running event loop"),
        RuntimeError("no running event loop, says the application"),
        TypeError("x"),
        AttributeError("'NoneType' object has no attribute 'create_future'"),
    ):
        with pytest.raises(Exception) as raised:
            raise unrelated
        assert find_asyncio_call(raised.value) is None
