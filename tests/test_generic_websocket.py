"""AsyncWebsocketConsumer and AsyncJsonWebsocketConsumer, driven through WebsocketCommunicator."""

from __future__ import annotations

import json
import logging
import types
from decimal import Decimal
from typing import Any

import anyio
import pytest
from django.test import override_settings

from channels_runtime.exceptions import (
    AcceptConnection,
    DenyConnection,
    InvalidChannelLayerError,
    InvalidJsonFrame,
    UnexpectedBinaryFrame,
)
from channels_runtime.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    websocket_close_message,
    websocket_frame_data,
    websocket_send_message,
)
from channels_runtime.layers import get_channel_layer
from channels_runtime.testing import WebsocketCommunicator

pytestmark = pytest.mark.anyio


async def nothing_on(channel: str, wait: float = 0.1) -> bool:
    """True if no message arrives on ``channel`` within ``wait`` seconds."""
    with anyio.move_on_after(wait):
        await get_channel_layer().receive(channel)
        return False
    return True


# -- frame helpers (shared with the future sync consumers) ---------------------


def test_frame_data_picks_the_non_none_part() -> None:
    assert websocket_frame_data({"type": "websocket.receive", "text": "hi"}) == {"text_data": "hi"}
    assert websocket_frame_data({"type": "websocket.receive", "bytes": b"\x00"}) == {
        "bytes_data": b"\x00"
    }
    # Hypercorn's shape: both keys, the unused one None.
    assert websocket_frame_data({"type": "websocket.receive", "text": None, "bytes": b"b"}) == {
        "bytes_data": b"b"
    }
    assert websocket_frame_data({"type": "websocket.receive", "bytes": None, "text": "t"}) == {
        "text_data": "t"
    }
    # Empty payloads are still payloads.
    assert websocket_frame_data({"type": "websocket.receive", "text": ""}) == {"text_data": ""}
    assert websocket_frame_data({"type": "websocket.receive", "text": None, "bytes": b""}) == {
        "bytes_data": b""
    }


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.receive"},
        {"type": "websocket.receive", "text": None, "bytes": None},
        {"type": "websocket.receive", "text": None},
    ],
)
def test_frame_data_with_neither_names_the_message(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="neither 'text' nor 'bytes'") as info:
        websocket_frame_data(message)
    assert repr(message) in str(info.value)


def test_send_message_validation() -> None:
    assert websocket_send_message(text_data="x") == {"type": "websocket.send", "text": "x"}
    assert websocket_send_message(bytes_data=b"x") == {"type": "websocket.send", "bytes": b"x"}
    assert websocket_send_message(bytes_data=bytearray(b"x")) == {
        "type": "websocket.send",
        "bytes": b"x",
    }
    with pytest.raises(ValueError, match="exactly one of text_data or bytes_data, got neither"):
        websocket_send_message()
    with pytest.raises(ValueError, match="got both"):
        websocket_send_message(text_data="a", bytes_data=b"b")
    with pytest.raises(TypeError, match="text_data must be str, got bytes"):
        websocket_send_message(text_data=b"a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes_data must be bytes, got str"):
        websocket_send_message(bytes_data="a")  # type: ignore[arg-type]


def test_close_message_only_carries_what_was_given() -> None:
    assert websocket_close_message() == {"type": "websocket.close"}
    assert websocket_close_message(True) == {"type": "websocket.close"}
    assert websocket_close_message(4000) == {"type": "websocket.close", "code": 4000}
    assert websocket_close_message(4000, "bye") == {
        "type": "websocket.close",
        "code": 4000,
        "reason": "bye",
    }
    assert websocket_close_message(reason="r") == {"type": "websocket.close", "reason": "r"}


# -- connecting ----------------------------------------------------------------


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


async def test_default_connect_accepts_and_echoes_text_and_bytes() -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/echo/")
    assert await comm.connect() == (True, None)
    await comm.send_to(text_data="hello")
    assert await comm.receive_from() == "hello"
    await comm.send_to(bytes_data=b"\x00\xff")
    assert await comm.receive_from() == b"\x00\xff"
    await comm.disconnect()


async def test_hypercorn_shaped_frames_reach_receive_with_one_argument() -> None:
    calls: list[dict[str, Any]] = []

    class Recorder(AsyncWebsocketConsumer):
        async def receive(self, **kwargs: Any) -> None:  # type: ignore[override]
            calls.append(kwargs)
            await self.send(text_data=repr(kwargs))

    comm = WebsocketCommunicator(Recorder.as_asgi(), "/")
    await comm.connect()
    await comm.send_input({"type": "websocket.receive", "text": None, "bytes": b"bin"})
    await comm.receive_from()
    await comm.send_input({"type": "websocket.receive", "bytes": None, "text": "txt"})
    await comm.receive_from()
    await comm.disconnect()
    assert calls == [{"bytes_data": b"bin"}, {"text_data": "txt"}]


