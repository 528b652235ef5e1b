"""The list layer through a Sentinel switchover, with the old master still up.

``SENTINEL FAILOVER`` promotes the replica while the old master keeps
running; Sentinel demotes it only seconds later. Until then, connections
opened before the switchover still lead to it and it still accepts writes,
which are lost when it becomes a replica of the new master. Each test starts a
master, a replica and three sentinels (see :class:`redis_server.SentinelSetup`)
and runs on asyncio, uvloop and trio.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_server import SentinelSetup, info, redis_call

from channels_runtime.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels_runtime.layers.redis.connections import Pool

pytestmark = pytest.mark.anyio

LOGGER = "channels_runtime.layers.redis"


@pytest.fixture
def sentinels() -> Iterator[SentinelSetup]:
    with SentinelSetup(sentinels=3, quorum=2) as setup:
        yield setup


def role(port: int) -> str:
    """The server's role; "" while it is closing its clients' connections.

    A sentinel's switch-over ends with ``CLIENT KILL TYPE normal`` on the
    servers it reconfigured, which may cut this question off mid-reply.
    """
    try:
        return str(redis_call(port, "ROLE")[0])
    except ConnectionError:
        return ""


async def poll(condition: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        await anyio.sleep(0.02)


async def test_sends_leave_the_old_master_before_it_is_demoted(
    sentinels: SentinelSetup, caplog: pytest.LogCaptureFixture
) -> None:
    """A process with a pooled connection to the old master sends right after
    the sentinels name the new one: its pool asks a sentinel, sees the change
    and moves, so every send reaches a receiver on the new master, although
    the old master would still have taken them."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    old, new = sentinels.master, sentinels.replica
    prefix = "switch" + uuid.uuid4().hex[:6]
    sender = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=10, prefix=prefix)
    receiver = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=10, prefix=prefix)
    try:
        await sender.send("warm", {"pool": "filled"})  # a pooled connection to the old master
        await anyio.to_thread.run_sync(sentinels.wait_for_link, new.port)
        await anyio.to_thread.run_sync(sentinels.switch_over)
        await anyio.to_thread.run_sync(sentinels.wait_for_master, new.port)
        assert role(old.port) == "master"  # not demoted yet: writes to it would be lost
        for n in range(20):
            await sender.send("after", {"n": n})
        assert role(old.port) == "master"
        with anyio.fail_after(15):
            got = [(await receiver.receive("after"))["n"] for _ in range(20)]
        assert got == list(range(20))
        assert "leaving the old master" in caplog.text
    finally:
        await sender.close()
        await receiver.close()


async def test_a_receiver_waiting_on_the_old_master_is_moved(sentinels: SentinelSetup) -> None:
    """A receiver blocked in ``BLPOP`` on the old master when the switchover
    happens: the next command of its process finds the master changed, and
    the pool shuts the blocked connection down, so the receiver waits on the
    new master at once (not after its ``BLPOP`` times out, 5 s later, or when
    Sentinel demotes the old master) and gets what is sent there."""
    old, new = sentinels.master, sentinels.replica
    layer = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=10)
    got: list[Any] = []

    async def receive() -> None:
        got.append(await layer.receive("inbox"))

    try:
        await layer.send("warm", {"pool": "filled"})
        await anyio.to_thread.run_sync(sentinels.wait_for_link, new.port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await poll(
                lambda: info(old.port, "clients")["blocked_clients"] == "1",
                "the receiver to block on the old master",
            )
            await anyio.to_thread.run_sync(sentinels.switch_over)
            await anyio.to_thread.run_sync(sentinels.wait_for_master, new.port)
            assert role(old.port) == "master"
            await layer.send("inbox", {"to": "the new master"})
            with anyio.fail_after(3):
                await poll(lambda: bool(got), "the message", seconds=3)
        assert got == [{"to": "the new master"}]
        assert role(old.port) == "master"  # it was the pool that moved, not a demotion
    finally:
        await layer.close()


async def test_noreplicas_sends_the_layer_back_to_the_sentinels(
    sentinels: SentinelSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``min-replicas-to-write 1`` on the master, the old master refuses
    writes (``NOREPLICAS``) as soon as its replica is promoted and leaves it:
    the window is closed on the server. The layer takes that reply as "not
    now" and asks the sentinels again, until they name the new master. The
    pools' own check of the named master is turned off to test this alone."""
    monkeypatch.setattr(Pool, "sentinel_check_interval", 3600.0)
    old, new = sentinels.master, sentinels.replica
    redis_call(old.port, "CONFIG", "SET", "min-replicas-to-write", "1")
    prefix = "noreplicas" + uuid.uuid4().hex[:6]
    sender = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=20, prefix=prefix)
    receiver = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=20, prefix=prefix)
    try:
        await sender.send("warm", {"pool": "filled"})
        await anyio.to_thread.run_sync(sentinels.wait_for_link, new.port)
        await anyio.to_thread.run_sync(sentinels.switch_over)
        await poll(lambda: role(new.port) == "master", "the replica to be promoted")
        await poll(
            lambda: info(old.port, "replication")["connected_slaves"] == "0",
            "the old master to lose its replica",
        )
        with anyio.fail_after(30):
            await sender.send("after", {"to": "the new master"})
        await anyio.to_thread.run_sync(sentinels.wait_for_master, new.port)
        with anyio.fail_after(15):
            assert await receiver.receive("after") == {"to": "the new master"}
        assert "errorstat_NOREPLICAS" in info(old.port, "errorstats")
    finally:
        await sender.close()
        await receiver.close()


async def test_pubsub_subscribers_follow_a_switchover(
    sentinels: SentinelSetup, caplog: pytest.LogCaptureFixture
) -> None:
    """The Pub/Sub layer: publishers move to the new master with their pools'
    check, and the reader's subscribed connection makes the same check, so
    subscribers move too (rather than wait, seconds, for Sentinel to demote
    the old master). Messages sent from 1 s after the sentinels name the new
    master all arrive, while the old master is still running as a master."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    old, new = sentinels.master, sentinels.replica
    prefix = "psswitch" + uuid.uuid4().hex[:6]
    receiver = RedisPubSubChannelLayer(hosts=[sentinels.hosts_entry], prefix=prefix)
    sender = RedisPubSubChannelLayer(hosts=[sentinels.hosts_entry], prefix=prefix)
    got: list[int] = []
    sent: dict[int, float] = {}
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.group_send("room", {"n": -1})
        with anyio.fail_after(5):
            assert await receiver.receive(channel) == {"n": -1}

        async def consume() -> None:
            while True:
                got.append((await receiver.receive(channel))["n"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.to_thread.run_sync(sentinels.wait_for_link, new.port)
            await anyio.to_thread.run_sync(sentinels.switch_over)
            await anyio.to_thread.run_sync(sentinels.wait_for_master, new.port)
            named_at = time.monotonic()
            assert role(old.port) == "master"
            n = 0
            while time.monotonic() - named_at < 3.0:
                await sender.group_send("room", {"n": n})
                sent[n] = time.monotonic()
                n += 1
                await anyio.sleep(0.05)
            old_role = role(old.port)
            await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
    finally:
        await receiver.close()
        await sender.close()
    late = {n for n, at in sent.items() if at - named_at >= 1.0}
    assert late <= set(got), sorted(late - set(got))
    assert old_role == "master"  # so it was the check, not the demotion, that moved them
    first = min(n for n in got if n >= 0) if any(n >= 0 for n in got) else None
    print(f"{len(set(got) & set(sent))} of {len(sent)} received; first: {first}")
