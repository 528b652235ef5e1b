"""The Redis channel layer against real ``redis-server`` processes.

Most tests share one private server (module fixture) and isolate themselves
with a unique key prefix; tests that kill or restart Redis, or need several
servers, start their own. Every async test runs on asyncio, uvloop and trio.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from redis_server import RedisServer, free_port, require_binary

from channels_runtime.exceptions import ChannelFull, MessageTooLarge
from channels_runtime.layers.redis import RedisChannelLayer, RedisUnavailable, decode_hosts
from channels_runtime.layers.redis.hosts import ConfigurationError, shard_index
from channels_runtime.layers.redis.protocol import ReplyError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def make_layer(server: RedisServer) -> Any:
    """Build layers on the shared server, each under its own prefix."""

    def make(**kwargs: Any) -> RedisChannelLayer:
        kwargs.setdefault("hosts", [server.url])
        kwargs.setdefault("prefix", "t" + uuid.uuid4().hex[:10])
        return RedisChannelLayer(**kwargs)

    return make


@pytest.fixture
async def layer(make_layer: Any) -> AsyncIterator[RedisChannelLayer]:
    layer = make_layer()
    yield layer
    await layer.flush()
    await layer.close()


async def receive_within(layer: RedisChannelLayer, channel: str, seconds: float = 5) -> Any:
    with anyio.fail_after(seconds):
        return await layer.receive(channel)


async def nothing_within(layer: RedisChannelLayer, channel: str, seconds: float = 0.3) -> None:
    with anyio.move_on_after(seconds) as scope:
        message = await layer.receive(channel)
        pytest.fail(f"expected no message on {channel!r}, got {message!r}")
    assert scope.cancelled_caught


# -- configuration ---------------------------------------------------------------


def test_hosts_forms() -> None:
    specs = decode_hosts(
        [
            "redis://:pw@example.com:6380/2",
            ("10.0.0.1", 6379),
            {"host": "h", "port": "7000", "db": 1, "socket_timeout": 3},
            {"address": "rediss://user:secret@tls.example.com", "ssl_cert_reqs": "none"},
            "unix:///run/redis.sock?db=3",
        ]
    )
    assert (specs[0].host, specs[0].port, specs[0].db, specs[0].password) == (
        "example.com", 6380, 2, "pw"
    )  # fmt: skip
    assert (specs[1].host, specs[1].port, specs[1].ssl_context) == ("10.0.0.1", 6379, None)
    assert (specs[2].port, specs[2].db, specs[2].socket_timeout) == (7000, 1, 3.0)
    assert specs[3].ssl_context is not None
    assert specs[3].username == "user"
    assert specs[3].port == 6379
    assert (specs[4].unix_path, specs[4].db) == ("/run/redis.sock", 3)
    assert "secret" not in repr(specs[3])
    assert "secret" not in specs[3].describe()
    assert decode_hosts(None)[0].describe() == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("redis://localhost", "must be a list"),
        (["http://x"], "must start with redis://"),
        ([{"host": "h", "bogus": 1}], "unknown option"),
        ([{"sentinels": [("h", 1)]}], "no master_name"),
        ([{"master_name": "m"}], "no sentinels"),
        ([{"host": "h", "ssl": True, "ssl_cert_reqs": "sometimes"}], "ssl_cert_reqs"),
        ([42], "must be a URL"),
        (["redis://h/notanumber"], "database number"),
    ],
)
def test_bad_hosts_are_clear_errors(hosts: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisChannelLayer(hosts=hosts)


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="serializer_format"):
        RedisChannelLayer(serializer_format="json")
    with pytest.raises(ValueError, match="group_expiry"):
        RedisChannelLayer(group_expiry=0)
    with pytest.raises(ValueError, match="prefix"):
        RedisChannelLayer(prefix="")
    with pytest.raises(ValueError, match="capacity"):
        RedisChannelLayer(capacity=0)


def test_selected_by_channel_layers_setting(server: RedisServer) -> None:
    from django.test import override_settings

    from channels_runtime.layers import get_channel_layer

    config = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [server.url], "prefix": "settings", "capacity": 7},
        }
    }
    with override_settings(CHANNEL_LAYERS=config):
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer)
        assert (layer.capacity, layer.prefix) == (7, "settings")
        assert layer.extensions == ["groups", "flush"]


def test_unknown_config_key_is_reported(server: RedisServer) -> None:
    from django.test import override_settings

    from channels_runtime.exceptions import InvalidChannelLayerError
    from channels_runtime.layers import get_channel_layer

    config = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [server.url], "capacty": 7},
        }
    }
    with (
        override_settings(CHANNEL_LAYERS=config),
        pytest.raises(InvalidChannelLayerError, match="capacty"),
    ):
        get_channel_layer()


def test_missing_redis_server_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis_server

    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server is not installed"):
        require_binary()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
        require_binary()


def test_consistent_hashing() -> None:
    names = [f"chat.{i}" for i in range(4000)]
    three = [shard_index(n, 3) for n in names]
    four = [shard_index(n, 4) for n in names]
    assert three == [shard_index(n, 3) for n in names]  # deterministic
    counts = [three.count(i) for i in range(3)]
    assert min(counts) > 1100, counts  # roughly even
    moved = [(a, b) for a, b in zip(three, four, strict=True) if a != b]
    # Appending a shard moves about a quarter of the names, all onto the new one.
    assert 800 < len(moved) < 1200
    assert all(b == 3 for _, b in moved)


# -- the core API ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_receive_keeps_types(layer: RedisChannelLayer) -> None:
    message = {
        "type": "test.message",
        "text": "héllo",
        "bytes": b"\x00\xff",
        "n": 2**40,
        "f": 1.5,
        "nested": {"list": [1, "a", None, True], 3: "int key"},
    }
    await layer.send("test-channel", message)
    assert await receive_within(layer, "test-channel") == message


@pytest.mark.anyio
async def test_fifo_and_sender_owns_nothing(layer: RedisChannelLayer) -> None:
    message: dict[str, Any] = {"type": "m", "items": [1]}
    await layer.send("fifo", message)
    message["items"].append(2)
    await layer.send("fifo", {"type": "m", "items": [3]})
    assert (await receive_within(layer, "fifo"))["items"] == [1]
    assert (await receive_within(layer, "fifo"))["items"] == [3]


@pytest.mark.anyio
async def test_invalid_arguments(layer: RedisChannelLayer) -> None:
    with pytest.raises(TypeError, match="message must be a dict"):
        await layer.send("ok", "not a dict")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Channel name must be"):
        await layer.send("bad name", {"type": "x"})
    with pytest.raises(TypeError, match="Channel name must be"):
        await layer.receive("bad name")
    with pytest.raises(TypeError, match="Group name must be"):
        await layer.group_add("bad group", "ok")
    with pytest.raises(TypeError, match="Group name must be"):
        await layer.group_send("bad group", {"type": "x"})
    with pytest.raises(TypeError, match="message must be a dict"):
        await layer.group_send("ok", ["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="msgpack"):
        await layer.send("ok", {"type": "x", "obj": object()})
    with pytest.raises(ValueError, match="not made by this layer"):
        await layer.receive("specific.someoneelse!abc")


@pytest.mark.anyio
async def test_capacity(make_layer: Any) -> None:
    layer = make_layer(capacity=3, channel_capacity={"big*": 5})
    try:
        for i in range(3):
            await layer.send("small", {"i": i})
        with pytest.raises(ChannelFull):
            await layer.send("small", {"i": 3})
        for i in range(5):
            await layer.send("bigger", {"i": i})
        with pytest.raises(ChannelFull):
            await layer.send("bigger", {"i": 5})
        assert (await receive_within(layer, "small"))["i"] == 0
        await layer.send("small", {"i": 3})  # room again
        channel = await layer.new_channel()
        for i in range(3):
            await layer.send(channel, {"i": i})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"i": 3})
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
async def test_message_expiry(make_layer: Any) -> None:
    layer = make_layer(expiry=0.3, capacity=2)
    try:
        specific = await layer.new_channel()
        for channel in ("expiring", specific):
            await layer.send(channel, {"old": 1})
            await layer.send(channel, {"old": 2})
        await anyio.sleep(0.4)
        # Expired messages no longer count towards capacity ...
        await layer.send("expiring", {"new": 1})
        await layer.send(specific, {"new": 1})
        # ... and are never delivered.
        assert await receive_within(layer, "expiring") == {"new": 1}
        assert await receive_within(layer, specific) == {"new": 1}
        await nothing_within(layer, "expiring")
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
async def test_new_channel_names(layer: RedisChannelLayer) -> None:
    names = {await layer.new_channel() for _ in range(200)}
    assert len(names) == 200
    name = next(iter(names))
    assert name.startswith(f"specific.{layer.client_token}!")
    other = await layer.new_channel("websocket.send")
    assert other.startswith(f"websocket.send.{layer.client_token}!")
    await layer.send(other, {"x": 1})
    assert await receive_within(layer, other) == {"x": 1}


@pytest.mark.anyio
async def test_fork_gets_a_new_token(layer: RedisChannelLayer) -> None:
    """After fork() (simulated) the child must not share the parent's specific
    channels nor its connections."""
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
    for shard in old_state.pools:
        await shard.close()


@pytest.mark.anyio
async def test_many_specific_receivers_concurrently(layer: RedisChannelLayer) -> None:
    channels = [await layer.new_channel() for _ in range(40)]
    got: dict[str, list[int]] = {c: [] for c in channels}

    async def receiver(channel: str) -> None:
        for _ in range(3):
            got[channel].append((await receive_within(layer, channel))["n"])

    async with anyio.create_task_group() as tg:
        for channel in channels:
            tg.start_soon(receiver, channel)
        await anyio.sleep(0.05)
        order = [(c, n) for n in range(3) for c in channels]
        for channel, n in order:
            await layer.send(channel, {"n": n})
    assert all(values == [0, 1, 2] for values in got.values()), got


@pytest.mark.anyio
async def test_several_receivers_on_one_normal_channel(layer: RedisChannelLayer) -> None:
    received: list[int] = []

    async def receiver() -> None:
        received.append((await receive_within(layer, "shared"))["n"])

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(receiver)
        await anyio.sleep(0.1)
        for n in range(5):
            await layer.send("shared", {"n": n})
    assert sorted(received) == [0, 1, 2, 3, 4]


@pytest.mark.anyio
@pytest.mark.parametrize("specific", [False, True], ids=["normal", "specific"])
async def test_cancelled_receives_lose_nothing(layer: RedisChannelLayer, specific: bool) -> None:
    """Receivers are cancelled at random moments while messages flow: every
    message is still received exactly once."""
    channel = await layer.new_channel() if specific else "cancel-test"
    other = await layer.new_channel() if specific else None
    total = 150
    received: list[int] = []
    rng = random.Random(7)

    async def sender() -> None:
        for n in range(total):
            while True:
                try:
                    await layer.send(channel, {"n": n})
                    break
                except ChannelFull:
                    await anyio.sleep(0.01)
            if n % 10 == 0:
                await anyio.sleep(0.002)

    async def bystander() -> None:
        # Another receiver in the same process, so the reader role moves around.
        assert other is not None
        with anyio.move_on_after(30):
            await layer.receive(other)

    async with anyio.create_task_group() as tg:
        if other is not None:
            tg.start_soon(bystander)
        tg.start_soon(sender)
        deadline = anyio.current_time() + 20
        while len(received) < total and anyio.current_time() < deadline:
            with anyio.move_on_after(rng.choice([0.0005, 0.001, 0.003, 0.01, 0.05])):
                received.append((await layer.receive(channel))["n"])
        tg.cancel_scope.cancel()
    assert sorted(received) == list(range(total))


@pytest.mark.anyio
async def test_cancelled_reader_hands_over(layer: RedisChannelLayer) -> None:
    """The receive reading Redis for the process is cancelled; the others keep
    getting their messages."""
    first, second = await layer.new_channel(), await layer.new_channel()
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def doomed() -> None:
            with scope:
                await layer.receive(first)

        tg.start_soon(doomed)
        await anyio.sleep(0.05)  # ``doomed`` is now the reader
        result: list[Any] = []

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


@pytest.mark.anyio
async def test_local_buffers_are_bounded_and_expire(make_layer: Any) -> None:
    layer = make_layer(capacity=4, expiry=0.5)
    try:
        idle, busy = await layer.new_channel(), await layer.new_channel()
        for round_ in range(2):
            for i in range(3):
                await layer.send(idle, {"round": round_, "i": i})
            await layer.send(busy, {"round": round_})
            # Reading ``busy`` pulls ``idle``'s messages into the local buffer.
            assert await receive_within(layer, busy) == {"round": round_}
        local = layer._state().local
        # Only ``capacity`` (4) of the 6 messages for ``idle`` were kept.
        assert local.buffered == 4
        assert [(await receive_within(layer, idle))["i"] for _ in range(4)] == [0, 1, 2, 0]
        for i in range(3):
            await layer.send(idle, {"i": i})
        await layer.send(busy, {})
        await receive_within(layer, busy)
        assert local.buffered == 3
        await anyio.sleep(0.6)
        await nothing_within(layer, idle, 0.2)
        assert local.buffered == 0
        assert not local.buffers
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
async def test_local_buffers_have_a_total_cap(make_layer: Any) -> None:
    layer = make_layer(max_buffered=3)
    try:
        idle = [await layer.new_channel() for _ in range(5)]
        busy = await layer.new_channel()
        for channel in idle:
            await layer.send(channel, {"to": channel})
            # Deadlines have millisecond precision: give each message its own, so
            # "oldest" is well defined.
            await anyio.sleep(0.005)
        await layer.send(busy, {})
        await receive_within(layer, busy)
        assert layer._state().local.buffered == 3
        # The oldest messages made room for newer ones (so abandoned channels
        # cannot starve live ones): the last three are kept.
        for channel in idle[2:]:
            assert await receive_within(layer, channel) == {"to": channel}
        await nothing_within(layer, idle[0], 0.1)
    finally:
        await layer.flush()
        await layer.close()


# -- groups ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_groups(layer: RedisChannelLayer) -> None:
    specific = [await layer.new_channel() for _ in range(3)]
    members = [*specific, "normal-member"]
    for channel in members:
        await layer.group_add("room", channel)
    await layer.group_add("room", specific[0])  # renewing is fine
    await layer.group_send("room", {"type": "hello"})
    for channel in members:
        assert await receive_within(layer, channel) == {"type": "hello"}
    await layer.group_discard("room", specific[1])
    await layer.group_discard("room", "never-added")
    await layer.group_discard("no-such-group", "x")
    await layer.group_send("room", {"type": "again"})
    assert await receive_within(layer, specific[0]) == {"type": "again"}
    assert await receive_within(layer, "normal-member") == {"type": "again"}
    await nothing_within(layer, specific[1])
    await layer.group_send("empty-group", {"type": "nobody"})


@pytest.mark.anyio
async def test_group_send_skips_full_members(make_layer: Any) -> None:
    layer = make_layer(capacity=1)
    try:
        for channel in ("full", "free"):
            await layer.group_add("g", channel)
        await layer.send("full", {"n": 0})
        await layer.group_send("g", {"n": 1})
        assert await receive_within(layer, "full") == {"n": 0}
        assert await receive_within(layer, "free") == {"n": 1}
        await nothing_within(layer, "full")
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
async def test_group_expiry(make_layer: Any) -> None:
    # Margins of 0.2 s (stale gone) and 0.4 s (renewed kept): a loaded machine
    # may pause the test for a tenth of a second between two steps.
    layer = make_layer(group_expiry=1.0)
    try:
        await layer.group_add("g", "stale")
        await layer.group_add("g", "renewed")
        await anyio.sleep(0.6)
        await layer.group_add("g", "renewed")
        await anyio.sleep(0.6)
        await layer.group_send("g", {"n": 1})
        assert await receive_within(layer, "renewed") == {"n": 1}
        await nothing_within(layer, "stale", 0.1)
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
async def test_group_send_with_capacity_patterns(make_layer: Any) -> None:
    """With ``channel_capacity`` patterns the membership is planned client-side."""
    layer = make_layer(capacity=1, channel_capacity={"roomy*": 3})
    try:
        specific = await layer.new_channel()
        for channel in ("roomy-a", "tight", specific):
            await layer.group_add("g", channel)
        for n in range(3):
            await layer.group_send("g", {"n": n})
        assert [(await receive_within(layer, "roomy-a"))["n"] for _ in range(3)] == [0, 1, 2]
        assert await receive_within(layer, "tight") == {"n": 0}
        assert await receive_within(layer, specific) == {"n": 0}
        await nothing_within(layer, "tight", 0.1)
    finally:
        await layer.flush()
        await layer.close()


# -- flush, close, event loops ------------------------------------------------------


@pytest.mark.anyio
async def test_flush(layer: RedisChannelLayer, server: RedisServer) -> None:
    await layer.send("a", {"x": 1})
    await layer.group_add("g", "a")
    bystander = RedisChannelLayer(hosts=[server.url], prefix=layer.prefix + "x")
    await bystander.send("a", {"kept": True})
    await layer.flush()
    await nothing_within(layer, "a", 0.1)
    await layer.group_send("g", {"x": 2})
    await nothing_within(layer, "a", 0.1)
    # A prefix that merely starts with ours is not flushed.
    assert await receive_within(bystander, "a") == {"kept": True}
    await bystander.close()


@pytest.mark.anyio
async def test_close_closes_connections(make_layer: Any, server: RedisServer) -> None:
    before = server.connected_clients()
    layer = make_layer()
    channel = await layer.new_channel()

    async def sender(n: int) -> None:
        await layer.send("busy", {"n": n})

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(sender, n)
    await layer.send(channel, {"x": 1})
    await receive_within(layer, channel)
    assert server.connected_clients() > before
    await layer.flush()
    await layer.close()
    await layer.close()  # idempotent
    assert server.connected_clients() == before
    # Still usable afterwards.
    await layer.send("after", {"x": 2})
    assert await receive_within(layer, "after") == {"x": 2}
    await layer.close()
    assert server.connected_clients() == before


@pytest.mark.anyio
async def test_connection_cap(make_layer: Any, server: RedisServer) -> None:
    before = server.connected_clients()
    layer = make_layer(max_connections=2, capacity=1000)
    peak = 0

    async def sender(n: int) -> None:
        nonlocal peak
        await layer.send("capped", {"n": n})
        peak = max(peak, server.connected_clients() - before)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(sender, n)
        assert peak <= 2
        assert sorted([(await receive_within(layer, "capped"))["n"] for _ in range(50)]) == list(
            range(50)
        )
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_usable_across_event_loops(server: RedisServer) -> None:
    """One layer, several ``anyio.run`` in turn, on different backends, with
    and without closing in between: nothing loop-bound carries over, and the
    connections of a run that ended without ``close()`` are shut down when the
    next run starts. (asyncio still warns when it collects their transports,
    hence the filters.)"""
    before = server.connected_clients()
    layer = RedisChannelLayer(hosts=[server.url], prefix="loops" + uuid.uuid4().hex[:6])
    holder: dict[str, str] = {}

    async def first() -> None:
        holder["channel"] = await layer.new_channel()
        await layer.send(holder["channel"], {"run": 1})
        await layer.send("plain", {"run": 1})
        await layer.group_add("g", holder["channel"])

    async def second() -> None:
        assert await receive_within(layer, holder["channel"]) == {"run": 1}
        assert await receive_within(layer, "plain") == {"run": 1}
        await layer.group_send("g", {"run": 2})

    async def third() -> None:
        assert await receive_within(layer, holder["channel"]) == {"run": 2}
        await layer.flush()
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


# -- serialisation and encryption --------------------------------------------------


@pytest.mark.anyio
async def test_oversize_message(make_layer: Any) -> None:
    layer = make_layer(max_message_size=1000)
    try:
        await layer.send("sized", {"data": b"x" * 900})
        with pytest.raises(MessageTooLarge, match=r"over the layer's max_message_size of 1000"):
            await layer.send("sized", {"data": b"x" * 1000})
        with pytest.raises(MessageTooLarge, match="group g"):
            await layer.group_send("g", {"data": b"x" * 1000})
        assert len((await receive_within(layer, "sized"))["data"]) == 900
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
async def test_encryption_and_key_rotation(
    make_layer: Any, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("cryptography")
    prefix = "enc" + uuid.uuid4().hex[:8]
    old = make_layer(prefix=prefix, symmetric_encryption_keys=["old-key"])
    rotated = make_layer(prefix=prefix, symmetric_encryption_keys=["new-key", "old-key"])
    new_only = make_layer(prefix=prefix, symmetric_encryption_keys=["new-key"])
    try:
        await old.send("secret", {"text": "attack at dawn"})
        assert b"dawn" not in server.command("LRANGE", f"{prefix}:ch:secret", 0, -1)
        assert await receive_within(rotated, "secret") == {"text": "attack at dawn"}
        await rotated.send("secret", {"text": "sealed with the new key"})
        assert await receive_within(new_only, "secret") == {"text": "sealed with the new key"}
        # A message the receiver cannot open is dropped and logged, not raised.
        await rotated.send("secret", {"text": "new"})
        await old.send("secret", {"text": "old"})
        with caplog.at_level(logging.ERROR, "channels_runtime.layers.redis"):
            assert await receive_within(old, "secret") == {"text": "old"}
        assert "unreadable message" in caplog.text
    finally:
        await old.flush()
        for layer in (old, rotated, new_only):
            await layer.close()


def test_encryption_needs_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)
    with pytest.raises(ImportError, match="pip install cryptography"):
        RedisChannelLayer(symmetric_encryption_keys=["k"])
    with pytest.raises(ValueError, match="list of keys"):
        RedisChannelLayer(symmetric_encryption_keys="k")


# -- failures ------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.mark.anyio
async def test_send_while_down_raises_after_retry_budget(own_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[own_server.url], retry_budget=0.3)
    await layer.send("x", {"warm": "pool"})
    own_server.kill()
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="unavailable for send to 'x'") as info:
        await layer.send("x", {"n": 1})
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 2.0, elapsed
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(RedisUnavailable):
        await layer.group_add("g", "x")
    own_server.start()
    await layer.send("x", {"n": 2})  # recovers by itself
    assert await receive_within(layer, "x") == {"n": 2}
    await layer.close()


@pytest.mark.anyio
async def test_send_recovers_from_stale_connections_after_restart(own_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[own_server.url], retry_budget=0)
    await layer.send("x", {"n": 0})
    own_server.restart()
    # The pooled connection is dead, but the one immediate retry is always made...
    # unless the budget is zero, in which case the failure is reported at once.
    with pytest.raises(RedisUnavailable):
        await layer.send("x", {"n": 1})
    layer.retry_budget = 1.0
    own_server.restart()
    await layer.send("x", {"n": 2})
    assert await receive_within(layer, "x") == {"n": 2}
    await layer.close()


@pytest.mark.anyio
async def test_receivers_survive_redis_restart(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    layer = RedisChannelLayer(hosts=[own_server.url], retry_budget=5)
    specific = [await layer.new_channel() for _ in range(3)]
    got: dict[str, Any] = {}

    async def receiver(channel: str) -> None:
        got[channel] = await receive_within(layer, channel, 15)

    with caplog.at_level(logging.WARNING, "channels_runtime.layers.redis"):
        async with anyio.create_task_group() as tg:
            for channel in [*specific, "plain-a", "plain-b"]:
                tg.start_soon(receiver, channel)
            await anyio.sleep(0.2)
            own_server.kill()
            await anyio.sleep(0.5)  # receivers now back off and retry
            own_server.start()
            for channel in [*specific, "plain-a", "plain-b"]:
                await layer.send(channel, {"to": channel})
    assert got == {c: {"to": c} for c in [*specific, "plain-a", "plain-b"]}
    assert "unreachable" in caplog.text
    assert "reachable again" in caplog.text
    await layer.flush()
    await layer.close()
    assert own_server.connected_clients() == 0


@pytest.mark.anyio
async def test_retried_send_is_not_queued_twice(layer: RedisChannelLayer) -> None:
    """A send retried because its first attempt may have landed (the reply was
    lost) is recognised by its element and not queued again."""
    from channels_runtime.layers.redis import scripts

    shard = layer._state().pools[0]
    element = layer._header(shard) + b"payload"
    key = f"{layer.prefix}:ch:dedupe"
    for flag in (b"0", b"1", b"1"):
        args = (100, 60_000, element, flag)
        assert await layer._run_script(shard, scripts.SEND, (key,), args, "test") == 1
    assert await layer._simple(shard, ("LLEN", key), "test") == 1


@pytest.mark.anyio
async def test_send_waits_out_a_read_only_server(own_server: RedisServer) -> None:
    """A server that answers READONLY (a demoted master, as during a Sentinel
    failover) is retried until it accepts writes again, within the budget."""
    layer = RedisChannelLayer(hosts=[own_server.url], retry_budget=5)
    try:
        await layer.send("x", {"n": 0})
        own_server.command("REPLICAOF", "127.0.0.1", free_port())
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.send, "x", {"n": 1})
            await anyio.sleep(0.3)
            own_server.command("REPLICAOF", "NO", "ONE")
        assert await receive_within(layer, "x") == {"n": 0}
        assert await receive_within(layer, "x") == {"n": 1}
        layer.retry_budget = 0.2
        own_server.command("REPLICAOF", "127.0.0.1", free_port())
        with pytest.raises(RedisUnavailable, match="READONLY"):
            await layer.send("x", {"n": 2})
    finally:
        own_server.command("REPLICAOF", "NO", "ONE")
        await layer.close()


@pytest.mark.anyio
async def test_cancel_while_redis_is_down(own_server: RedisServer) -> None:
    """Receivers backing off during an outage cancel promptly and leave nothing behind."""
    layer = RedisChannelLayer(hosts=[own_server.url])
    channel = await layer.new_channel()
    own_server.kill()
    started = time.monotonic()
    with anyio.move_on_after(0.5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, channel)
            tg.start_soon(layer.receive, "plain")
    assert time.monotonic() - started < 1.5
    assert layer._state().local.reader is None
    assert not layer._state().local.waiters
    own_server.start()
    await layer.send(channel, {"ok": 1})
    assert await receive_within(layer, channel) == {"ok": 1}
    await layer.close()


# -- several shards, TLS, Sentinel ---------------------------------------------------


@pytest.mark.anyio
async def test_several_shards(server: RedisServer, own_server: RedisServer) -> None:
    prefix = "shards" + uuid.uuid4().hex[:6]
    hosts = [server.url, own_server.url]
    layer = RedisChannelLayer(hosts=hosts, prefix=prefix)
    other_process = RedisChannelLayer(hosts=hosts, prefix=prefix)
    try:
        channels = [f"chan-{i}" for i in range(20)]
        assert {shard_index(c, 2) for c in channels} == {0, 1}
        for channel in channels:
            await layer.send(channel, {"c": channel})
        # (Besides the channels' lists, each server holds the layer's epoch key.)
        count = f"return #redis.call('KEYS', '{prefix}:ch:*')"
        on_first = int(server.command("EVAL", count, 0)[1:-2])
        on_second = int(own_server.command("EVAL", count, 0)[1:-2])
        assert on_first > 0
        assert on_second > 0
        assert on_first + on_second == 20
        for channel in channels:
            assert await receive_within(other_process, channel) == {"c": channel}
        # A group whose members live on both shards, in two processes.
        mine = [await layer.new_channel() for _ in range(4)]
        theirs = [await other_process.new_channel() for _ in range(4)]
        for channel in [*mine, *theirs, *channels]:
            await layer.group_add("everyone", channel)
        await other_process.group_send("everyone", {"all": True})
        for channel in mine:
            assert await receive_within(layer, channel) == {"all": True}
        for channel in [*theirs, *channels]:
            assert await receive_within(other_process, channel) == {"all": True}
        await layer.flush()
        assert int(own_server.command("DBSIZE")[1:-2]) == 0
    finally:
        await layer.close()
        await other_process.close()


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    require_binary("openssl")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf",
            "-out", "server.crt")  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    ca, cert, key = _make_certificates(tmp_path_factory.mktemp("tls"))
    srv = RedisServer(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        tls=True,
    )  # fmt: skip
    with srv:
        yield srv, ca


@pytest.mark.anyio
async def test_tls(tls_server: tuple[RedisServer, Path]) -> None:
    srv, ca = tls_server
    layer = RedisChannelLayer(hosts=[{"address": srv.url, "ssl_ca_certs": str(ca)}])
    channel = await layer.new_channel()
    await layer.send(channel, {"over": "tls"})
    assert await receive_within(layer, channel) == {"over": "tls"}
    await layer.close()
    # Certificate checking is on by default: an unknown CA is refused.
    untrusting = RedisChannelLayer(hosts=[srv.url], retry_budget=0)
    with pytest.raises(RedisUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusting.send("x", {})
    await untrusting.close()


@pytest.mark.anyio
async def test_sentinel(own_server: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "sentinel.conf"
    config.write_text(f"sentinel monitor mymaster 127.0.0.1 {own_server.port} 1\n")
    with RedisServer(config_file=str(config), sentinel=True) as sentinel:
        # The first sentinel listed is down: the next one is asked.
        hosts = [{"sentinels": [("127.0.0.1", free_port()), ("127.0.0.1", sentinel.port)],
                  "master_name": "mymaster"}]  # fmt: skip
        layer = RedisChannelLayer(hosts=hosts)
        channel = await layer.new_channel()
        await layer.send(channel, {"via": "sentinel"})
        assert await receive_within(layer, channel) == {"via": "sentinel"}
        await layer.close()
        wrong = RedisChannelLayer(
            hosts=[{"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "nope"}],
            retry_budget=0,
        )
        with pytest.raises(RedisUnavailable, match="does not know master 'nope'"):
            await wrong.send("x", {})
        await wrong.close()


# -- several processes -------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, anyio
    from channels_runtime.layers.redis import RedisChannelLayer

    async def main():
        layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix=sys.argv[2])
        channel = await layer.new_channel()
        await layer.group_add("shared", channel)
        print(channel, flush=True)
        with anyio.fail_after(20):
            for _ in range(2):
                message = await layer.receive(channel)
                print(message["text"], flush=True)
        await layer.close()

    anyio.run(main, backend=sys.argv[3])
    """
)


