"""The Redis Pub/Sub channel layer against real ``redis-server`` processes.

Most tests share one private server (module fixture) and isolate themselves
with a unique prefix; tests that kill, stop or restart Redis, or need two
servers, start their own. Two layer instances stand for two processes. Every
async test runs on asyncio, uvloop and trio.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from redis_server import RedisServer

from channels_runtime.exceptions import InvalidChannelLayerError, MessageTooLarge
from channels_runtime.layers.redis import RedisPubSubChannelLayer, RedisUnavailable
from channels_runtime.layers.redis.hosts import ConfigurationError, open_connection, shard_index
from channels_runtime.layers.redis.protocol import Connection, encode_command

Layer = RedisPubSubChannelLayer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def make_layer(server: RedisServer, prefix: str) -> AsyncIterator[Any]:
    """Layers ("processes") on the shared server under this test's prefix,
    closed when the test ends."""
    made: list[Layer] = []

    def make(**kwargs: Any) -> Layer:
        kwargs.setdefault("hosts", [server.url])
        kwargs.setdefault("prefix", prefix)
        layer = Layer(**kwargs)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


@pytest.fixture
def layer(make_layer: Any) -> Layer:
    return make_layer()  # type: ignore[no-any-return]


async def receive_within(layer: Layer, channel: str, seconds: float = 5) -> Any:
    with anyio.fail_after(seconds):
        return await layer.receive(channel)


async def nothing_within(layer: Layer, channel: str, seconds: float = 0.3) -> None:
    with anyio.move_on_after(seconds) as scope:
        message = await layer.receive(channel)
        pytest.fail(f"expected no message on {channel!r}, got {message!r}")
    assert scope.cancelled_caught


async def subscribed(layer: Layer, channel: str) -> None:
    """Receive on a normal channel for a moment, so that this process is
    subscribed to it (``receive`` does not wait for the subscription)."""
    await nothing_within(layer, channel, 0.2)


async def poll_until(condition: Callable[[], bool], seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await anyio.sleep(0.02)
    pytest.fail(f"condition not met within {seconds}s")


def numsub(server: RedisServer, topic: str) -> int:
    reply = server.command("PUBSUB", "NUMSUB", topic)
    return int(reply.rsplit(b":", 1)[1].strip())


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prefix": ""}, ValueError, "prefix must be a non-empty string"),
        ({"on_disconnect": print}, ValueError, "on_disconnect must be a message type"),
        ({"on_reconnect": ""}, ValueError, "on_reconnect must be a message type"),
        ({"serializer_format": "json"}, ValueError, "serializer_format 'json'"),
        ({"expiry": 0}, ValueError, "expiry must be a positive number"),
        ({"expiry": "60"}, ValueError, "expiry must be a positive number, got '60'"),
        ({"group_expiry": -1}, ValueError, "group_expiry"),
        ({"capacity": 0}, ValueError, "capacity must be a positive integer"),
        ({"channel_capacity": {"a.*": 0}}, ValueError, r"channel_capacity\['a.\*'\]"),
        ({"max_buffered": 1.5}, ValueError, "max_buffered must be a positive integer"),
        ({"max_connections": 0}, ValueError, "max_connections"),
        ({"socket_timeout": float("inf")}, ValueError, "socket_timeout"),
        ({"connect_timeout": True}, ValueError, "connect_timeout"),
        ({"retry_budget": -1}, ValueError, "retry_budget must be a zero or more"),
        ({"max_message_size": 0}, ValueError, "max_message_size"),
        ({"hosts": "redis://localhost"}, ConfigurationError, "must be a list"),
        ({"hosts": ["http://x"]}, ConfigurationError, "must start with redis://"),
        ({"symmetric_encryption_keys": "k"}, ValueError, "list of keys"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Layer(**kwargs)


def test_selected_by_channel_layers_setting(server: RedisServer) -> None:
    from django.test import override_settings

    from channels_runtime.layers import get_channel_layer

    config = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [server.url],
                "prefix": "settings",
                "capacity": 7,
                "on_disconnect": "redis.disconnect",
            },
        }
    }
    with override_settings(CHANNEL_LAYERS=config):
        layer = get_channel_layer()
        assert isinstance(layer, Layer)
        assert (layer.capacity, layer.prefix, layer.on_disconnect) == (
            7, "settings", "redis.disconnect"
        )  # fmt: skip
        assert layer.extensions == ["groups", "flush"]
        assert "redis://127.0.0.1" in repr(layer)


def test_unknown_config_key_is_reported(server: RedisServer) -> None:
    from django.test import override_settings

    from channels_runtime.layers import get_channel_layer

    config = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [server.url], "capacty": 7},
        }
    }
    with (
        override_settings(CHANNEL_LAYERS=config),
        pytest.raises(InvalidChannelLayerError, match="capacty"),
    ):
        get_channel_layer()


# -- sending and receiving ------------------------------------------------------------


@pytest.mark.anyio
async def test_send_receive_keeps_types(make_layer: Any) -> None:
    sender, receiver = make_layer(), make_layer()
    message = {
        "type": "test.message",
        "text": "héllo",
        "bytes": b"\x00\xff",
        "n": 2**40,
        "f": 1.5,
        "nested": {"list": [1, None, True]},
    }
    channel = await receiver.new_channel()
    await sender.send(channel, message)
    assert await receive_within(receiver, channel) == message
    await subscribed(receiver, "plain")
    await sender.send("plain", message)
    assert await receive_within(receiver, "plain") == message


@pytest.mark.anyio
async def test_new_channel_keeps_messages_until_received(layer: Layer) -> None:
    channel = await layer.new_channel()
    other = await layer.new_channel("custom")
    token = layer.client_token
    assert channel.startswith(f"specific.{token}!")
    assert other.startswith(f"custom.{token}!")
    assert len(channel.split("!")[1]) == 12
    # Subscribed as soon as new_channel() returns: nothing sent after it is lost.
    for n in range(3):
        await layer.send(channel, {"n": n})
    assert [(await receive_within(layer, channel))["n"] for n in range(3)] == [0, 1, 2]


@pytest.mark.anyio
async def test_invalid_arguments(layer: Layer, make_layer: Any) -> None:
    with pytest.raises(TypeError, match="Channel name"):
        await layer.send("bad name", {})
    with pytest.raises(TypeError, match="must be a dict"):
        await layer.send("ok", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_send("bad!group", {})
    with pytest.raises(TypeError, match="msgpack"):
        await layer.send("ok", {"x": object()})
    foreign = await make_layer().new_channel()
    with pytest.raises(ValueError, match="not made by this layer"):
        await layer.receive(foreign)
    with pytest.raises(ValueError, match="not made by this layer"):
        await layer.group_add("g", foreign)
    await layer.group_discard("g", foreign)  # not a member: no error


@pytest.mark.anyio
async def test_junk_from_other_clients_is_dropped(
    layer: Layer, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever another client publishes on our topics (not msgpack, not a
    dict, no channel name) is logged and dropped; receivers keep waiting."""
    import msgpack

    channel = await layer.new_channel()
    process_topic = f"{layer.prefix}:pr:{layer.client_token}"
    await subscribed(layer, "plain")
    with caplog.at_level(logging.WARNING, "channels_runtime.layers.redis"):
        server.command("PUBLISH", f"{layer.prefix}:ch:plain", b"\xc1 not msgpack")
        server.command("PUBLISH", f"{layer.prefix}:ch:plain", msgpack.packb([1, 2]))
        server.command("PUBLISH", process_topic, b"no channel name")
        server.command("PUBLISH", process_topic, channel.encode() + b"|" + msgpack.packb(7))
        await layer.send("plain", {"good": 1})
        await layer.send(channel, {"good": 2})
        assert await receive_within(layer, "plain") == {"good": 1}
        assert await receive_within(layer, channel) == {"good": 2}
    assert "unreadable message on 'plain'" in caplog.text
    assert "not a dict: [1, 2]" in caplog.text
    assert "malformed message" in caplog.text
    assert "not a dict: 7" in caplog.text


