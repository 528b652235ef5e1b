"""Behaviour that Django Channels' own test suite relies on, checked our way.

Channels' repository tests (imports renamed) run against channels_runtime; each
behaviour they needed is pinned down here with tests of our own, on every
backend: routers and middleware return what the application they call returns,
an unmatched URLRouter path is a ``ValueError`` that ProtocolTypeRouter turns
into a refusal, the in-memory layer has Channels' ``channels``/``groups``
mappings as views, the communicators behave like asgiref's after a timeout and
word their assertions like Channels', ``HttpCommunicator`` sends no
``http.disconnect``, ``accept(headers=...)`` keeps each pair's shape, a
session response carries ``Set-Cookie`` and no ``Vary``, a JSON consumer given
a binary frame or invalid JSON closes the connection and then raises a
``ValueError``, and a consumer yields to the loop once per handled message.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import pytest
from django.test import override_settings
from django.urls import path

from channels_runtime.asgi import Message, Receive, Scope, Send
from channels_runtime.auth import AuthMiddleware, AuthMiddlewareStack
from channels_runtime.compat.hypercorn_fixes.app_inbox import AppInbox
from channels_runtime.consumer import AsyncConsumer
from channels_runtime.exceptions import (
    ClientInputRefused,
    InvalidJsonFrame,
    StopConsumer,
    UnexpectedBinaryFrame,
)
from channels_runtime.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels_runtime.layers import InMemoryChannelLayer, get_channel_layer
from channels_runtime.layers.base import BaseChannelLayer
from channels_runtime.middleware import BaseMiddleware
from channels_runtime.routing import (
    ChannelNameRouter,
    NoRouteFound,
    ProtocolTypeRouter,
    URLRouter,
)
from channels_runtime.security.websocket import OriginValidator
from channels_runtime.sessions import (
    CookieMiddleware,
    InvalidSameSite,
    SessionMiddleware,
    SessionMiddlewareStack,
)
from channels_runtime.testing import (
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)

pytestmark = pytest.mark.anyio

SHORT = 0.05


class Returns:
    """An ASGI app that records its scope and returns a value chosen per instance."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.scope: Scope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> object:
        self.scope = scope
        return self.value


async def never_receive() -> Message:
    raise AssertionError("the application should not have read a message")


async def never_send(message: Message) -> None:
    raise AssertionError(f"the application should not have sent {message!r}")


async def call(app: Any, scope: Scope) -> Any:
    return await app(scope, never_receive, never_send)


async def run(app: Any, scope: Scope, incoming: list[Message]) -> list[Message]:
    """Call ``app`` with ``incoming`` to read; return what it sent."""
    sent: list[Message] = []
    queue = list(incoming)

    async def receive() -> Message:
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await app(scope, receive, send)
    return sent


# -- routers pass the application's return value up --------------------------------


async def test_protocol_type_router_returns_the_applications_value() -> None:
    router = ProtocolTypeRouter({"websocket": Returns("ws"), "http": Returns(201)})
    assert await call(router, {"type": "websocket"}) == "ws"
    assert await call(router, {"type": "http"}) == 201


async def test_url_router_returns_the_matched_value_through_nesting() -> None:
    leaf = Returns(["leaf"])
    router = URLRouter(
        [
            path("a/", Returns("a")),
            path("outer/<int:n>/", URLRouter([path("inner/<str:s>/", leaf)])),
        ]
    )
    assert await call(router, {"type": "websocket", "path": "/a/"}) == "a"
    assert await call(router, {"type": "websocket", "path": "/outer/7/inner/x/"}) == ["leaf"]
    assert leaf.scope is not None
    assert leaf.scope["url_route"] == {"args": (), "kwargs": {"n": 7, "s": "x"}}


async def test_channel_name_router_returns_the_applications_value() -> None:
    router = ChannelNameRouter({"thumbs": Returns(3)})
    assert await call(router, {"type": "channel", "channel": "thumbs"}) == 3


# -- unmatched paths: ValueError from URLRouter, refusal from ProtocolTypeRouter -----