async def test_hypercorn_shaped_frames_echo() -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    await comm.connect()
    await comm.send_input({"type": "websocket.receive", "text": None, "bytes": b".."})
    assert await comm.receive_from() == b".."
    await comm.send_input({"type": "websocket.receive", "bytes": None, "text": ".."})
    assert await comm.receive_from() == ".."
    await comm.disconnect()


async def test_frame_with_neither_text_nor_bytes_is_a_clear_error() -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    await comm.connect()
    await comm.send_input({"type": "websocket.receive", "text": None, "bytes": None})
    with pytest.raises(ValueError, match="neither 'text' nor 'bytes'"):
        await comm.wait()


class Gatekeeper(AsyncWebsocketConsumer):
    """Behaviour chosen by the path, to cover every way connect() can end."""

    async def connect(self) -> None:
        mode = self.scope["path"].strip("/")
        if mode == "accept":
            await self.accept()
        elif mode == "deny":
            await self.close()
        elif mode == "deny-code":
            await self.close(code=4003)
        elif mode == "raise-accept":
            raise AcceptConnection()
        elif mode == "raise-deny":
            raise DenyConnection()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/accept/", (True, None)),
        ("/raise-accept/", (True, None)),
        ("/deny/", (False, 1000)),
        ("/raise-deny/", (False, 1000)),
        ("/deny-code/", (False, 4003)),
    ],
)
async def test_accept_and_deny(path: str, expected: tuple[bool, Any]) -> None:
    comm = WebsocketCommunicator(Gatekeeper.as_asgi(), path)
    assert await comm.connect() == expected
    await comm.disconnect()


async def test_deny_sends_a_bare_close() -> None:
    comm = WebsocketCommunicator(Gatekeeper.as_asgi(), "/raise-deny/")
    await comm.send_input({"type": "websocket.connect"})
    assert await comm.receive_output() == {"type": "websocket.close"}
    await comm.disconnect()