@pytest.mark.anyio
async def test_group_shared_by_processes_on_both_backends(
    layer: RedisChannelLayer, server: RedisServer
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    children = []
    try:
        for backend in ("asyncio", "trio"):
            process = await anyio.open_process(
                [sys.executable, "-c", _CHILD, server.url, layer.prefix, backend], env=env
            )
            assert process.stdout is not None
            children.append((process, BufferedByteReceiveStream(process.stdout)))
        with anyio.fail_after(20):
            names = [(await out.receive_until(b"\n", 1000)).decode() for _, out in children]
        assert len({name.split("!")[0] for name in names}) == 2  # two layer instances
        mine = await layer.new_channel()
        await layer.group_add("shared", mine)
        await layer.group_send("shared", {"text": "one"})
        await layer.group_send("shared", {"text": "two"})
        assert await receive_within(layer, mine) == {"text": "one"}
        with anyio.fail_after(20):
            for process, out in children:
                assert await out.receive_until(b"\n", 1000) == b"one"
                assert await out.receive_until(b"\n", 1000) == b"two"
                assert await process.wait() == 0
    finally:
        for process, _ in children:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


@pytest.mark.anyio
async def test_error_replies_are_raised(layer: RedisChannelLayer, server: RedisServer) -> None:
    # Something else wrote a string where the layer keeps a list.
    server.command("SET", f"{layer.prefix}:ch:clobbered", "oops")
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await layer.send("clobbered", {"x": 1})
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await receive_within(layer, "clobbered")
