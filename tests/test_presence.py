"""Presence on the in-memory and both Redis layers, on asyncio, uvloop and trio.

The Redis tests use a real ``redis-server`` started for this module (one test
starts its own to restart it). A "process" is a layer instance with its own
presence: each has its own lease, as two processes would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from django.test import override_settings
from redis_server import RedisServer, redis_call

from channels_runtime import presence
from channels_runtime.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels_runtime.layers import get_channel_layer
from channels_runtime.layers.inmemory import InMemoryChannelLayer
from channels_runtime.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels_runtime.presence import PresenceMixin, SyncPresenceMixin, events_group
from channels_runtime.presence.redis import HEARTBEAT, JOIN
from channels_runtime.sync import async_to_sync, sync_to_async
from channels_runtime.testing import WebsocketCommunicator

pytestmark = pytest.mark.anyio

LAYERS = ["inmemory", "redis", "pubsub"]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
async def make_layer(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Layers ("processes") of one kind sharing one Redis prefix, closed at the end."""
    made: list[Any] = []
    prefix = "p" + uuid.uuid4().hex[:10]

    def make(kind: str, url: str | None = None) -> Any:
        if kind == "inmemory":
            layer: Any = InMemoryChannelLayer()
        else:
            cls = RedisChannelLayer if kind == "redis" else RedisPubSubChannelLayer
            if url is None:
                url = request.getfixturevalue("server").url
            layer = cls(hosts=[url], prefix=prefix, retry_budget=0.5)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await presence.presence_for(layer).close()
        await layer.close()


async def receive_within(layer: Any, channel: str, seconds: float = 5) -> Any:
    with anyio.fail_after(seconds):
        return await layer.receive(channel)


async def nothing_for(layer: Any, channel: str, seconds: float = 0.3) -> None:
    with anyio.move_on_after(seconds):
        message = await layer.receive(channel)
        raise AssertionError(f"unexpected message {message!r}")


@pytest.mark.parametrize("kind", LAYERS)
async def test_join_members_count_users_leave(make_layer: Any, kind: str) -> None:
    layer = make_layer(kind)
    tracker = presence.configure(layer, lease_seconds=5)
    async with tracker.hosting():
        a, b, c = [await layer.new_channel() for _ in range(3)]
        meta = {"name": "ann", "device": "phone"}
        joined = await presence.join(layer, "room", a, meta, user="1")
        meta["name"] = "changed after join"
        assert joined.meta == {"name": "ann", "device": "phone"}
        assert (await receive_within(layer, a))["type"] == "presence.join"  # its own
        await presence.join(layer, "room", b, {"name": "ann", "device": "laptop"}, user="1")
        await presence.join(layer, "room", c, {"name": "bob"}, user="2", events=False)
        for _ in range(2):
            message = await receive_within(layer, a)
            assert message["type"] == "presence.join"
        assert message["channel"] == c
        assert message["user"] == "2"
        assert message["meta"] == {"name": "bob"}
        assert message["group"] == "room"
        # b joined with events: it got its own join and c's, not a's (earlier).
        assert [(await receive_within(layer, b))["channel"] for _ in range(2)] == [b, c]
        await nothing_for(layer, c)  # events=False: c hears nothing

        members = await presence.members(layer, "room")
        assert [m.channel for m in members] == [a, b, c]
        assert members[0].meta == {"name": "ann", "device": "phone"}
        assert members[0].since <= members[1].since <= members[2].since
        assert await presence.count(layer, "room") == 3
        assert await presence.count(layer, "other") == 0
        assert await presence.members(layer, "other") == []
        users = await presence.users(layer, "room")
        assert [(u.user, len(u.members)) for u in users] == [("1", 2), ("2", 1)]
        assert users[0].since == members[0].since

        left = await presence.leave(layer, "room", a)
        assert left is not None
        assert left.channel == a
        message = await receive_within(layer, b)
        assert message["type"] == "presence.leave"
        assert message["channel"] == a
        assert message["reason"] == "left"
        assert message["meta"]["device"] == "phone"
        assert await presence.leave(layer, "room", a) is None  # twice: no second event
        await nothing_for(layer, b)
        await nothing_for(layer, a)  # a left the events group before the leave was sent
        assert await presence.count(layer, "room") == 2


@pytest.mark.parametrize("kind", LAYERS)
async def test_rejoin_keeps_since_and_replaces_meta(make_layer: Any, kind: str) -> None:
    layer = make_layer(kind)
    async with presence.presence_for(layer).hosting():
        ch = await layer.new_channel()
        first = await presence.join(layer, "room", ch, {"v": 1}, events=False)
        await anyio.sleep(0.02)
        second = await presence.join(layer, "room", ch, {"v": 2}, events=False)
        assert second.since == first.since
        [member] = await presence.members(layer, "room")
        assert member.meta == {"v": 2}