@pytest.mark.anyio
async def test_oversize_message(make_layer: Any) -> None:
    layer = make_layer(max_message_size=1000)
    channel = await layer.new_channel()
    await layer.send(channel, {"data": b"x" * 900})
    with pytest.raises(MessageTooLarge, match="max_message_size of 1000"):
        await layer.send("sized", {"data": b"x" * 1000})
    with pytest.raises(MessageTooLarge, match="group g"):
        await layer.group_send("g", {"data": b"x" * 1000})
    assert len((await receive_within(layer, channel))["data"]) == 900
    await layer.close()


@pytest.mark.anyio
async def test_several_receivers_share_a_channel(layer: Layer) -> None:
    """In one process, receivers of one channel each get different messages."""
    channel = await layer.new_channel()
    received: list[int] = []

    async def receiver() -> None:
        for _ in range(4):
            received.append((await receive_within(layer, channel))["n"])

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(receiver)
        await anyio.sleep(0.05)
        for n in range(20):
            await layer.send(channel, {"n": n})
    assert sorted(received) == list(range(20))


@pytest.mark.anyio
async def test_many_channels_concurrently(layer: Layer) -> None:
    channels = [await layer.new_channel() for _ in range(40)] + [f"plain-{i}" for i in range(5)]
    for name in channels[40:]:
        await subscribed(layer, name)
    got: dict[str, list[int]] = {c: [] for c in channels}

    async def receiver(channel: str) -> None:
        for _ in range(3):
            got[channel].append((await receive_within(layer, channel))["n"])

    async with anyio.create_task_group() as tg:
        for channel in channels:
            tg.start_soon(receiver, channel)
        await anyio.sleep(0.05)
        for n in range(3):
            for channel in channels:
                await layer.send(channel, {"n": n})
    assert all(values == [0, 1, 2] for values in got.values()), got