@pytest.mark.parametrize(
    ("url", "root_path"),
    [
        pytest.param("/missing/", "", id="no-route"),
        pytest.param("/elsewhere/a/", "/mount", id="outside-root-path"),
    ],
)
async def test_url_router_raises_a_value_error_naming_the_path(
    url: str, root_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router = URLRouter([path("a/", Returns("a"))])
    scope = {"type": "http", "path": url, "root_path": root_path}
    with pytest.raises(NoRouteFound) as excinfo:
        await call(router, scope)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value) == f"No route found for path {url!r} (http)"
    assert (excinfo.value.path, excinfo.value.scope_type) == (url, "http")
    # Raising is not refusing: nothing was read, sent or logged.
    assert [r for r in caplog.records if r.name == "channels_runtime.routing"] == []


async def test_no_route_behind_middleware_is_refused_by_the_protocol_router(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = URLRouter([path("chat/", Returns("chat"))])
    app = ProtocolTypeRouter({"websocket": OriginValidator(AuthMiddlewareStack(inner), ["*"])})
    scope = {"type": "websocket", "path": "/nope/", "headers": []}
    sent = await run(app, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close"}]
    messages = [r.getMessage() for r in caplog.records if r.name == "channels_runtime.routing"]
    assert messages == ["No route found for path '/nope/' (websocket)"]


async def test_no_route_for_another_scope_type_propagates_from_the_protocol_router() -> None:
    router = ProtocolTypeRouter({"custom": URLRouter([])})
    with pytest.raises(NoRouteFound, match=r"'/x/' \(custom\)"):
        await call(router, {"type": "custom", "path": "/x/"})


# -- middleware pass the application's return value up -------------------------------


async def test_base_cookie_and_session_middleware_return_the_inner_value() -> None:
    scope = {"type": "http", "path": "/", "headers": []}
    assert await call(BaseMiddleware(Returns("base")), scope) == "base"
    assert await call(CookieMiddleware(Returns("cookies")), scope) == "cookies"
    assert await call(CookieMiddleware(SessionMiddleware(Returns("session"))), scope) == "session"
    assert await call(SessionMiddlewareStack(Returns(("stack",))), scope) == ("stack",)


async def test_auth_middleware_returns_the_inner_value() -> None:
    inner = Returns("authed")
    # A session without a key has no user in it: no database is needed.
    assert await call(AuthMiddlewareStack(inner), {"type": "websocket", "headers": []}) == "authed"
    assert inner.scope is not None
    assert not inner.scope["user"].is_authenticated
    # AuthMiddleware alone, below a session that a middleware above provided.
    scope = {"type": "websocket", "session": {}, "user": "kept"}
    assert await call(AuthMiddleware(Returns(5)), scope) == 5


async def test_origin_validator_returns_either_applications_value() -> None:
    allowed = OriginValidator(Returns("in"), ["example.com"])
    good = {"type": "websocket", "headers": [(b"origin", b"https://example.com")]}
    assert await call(allowed, good) == "in"
    # A refused origin is answered by WebsocketDenier instead, which closes the
    # handshake and ends once the client has gone.
    bad = {"type": "websocket", "headers": [(b"origin", b"https://evil.example")]}
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1006}]
    assert await run(allowed, bad, incoming) == [{"type": "websocket.close"}]


# -- the in-memory layer's channels view ---------------------------------------------


async def test_channels_view_lists_channels_holding_messages() -> None:
    layer = InMemoryChannelLayer(capacity=5)
    assert layer.channels == {}
    await layer.send("view.one", {"type": "a"})
    await layer.send("view.one", {"type": "b"})
    await layer.send("view.two", {"type": "c"})
    assert "view.one" in layer.channels
    assert sorted(layer.channels) == ["view.one", "view.two"]
    assert len(layer.channels) == 2
    queue = layer.channels["view.one"]
    assert (queue.qsize(), queue.maxsize, queue.empty(), queue.full()) == (2, 5, False, False)
    await layer.receive("view.one")
    assert layer.channels["view.one"].qsize() == 1
    await layer.receive("view.one")
    # Emptied by a receive: gone from the view at once, as from Channels' dict.
    assert "view.one" not in layer.channels
    assert list(layer.channels.keys()) == ["view.two"]
    with pytest.raises(KeyError):
        layer.channels["view.one"]
    assert [1] not in layer.channels  # unhashable: simply not a channel


