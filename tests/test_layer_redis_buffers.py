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
