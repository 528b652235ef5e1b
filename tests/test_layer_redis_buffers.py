"""The Redis layer's in-process buffer for process-specific channels.

Messages for this process's ``name!`` channels are read from Redis in batches
and held until their receivers ask. Two properties the buffer must keep under
sustained traffic (both found by ``bench/bench_redis_buffer.py``):

* channels nobody receives on must not starve the live ones once the total
  cap (``max_buffered``) is reached: the oldest message makes room;
* memory must follow what is buffered, not the message rate: emptied buffers
  are freed at once and the expiry heap does not collect stale entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from redis_server import RedisServer

from channels_runtime.layers.redis import RedisChannelLayer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def _local(layer: RedisChannelLayer) -> Any:
    (state,) = layer._states.values()
    return state.local


async def test_abandoned_channels_do_not_starve_a_live_one(
    server: RedisServer, anyio_backend: Any
) -> None:
    prefix = "b" + uuid.uuid4().hex[:10]
    layer = RedisChannelLayer(hosts=[server.url], prefix=prefix, capacity=1000, max_buffered=100)
    sender = RedisChannelLayer(hosts=[server.url], prefix=prefix, capacity=1000)
    try:
        live, abandoned = await layer.new_channel(), await layer.new_channel()
        for number in range(150):  # nobody ever receives these
            await sender.send(abandoned, {"type": "old", "n": number})
        for number in range(5):  # queued while the live consumer is busy
            await sender.send(live, {"type": "live", "n": number})
        with anyio.fail_after(5):
            got = [(await layer.receive(live))["n"] for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]
        local = _local(layer)
        assert local.buffered <= 100
        # What made room were the oldest abandoned messages: the newest remain.
        kept = [message["n"] for _, message in local.buffers[abandoned]]
        assert kept == sorted(kept)
        assert kept[-1] == 149
    finally:
        await layer.flush()
        await layer.close()
        await sender.close()


async def test_emptied_buffers_are_freed_under_sustained_traffic(
    server: RedisServer, anyio_backend: Any
) -> None:
    """A consumer that is always one message behind: each message is read into
    the buffer by another receiver, then taken, which empties the buffer. The
    expiry heap must not keep an entry per message until the message expiry."""
    prefix = "b" + uuid.uuid4().hex[:10]
    layer = RedisChannelLayer(hosts=[server.url], prefix=prefix, expiry=60)
    sender = RedisChannelLayer(hosts=[server.url], prefix=prefix)
    try:
        live, idle = await layer.new_channel(), await layer.new_channel()
        count = 400
        largest_heap = 0
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                # This receiver does the reading from Redis while nobody else waits.
                group.start_soon(layer.receive, idle)
                await anyio.wait_all_tasks_blocked()
                local = _local(layer)
                for number in range(count):
                    await sender.send(live, {"type": "live", "n": number})
                    await _until(lambda: live in local.buffers)
                    assert (await layer.receive(live))["n"] == number
                    largest_heap = max(largest_heap, len(local.heap))
                await sender.send(idle, {"type": "done"})  # releases the reader
        assert local.buffered == 0
        assert local.buffers == {}
        # Bounded by the rebuild rule (2 x live buffers + 64), not by the 400 messages.
        assert largest_heap <= 2 * 1 + 64 + 1
    finally:
        await layer.flush()
        await layer.close()
        await sender.close()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(5000):
        if condition():
            return
        await anyio.sleep(0.001)
    raise AssertionError("condition not reached in 5 s")


async def test_the_oldest_message_is_evicted_even_after_receivers_took_some(
    server: RedisServer, anyio_backend: Any
) -> None:
    """The heap still holds a channel's first deadline after its receiver took
    the first messages; eviction must go by the real oldest message."""
    prefix = "b" + uuid.uuid4().hex[:10]
    layer = RedisChannelLayer(hosts=[server.url], prefix=prefix, max_buffered=3)
    sender = RedisChannelLayer(hosts=[server.url], prefix=prefix)
    try:
        live, abandoned, idle = [await layer.new_channel() for _ in range(3)]
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(layer.receive, idle)  # reads while nobody else waits
                await anyio.wait_all_tasks_blocked()
                local = _local(layer)
                # L0, A0, L1 in that order, each in its own millisecond.
                for channel, name in ((live, "L0"), (abandoned, "A0"), (live, "L1")):
                    await sender.send(channel, {"type": "m", "name": name})
                    await anyio.sleep(0.005)
                await _until(lambda: local.buffered == 3)
                assert (await layer.receive(live))["name"] == "L0"
                # Buffered now: A0 (the oldest) and L1. Two more fill the buffer
                # and then overflow it: A0 must make room, not the younger L1.
                for name in ("A1", "A2"):
                    await sender.send(abandoned, {"type": "m", "name": name})
                    await anyio.sleep(0.005)
                await _until(lambda: _names(local, abandoned)[-1:] == ["A2"])
                assert _names(local, abandoned) == ["A1", "A2"]
                assert (await layer.receive(live))["name"] == "L1"
                await sender.send(idle, {"type": "done"})
    finally:
        await layer.flush()
        await layer.close()
        await sender.close()


def _names(local: Any, channel: str) -> list[str]:
    return [message["name"] for _, message in local.buffers.get(channel, ())]