async def test_channels_view_lists_a_channel_someone_waits_on() -> None:
    layer = InMemoryChannelLayer()
    name = await layer.new_channel()
    got: list[Message] = []

    async def receiver() -> None:
        got.append(await layer.receive(name))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.wait_all_tasks_blocked()
        # What Channels' own consumer tests do: find the consumer's channel.
        assert list(layer.channels.keys()) == [name]
        assert layer.channels[name].qsize() == 0
        await layer.send(name, {"type": "hello"})
        # Handed over but not yet taken: still listed, as it is still queued in Channels.
        assert layer.channels[name].qsize() == 1
    assert got == [{"type": "hello"}]
    assert len(layer.channels) == 0


async def test_deleting_a_channel_with_a_message_in_flight_still_delivers_it() -> None:
    layer = InMemoryChannelLayer()
    got: list[Message] = []

    async def receiver() -> None:
        got.append(await layer.receive("race.chan"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.wait_all_tasks_blocked()
        await layer.send("race.chan", {"type": "in.flight"})
        del layer.channels["race.chan"]
        assert "race.chan" not in layer.channels
    assert got == [{"type": "in.flight"}]


async def test_deleting_a_channel_drops_its_queued_messages() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("del.chan", {"type": "old"})
    del layer.channels["del.chan"]
    assert "del.chan" not in layer.channels
    with pytest.raises(KeyError):
        del layer.channels["del.chan"]
    await layer.send("del.chan", {"type": "new"})
    assert await layer.receive("del.chan") == {"type": "new"}


async def test_deleting_a_waited_on_channel_keeps_its_receivers_waiting() -> None:
    layer = InMemoryChannelLayer()
    got: list[Message] = []

    async def receiver() -> None:
        got.append(await layer.receive("kept.chan"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.wait_all_tasks_blocked()
        del layer.channels["kept.chan"]
        # The receiver is still there (unlike in Channels, where it would wait on
        # a queue nobody can reach), so the channel is still listed ...
        assert "kept.chan" in layer.channels
        # ... and the next message sent to the name reaches it.
        await layer.send("kept.chan", {"type": "after"})
    assert got == [{"type": "after"}]


async def test_send_leaves_expired_messages_of_other_channels_for_receive_to_sweep() -> None:
    layer = InMemoryChannelLayer(expiry=SHORT)
    await layer.send("stale.chan", {"type": "old"})
    await anyio.sleep(SHORT * 2)
    await layer.send("fresh.chan", {"type": "new"})
    # As in Channels, a send sweeps nothing: the expired message is still counted.
    assert sorted(layer.channels) == ["fresh.chan", "stale.chan"]
    assert await layer.receive("fresh.chan") == {"type": "new"}
    # The receive swept the expired channel, and emptied its own.
    assert len(layer.channels) == 0


async def test_send_to_a_full_channel_of_expired_messages_makes_room() -> None:
    layer = InMemoryChannelLayer(expiry=SHORT, capacity=2)
    await layer.group_add("room", "full.chan")
    await layer.send("full.chan", {"n": 1})
    await layer.send("full.chan", {"n": 2})
    await anyio.sleep(SHORT * 2)
    await layer.send("full.chan", {"n": 3})  # no ChannelFull: the old ones expired
    assert layer.channels["full.chan"].qsize() == 1
    # Its messages expired unread, so it left its groups, as on a sweep.
    assert "room" not in layer.groups
    assert await layer.receive("full.chan") == {"n": 3}


# -- the in-memory layer's groups view -----------------------------------------------


async def test_groups_view_follows_group_add_and_discard() -> None:
    layer = InMemoryChannelLayer()
    before = time.time()
    await layer.group_add("chat", "member.a")
    await layer.group_add("chat", "member.b")
    await layer.group_add("other", "member.a")
    after = time.time()
    assert "chat" in layer.groups
    assert sorted(layer.groups) == ["chat", "other"]
    assert len(layer.groups) == 2
    members = layer.groups["chat"]
    assert sorted(members) == ["member.a", "member.b"]
    assert "member.a" in members
    assert len(members) == 2
    # Join times are wall-clock seconds, as Channels stores them.
    assert before - 0.01 <= members["member.a"] <= after + 0.01
    await layer.group_discard("chat", "member.a")
    await layer.group_discard("chat", "member.b")
    await layer.group_discard("other", "member.a")
    assert layer.groups == {}
    with pytest.raises(KeyError):
        layer.groups["chat"]


async def test_groups_view_hides_expired_memberships() -> None:
    layer = InMemoryChannelLayer(group_expiry=SHORT)
    await layer.group_add("short", "member.x")
    assert "member.x" in layer.groups["short"]
    await anyio.sleep(SHORT * 2)
    # group_send would no longer reach it, so neither the group nor the member shows.
    assert "short" not in layer.groups
    assert layer.groups == {}


async def test_deleting_from_the_groups_view_removes_memberships() -> None:
    layer = InMemoryChannelLayer()
    await layer.group_add("g1", "c1")
    await layer.group_add("g1", "c2")
    await layer.group_add("g2", "c1")
    del layer.groups["g1"]["c2"]
    assert list(layer.groups["g1"]) == ["c1"]
    del layer.groups["g1"]
    assert list(layer.groups) == ["g2"]
    with pytest.raises(KeyError):
        del layer.groups["g1"]
    await layer.group_send("g1", {"type": "nobody"})
    await layer.group_send("g2", {"type": "still.there"})
    assert await layer.receive("c1") == {"type": "still.there"}
    assert "c1" not in layer.channels


# -- name validation message -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kind"),
    [("require_valid_channel_name", "Channel"), ("require_valid_group_name", "Group")],
)
def test_invalid_name_error_is_channels_template_then_the_name(method: str, kind: str) -> None:
    layer = BaseChannelLayer()
    bad = "x" * 120
    with pytest.raises(TypeError) as excinfo:
        getattr(layer, method)(bad)
    expected = layer.invalid_name_error.format(kind)
    assert expected.startswith(f"{kind} name must be a valid unicode string with length < 100 ")
    assert str(excinfo.value) == f"{expected} Got {bad!r}."


# -- HttpCommunicator: no http.disconnect after the response -------------------------


class PlainHttpConsumer(AsyncConsumer):
    """An HTTP endpoint on a plain AsyncConsumer: it has no http_disconnect handler."""

    channel_layer_alias = None

    async def http_request(self, message: Message) -> None:
        await self.send({"type": "http.response.start", "status": 200, "headers": []})
        await self.send({"type": "http.response.body", "body": b"plain"})


async def test_plain_async_consumer_serves_http_through_the_communicator() -> None:
    communicator = HttpCommunicator(PlainHttpConsumer.as_asgi(), "GET", "/plain/")
    response = await communicator.get_response()
    assert response == {"status": 200, "headers": [], "body": b"plain"}
    # Left waiting for a next message, as asgiref's communicator leaves it.
    await communicator.wait(SHORT)


async def test_the_test_can_still_send_http_disconnect_itself() -> None:
    seen: list[str] = []

    class Tidy(PlainHttpConsumer):
        async def http_disconnect(self, message: Message) -> None:
            seen.append(message["type"])
            raise StopConsumer

    communicator = HttpCommunicator(Tidy.as_asgi(), "GET", "/")
    assert (await communicator.get_response())["body"] == b"plain"
    assert seen == []
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()
    assert seen == ["http.disconnect"]


async def test_an_error_after_the_response_is_raised_by_get_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})
        await anyio.sleep(SHORT)  # some work after responding, then a failure
        raise RuntimeError("failed after responding")

    communicator = HttpCommunicator(app, "GET", "/")
    with pytest.raises(RuntimeError, match="failed after responding"):
        await communicator.get_response()


# -- accept(headers=...) keeps each pair's shape -------------------------------------


class ListHeaders(AsyncWebsocketConsumer):
    channel_layer_alias = None

    async def connect(self) -> None:
        await self.accept(headers=[[b"x-list", b"1"], (b"x-tuple", b"2"), ["x-str", "3"]])


class SyncListHeaders(WebsocketConsumer):
    channel_layer_alias = None

    def connect(self) -> None:
        self.accept(headers=[[b"x-list", b"1"], (b"x-tuple", b"2"), ["x-str", "3"]])


@pytest.mark.parametrize("consumer", [ListHeaders, SyncListHeaders])
async def test_accept_headers_keep_the_shape_they_were_given(consumer: Any) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert await communicator.connect() == (True, None)
    assert communicator.response_headers == [
        [b"x-list", b"1"],
        (b"x-tuple", b"2"),
        [b"x-str", b"3"],  # encoded to bytes, still a list
    ]
    assert [type(pair) for pair in communicator.response_headers] == [list, tuple, list]
    await communicator.disconnect()


async def test_accept_headers_from_a_mapping_are_pairs() -> None:
    class MappingHeaders(AsyncWebsocketConsumer):
        channel_layer_alias = None

        async def connect(self) -> None:
            await self.accept(headers={"x-map": "v"})

    communicator = WebsocketCommunicator(MappingHeaders.as_asgi(), "/ws/")
    await communicator.connect()
    assert communicator.response_headers == [(b"x-map", b"v")]
    await communicator.disconnect()


# -- communicators after they cancelled the application ------------------------------


class Silent(AsyncWebsocketConsumer):
    """Accepts, then never answers a frame."""

    channel_layer_alias = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass


async def test_after_a_receive_timeout_the_communicator_reports_cancellation() -> None:
    communicator = WebsocketCommunicator(Silent.as_asgi(), "/ws/")
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data="anyone?")
    with pytest.raises(TimeoutError):
        await communicator.receive_from(timeout=SHORT)
    cancelled = anyio.get_cancelled_exc_class()
    with pytest.raises(cancelled):
        await communicator.send_to(text_data="again")
    with pytest.raises(cancelled):
        await communicator.receive_output(timeout=SHORT)
    with pytest.raises(cancelled):
        await communicator.receive_nothing(timeout=SHORT)
    with pytest.raises(cancelled):
        await communicator.disconnect()
    with pytest.raises(cancelled):
        communicator.stop()
    communicator.stop(exceptions=False)
    await communicator.wait()  # wait() itself does not raise it, as in asgiref