@pytest.mark.parametrize("kind", LAYERS)
async def test_bad_arguments_are_refused(make_layer: Any, kind: str) -> None:
    layer = make_layer(kind)
    async with presence.presence_for(layer).hosting():
        ch = await layer.new_channel()
        with pytest.raises(TypeError, match="JSON-serialisable"):
            await presence.join(layer, "room", ch, {"when": object()})
        with pytest.raises(TypeError, match="user must be a string"):
            await presence.join(layer, "room", ch, user=7)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Group name"):
            await presence.join(layer, "bad group", ch)
        with pytest.raises(TypeError, match="Group name"):
            await presence.members(layer, "x" * 100)
        assert await presence.count(layer, "room") == 0


def test_settings_are_checked() -> None:
    layer = InMemoryChannelLayer()
    with pytest.raises(ValueError, match="shorter than lease_seconds"):
        presence.configure(layer, lease_seconds=1, heartbeat_seconds=1)
    with pytest.raises(ValueError, match="lease_seconds must be a positive"):
        presence.configure(layer, lease_seconds=0)
    with override_settings(CHANNELS_PRESENCE={"lease_seconds": 6}):
        assert presence.presence_for(InMemoryChannelLayer()).heartbeat_seconds == 2
    with (
        override_settings(CHANNELS_PRESENCE={"lease": 6}),
        pytest.raises(ValueError, match="unknown keys: lease"),
    ):
        presence.presence_for(InMemoryChannelLayer())

    class NotALayer:
        pass

    with pytest.raises(TypeError, match="presence supports"):
        presence.presence_for(NotALayer())


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_redis_join_needs_a_host(make_layer: Any, kind: str) -> None:
    layer = make_layer(kind)
    ch = await layer.new_channel()
    with pytest.raises(RuntimeError, match="needs a live host"):
        await presence.join(layer, "room", ch)
    assert await presence.count(layer, "room") == 0


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_dead_process_members_expire_and_leave_is_sent(make_layer: Any, kind: str) -> None:
    """A process that stops heartbeating (its host ended without leaving, as
    after SIGKILL) is reaped by a live one within lease + heartbeat."""
    dying, living = make_layer(kind), make_layer(kind)
    presence.configure(dying, lease_seconds=1.0, heartbeat_seconds=0.2)
    live = presence.configure(living, lease_seconds=1.0, heartbeat_seconds=0.2)
    async with live.hosting():
        watcher = await living.new_channel()
        await presence.join(living, "room", watcher, {"name": "watcher"})
        assert (await receive_within(living, watcher))["channel"] == watcher
        async with presence.presence_for(dying).hosting():
            ghost = await dying.new_channel()
            await presence.join(dying, "room", ghost, {"name": "ghost"}, user="9")
            assert (await receive_within(living, watcher))["channel"] == ghost
        # The block ended without a leave: only the lease can remove it now.
        assert presence.presence_for(dying)._loop().keeper is None
        started = anyio.current_time()
        message = await receive_within(living, watcher, 5)
        took = anyio.current_time() - started
        assert message["type"] == "presence.leave"
        assert message["reason"] == "expired"
        assert message["channel"] == ghost
        assert message["meta"] == {"name": "ghost"}
        assert message["user"] == "9"
        assert took < 1.0 + 0.2 + 0.5, took
        assert [m.channel for m in await presence.members(living, "room")] == [watcher]
        await nothing_for(living, watcher, 0.5)  # reported once


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_reads_skip_a_dead_lease_before_it_is_reaped(make_layer: Any, kind: str) -> None:
    dying, reader = make_layer(kind), make_layer(kind)
    presence.configure(dying, lease_seconds=0.5, heartbeat_seconds=0.1)
    async with presence.presence_for(dying).hosting():
        await presence.join(dying, "room", await dying.new_channel(), events=False)
        assert await presence.count(reader, "room") == 1
    await anyio.sleep(0.7)  # nobody heartbeats, so nobody reaps: reads still filter
    assert await presence.count(reader, "room") == 0
    assert await presence.members(reader, "room") == []


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_keeper_moves_between_hosts_and_stops_with_the_last(
    make_layer: Any, kind: str, server: RedisServer
) -> None:
    layer = make_layer(kind)
    tracker = presence.configure(layer, lease_seconds=1.0, heartbeat_seconds=0.1)
    lease = tracker.store.lease  # type: ignore[union-attr]
    key = f"{layer.prefix}:presence:leases"

    def deadline() -> float:
        return float(redis_call(server.port, "ZSCORE", key, lease))

    async def host(done: anyio.Event) -> None:
        async with tracker.hosting():
            await done.wait()

    first_done, second_done = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(host, first_done)
        await anyio.sleep(0.05)
        tg.start_soon(host, second_done)
        await anyio.sleep(0.25)
        first = tracker._loop().keeper
        assert first is tracker._loop().hosts[0]
        assert len(tracker._loop().hosts) == 2
        before = deadline()
        first_done.set()
        await anyio.sleep(0.05)
        keeper = tracker._loop().keeper
        assert keeper is not None
        assert keeper is not first
        await anyio.sleep(0.25)
        assert deadline() > before  # still renewed
        second_done.set()
    assert tracker._loop().keeper is None
    assert tracker._loop().hosts == []
    stopped = deadline()
    await anyio.sleep(0.3)
    assert deadline() == stopped  # nothing renews it once the hosts are gone


