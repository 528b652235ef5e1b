"""The Redis layer's process-specific channels: a message given back by a
cancelled receiver to the receive that is reading Redis for the process.

A ``receive`` on a ``name!suffix`` channel that was handed its message but
cancelled before taking it gives the message back to the next receiver on that
channel. When that receiver is the one reading Redis for the process, it must
get the message at once, not when its blocking ``BLPOP`` next returns (up to
``blpop_timeout``, made long here so that the difference is plain). Every test
runs on asyncio, uvloop and trio.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from redis_server import RedisServer, info

from channels_runtime.layers.redis import RedisChannelLayer
from channels_runtime.layers.redis.core import _monotonic

#: A receive that notices its message only when its BLPOP returns takes this long.
SLOW_BLPOP = 30.0
#: A given-back message must reach its receiver within this.
PROMPT = 0.5


class SlowBlpopLayer(RedisChannelLayer):
    blpop_timeout = SLOW_BLPOP


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
async def layer(server: RedisServer) -> AsyncIterator[SlowBlpopLayer]:
    layer = SlowBlpopLayer(hosts=[server.url], prefix="h" + uuid.uuid4().hex[:10])
    yield layer
    await layer.flush()
    await layer.close()


def blocked_clients(server: RedisServer) -> int:
    return int(info(server.port, "clients")["blocked_clients"])


def unblocks(server: RedisServer) -> int:
    """How many ``CLIENT UNBLOCK`` (an interrupted BLPOP) the server has run."""
    stats = info(server.port, "commandstats").get("cmdstat_client|unblock", "calls=0")
    return int(stats.split(",")[0].partition("=")[2])


async def timed_receive(layer: RedisChannelLayer, channel: str) -> tuple[Any, float]:
    """The message (``None`` if none came within a few seconds) and the wait."""
    start = anyio.current_time()
    message = None
    with anyio.move_on_after(3):
        message = await layer.receive(channel)
    return message, anyio.current_time() - start


@pytest.mark.anyio
async def test_cancelled_receiver_gives_back_to_a_new_reader(
    layer: SlowBlpopLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receiver B on ``channel`` is cancelled just before the reader hands it a
    message (so it will give the message back), and the reader's task goes straight
    on to receive on ``channel`` itself: it becomes the new reader and starts
    reading Redis before B gives the message back to it."""
    first, channel = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("both", first)
    await layer.group_add("both", channel)
    cancel_b = anyio.CancelScope()
    dispatch = layer._dispatch

    def cancel_b_then_dispatch(*args: Any) -> None:
        # Cancelled, then handed its message before it could run: B gives it back.
        cancel_b.cancel()
        dispatch(*args)

    monkeypatch.setattr(layer, "_dispatch", cancel_b_then_dispatch)
    results: dict[str, Any] = {}

    async def reader() -> None:
        results["first"] = await layer.receive(first)
        # No checkpoint in between: B still holds ``channel``'s message.
        results["second"] = await timed_receive(layer, channel)

    async def b() -> None:
        with cancel_b:
            results["b"] = await layer.receive(channel)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.1)  # ``reader`` is now reading Redis for the process
        tg.start_soon(b)
        await anyio.sleep(0.1)
        await layer.group_send("both", {"n": 1})
    assert "b" not in results
    assert cancel_b.cancelled_caught
    assert results["first"] == {"n": 1}
    message, waited = results["second"]
    assert message == {"n": 1}, "the given-back message was not received"
    assert waited < PROMPT, f"the given-back message took {waited:.2f}s"