async def test_after_wait_cancels_the_application_sending_reports_cancellation() -> None:
    async def hangs(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    communicator = ApplicationCommunicator(hangs, {"type": "custom"})
    await communicator.wait(SHORT)
    with pytest.raises(anyio.get_cancelled_exc_class()):
        await communicator.send_input({"type": "custom.message"})


async def test_an_application_that_ended_by_itself_is_not_reported_as_cancelled() -> None:
    async def quick(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "only"})

    communicator = ApplicationCommunicator(quick, {"type": "custom"})
    assert await communicator.receive_output() == {"type": "only"}
    await communicator.wait()
    await communicator.send_input({"type": "ignored"})  # nobody reads it; no error
    communicator.stop()


# -- assertion wording -----------------------------------------------------------------


async def test_communicator_assertions_use_channels_wording_with_notes() -> None:
    class AcceptThenClose(AsyncWebsocketConsumer):
        channel_layer_alias = None

        async def connect(self) -> None:
            await self.accept()
            await self.close(code=4000)

    communicator = WebsocketCommunicator(AcceptThenClose.as_asgi(), "/ws/")
    await communicator.connect()
    with pytest.raises(AssertionError) as excinfo:
        await communicator.receive_from()
    assert str(excinfo.value) == "Expected type 'websocket.send', but was 'websocket.close'"
    assert excinfo.value.__notes__ == ["The message was {'type': 'websocket.close', 'code': 4000}"]
    with pytest.raises(AssertionError) as excinfo:
        await communicator.send_to(text_data=b"bytes")  # type: ignore[arg-type]
    assert str(excinfo.value) == "The text_data argument must be a str"
    assert excinfo.value.__notes__ == ["it is <class 'bytes'>"]
    with pytest.raises(AssertionError) as excinfo:
        await communicator.send_to(bytes_data="text")  # type: ignore[arg-type]
    assert str(excinfo.value) == "The bytes_data argument must be bytes"
    await communicator.wait()