@pytest.mark.anyio
async def test_a_normal_channel_reaches_every_subscribed_process(make_layer: Any) -> None:
    """Pub/Sub fans out: each process receiving on a normal channel gets a copy
    (documented; use RedisChannelLayer for a work queue)."""
    first, second, sender = make_layer(), make_layer(), make_layer()
    await subscribed(first, "news")
    await subscribed(second, "news")
    await sender.send("news", {"n": 1})
    assert await receive_within(first, "news") == {"n": 1}
    assert await receive_within(second, "news") == {"n": 1}


# -- groups ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_groups_across_two_processes(make_layer: Any, server: RedisServer) -> None:
    web1, web2, view = make_layer(), make_layer(), make_layer()
    a1, a2 = await web1.new_channel(), await web1.new_channel()
    b1 = await web2.new_channel()
    for layer, channel in ((web1, a1), (web1, a2), (web2, b1)):
        await layer.group_add("room", channel)
    # group_add returned, so the subscription is in effect: no sleep needed.
    await view.group_send("room", {"text": "hi"})
    assert await receive_within(web1, a1) == {"text": "hi"}
    assert await receive_within(web1, a2) == {"text": "hi"}
    assert await receive_within(web2, b1) == {"text": "hi"}
    # Two subscriptions to the group topic: one per process, not per member.
    assert numsub(server, f"{web1.prefix}:gr:room") == 2

    await web1.group_discard("room", a1)
    await web1.group_discard("room", a1)  # twice is fine
    await view.group_send("room", {"text": "again"})
    assert await receive_within(web1, a2) == {"text": "again"}
    assert await receive_within(web2, b1) == {"text": "again"}
    await nothing_within(web1, a1, 0.1)

    # The last local member leaving unsubscribes the process from the group.
    await web1.group_discard("room", a2)
    await nothing_within(web1, a2, 0.1)  # the reader writes the UNSUBSCRIBE meanwhile
    assert numsub(server, f"{web1.prefix}:gr:room") == 1


@pytest.mark.anyio
async def test_group_members_get_their_own_copies(layer: Layer) -> None:
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", first)
    await layer.group_add("g", second)
    await layer.group_add("g", second)  # renews, does not duplicate
    await layer.group_send("g", {"list": [1]})
    one = await receive_within(layer, first)
    two = await receive_within(layer, second)
    assert one == two == {"list": [1]}
    one["list"].append(2)
    assert two == {"list": [1]}
    await nothing_within(layer, second, 0.1)


@pytest.mark.anyio
async def test_group_with_a_normal_channel(make_layer: Any) -> None:
    worker, sender = make_layer(), make_layer()
    await worker.group_add("jobs", "thumbnails")
    await sender.group_send("jobs", {"job": 1})
    assert await receive_within(worker, "thumbnails") == {"job": 1}


