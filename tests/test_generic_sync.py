"""Sync consumers: handlers in the thread-sensitive thread, sends back to the loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections

from channels_runtime.consumer import SyncConsumer
from channels_runtime.exceptions import InvalidJsonFrame, UnexpectedBinaryFrame
from channels_runtime.generic.websocket import JsonWebsocketConsumer, WebsocketConsumer
from channels_runtime.layers import get_channel_layer
from channels_runtime.sync import async_to_sync
from channels_runtime.testing import ApplicationCommunicator, WebsocketCommunicator

pytestmark = pytest.mark.anyio


class ThreadReporter(SyncConsumer):
    def test_where(self, message: dict[str, Any]) -> None:
        self.send({"type": "test.thread", "ident": threading.get_ident()})

    def test_orm(self, message: dict[str, Any]) -> None:
        # Plain sync ORM: allowed here, because this is not the event loop's thread.
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 7")
            (value,) = cursor.fetchone()
        self.send({"type": "test.orm", "value": value})


async def test_sync_handlers_run_in_one_dedicated_thread() -> None:
    loop_thread = threading.get_ident()
    async with ApplicationCommunicator(ThreadReporter(), {"type": "test"}) as comm:
        idents = set()
        for _ in range(5):
            await comm.send_input({"type": "test.where"})
            idents.add((await comm.receive_output())["ident"])
        await comm.send_input({"type": "test.orm"})
        assert await comm.receive_output() == {"type": "test.orm", "value": 7}
    assert len(idents) == 1
    assert loop_thread not in idents


class Echo(WebsocketConsumer):
    groups = ["sync-room"]

    def connect(self) -> None:
        self.accept(subprotocol="chat")

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "broadcast":
            async_to_sync(self.channel_layer.group_send)(
                "sync-room", {"type": "room.message", "text": "to everyone"}
            )
        elif text_data == "bye":
            self.send(text_data="closing", close=4001)
        elif text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            self.send(bytes_data=bytes(reversed(bytes_data or b"")))

    def room_message(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["text"])


async def test_websocket_consumer_text_binary_and_groups() -> None:
    app = Echo.as_asgi()
    async with (
        WebsocketCommunicator(app, "/ws/", subprotocols=["chat"]) as first,
        WebsocketCommunicator(app, "/ws/") as second,
    ):
        assert await first.connect() == (True, "chat")
        assert (await second.connect())[0]
        await first.send_to(text_data="hello")
        assert await first.receive_from() == "HELLO"
        await first.send_to(bytes_data=b"\x01\x02\x03")
        assert await first.receive_from() == b"\x03\x02\x01"
        await first.send_to(text_data="broadcast")
        assert await first.receive_from() == "to everyone"
        assert await second.receive_from() == "to everyone"
        await second.disconnect()
        # The disconnected member left the group: only the first one hears this.
        await get_channel_layer().group_send("sync-room", {"type": "room.message", "text": "again"})
        assert await first.receive_from() == "again"
        await first.send_to(text_data="bye")
        assert await first.receive_from() == "closing"
        closed = await first.receive_output()
        assert closed == {"type": "websocket.close", "code": 4001}


async def test_websocket_consumer_handles_hypercorn_frames_with_none() -> None:
    async with WebsocketCommunicator(Echo.as_asgi(), "/ws/") as comm:
        await comm.connect()
        await comm.send_input({"type": "websocket.receive", "text": None, "bytes": b"ab"})
        assert await comm.receive_from() == b"ba"
        await comm.send_input({"type": "websocket.receive", "bytes": None, "text": "x"})
        assert await comm.receive_from() == "X"
        await comm.send_input({"type": "websocket.receive", "bytes": None, "text": None})
        with pytest.raises(ValueError, match="neither 'text' nor 'bytes'"):
            await comm.receive_output()


class Json(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"echo": content})


async def test_json_websocket_consumer() -> None:
    comm = WebsocketCommunicator(Json.as_asgi(), "/ws/")
    await comm.connect()
    await comm.send_json_to({"a": [1, 2]})
    assert await comm.receive_json_from() == {"echo": {"a": [1, 2]}}
    await comm.send_to(text_data="{not json")
    # The close is sent from the handler's thread before the ValueError ends the consumer.
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1007}
    with pytest.raises(InvalidJsonFrame):
        await comm.wait()


async def test_json_websocket_consumer_closes_on_binary_then_raises() -> None:
    comm = WebsocketCommunicator(Json.as_asgi(), "/ws/")
    await comm.connect()
    await comm.send_to(bytes_data=b"{}")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1003}
    with pytest.raises(UnexpectedBinaryFrame, match="No text section"):
        await comm.wait()


class Refuser(WebsocketConsumer):
    def connect(self) -> None:
        self.close(code=4003)


async def test_websocket_consumer_refuses() -> None:
    async with WebsocketCommunicator(Refuser.as_asgi(), "/ws/") as comm:
        assert await comm.connect() == (False, 4003)


class Recorder(WebsocketConsumer):
    closed_with: list[int] = []

    def disconnect(self, code: int) -> None:
        Recorder.closed_with.append(code)


async def test_websocket_consumer_disconnect_runs_in_thread() -> None:
    Recorder.closed_with = []
    async with WebsocketCommunicator(Recorder.as_asgi(), "/ws/") as comm:
        await comm.connect()
        await comm.disconnect(code=4005)
    assert Recorder.closed_with == [4005]
