"""Sends from a sync consumer's thread (``channels_runtime.sync_send``).

The server side is played by plain ASGI callables whose ``send`` can be held
up, so each test can see exactly when a frame reaches the server relative to
what the handler thread does. What happens to a client too slow for the
queue's bounds is in ``test_sync_slow_client.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from channels_runtime.consumer import SyncConsumer
from channels_runtime.db import database_sync_to_async
from channels_runtime.exceptions import StopConsumer
from channels_runtime.generic.websocket import WebsocketConsumer
from channels_runtime.sync_send import payload_size

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


class _Server:
    """One fake connection: feeds messages to the app and records what it sends."""

    def __init__(self) -> None:
        self.incoming_send, self.incoming = anyio.create_memory_object_stream[Message](100)
        self.sent: list[Message] = []
        self.sent_changed = anyio.Event()
        self.gate: anyio.Event | None = None  # when set to an Event, send() waits for it
        self.fail_on: str | None = None

    async def receive(self) -> Message:
        return await self.incoming.receive()

    async def send(self, message: Message) -> None:
        if self.gate is not None and message["type"] == "websocket.send":
            await self.gate.wait()
        if self.fail_on is not None and message.get("text") == self.fail_on:
            raise OSError(f"the socket refused {self.fail_on!r}")
        self.sent.append(message)
        self.sent_changed.set()
        self.sent_changed = anyio.Event()

    async def wait_sent(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.sent) < count:
                await self.sent_changed.wait()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


def _frame(text: str) -> Message:
    return {"type": "websocket.receive", "text": text}


class Burst(WebsocketConsumer):
    """Sends as many numbered frames as the incoming frame says; records when it returns."""

    channel_layer_alias = None
    returned: threading.Event

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        for number in range(int(text_data)):
            self.send(text_data=f"{text_data}-{number}")
        self.returned.set()


async def _run(consumer_class: type[WebsocketConsumer], server: _Server, **initkwargs: Any) -> Any:
    app = consumer_class.as_asgi(**initkwargs)
    return await app({"type": "websocket", "path": "/"}, server.receive, server.send)


async def _thread_event_set(event: threading.Event) -> None:
    assert await anyio.to_thread.run_sync(event.wait, 5.0), "the handler did not return"


async def test_frames_are_queued_and_sent_in_order_before_the_next_message(
    anyio_backend: Any,
) -> None:
    server = _Server()
    Burst.returned = threading.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(_run, Burst, server)
        await server.incoming_send.send({"type": "websocket.connect"})
        await server.wait_sent(1)  # the accept
        server.gate = anyio.Event()
        await server.incoming_send.send(_frame("3"))
        # The handler returned while the server had taken none of its frames.
        await _thread_event_set(Burst.returned)
        assert server.texts() == []
        Burst.returned = threading.Event()
        await server.incoming_send.send(_frame("2"))
        await anyio.sleep(0.05)
        assert not Burst.returned.is_set()  # the next message waits for the flush
        server.gate.set()
        server.gate = None
        await server.wait_sent(6)
        assert server.texts() == ["3-0", "3-1", "3-2", "2-0", "2-1"]
        await server.incoming_send.send({"type": "websocket.disconnect", "code": 1000})
    assert server.sent[0]["type"] == "websocket.accept"


async def test_accept_waits_for_the_server(anyio_backend: Any) -> None:
    seen_by_server_after_accept: list[int] = []

    class Accepting(WebsocketConsumer):
        channel_layer_alias = None

        def connect(self) -> None:
            self.accept()
            seen_by_server_after_accept.append(len(server.sent))

    server = _Server()
    async with anyio.create_task_group() as group:
        group.start_soon(_run, Accepting, server)
        await server.incoming_send.send({"type": "websocket.connect"})
        await server.wait_sent(1)
        await server.incoming_send.send({"type": "websocket.disconnect", "code": 1000})
    assert seen_by_server_after_accept == [1]


class FramesThenOther(SyncConsumer):
    """Queues three frames, then sends a message of another type, which blocks."""

    channel_layer_alias = None
    returned: threading.Event

    def websocket_connect(self, message: Message) -> None:
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, message: Message) -> None:
        for number in range(3):
            self.send({"type": "websocket.send", "text": f"frame {number}"})
        self.send({"type": "test.other", "text": "after the frames"})
        self.returned.set()

    def websocket_disconnect(self, message: Message) -> None:
        raise StopConsumer


async def test_other_messages_wait_for_the_queued_frames_and_the_server(
    anyio_backend: Any,
) -> None:
    server = _Server()
    FramesThenOther.returned = threading.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(_run, FramesThenOther, server)
        await server.incoming_send.send({"type": "websocket.connect"})
        await server.wait_sent(1)
        server.gate = anyio.Event()
        await server.incoming_send.send(_frame("go"))
        await anyio.sleep(0.1)
        assert not FramesThenOther.returned.is_set()  # blocked behind the held frames
        server.gate.set()
        server.gate = None
        await _thread_event_set(FramesThenOther.returned)
        await server.incoming_send.send({"type": "websocket.disconnect", "code": 1000})
    assert [m.get("text") for m in server.sent[1:]] == [
        "frame 0",
        "frame 1",
        "frame 2",
        "after the frames",
    ]


async def test_max_queued_sends_zero_makes_every_send_wait(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen_by_server_at_return: list[int] = []

    class Blocking(WebsocketConsumer):
        channel_layer_alias = None
        max_queued_sends = 0
        max_queued_send_bytes = 1  # no bound applies when nothing is queued

        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            for number in range(5):
                self.send(text_data=f"frame {number}")
                seen_by_server_at_return.append(len(server.sent))
            self.close(4000)
            seen_by_server_at_return.append(len(server.sent))

    server = _Server()
    async with anyio.create_task_group() as group:
        group.start_soon(_run, Blocking, server)
        await server.incoming_send.send({"type": "websocket.connect"})
        await server.incoming_send.send(_frame("go"))
        await server.wait_sent(7)
        await server.incoming_send.send({"type": "websocket.disconnect", "code": 4000})
    # The accept and each message had been taken when its send() returned.
    assert seen_by_server_at_return == [2, 3, 4, 5, 6, 7]
    assert server.texts() == [f"frame {n}" for n in range(5)]
    assert server.sent[-1] == {"type": "websocket.close", "code": 4000}
    assert not [r for r in caplog.records if r.name == "channels_runtime.sync_send"]


async def test_close_is_queued_and_goes_out_after_the_frames(anyio_backend: Any) -> None:
    class SayAndClose(WebsocketConsumer):
        channel_layer_alias = None
        returned = threading.Event()

        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            self.send(text_data="a")
            self.send(text_data="b", close=4000)
            self.returned.set()

    server = _Server()
    async with anyio.create_task_group() as group:
        group.start_soon(_run, SayAndClose, server)
        await server.incoming_send.send({"type": "websocket.connect"})
        await server.wait_sent(1)
        server.gate = anyio.Event()
        await server.incoming_send.send(_frame("go"))
        # close() is queued behind the held frames; the handler did not wait for it.
        await _thread_event_set(SayAndClose.returned)
        await anyio.sleep(0.05)
        assert len(server.sent) == 1
        server.gate.set()
        server.gate = None
        await server.wait_sent(4)
        await server.incoming_send.send({"type": "websocket.disconnect", "code": 4000})
    assert server.sent[1:] == [
        {"type": "websocket.send", "text": "a"},
        {"type": "websocket.send", "text": "b"},
        {"type": "websocket.close", "code": 4000},
    ]


async def test_a_failed_send_is_raised_by_the_next_send(anyio_backend: Any) -> None:
    outcomes: list[str] = []

    class Persistent(WebsocketConsumer):
        channel_layer_alias = None

        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            self.send(text_data="bad")
            # Wait until the loop has tried (and failed) to send it.
            for _ in range(500):
                try:
                    self.send(text_data="probe")
                except OSError as exc:
                    outcomes.append(str(exc))
                    raise
                threading.Event().wait(0.01)

    server = _Server()
    server.fail_on = "bad"
    await server.incoming_send.send({"type": "websocket.connect"})
    await server.incoming_send.send(_frame("go"))
    with pytest.raises(OSError, match="refused 'bad'"), anyio.fail_after(10):
        await _run(Persistent, server)
    assert outcomes == ["the socket refused 'bad'"]
    assert "probe" not in server.texts()


async def test_a_failed_send_ends_the_consumer_after_the_handler(anyio_backend: Any) -> None:
    server = _Server()
    server.fail_on = "1-0"
    Burst.returned = threading.Event()
    await server.incoming_send.send({"type": "websocket.connect"})
    await server.incoming_send.send(_frame("1"))
    with pytest.raises(OSError, match="refused '1-0'"), anyio.fail_after(5):
        await _run(Burst, server)
    assert Burst.returned.is_set()


async def test_send_middleware_needing_the_sync_thread_does_not_deadlock(
    anyio_backend: Any,
) -> None:
    """A middleware that does thread-sensitive work for every frame, while the
    handler thread blocks behind those frames (a message of another type): the
    blocked handler thread must not be what the middleware waits for."""
    threads: set[int] = set()

    def note_thread() -> None:
        threads.add(threading.get_ident())

    def middleware(app: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(scope: Message, receive: Any, send: Any) -> None:
            async def sending(message: Message) -> None:
                if message["type"] == "websocket.send":
                    await database_sync_to_async(note_thread)()
                await send(message)

            await app(scope, receive, sending)

        return wrapped

    server = _Server()
    FramesThenOther.returned = threading.Event()
    app = middleware(FramesThenOther.as_asgi())
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(app, {"type": "websocket", "path": "/"}, server.receive, server.send)
            await server.incoming_send.send({"type": "websocket.connect"})
            await server.incoming_send.send(_frame("go"))
            await server.wait_sent(5)
            await server.incoming_send.send({"type": "websocket.disconnect", "code": 1000})
    assert server.texts() == [f"frame {n}" for n in range(3)]
    assert server.sent[-1]["type"] == "test.other"
    assert threads


async def test_cancelling_the_consumer_with_frames_queued_leaves_nothing_running(
    anyio_backend: Any,
) -> None:
    server = _Server()
    Burst.returned = threading.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(_run, Burst, server)
            await server.incoming_send.send({"type": "websocket.connect"})
            await server.wait_sent(1)
            server.gate = anyio.Event()  # never set
            await server.incoming_send.send(_frame("4"))
            await _thread_event_set(Burst.returned)
            group.cancel_scope.cancel()
    assert server.texts() == []


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("max_queued_sends", "max_queued must be 0 or more, got -1"),
        ("max_queued_send_bytes", "max_bytes must be 0 or more, got -1"),
    ],
)
async def test_the_queue_bounds_are_checked(
    anyio_backend: Any, attribute: str, message: str
) -> None:
    negative = type("Negative", (WebsocketConsumer,), {attribute: -1})
    server = _Server()
    with pytest.raises(ValueError, match=message):
        await _run(negative, server)


@pytest.mark.parametrize(
    ("message", "size"),
    [
        ({"type": "websocket.send", "text": "hello"}, 5),
        ({"type": "websocket.send", "text": "héllo €"}, 10),  # UTF-8, not characters
        ({"type": "websocket.send", "text": "\ud800"}, 3),  # a lone surrogate: no error here
        ({"type": "websocket.send", "bytes": b"\x00" * 7}, 7),
        ({"type": "websocket.send", "bytes": bytearray(4), "text": "ignored"}, 4),
        ({"type": "websocket.send", "bytes": None, "text": "ab"}, 2),
        ({"type": "websocket.send", "text": 12345}, 0),  # the server's send will refuse it
        ({"type": "websocket.send"}, 0),
    ],
)
def test_payload_size(message: Message, size: int) -> None:
    assert payload_size(message) == size
