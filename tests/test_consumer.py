"""AsyncConsumer: handler lookup, dispatch from two sources, stop, errors, cancellation."""

from __future__ import annotations

import traceback
from typing import Any

import anyio
import pytest
from django.test import override_settings

from channels_runtime.consumer import AsyncConsumer, get_handler_name
from channels_runtime.exceptions import StopConsumer
from channels_runtime.layers import get_channel_layer

pytestmark = pytest.mark.anyio


class Pipe:
    """A client side for a consumer: feed messages in, read what it sends."""

    def __init__(self) -> None:
        self.to_app_send, self.to_app_receive = anyio.create_memory_object_stream[dict](100)
        self.from_app_send, self.from_app_receive = anyio.create_memory_object_stream[dict](100)

    async def receive(self) -> dict[str, Any]:
        return await self.to_app_receive.receive()

    async def send(self, message: dict[str, Any]) -> None:
        await self.from_app_send.send(message)


def test_get_handler_name() -> None:
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert get_handler_name({"type": "chat.message.new"}) == "chat_message_new"
    with pytest.raises(ValueError, match="leading underscore"):
        get_handler_name({"type": "_private.thing"})
    with pytest.raises(ValueError, match="no 'type'"):
        get_handler_name({"text": "hi"})
    with pytest.raises(ValueError, match="must be a string"):
        get_handler_name({"type": 3})


class Echo(AsyncConsumer):
    async def test_ping(self, message: dict[str, Any]) -> None:
        await self.send({"type": "test.pong", "n": message["n"], "via": "client"})

    async def layer_ping(self, message: dict[str, Any]) -> None:
        await self.send({"type": "test.pong", "n": message["n"], "via": "layer"})

    async def test_stop(self, message: dict[str, Any]) -> None:
        raise StopConsumer()


async def test_dispatch_from_client_and_layer() -> None:
    pipe = Pipe()
    consumer = Echo()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer, {"type": "test"}, pipe.receive, pipe.send)
        await pipe.to_app_send.send({"type": "test.ping", "n": 1})
        assert await pipe.from_app_receive.receive() == {
            "type": "test.pong",
            "n": 1,
            "via": "client",
        }
        layer = get_channel_layer()
        await layer.send(consumer.channel_name, {"type": "layer.ping", "n": 2})
        assert await pipe.from_app_receive.receive() == {
            "type": "test.pong",
            "n": 2,
            "via": "layer",
        }
        await pipe.to_app_send.send({"type": "test.stop"})
    # StopConsumer ends the instance cleanly: the task group exited without error.


async def test_no_channel_layer_configured() -> None:
    pipe = Pipe()
    consumer = Echo()
    with override_settings(CHANNEL_LAYERS={}):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer, {"type": "test"}, pipe.receive, pipe.send)
            await pipe.to_app_send.send({"type": "test.ping", "n": 1})
            assert (await pipe.from_app_receive.receive())["n"] == 1
            await pipe.to_app_send.send({"type": "test.stop"})
    assert consumer.channel_layer is None
    assert not hasattr(consumer, "channel_name")


async def test_missing_handler_names_the_type() -> None:
    pipe = Pipe()
    await pipe.to_app_send.send({"type": "nobody.handles.this"})
    with pytest.raises(ValueError, match=r"nobody\.handles\.this"):
        await Echo()({"type": "test"}, pipe.receive, pipe.send)