@pytest.mark.anyio
async def test_message_given_back_to_the_reader_in_blpop(
    layer: SlowBlpopLayer, server: RedisServer
) -> None:
    """The reader is already blocked in ``BLPOP`` when a message is given back to
    it (what a cancelled receiver's give-back path does): it is interrupted, gets
    the message at once, and leaves no ``BLPOP`` behind to swallow later messages."""
    channel = await layer.new_channel()
    before, unblocked = blocked_clients(server), unblocks(server)
    async with anyio.create_task_group() as tg:
        results: list[tuple[Any, float]] = []

        async def reader() -> None:
            results.append(await timed_receive(layer, channel))

        tg.start_soon(reader)
        await anyio.sleep(0.2)
        local = layer._state().local
        assert local.reader is not None
        assert blocked_clients(server) == before + 1
        # A receive that was handed {"n": 1} and cancelled gives it back like this.
        local.deliver(channel, {"n": 1}, _monotonic() + 60, 0, layer.max_buffered, front=True)
    (message, waited), = results  # fmt: skip
    assert message == {"n": 1}, "the given-back message was not received"
    assert waited - 0.2 < PROMPT, f"the given-back message took {waited - 0.2:.2f}s"
    assert blocked_clients(server) == before
    assert unblocks(server) == unblocked + 1
    # The interrupted BLPOP took nothing: the next messages arrive in order.
    for n in (2, 3):
        await layer.send(channel, {"n": n})
    for n in (2, 3):
        with anyio.fail_after(PROMPT):
            assert await layer.receive(channel) == {"n": n}


@pytest.mark.anyio
async def test_give_back_to_a_waiter_that_is_not_the_reader(
    layer: SlowBlpopLayer, server: RedisServer
) -> None:
    """Only the reader is interrupted: a given-back message for another waiter
    wakes that waiter, and the reader's BLPOP goes on."""
    theirs, mine = await layer.new_channel(), await layer.new_channel()
    unblocked = unblocks(server)
    results: dict[str, Any] = {}

    async def receive(name: str, channel: str) -> None:
        results[name] = await timed_receive(layer, channel)

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive, "reader", theirs)
        await anyio.sleep(0.1)
        tg.start_soon(receive, "other", mine)
        await anyio.sleep(0.1)
        local = layer._state().local
        reader = local.reader
        local.deliver(mine, {"n": 1}, _monotonic() + 60, 0, layer.max_buffered, front=True)
        await anyio.sleep(0.1)
        assert local.reader is reader
        assert unblocks(server) == unblocked
        await layer.send(theirs, {"n": 2})
    assert results["other"][0] == {"n": 1}
    assert results["other"][1] < PROMPT
    assert results["reader"][0] == {"n": 2}


@pytest.mark.anyio
@pytest.mark.parametrize("bystander", [False, True], ids=["alone", "bystander"])
async def test_cancelled_receivers_on_one_channel_lose_nothing_and_never_stall(
    layer: SlowBlpopLayer, bystander: bool
) -> None:
    """Two receivers share a channel and are cancelled at random moments while
    messages flow, so messages are given back, now and then to the reader, and
    BLPOPs are interrupted: every message is received exactly once, and none
    waits for a BLPOP to time out."""
    channel, other = await layer.new_channel(), await layer.new_channel()
    total = 300
    received: list[int] = []
    rng = random.Random(11)

    async def sender() -> None:
        for n in range(total):
            await layer.send(channel, {"n": n})
            if n % 8 == 0:
                await anyio.sleep(0.003)

    async def receiver() -> None:
        while len(received) < total:
            with anyio.move_on_after(rng.choice([0.0005, 0.001, 0.003, 0.01, 0.05])):
                received.append((await layer.receive(channel))["n"])

    async def receive_other() -> None:
        # Receives on another channel, so the reader role moves around more.
        with anyio.move_on_after(30):
            await layer.receive(other)

    with anyio.fail_after(SLOW_BLPOP / 3):
        async with anyio.create_task_group() as tg:
            if bystander:
                tg.start_soon(receive_other)
            async with anyio.create_task_group() as receivers:
                receivers.start_soon(receiver)
                receivers.start_soon(receiver)
                await sender()
            tg.cancel_scope.cancel()
    assert sorted(received) == list(range(total))