@pytest.mark.anyio
async def test_group_expiry(make_layer: Any) -> None:
    layer = make_layer(group_expiry=0.3)
    channel = await layer.new_channel()
    await layer.group_add("short", channel)
    await layer.group_send("short", {"n": 1})
    assert await receive_within(layer, channel) == {"n": 1}
    await anyio.sleep(0.4)
    await layer.group_send("short", {"n": 2})
    await nothing_within(layer, channel, 0.2)
    assert "short" not in layer._state().groups


# -- local queues ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_local_queues_are_bounded(make_layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    layer = make_layer(capacity=3, channel_capacity={"big.*": 5})
    idle, busy = await layer.new_channel(), await layer.new_channel()
    big = await layer.new_channel("big")
    with caplog.at_level(logging.DEBUG, "channels_runtime.layers.redis"):
        for n in range(6):
            await layer.send(idle, {"n": n})
            await layer.send(big, {"n": n})
        await layer.send(busy, {})
        # Receiving on ``busy`` reads the others' messages into their queues.
        await receive_within(layer, busy)
    assert "its queue is full (3)" in caplog.text
    # The newest are dropped, as a full channel refuses a message.
    assert [(await receive_within(layer, idle))["n"] for _ in range(3)] == [0, 1, 2]
    assert [(await receive_within(layer, big))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    await nothing_within(layer, idle, 0.1)
    assert layer._state().buffered == 0


@pytest.mark.anyio
async def test_local_queues_have_a_total_cap(make_layer: Any) -> None:
    layer = make_layer(max_buffered=3)
    idle = [await layer.new_channel() for _ in range(5)]
    busy = await layer.new_channel()
    for channel in idle:
        await layer.send(channel, {"to": channel})
    await layer.send(busy, {})
    await receive_within(layer, busy)
    assert layer._state().buffered == 3
    for channel in idle[:3]:
        assert await receive_within(layer, channel) == {"to": channel}
    await nothing_within(layer, idle[3], 0.1)


@pytest.mark.anyio
async def test_queues_and_idle_channels_expire(make_layer: Any, server: RedisServer) -> None:
    layer = make_layer(expiry=0.3)
    state = layer._state()
    idle, busy = await layer.new_channel(), await layer.new_channel()
    await subscribed(layer, "plain")
    topic = f"{layer.prefix}:ch:plain"
    assert numsub(server, topic) == 1
    await layer.send(idle, {"old": True})
    await layer.send(busy, {})
    await receive_within(layer, busy)
    assert state.buffered == 1
    await anyio.sleep(0.4)
    # The queued message expired; so did the channels nobody received on.
    await layer.send(busy, {})
    await receive_within(layer, busy)
    assert state.buffered == 0
    assert idle not in state.channels
    assert "plain" not in state.channels
    await layer.send(busy, {})  # the reader writes the UNSUBSCRIBE while reading
    await receive_within(layer, busy)
    assert numsub(server, topic) == 0


# -- cancellation ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("specific", [False, True], ids=["normal", "specific"])
async def test_cancelled_receives_lose_nothing(make_layer: Any, specific: bool) -> None:
    """Receivers are cancelled at random moments while messages flow: every
    message is still received exactly once."""
    layer, sender = make_layer(capacity=1000), make_layer()
    channel = await layer.new_channel() if specific else "cancel-test"
    other = await layer.new_channel()
    if not specific:
        await subscribed(layer, channel)
    total = 200
    received: list[int] = []
    rng = random.Random(7)

    async def send_all() -> None:
        for n in range(total):
            await sender.send(channel, {"n": n})
            if n % 10 == 0:
                await anyio.sleep(0.002)

    async def bystander() -> None:
        # Another receiver in the same process, so the reader's job moves around.
        with anyio.move_on_after(30):
            await layer.receive(other)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bystander)
        tg.start_soon(send_all)
        deadline = anyio.current_time() + 20
        while len(received) < total and anyio.current_time() < deadline:
            with anyio.move_on_after(rng.choice([0, 0.0002, 0.001, 0.003, 0.01])):
                received.append((await layer.receive(channel))["n"])
        tg.cancel_scope.cancel()
    assert sorted(received) == list(range(total))
    assert layer._state().reader is None
    assert not layer._state().waiters