async def test_subprotocol_and_accept_headers() -> None:
    class Negotiating(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            if "chat.v2" in self.scope["subprotocols"]:
                await self.accept("chat.v2", headers=[(b"x-server", b"cr"), ("x-str", "yes")])
            else:
                await self.accept()

    comm = WebsocketCommunicator(Negotiating.as_asgi(), "/", subprotocols=["chat.v1", "chat.v2"])
    assert await comm.connect() == (True, "chat.v2")
    assert comm.response_headers is not None
    assert list(comm.response_headers) == [(b"x-server", b"cr"), (b"x-str", b"yes")]
    await comm.disconnect()


async def test_accept_message_has_headers_only_when_given() -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    await comm.send_input({"type": "websocket.connect"})
    assert await comm.receive_output() == {"type": "websocket.accept", "subprotocol": None}
    await comm.disconnect()


# -- sending and closing --------------------------------------------------------


class Sender(AsyncWebsocketConsumer):
    """Turns commands from the client into send()/close() calls."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        command = json.loads(text_data or "{}")
        action = command.pop("action")
        if action == "send":
            await self.send(**command)
        elif action == "send-bytes":
            await self.send(bytes_data=command["data"].encode(), close=command.get("close", False))
        elif action == "close":
            await self.close(**command)
        elif action == "bad-send":
            try:
                await self.send(**command)
            except (ValueError, TypeError) as exc:
                await self.send(text_data=f"{type(exc).__name__}: {exc}")


async def test_send_with_close_true_and_close_code() -> None:
    comm = WebsocketCommunicator(Sender.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"action": "send", "text_data": "bye", "close": True})
    assert await comm.receive_from() == "bye"
    assert await comm.receive_output() == {"type": "websocket.close"}
    await comm.send_json_to({"action": "send-bytes", "data": "b", "close": 4000})
    assert await comm.receive_from() == b"b"
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4000}
    await comm.disconnect()


async def test_close_with_code_and_reason() -> None:
    comm = WebsocketCommunicator(Sender.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"action": "close", "code": 4001, "reason": "session expired"})
    assert await comm.receive_output() == {
        "type": "websocket.close",
        "code": 4001,
        "reason": "session expired",
    }
    await comm.send_json_to({"action": "close"})
    assert await comm.receive_output() == {"type": "websocket.close"}
    await comm.disconnect()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, "ValueError: send() needs exactly one of text_data or bytes_data, got neither"),
        (
            {"text_data": "a", "bytes_data": None},
            None,
        ),
        ({"text_data": 5}, "TypeError: text_data must be str, got int"),
    ],
)
async def test_send_validation(kwargs: dict[str, Any], error: str | None) -> None:
    comm = WebsocketCommunicator(Sender.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"action": "bad-send", **kwargs})
    assert await comm.receive_from() == (error if error is not None else "a")
    await comm.disconnect()


async def test_send_both_is_refused() -> None:
    class Both(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.send(text_data="t", bytes_data=b"b")

    comm = WebsocketCommunicator(Both.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="go")
    with pytest.raises(ValueError, match="got both"):
        await comm.wait()


# -- disconnect and groups -------------------------------------------------------


class Broadcast(AsyncWebsocketConsumer):
    groups = ["lobby", "everyone"]
    instances: list[Broadcast] = []
    disconnect_codes: list[int] = []

    async def connect(self) -> None:
        type(self).instances.append(self)
        await self.accept()

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])

    async def disconnect(self, code: int) -> None:
        type(self).disconnect_codes.append(code)


@pytest.fixture
def broadcast() -> type[Broadcast]:
    class Fresh(Broadcast):
        instances = []
        disconnect_codes = []

    return Fresh


async def test_groups_joined_on_connect_reach_two_communicators(
    broadcast: type[Broadcast],
) -> None:
    first = WebsocketCommunicator(broadcast.as_asgi(), "/")
    second = WebsocketCommunicator(broadcast.as_asgi(), "/")
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    layer = get_channel_layer()
    await layer.group_send("lobby", {"type": "chat.message", "text": "hi all"})
    assert await first.receive_from() == "hi all"
    assert await second.receive_from() == "hi all"
    await layer.group_send("everyone", {"type": "chat.message", "text": "again"})
    assert await first.receive_from() == "again"
    assert await second.receive_from() == "again"
    await first.disconnect()
    await second.disconnect()


async def test_groups_discarded_on_disconnect(broadcast: type[Broadcast]) -> None:
    leaving = WebsocketCommunicator(broadcast.as_asgi(), "/")
    staying = WebsocketCommunicator(broadcast.as_asgi(), "/")
    await leaving.connect()
    await staying.connect()
    left_channel = broadcast.instances[0].channel_name
    await leaving.disconnect(code=4321)
    assert broadcast.disconnect_codes == [4321]

    layer = get_channel_layer()
    await layer.group_send("lobby", {"type": "chat.message", "text": "after"})
    assert await staying.receive_from() == "after"
    # Had the channel stayed in the group, the message would be queued on it.
    assert await nothing_on(left_channel)
    await staying.disconnect()


async def test_groups_are_per_instance_copies(broadcast: type[Broadcast]) -> None:
    a, b = broadcast(), broadcast()
    assert a.groups == b.groups == ["lobby", "everyone"]
    assert a.groups is not b.groups
    assert a.groups is not broadcast.groups
    a.groups.append("extra")
    assert broadcast.groups == ["lobby", "everyone"]

    class NoGroups(AsyncWebsocketConsumer):
        pass

    assert NoGroups().groups == []


async def test_groups_left_even_when_disconnect_raises(broadcast: type[Broadcast]) -> None:
    class Grumpy(broadcast):  # type: ignore[valid-type,misc]
        async def disconnect(self, code: int) -> None:
            raise RuntimeError("disconnect failed")

    comm = WebsocketCommunicator(Grumpy.as_asgi(), "/")
    await comm.connect()
    channel = broadcast.instances[0].channel_name
    with pytest.raises(RuntimeError, match="disconnect failed"):
        await comm.disconnect()
    await get_channel_layer().group_send("lobby", {"type": "chat.message", "text": "x"})
    assert await nothing_on(channel)


async def test_groups_left_when_a_handler_crashes(broadcast: type[Broadcast]) -> None:
    class Crashy(broadcast):  # type: ignore[valid-type,misc]
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            raise KeyError("handler blew up")

    comm = WebsocketCommunicator(Crashy.as_asgi(), "/")
    await comm.connect()
    channel = broadcast.instances[0].channel_name
    await comm.send_to(text_data="boom")
    with pytest.raises(KeyError, match="handler blew up"):
        await comm.wait()
    await get_channel_layer().group_send("lobby", {"type": "chat.message", "text": "x"})
    await get_channel_layer().group_send("everyone", {"type": "chat.message", "text": "x"})
    assert await nothing_on(channel)


async def test_groups_left_when_the_consumer_is_cancelled(broadcast: type[Broadcast]) -> None:
    # Drive the instance by hand so the test owns (and cancels) its task.
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](10)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](10)
    consumer = broadcast()
    async with to_app, app_inbox, app_outbox, from_app, anyio.create_task_group() as tg:
        tg.start_soon(
            consumer, {"type": "websocket", "path": "/"}, app_inbox.receive, app_outbox.send
        )
        await to_app.send({"type": "websocket.connect"})
        assert (await from_app.receive())["type"] == "websocket.accept"
        tg.cancel_scope.cancel()
    await get_channel_layer().group_send("lobby", {"type": "chat.message", "text": "x"})
    assert await nothing_on(consumer.channel_name)


async def test_disconnect_runs_even_if_leaving_a_group_fails(broadcast: type[Broadcast]) -> None:
    layer = get_channel_layer()
    real_discard = layer.group_discard
    discarded: list[str] = []

    async def flaky_discard(group: str, channel: str) -> None:
        if group == "lobby":
            raise ConnectionError("layer hiccup")
        discarded.append(group)
        await real_discard(group, channel)

    layer.group_discard = flaky_discard
    comm = WebsocketCommunicator(broadcast.as_asgi(), "/")
    await comm.connect()
    with pytest.raises(ConnectionError, match="layer hiccup"):
        await comm.disconnect(code=1001)
    # The failure on "lobby" neither skipped "everyone" nor the user's disconnect().
    assert discarded == ["everyone"]
    assert broadcast.disconnect_codes == [1001]


async def test_groups_need_a_channel_layer(broadcast: type[Broadcast]) -> None:
    with override_settings(CHANNEL_LAYERS={}):
        comm = WebsocketCommunicator(broadcast.as_asgi(), "/")
        await comm.send_input({"type": "websocket.connect"})
        with pytest.raises(InvalidChannelLayerError, match="no channel layer is configured"):
            await comm.wait()


async def test_no_groups_work_without_a_channel_layer() -> None:
    with override_settings(CHANNEL_LAYERS={}):
        comm = WebsocketCommunicator(Echo.as_asgi(), "/")
        assert await comm.connect() == (True, None)
        await comm.send_to(text_data="no layer")
        assert await comm.receive_from() == "no layer"
        await comm.disconnect()


async def test_disconnect_without_code_reports_1005() -> None:
    codes: list[int] = []

    class Recorder(AsyncWebsocketConsumer):
        async def disconnect(self, code: int) -> None:
            codes.append(code)

    comm = WebsocketCommunicator(Recorder.as_asgi(), "/")
    await comm.connect()
    await comm.send_input({"type": "websocket.disconnect"})
    await comm.wait()
    assert codes == [1005]


# -- JSON ---------------------------------------------------------------------------


class JsonCounter(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.total = 0
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.total += content["add"]
        await self.send_json(
            {"total": self.total, "echo": content}, close=content.get("last", False)
        )


async def test_json_roundtrip() -> None:
    comm = WebsocketCommunicator(JsonCounter.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"add": 2, "note": "é ✓"})
    assert await comm.receive_json_from() == {"total": 2, "echo": {"add": 2, "note": "é ✓"}}
    await comm.send_json_to({"add": 3, "last": True})
    assert await comm.receive_json_from() == {"total": 5, "echo": {"add": 3, "last": True}}
    assert await comm.receive_output() == {"type": "websocket.close"}
    await comm.disconnect()


@pytest.mark.parametrize("payload", ["{not json", ""])
async def test_invalid_json_closes_with_1007_warns_and_raises(
    payload: str, caplog: pytest.LogCaptureFixture
) -> None:
    comm = WebsocketCommunicator(JsonCounter.as_asgi(), "/counter/")
    await comm.connect()
    with caplog.at_level(logging.WARNING, logger="channels_runtime.generic.websocket"):
        await comm.send_input({"type": "websocket.receive", "text": payload})
        assert await comm.receive_output() == {"type": "websocket.close", "code": 1007}
        # Then the consumer ends with a ValueError, as Channels' does (json's is the cause).
        with pytest.raises(InvalidJsonFrame) as info:
            await comm.wait()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    warnings = [r for r in caplog.records if r.name == "channels_runtime.generic.websocket"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "JsonCounter" in warnings[0].getMessage()
    assert "/counter/" in warnings[0].getMessage()
    assert "1007" in warnings[0].getMessage()


async def test_invalid_json_handling_is_overridable() -> None:
    class Forgiving(JsonCounter):
        async def receive_invalid_json(self, text_data: str, error: ValueError) -> None:
            await self.send_json({"error": "invalid JSON", "got": text_data})

    comm = WebsocketCommunicator(Forgiving.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="nope")
    assert await comm.receive_json_from() == {"error": "invalid JSON", "got": "nope"}
    await comm.send_json_to({"add": 1})
    assert (await comm.receive_json_from())["total"] == 1
    await comm.disconnect()


async def test_invalid_json_can_raise_as_in_channels() -> None:
    class Strict(JsonCounter):
        async def receive_invalid_json(self, text_data: str, error: ValueError) -> None:
            raise error

    comm = WebsocketCommunicator(Strict.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="nope")
    with pytest.raises(json.JSONDecodeError):
        await comm.wait()


async def test_binary_frame_to_json_consumer_closes_with_1003_then_raises() -> None:
    comm = WebsocketCommunicator(JsonCounter.as_asgi(), "/")
    await comm.connect()
    await comm.send_input({"type": "websocket.receive", "text": None, "bytes": b"{}"})
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1003}
    with pytest.raises(ValueError, match="No text section for incoming WebSocket frame!") as info:
        await comm.wait()
    assert type(info.value) is UnexpectedBinaryFrame


async def test_json_hooks_async_and_sync_overrides() -> None:
    class Decimals(AsyncJsonWebsocketConsumer):
        @classmethod
        async def decode_json(cls, text_data: str) -> Any:
            return json.loads(text_data, parse_float=Decimal)

        @classmethod
        def encode_json(cls, content: Any) -> str:  # type: ignore[override]
            return json.dumps(content, default=str, sort_keys=True)

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.send_json(
                {"value": content["value"] * 2, "type": type(content["value"]).__name__}
            )

    comm = WebsocketCommunicator(Decimals.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data='{"value": 0.1}')
    assert await comm.receive_from() == '{"type": "Decimal", "value": "0.2"}'
    await comm.disconnect()


async def test_errors_in_receive_json_are_not_mistaken_for_invalid_json() -> None:
    class Picky(AsyncJsonWebsocketConsumer):
        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            raise ValueError("my own validation failed")

    comm = WebsocketCommunicator(Picky.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"a": 1})
    with pytest.raises(ValueError, match="my own validation failed"):
        await comm.wait()


# -- a Channels 4.2 module, ported by renaming its imports -----------------------------

CHANNELS_CHAT_MODULE = """
import json

from channels.exceptions import DenyConnection
from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        if not self.room_name.isidentifier():
            raise DenyConnection("bad room name")

        # Join room group
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        # Leave room group
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    # Receive message from WebSocket
    async def receive(self, text_data):
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]

        # Send message to room group
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    # Receive message from room group
    async def chat_message(self, event):
        message = event["message"]

        # Send message to WebSocket
        await self.send(text_data=json.dumps({"message": message}))