async def test_redis_restart_without_persistence_recovers(
    make_layer: Any, anyio_backend: Any
) -> None:
    with RedisServer() as own:
        for kind in ("redis", "pubsub"):
            a, b = make_layer(kind, own.url), make_layer(kind, own.url)
            room = f"room-{kind}"
            ta = presence.configure(a, lease_seconds=1.0, heartbeat_seconds=0.2)
            tb = presence.configure(b, lease_seconds=1.0, heartbeat_seconds=0.2)
            async with ta.hosting(), tb.hosting():
                ca, cb = await a.new_channel(), await b.new_channel()
                await presence.join(a, room, ca, {"n": "a"}, user="1", events=False)
                await presence.join(b, room, cb, {"n": "b"}, user="2", events=False)
                before = {m.channel: m for m in await presence.members(a, room)}
                assert set(before) == {ca, cb}
                own.restart()
                with anyio.fail_after(5):
                    while True:
                        try:
                            after = await presence.members(a, room)
                        except OSError:
                            after = []
                        if len(after) == 2:
                            break
                        await anyio.sleep(0.1)
                assert {m.channel: m for m in after} == before  # since and meta kept
                # Events flow again once re-announced (the events group is re-added).
                watcher = await b.new_channel()
                await presence.join(b, room, watcher)
                assert (await receive_within(b, watcher))["channel"] == watcher
                await presence.leave(a, room, ca)
                message = await receive_within(b, watcher)
                assert (message["type"], message["channel"]) == ("presence.leave", ca)


@pytest.fixture
async def slow_first_connection(server: RedisServer) -> AsyncIterator[str]:
    """A TCP proxy in front of the module's Redis whose *first* connection
    answers 0.4 s late: a round trip on it runs on Redis at once, but its reply
    reaches the client after the replies of later connections."""
    first = True

    async def relay(source: Any, sink: Any, delay: float) -> None:
        async for data in source:
            await anyio.sleep(delay)
            await sink.send(data)
        await sink.send_eof()

    async def handle(client: Any) -> None:
        nonlocal first
        delay, first = (0.4 if first else 0.0), False
        upstream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with client, upstream, anyio.create_task_group() as tg:
            tg.start_soon(relay, client, upstream, 0.0)
            tg.start_soon(relay, upstream, client, delay)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"redis://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_a_join_racing_the_first_heartbeat_is_no_lost_lease(
    make_layer: Any,
    kind: str,
    server: RedisServer,
    slow_first_connection: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first heartbeat writes the lease on Redis ("added"), then a join
    # completes before the heartbeat's reply is read. That "added" is the
    # lease being written for the first time, not Redis having lost it; read
    # as a loss it re-announced every member (a duplicate presence.join).
    for script in (HEARTBEAT, JOIN):  # so each call is one round trip (no NOSCRIPT)
        redis_call(server.port, "SCRIPT", "LOAD", script)
    layer = make_layer(kind, slow_first_connection)
    store = presence.configure(layer, lease_seconds=5).store
    results: list[Any] = []

    async def heartbeat() -> None:
        results.append(await store.heartbeat())

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        await anyio.sleep(0.15)  # the heartbeat's script has run; its reply is held
        _, lost = await store.join("room", "chan.1", None, {"n": 1}, None)
        assert not results  # the join finished first,
        assert not lost  # (the heartbeat had written the lease)
    assert results == [(False, [])]
    assert [m.channel for m in await store.members("room")] == ["chan.1"]
    assert "re-announcing" not in caplog.text


async def test_works_from_sync_code(make_layer: Any) -> None:
    layer = make_layer("inmemory")
    ch = await layer.new_channel()

    def in_a_thread() -> tuple[int, list[str]]:
        async_to_sync(presence.join)(layer, "room", ch, {"from": "sync"}, events=False)
        found = async_to_sync(presence.members)(layer, "room")
        return async_to_sync(presence.count)(layer, "room"), [m.meta["from"] for m in found]

    assert await sync_to_async(in_a_thread)() == (1, ["sync"])


# -- the consumer integration ------------------------------------------------------------