@pytest.mark.anyio
async def test_a_handed_message_goes_to_the_next_receiver(layer: Layer) -> None:
    """A receiver woken with a message but cancelled before it runs gives the
    message back, ahead of later ones. (On asyncio the cancellation wins; on
    trio the woken receiver returns the message. Either way it is received
    once, in order.)"""
    channel, elsewhere = await layer.new_channel(), await layer.new_channel()
    state = layer._state()
    first_scope = anyio.CancelScope()
    got: list[tuple[str, int]] = []

    async def reader() -> None:
        await receive_within(layer, elsewhere)

    async def first() -> None:
        with first_scope:
            got.append(("first", (await layer.receive(channel))["n"]))

    async def second() -> None:
        got.append(("second", (await receive_within(layer, channel))["n"]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)  # reads for the others, so ``first`` just waits
        await anyio.sleep(0.05)
        tg.start_soon(first)
        await anyio.sleep(0.05)
        tg.start_soon(second)
        await anyio.sleep(0.05)
        rec = state.channels[channel]
        waiter = rec.waiters.popleft()
        assert waiter is not state.reader
        # As the reader does: hand over a message; then the task is cancelled
        # before it has run.
        waiter.message = {"n": 1}
        layer._finish(state, waiter)
        first_scope.cancel()
        await anyio.sleep(0.05)
        await layer.send(channel, {"n": 2})
        await layer.send(elsewhere, {})
    if len(got) < 2:
        got.append(("later", (await receive_within(layer, channel))["n"]))
    assert [n for _, n in got] == [1, 2], got
    assert got[0][0] in ("first", "second")


@pytest.mark.anyio
async def test_cancelled_reader_hands_over(layer: Layer) -> None:
    """The receive reading for the process is cancelled; the others keep
    getting their messages."""
    first, second = await layer.new_channel(), await layer.new_channel()
    result: list[Any] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def doomed() -> None:
            with scope:
                await layer.receive(first)

        tg.start_soon(doomed)
        await anyio.sleep(0.05)
        assert layer._state().reader is not None

        async def survivor() -> None:
            result.append(await receive_within(layer, second))

        tg.start_soon(survivor)
        await anyio.sleep(0.05)
        scope.cancel()
        await anyio.sleep(0.05)
        await layer.send(second, {"ok": True})
    assert result == [{"ok": True}]
    await layer.send(first, {"still": "works"})
    assert await receive_within(layer, first) == {"still": "works"}


# -- flush, close, event loops --------------------------------------------------------------


@pytest.mark.anyio
async def test_flush(make_layer: Any) -> None:
    layer, other = make_layer(), make_layer()
    queued, waiting, _idle = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("g", waiting)
    other_channel = await other.new_channel()
    await other.group_add("g", other_channel)
    await layer.send(queued, {"x": 1})
    got: list[Any] = []

    async def receiver() -> None:
        got.append(await receive_within(layer, waiting))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.sleep(0.1)  # the receiver read ``queued``'s message into its queue
        assert layer._state().buffered == 1
        await layer.flush()
        state = layer._state()
        assert state.buffered == 0
        assert not state.groups
        assert queued not in state.channels
        assert waiting in state.channels  # a waiting receiver keeps its channel ...
        await layer.group_send("g", {"group": True})
        await layer.send(waiting, {"direct": True})  # ... and gets the next message
    assert got == [{"direct": True}]
    # Only this process was flushed.
    assert await receive_within(other, other_channel) == {"group": True}


@pytest.mark.anyio
async def test_close_closes_connections(own_server: RedisServer) -> None:
    server = own_server
    before = server.connected_clients()
    layer = Layer(hosts=[server.url])
    channel = await layer.new_channel()

    async def sender(n: int) -> None:
        await layer.send(channel, {"n": n})

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(sender, n)
    for _ in range(10):
        await receive_within(layer, channel)
    assert server.connected_clients() > before
    await layer.close()
    await layer.close()  # idempotent
    assert server.connected_clients() == before
    # Still usable afterwards.
    channel = await layer.new_channel()
    await layer.send(channel, {"x": 2})
    assert await receive_within(layer, channel) == {"x": 2}
    await layer.close()
    assert server.connected_clients() == before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_usable_across_event_loops(server: RedisServer) -> None:
    """One layer, several ``anyio.run`` in turn on different backends (as
    ``async_to_sync`` from plain code does): nothing loop-bound carries over,
    and a finished loop's connections are shut down when the next one starts."""
    before = server.connected_clients()
    layer = Layer(hosts=[server.url], prefix="loops" + uuid.uuid4().hex[:6])
    peer = Layer(hosts=[server.url], prefix=layer.prefix)
    holder: dict[str, str] = {}

    async def first() -> None:
        holder["channel"] = await layer.new_channel()
        await layer.group_add("g", holder["channel"])
        await layer.send(holder["channel"], {"run": 1})
        assert await receive_within(layer, holder["channel"]) == {"run": 1}

    async def second() -> None:
        # A new loop: this process subscribes again when it receives.
        async with anyio.create_task_group() as tg:

            async def receive() -> None:
                assert await receive_within(layer, holder["channel"]) == {"run": 2}

            tg.start_soon(receive)
            await anyio.sleep(0.2)
            await peer.send(holder["channel"], {"run": 2})
        await peer.close()

    async def third() -> None:
        await layer.close()

    anyio.run(first, backend="asyncio")  # no close() after this run ...
    anyio.run(second, backend="trio")  # ... nor this one
    anyio.run(third, backend="asyncio", backend_options={"use_uvloop": True})
    assert len(layer._states) <= 1
    deadline = time.monotonic() + 2
    while server.connected_clients() != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.connected_clients() == before
    gc.collect()


@pytest.mark.anyio
async def test_fork_gets_a_new_token(layer: Layer) -> None:
    before = await layer.new_channel()
    old_state = layer._state()
    layer._pid = -1  # as if this were the child of the process that made the layer
    after = await layer.new_channel()
    assert before.split("!")[0] != after.split("!")[0]
    assert layer._state() is not old_state
    with pytest.raises(ValueError, match="not made by this layer"):
        await layer.receive(before)
    await layer.send(after, {"child": True})
    assert await receive_within(layer, after) == {"child": True}
    for sub in old_state.subscribers:
        await sub.disconnect()
    for pool in old_state.pools:
        await pool.close()


# -- encryption ------------------------------------------------------------------------------


async def _raw_subscriber(server: RedisServer, topic: str) -> Connection:
    conn = await open_connection(RedisPubSubChannelLayer(hosts=[server.url]).hosts[0], 0, None, 2)
    await conn.send(encode_command("SUBSCRIBE", topic))
    assert (await conn.read_reply())[0] == b"subscribe"
    return conn


@pytest.mark.anyio
async def test_encryption_and_key_rotation(
    make_layer: Any, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("cryptography")
    old = make_layer(symmetric_encryption_keys=["old-key"])
    rotated = make_layer(symmetric_encryption_keys=["new-key", "old-key"])
    plain = make_layer()
    await subscribed(rotated, "secret")
    await subscribed(plain, "secret")
    spy = await _raw_subscriber(server, f"{old.prefix}:ch:secret")
    try:
        await old.send("secret", {"text": "attack at dawn"})
        with anyio.fail_after(5):
            pushed = await spy.read_reply()
        assert pushed[0] == b"message"
        assert b"dawn" not in pushed[2]
        assert await receive_within(rotated, "secret") == {"text": "attack at dawn"}
        # A layer without the key cannot read it: dropped and logged, not raised.
        with caplog.at_level(logging.ERROR, "channels_runtime.layers.redis"):
            await plain.send("secret", {"text": "readable"})
            assert await receive_within(plain, "secret") == {"text": "readable"}
        assert "unreadable message" in caplog.text
    finally:
        await spy.aclose()


# -- failures ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_while_down_raises_after_retry_budget(own_server: RedisServer) -> None:
    layer = Layer(hosts=[own_server.url], retry_budget=0.3)
    channel = await layer.new_channel()
    await layer.send(channel, {"warm": "pool"})
    await receive_within(layer, channel)
    own_server.kill()
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="unavailable for send to 'x'") as info:
        await layer.send("x", {"n": 1})
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 2.0, elapsed
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(RedisUnavailable, match="unavailable for group_send to 'g'"):
        await layer.group_send("g", {"n": 1})
    # Joining a group needs Redis to confirm the subscription.
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="unavailable for group_add to 'g'"):
        await layer.group_add("g", channel)
    assert time.monotonic() - started < 3
    assert "g" not in layer._state().groups
    fresh = Layer(hosts=[own_server.url], retry_budget=0.3)
    with pytest.raises(RedisUnavailable, match="unavailable for new_channel"):
        await fresh.new_channel()
    assert not fresh._state().channels
    own_server.start()
    await layer.send("x", {"n": 2})  # recovers by itself
    await layer.group_add("g", channel)
    await layer.group_send("g", {"n": 3})
    assert await receive_within(layer, channel) == {"n": 3}
    await layer.close()
    await fresh.close()