# -- samesite --------------------------------------------------------------------------


def test_invalid_samesite_is_a_value_and_an_assertion_error_in_channels_words() -> None:
    message: Message = {"type": "http.response.start", "status": 200}
    with pytest.raises(InvalidSameSite) as excinfo:
        CookieMiddleware.set_cookie(message, "k", "v", samesite="Hello")
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert isinstance(error, AssertionError)
    assert str(error) == "samesite must be either 'strict', 'lax' or 'none'"
    assert error.__notes__ == ["samesite was 'Hello'"]
    assert error.samesite == "Hello"
    assert "headers" not in message


# -- sessions: the response carries the cookie and nothing else ---------------------------


class SessionCounter(AsyncConsumer):
    """Channels' test app: saves the session, then answers with no headers of its own."""

    channel_layer_alias = None

    async def http_request(self, message: Message) -> None:
        session = self.scope["session"]
        await session.aset("visits", (await session.aget("visits", 0)) + 1)
        await self.send({"type": "http.response.start", "status": 200, "headers": []})
        await self.send({"type": "http.response.body", "body": b"counted"})
        raise StopConsumer()


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cache")
async def test_a_session_response_carries_only_set_cookie() -> None:
    app = SessionMiddlewareStack(SessionCounter.as_asgi())
    response = await HttpCommunicator(app, "GET", "/").get_response()
    assert response["status"] == 200
    assert response["body"] == b"counted"
    # No Vary: Cookie, as in Channels: the one header is the session cookie.
    [(name, value)] = response["headers"]
    assert name == b"Set-Cookie"
    assert value.startswith(b"sessionid=")
    # A read-only visit with that cookie gets no header at all.
    cookie = value.split(b";")[0]

    class Reader(SessionCounter):
        async def http_request(self, message: Message) -> None:
            visits = await self.scope["session"].aget("visits")
            await self.send({"type": "http.response.start", "status": 200, "headers": []})
            await self.send({"type": "http.response.body", "body": str(visits).encode()})
            raise StopConsumer()

    reader = SessionMiddlewareStack(Reader.as_asgi())
    response = await HttpCommunicator(
        reader, "GET", "/", headers=[(b"cookie", cookie)]
    ).get_response()
    assert response["body"] == b"1"
    assert response["headers"] == []


