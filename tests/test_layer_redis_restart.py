"""Both Redis layers across a Redis restart that loses everything.

Each test starts its own ``redis-server`` (no persistence), puts consumers in
a group, broadcasts to it every 100 ms from another layer instance (another
"process"), then kills Redis with SIGKILL and starts it again empty. After
the restart every consumer must receive again: the list layer adds its
memberships again (Redis forgot them), the Pub/Sub layer subscribes its group
topics again. The log must say how many memberships were restored, and the
outage duration it reports must be the real one. Every test runs on asyncio,
uvloop and trio.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_server import RedisServer, redis_call

from channels_runtime.layers.redis import (
    RedisChannelLayer,
    RedisPubSubChannelLayer,
    RedisUnavailable,
)

pytestmark = pytest.mark.anyio

LOGGER = "channels_runtime.layers.redis"
CONSUMERS = 50
LAYERS = {"list": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def _restart(server: RedisServer, down_for: float) -> tuple[float, float]:
    """Kill Redis, start it again ``down_for`` seconds later; return when it
    went down and when it answered again (monotonic)."""
    killed_at = time.monotonic()
    await anyio.to_thread.run_sync(server.kill)
    await anyio.sleep(down_for)
    await anyio.to_thread.run_sync(server.start)
    return killed_at, time.monotonic()


async def poll(condition: Callable[[], bool], seconds: float, step: float = 0.02) -> None:
    """Wait until ``condition()`` holds, checking every ``step`` seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not the case after {seconds}s")
        await anyio.sleep(step)


def _reported_outage(text: str) -> float:
    found = re.findall(r"is reachable again after ([0-9.]+)s", text)
    assert len(found) == 1, text
    return float(found[0])


@pytest.mark.parametrize("kind", ["list", "pubsub"])
async def test_group_delivery_resumes_after_redis_restarts_empty(
    own_server: RedisServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    prefix = "restart" + uuid.uuid4().hex[:6]
    layer_class: Any = LAYERS[kind]
    consumers = layer_class(hosts=[own_server.url], prefix=prefix, group_expiry=600)
    sender = layer_class(hosts=[own_server.url], prefix=prefix)
    channels = [await consumers.new_channel() for _ in range(CONSUMERS)]
    if kind == "list":
        joined_ms = int(redis_call(own_server.port, "TIME")[0]) * 1000
    for channel in channels:
        await consumers.group_add("room", channel)
    latest = dict.fromkeys(channels, -1)
    sent = 0
    failed_sends = 0

    async def consume(channel: str) -> None:
        while True:
            latest[channel] = (await consumers.receive(channel))["n"]

    async def broadcast() -> None:
        nonlocal sent, failed_sends
        while True:
            try:
                await sender.group_send("room", {"n": sent})
            except RedisUnavailable:
                failed_sends += 1
            sent += 1
            await anyio.sleep(0.1)

    try:
        async with anyio.create_task_group() as tg:
            for channel in channels:
                tg.start_soon(consume, channel)
            tg.start_soon(broadcast)
            await poll(lambda: min(latest.values()) >= 0, 10)
            killed_at, up_at = await _restart(own_server, down_for=1.5)
            first_after = sent
            await poll(lambda: min(latest.values()) >= first_after, 10)
            resumed_in = time.monotonic() - up_at
            tg.cancel_scope.cancel()
    finally:
        await consumers.close()
        await sender.close()

    real = up_at - killed_at
    reported = _reported_outage(caplog.text)
    print(
        f"{kind}: real outage {real:.2f}s, reported {reported:.1f}s; every consumer "
        f"received again {resumed_in:.2f}s after Redis was back; {failed_sends} send(s) "
        "raised RedisUnavailable"
    )
    assert abs(reported - real) <= 0.5
    assert f"restored {CONSUMERS} group membership(s)" in caplog.text
    if kind == "list":
        # Restored with the original joining time, so the same expiry as before.
        flat = redis_call(own_server.port, "ZRANGE", f"{prefix}:gr:room", 0, -1, "WITHSCORES")
        scores = [float(score) for score in flat[1::2]]
        assert len(scores) == CONSUMERS
        assert all(abs(score - joined_ms) < 2000 for score in scores), (joined_ms, scores)


async def test_pubsub_resubscribes_within_half_a_second(own_server: RedisServer) -> None:
    """Redis down for 3 s: the reader's reconnection attempts are spaced at
    most 0.25 s apart, so the group topic is subscribed again (Redis has
    confirmed it) within 0.5 s of Redis answering again."""
    layer = RedisPubSubChannelLayer(hosts=[own_server.url], prefix="resub" + uuid.uuid4().hex[:6])
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    topic, index = layer._group_topic("g")
    sub = layer._state().subscribers[index]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, channel)  # someone waits, so someone reads
            await anyio.sleep(0.1)
            assert sub.in_effect(topic)
            _, up_at = await _restart(own_server, down_for=3.0)
            await poll(lambda: sub.in_effect(topic), 5, step=0.005)
            took = time.monotonic() - up_at
            tg.cancel_scope.cancel()
    finally:
        await layer.close()
    print(f"re-subscribed {took:.3f}s after Redis answered again")
    assert took <= 0.5