@pytest.mark.anyio
async def test_receivers_resume_after_redis_restart(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is killed under waiting receivers and started again: they are
    told (``on_disconnect``/``on_reconnect``), every subscription is made again,
    and they get the messages sent afterwards."""
    hosts = [own_server.url]
    layer = Layer(hosts=hosts, on_disconnect="redis.disconnect", on_reconnect="redis.reconnect")
    other = Layer(hosts=hosts, retry_budget=5)
    specific = [await layer.new_channel() for _ in range(3)]
    member = await layer.new_channel()
    await layer.group_add("room", member)
    await subscribed(layer, "plain")
    names = [*specific, member, "plain"]
    got: dict[str, list[Any]] = {name: [] for name in names}

    async def receiver(channel: str) -> None:
        while True:
            message = await receive_within(layer, channel, 15)
            got[channel].append(message["type"])
            if message["type"] == "done":
                return

    with caplog.at_level(logging.WARNING, "channels_runtime.layers.redis"):
        async with anyio.create_task_group() as tg:
            for channel in names:
                tg.start_soon(receiver, channel)
            await anyio.sleep(0.2)
            own_server.kill()
            await anyio.sleep(0.5)  # the reader now backs off and retries
            own_server.start()
            await poll_until(lambda: all("redis.reconnect" in got[name] for name in names), 10)
            for channel in [*specific, "plain"]:
                await other.send(channel, {"type": "done"})
            await other.group_send("room", {"type": "done"})
    assert got == {name: ["redis.disconnect", "redis.reconnect", "done"] for name in names}
    assert "Lost the Pub/Sub connection" in caplog.text
    assert "unreachable" in caplog.text
    assert "reachable again" in caplog.text
    await layer.close()
    await other.close()
    assert own_server.connected_clients() == 0


@pytest.mark.anyio
async def test_cancel_while_redis_is_down(own_server: RedisServer) -> None:
    """Receivers backing off during an outage cancel promptly and leave nothing behind."""
    layer = Layer(hosts=[own_server.url])
    channel = await layer.new_channel()
    own_server.kill()
    started = time.monotonic()
    with anyio.move_on_after(0.5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, channel)
            tg.start_soon(layer.receive, "plain")
    assert time.monotonic() - started < 1.5
    state = layer._state()
    assert state.reader is None
    assert not state.waiters
    own_server.start()
    async with anyio.create_task_group() as tg:
        result: list[Any] = []

        async def receive() -> None:
            result.append(await receive_within(layer, channel))

        tg.start_soon(receive)
        await poll_until(lambda: state.subscribers[0].in_effect(layer._process_topic), 5)
        await layer.send(channel, {"ok": 1})
    assert result == [{"ok": 1}]
    await layer.close()


@pytest.mark.anyio
async def test_a_silent_server_is_detected(own_server: RedisServer) -> None:
    """A server that stops answering without closing (SIGSTOP: as a network
    partition looks) is found out by the health-check PING, even when the
    reader's job changes hands more often than the check interval, and the
    reader reconnects once the server answers again."""
    layer = Layer(
        hosts=[own_server.url],
        socket_timeout=0.3,
        connect_timeout=0.3,
        on_disconnect="redis.disconnect",
        on_reconnect="redis.reconnect",
    )
    layer.health_check_interval = 0.3  # type: ignore[misc]
    channel = await layer.new_channel()
    assert own_server.process is not None
    pid = own_server.process.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        got: Any = None
        for _ in range(50):  # a new receive (and reader) every 0.1 s
            with anyio.move_on_after(0.1):
                got = await layer.receive(channel)
            if got is not None:
                break
        assert got == {"type": "redis.disconnect"}
        os.kill(pid, signal.SIGCONT)
        assert await receive_within(layer, channel, 5) == {"type": "redis.reconnect"}
        await layer.send(channel, {"after": True})
        assert await receive_within(layer, channel) == {"after": True}
    finally:
        os.kill(pid, signal.SIGCONT)
        await layer.close()


@pytest.mark.anyio
async def test_several_shards(server: RedisServer, own_server: RedisServer, prefix: str) -> None:
    """Topics spread over two servers. A receiver is already reading one of
    them when group_add subscribes groups on both: poked, it connects the other
    server and reads both, and each group reaches a channel whose own topic is
    on one server only."""
    hosts = [server.url, own_server.url]
    layer = Layer(hosts=hosts, prefix=prefix)
    other = Layer(hosts=hosts, prefix=prefix)
    try:
        channel = await layer.new_channel()
        home = shard_index(layer.client_token, 2)
        groups = [f"g{i}" for i in range(12)]
        assert {shard_index(g, 2) for g in groups} == {0, 1}
        received: list[str] = []

        async def receive_all() -> None:
            for _ in groups:
                received.append((await receive_within(layer, channel, 10))["g"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive_all)
            await anyio.sleep(0.05)
            assert layer._state().reader is not None  # reading ``home`` only, so far
            for group in groups:
                await layer.group_add(group, channel)
            on = [
                sum(numsub(srv, f"{prefix}:gr:{g}") for g in groups) for srv in (server, own_server)
            ]
            assert all(on), on
            assert sum(on) == 12
            for group in groups:
                await other.group_send(group, {"g": group})
        assert sorted(received) == sorted(groups)
        assert numsub((server, own_server)[home], f"{prefix}:pr:{layer.client_token}") == 1
    finally:
        await layer.close()
        await other.close()


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_consumers_in_two_processes_share_a_room(server: RedisServer, prefix: str) -> None:
    """WebSocket consumers routed by URLRouter, on the Pub/Sub layer from
    CHANNEL_LAYERS; another layer instance (another process) joins the room
    and talks to them through it."""
    from django.test import override_settings
    from django.urls import re_path

    from channels_runtime.generic.websocket import AsyncJsonWebsocketConsumer
    from channels_runtime.layers import get_channel_layer
    from channels_runtime.routing import URLRouter
    from channels_runtime.testing import WebsocketCommunicator

    class Room(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            self.room = "room." + self.scope["url_route"]["kwargs"]["name"]
            await self.channel_layer.group_add(self.room, self.channel_name)
            await self.accept()

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.channel_layer.group_send(
                self.room, {"type": "room.message", "text": content["text"]}
            )

        async def room_message(self, event: dict[str, Any]) -> None:
            await self.send_json({"text": event["text"]})

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard(self.room, self.channel_name)

    app = URLRouter([re_path(r"^ws/(?P<name>\w+)/$", Room.as_asgi())])
    config = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [server.url], "prefix": prefix},
        }
    }
    elsewhere = Layer(hosts=[server.url], prefix=prefix)
    with override_settings(CHANNEL_LAYERS=config):
        alice = WebsocketCommunicator(app, "/ws/lobby/")
        bob = WebsocketCommunicator(app, "/ws/lobby/")
        assert (await alice.connect())[0]
        assert (await bob.connect())[0]
        listener = await elsewhere.new_channel()
        await elsewhere.group_add("room.lobby", listener)

        await alice.send_json_to({"text": "hello"})
        assert await bob.receive_json_from(2) == {"text": "hello"}
        assert await alice.receive_json_from(2) == {"text": "hello"}
        assert (await receive_within(elsewhere, listener))["text"] == "hello"

        await elsewhere.group_send("room.lobby", {"type": "room.message", "text": "from afar"})
        assert await alice.receive_json_from(2) == {"text": "from afar"}
        assert await bob.receive_json_from(2) == {"text": "from afar"}
        await receive_within(elsewhere, listener)

        await bob.disconnect()
        await elsewhere.group_send("room.lobby", {"type": "room.message", "text": "bye"})
        assert await alice.receive_json_from(2) == {"text": "bye"}
        await alice.disconnect()
        layer = get_channel_layer()
        assert isinstance(layer, Layer)
        await layer.close()
    await elsewhere.close()