"""


def load_ported_chat_module() -> types.ModuleType:
    source = CHANNELS_CHAT_MODULE.replace("from channels.", "from channels_runtime.")
    assert "from channels." not in source
    module = types.ModuleType("ported_chat_consumers")
    exec(compile(source, "ported_chat_consumers.py", "exec"), module.__dict__)
    return module


def with_room(app: Any, room: str) -> Any:
    """What URLRouter does for ``ws/chat/<room_name>/``: add ``url_route`` to the scope."""

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        scope = dict(scope, url_route={"args": (), "kwargs": {"room_name": room}})
        await app(scope, receive, send)

    return routed


async def test_channels_tutorial_chat_consumer_after_renaming_imports() -> None:
    chat = load_ported_chat_module()
    assert chat.AsyncWebsocketConsumer is AsyncWebsocketConsumer
    app = chat.ChatConsumer.as_asgi()

    alice = WebsocketCommunicator(with_room(app, "lobby"), "/ws/chat/lobby/")
    bob = WebsocketCommunicator(with_room(app, "lobby"), "/ws/chat/lobby/")
    eve = WebsocketCommunicator(with_room(app, "other"), "/ws/chat/other/")
    for comm in (alice, bob, eve):
        assert await comm.connect() == (True, None)

    await alice.send_to(text_data=json.dumps({"message": "hello bob"}))
    assert await alice.receive_json_from() == {"message": "hello bob"}
    assert await bob.receive_json_from() == {"message": "hello bob"}
    assert await eve.receive_nothing()

    await bob.disconnect()
    await alice.send_to(text_data=json.dumps({"message": "still there?"}))
    assert await alice.receive_json_from() == {"message": "still there?"}
    await alice.disconnect()
    await eve.disconnect()

    denied = WebsocketCommunicator(with_room(app, "9lives"), "/ws/chat/x/")
    assert await denied.connect() == (False, 1000)
    await denied.disconnect()