# -- a JSON consumer given a frame it cannot take: close code, then ValueError ------------


class AsyncJsonEcho(AsyncJsonWebsocketConsumer):
    channel_layer_alias = None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


class SyncJsonEcho(JsonWebsocketConsumer):
    channel_layer_alias = None

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json(content)


JSON_CONSUMERS = pytest.mark.parametrize(
    "consumer", [AsyncJsonEcho, SyncJsonEcho], ids=["async", "sync"]
)


@JSON_CONSUMERS
async def test_binary_frame_to_a_json_consumer_closes_1003_then_raises_value_error(
    consumer: type[AsyncConsumer],
) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"hello": "world"})
    assert await communicator.receive_json_from() == {"hello": "world"}
    await communicator.send_to(bytes_data=b"w\0\0\0")
    # The client is told first, with the code for "unsupported data"...
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 1003}
    # ...then the application fails with Channels' ValueError.
    with pytest.raises(ValueError) as info:
        await communicator.wait()
    assert str(info.value) == "No text section for incoming WebSocket frame!"
    assert type(info.value) is UnexpectedBinaryFrame
    assert isinstance(info.value, ClientInputRefused)
    assert info.value.close_code == 1003


@JSON_CONSUMERS
async def test_invalid_json_closes_1007_then_raises_value_error_caused_by_the_decoder(
    consumer: type[AsyncConsumer],
) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data="{not json")
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 1007}
    with pytest.raises(ValueError) as info:
        await communicator.wait()
    assert type(info.value) is InvalidJsonFrame
    assert info.value.close_code == 1007
    # Channels raises json's own error; here it is the cause, with the same message.
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    assert str(info.value) == str(info.value.__cause__)