class Room(PresenceMixin, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.groups.append("room." + self.scope["url_route"]["kwargs"]["room"])
        if self.scope["url_route"]["kwargs"]["room"] == "closed":
            await self.close()
            return
        await self.accept()
        here = await presence.members(self.channel_layer, self.groups[0])
        await self.send_json({"here": [m.meta["name"] for m in here]})

    def presence_meta(self) -> Any:
        return {"name": self.scope["name"]}

    def presence_user(self) -> str | None:
        return self.scope["name"]

    async def presence_join(self, event: dict[str, Any]) -> None:
        await self.send_json({"join": event["meta"]["name"]})

    async def presence_leave(self, event: dict[str, Any]) -> None:
        await self.send_json({"leave": event["meta"]["name"], "reason": event["reason"]})


class SyncRoom(SyncPresenceMixin, JsonWebsocketConsumer):
    groups = ["room.lobby"]
    presence_events = False

    def presence_meta(self) -> Any:
        return {"name": self.scope["name"]}


def communicator(app: Any, room: str, name: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(app, f"/{room}/")
    comm.scope["url_route"] = {"args": (), "kwargs": {"room": room}}
    comm.scope["name"] = name
    return comm


@pytest.mark.parametrize("kind", LAYERS)
async def test_consumer_mixin_tracks_groups_and_leaves(
    kind: str, server: RedisServer, anyio_backend: Any
) -> None:
    config: dict[str, Any] = {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"}
    if kind != "inmemory":
        backend = "RedisChannelLayer" if kind == "redis" else "RedisPubSubChannelLayer"
        config = {
            "BACKEND": f"channels_runtime.layers.redis.{backend}",
            "CONFIG": {"hosts": [server.url], "prefix": "c" + uuid.uuid4().hex[:10]},
        }
    with override_settings(CHANNEL_LAYERS={"default": config}):
        layer = get_channel_layer()
        app = Room.as_asgi()
        ann1 = communicator(app, "lobby", "ann")
        assert (await ann1.connect())[0]
        assert await ann1.receive_json_from() == {"here": ["ann"]}
        assert await ann1.receive_json_from() == {"join": "ann"}  # its own, after connect()
        ann2 = communicator(app, "lobby", "ann")  # a second tab
        assert (await ann2.connect())[0]
        assert await ann1.receive_json_from() == {"join": "ann"}
        bob = communicator(SyncRoom.as_asgi(), "lobby", "bob")
        assert (await bob.connect())[0]
        assert await ann1.receive_json_from() == {"join": "bob"}
        assert await bob.receive_nothing()  # presence_events = False
        users = await presence.users(layer, "room.lobby")
        assert [(u.user, len(u.members)) for u in users] == [("ann", 2), (None, 1)]

        refused = communicator(app, "closed", "eve")
        assert not (await refused.connect())[0]
        await refused.disconnect()
        assert await presence.count(layer, "room.closed") == 0  # never announced

        await ann2.disconnect()
        assert await ann1.receive_json_from() == {"leave": "ann", "reason": "left"}
        await bob.disconnect()
        assert await ann1.receive_json_from() == {"leave": "bob", "reason": "left"}
        assert [m.meta for m in await presence.members(layer, "room.lobby")] == [{"name": "ann"}]
        await ann1.disconnect()
        assert await presence.count(layer, "room.lobby") == 0
        if kind != "inmemory":
            assert presence.presence_for(layer)._loop().keeper is None
        await presence.presence_for(layer).close()
        await layer.close()


async def test_consumer_error_still_leaves(anyio_backend: Any) -> None:
    class Failing(Room):
        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            raise KeyError("boom")

    layer = get_channel_layer()
    watcher = communicator(Room.as_asgi(), "lobby", "watcher")
    assert (await watcher.connect())[0]
    await watcher.receive_json_from()
    await watcher.receive_json_from()
    failing = communicator(Failing.as_asgi(), "lobby", "failing")
    assert (await failing.connect())[0]
    assert await watcher.receive_json_from() == {"join": "failing"}
    await failing.send_json_to({})
    with pytest.raises(KeyError, match="boom"):
        await failing.wait(5)
    assert await watcher.receive_json_from() == {"leave": "failing", "reason": "left"}
    assert [m.meta["name"] for m in await presence.members(layer, "room.lobby")] == ["watcher"]
    await watcher.disconnect()
    assert events_group("room.lobby") not in layer.groups


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
def test_presence_on_a_cluster_layer_is_refused_by_name(kind: str) -> None:
    cls = RedisChannelLayer if kind == "redis" else RedisPubSubChannelLayer
    layer = cls(hosts=["redis+cluster://127.0.0.1:7000,127.0.0.1:7001"])  # never contacted
    with pytest.raises(NotImplementedError, match="presence does not support a Redis Cluster"):
        presence.configure(layer)