class Ordered(AsyncConsumer):
    """Records handler entry/exit to prove handlers never overlap."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.active = 0

    async def _handle(self, message: dict[str, Any]) -> None:
        self.active += 1
        assert self.active == 1, "two handlers ran at once"
        self.events.append(("start", message["n"]))
        await anyio.sleep(0.001)
        self.events.append(("end", message["n"]))
        self.active -= 1
        await self.send({"type": "done", "n": message["n"]})

    async def test_msg(self, message: dict[str, Any]) -> None:
        await self._handle(message)

    async def layer_msg(self, message: dict[str, Any]) -> None:
        await self._handle(message)


async def test_handlers_run_one_at_a_time_in_arrival_order() -> None:
    pipe = Pipe()
    consumer = Ordered()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer, {"type": "test"}, pipe.receive, pipe.send)
        layer = get_channel_layer()
        await pipe.to_app_send.send({"type": "test.msg", "n": -1})
        assert (await pipe.from_app_receive.receive())["n"] == -1  # channel_name is set now
        consumer.events.clear()
        for n in range(20):
            if n % 2:
                await layer.send(consumer.channel_name, {"type": "layer.msg", "n": n})
            else:
                await pipe.to_app_send.send({"type": "test.msg", "n": n})
        done = [(await pipe.from_app_receive.receive())["n"] for _ in range(20)]
        tg.cancel_scope.cancel()
    assert sorted(done) == list(range(20))
    # Client messages keep their order, as do layer messages.
    assert [n for n in done if n % 2 == 0] == list(range(0, 20, 2))
    assert [n for n in done if n % 2] == list(range(1, 20, 2))
    starts = [n for kind, n in consumer.events if kind == "start"]
    ends = [n for kind, n in consumer.events if kind == "end"]
    assert starts == ends == done


class Boom(AsyncConsumer):
    async def test_boom(self, message: dict[str, Any]) -> None:
        raise KeyError("handler exploded")


async def test_handler_exception_propagates_unwrapped_with_traceback() -> None:
    pipe = Pipe()
    await pipe.to_app_send.send({"type": "test.boom"})
    with pytest.raises(KeyError, match="handler exploded") as info:
        with anyio.fail_after(5):
            await Boom()({"type": "test"}, pipe.receive, pipe.send)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "test_boom" in frames


async def test_layer_receive_failure_propagates() -> None:
    class BrokenLayerReceive(AsyncConsumer):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await super().__call__(scope, receive, send)

    layer = get_channel_layer()

    async def failing_receive(channel: str) -> dict[str, Any]:
        raise ConnectionError(f"layer down for {channel}")

    layer.receive = failing_receive
    pipe = Pipe()
    with pytest.raises(ConnectionError, match="layer down"), anyio.fail_after(5):
        await BrokenLayerReceive()({"type": "test"}, pipe.receive, pipe.send)


class Finalising(AsyncConsumer):
    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cleaned_up = False

    async def test_hang(self, message: dict[str, Any]) -> None:
        self.started.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.cleaned_up = True


async def test_cancellation_from_server_stops_promptly() -> None:
    pipe = Pipe()
    consumer = Finalising()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer, {"type": "test"}, pipe.receive, pipe.send)
            await pipe.to_app_send.send({"type": "test.hang"})
            await consumer.started.wait()
            tg.cancel_scope.cancel()
    assert consumer.cleaned_up


async def test_as_asgi_builds_an_instance_per_connection() -> None:
    instances: list[AsyncConsumer] = []

    class Counted(Echo):
        def __init__(self, label: str) -> None:
            self.label = label
            instances.append(self)

        async def test_ping(self, message: dict[str, Any]) -> None:
            await self.send({"type": "test.pong", "label": self.label})

    app = Counted.as_asgi(label="x")
    assert app.consumer_class is Counted
    assert app.consumer_initkwargs == {"label": "x"}
    assert app.__name__ == "Counted"
    for _ in range(2):
        pipe = Pipe()
        await pipe.to_app_send.send({"type": "test.ping"})
        await pipe.to_app_send.send({"type": "test.stop"})
        await app({"type": "test"}, pipe.receive, pipe.send)
        assert await pipe.from_app_receive.receive() == {"type": "test.pong", "label": "x"}
    assert len(instances) == 2
    assert instances[0] is not instances[1]


async def test_turn_is_fair_and_survives_cancelled_waiters() -> None:
    from channels_runtime.dispatch import Turn

    turn = Turn()
    order: list[str] = []
    await turn.acquire()  # held by "us"

    async def waiter(name: str) -> None:
        await turn.acquire()
        order.append(name)
        turn.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "a")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "c")
        await anyio.wait_all_tasks_blocked()
        cancelled_scope = anyio.CancelScope()

        async def cancellable() -> None:
            with cancelled_scope:
                await turn.acquire()
                order.append("never")

        tg.start_soon(cancellable)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "b")
        await anyio.wait_all_tasks_blocked()
        cancelled_scope.cancel()  # leaves the queue without taking the turn
        await anyio.wait_all_tasks_blocked()
        turn.release()
    assert order == ["a", "c", "b"]


async def test_turn_handed_over_to_a_cancelled_waiter_is_passed_on() -> None:
    from channels_runtime.dispatch import Turn

    turn = Turn()
    await turn.acquire()
    got: list[str] = []
    scope = anyio.CancelScope()

    async def first() -> None:
        with scope:
            await turn.acquire()
            # Handed the turn as it was cancelled: it may still get it (the wait had
            # completed) or pass it on, but the turn must never be lost.
            got.append("first")
            turn.release()

    async def second() -> None:
        await turn.acquire()
        got.append("second")
        turn.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        turn.release()  # hands the turn to `first`...
        scope.cancel()  # ...which is cancelled before it runs
    assert got[-1] == "second"
    await turn.acquire()  # and the turn is free again afterwards