@JSON_CONSUMERS
async def test_under_protocol_type_router_a_refused_frame_is_one_warning_and_no_error(
    consumer: type[AsyncConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    """What a server sees: the router ends the connection quietly, the warning is the record."""
    application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/", consumer.as_asgi())])})
    for frame, code in [({"bytes": b"\x00"}, 1003), ({"text": "nope"}, 1007)]:
        caplog.clear()
        communicator = WebsocketCommunicator(application, "/ws/")
        assert (await communicator.connect())[0]
        with caplog.at_level(logging.WARNING):
            await communicator.send_input({"type": "websocket.receive", **frame})
            assert await communicator.receive_output() == {"type": "websocket.close", "code": code}
            # The router finishes the close handshake: frames the client still sends
            # are read and dropped (a server that stopped reading would reset the
            # socket under the close frame), and it returns on the client's close.
            await communicator.send_to(text_data='{"more": "frames"}')
            assert await communicator.receive_nothing()
            await communicator.disconnect(code=code)  # returns: no exception
        records = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(records) == 1, [r.getMessage() for r in records]
        assert records[0].name == "channels_runtime.generic.websocket"
        assert records[0].exc_info is None
        assert f"code {code}" in records[0].getMessage()


async def test_protocol_type_router_still_raises_other_value_errors() -> None:
    class Broken(AsyncJsonWebsocketConsumer):
        channel_layer_alias = None

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            raise ValueError("the application's own bug")

    application = ProtocolTypeRouter({"websocket": Broken.as_asgi()})
    communicator = WebsocketCommunicator(application, "/ws/")
    assert (await communicator.connect())[0]
    await communicator.send_json_to({})
    with pytest.raises(ValueError, match="the application's own bug"):
        await communicator.wait()


# -- scheduling: a consumer yields to the loop once per handled message --------------------


def queued(*messages: Message) -> Receive:
    """A source holding ``messages`` already, handed out without yielding (as a busy server's)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


class Waker(AsyncConsumer):
    """``test.wake`` wakes a task through an event; ``test.look`` records whether it ran."""

    def __init__(self, woken: anyio.Event, ran: list[str], seen: list[list[str]]) -> None:
        self.woken, self.ran, self.seen = woken, ran, seen

    async def test_wake(self, message: Message) -> None:
        self.woken.set()

    async def test_look(self, message: Message) -> None:
        self.seen.append(list(self.ran))
        raise StopConsumer()


@pytest.mark.parametrize("with_layer", [False, True], ids=["client-only", "client-and-layer"])
async def test_a_task_woken_by_a_handler_runs_before_the_next_queued_message(
    with_layer: bool,
) -> None:
    # Repeated: trio runs ready tasks in a random order, so a single pass could
    # succeed by luck.
    for _ in range(20):
        woken = anyio.Event()
        ran: list[str] = []
        seen: list[list[str]] = []

        async def woken_task(woken: anyio.Event = woken, ran: list[str] = ran) -> None:
            await woken.wait()
            ran.append("woken task")

        consumer = Waker(woken, ran, seen)
        consumer.channel_layer_alias = "default" if with_layer else None  # type: ignore[misc]
        async with anyio.create_task_group() as tg:
            tg.start_soon(woken_task)
            await anyio.wait_all_tasks_blocked()
            receive = queued({"type": "test.wake"}, {"type": "test.look"})
            with anyio.fail_after(5):
                await consumer({"type": "test"}, receive, never_send)
        assert seen == [["woken task"]]


@pytest.mark.parametrize("with_layer", [False, True], ids=["client-only", "client-and-layer"])
@pytest.mark.parametrize("arrives", ["queued", "while-woken-task-is-pending"])
async def test_through_a_server_inbox_a_woken_task_still_runs_first(
    with_layer: bool, arrives: str
) -> None:
    """With the server's AppInbox as the source, the consumer yields only when
    the next message is already there (``message_waiting()``); otherwise its
    wait for the next message is the yield. Either way the woken task runs
    before the next message is handled."""
    for _ in range(20):
        woken = anyio.Event()
        ran: list[str] = []
        seen: list[list[str]] = []
        inbox = AppInbox(10)

        async def woken_task(woken: anyio.Event = woken, ran: list[str] = ran) -> None:
            await woken.wait()
            ran.append("woken task")

        async def late_sender(woken: anyio.Event = woken, inbox: AppInbox = inbox) -> None:
            # Woken by the same handler as woken_task: the message lands while
            # that task has not run yet (on trio, in the same batch, in any order).
            await woken.wait()
            await inbox.put({"type": "test.look"})

        consumer = Waker(woken, ran, seen)
        consumer.channel_layer_alias = "default" if with_layer else None  # type: ignore[misc]
        await inbox.put({"type": "test.wake"})
        if arrives == "queued":
            await inbox.put({"type": "test.look"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(woken_task)
            if arrives != "queued":
                tg.start_soon(late_sender)
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(5):
                await consumer({"type": "test"}, inbox.get, never_send)
        assert seen == [["woken task"]]


@pytest.mark.parametrize("arrives", ["queued", "while-woken-task-is-pending"])
async def test_through_the_in_memory_channel_a_woken_task_still_runs_first(arrives: str) -> None:
    """The in-memory layer's channel is a ChannelSource: the consumer yields after
    a group message only when another one waits, and the order still holds."""
    for _ in range(20):
        woken = anyio.Event()
        ran: list[str] = []
        seen: list[list[str]] = []
        layer = get_channel_layer()
        consumer = Waker(woken, ran, seen)
        consumer.channel_layer_alias = "default"  # type: ignore[misc]

        async def woken_task(woken: anyio.Event = woken, ran: list[str] = ran) -> None:
            await woken.wait()
            ran.append("woken task")

        async def late_sender(
            woken: anyio.Event = woken, consumer: Waker = consumer, layer: Any = layer
        ) -> None:
            await woken.wait()
            await layer.send(consumer.channel_name, {"type": "test.look"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(woken_task)
            if arrives != "queued":
                tg.start_soon(late_sender)
            tg.start_soon(consumer, {"type": "test"}, queued(), never_send)
            with anyio.fail_after(5):
                await anyio.wait_all_tasks_blocked()  # the consumer waits on its channel
                await layer.send(consumer.channel_name, {"type": "test.wake"})
                if arrives == "queued":
                    await layer.send(consumer.channel_name, {"type": "test.look"})
        assert seen == [["woken task"]]


async def test_through_the_communicator_a_woken_task_runs_between_queued_frames() -> None:
    """The shape of django-channels-graphql-ws's tests: frames sent back to back."""

    class Notifier(AsyncWebsocketConsumer):
        channel_layer_alias = None

        def __init__(self, ready: anyio.Event, notes: list[str]) -> None:
            super().__init__()
            self.ready, self.notes = ready, notes

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            if text_data == "go":
                self.ready.set()
            else:
                await self.send(text_data=f"{text_data} after {self.notes}")

    for _ in range(10):
        ready = anyio.Event()
        notes: list[str] = []

        async def notifier(ready: anyio.Event = ready, notes: list[str] = notes) -> None:
            await ready.wait()
            notes.append("notified")

        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier)
            communicator = WebsocketCommunicator(Notifier.as_asgi(ready=ready, notes=notes), "/")
            assert (await communicator.connect())[0]
            await communicator.send_to(text_data="go")
            await communicator.send_to(text_data="next")
            assert await communicator.receive_from() == "next after ['notified']"
            await communicator.disconnect()
