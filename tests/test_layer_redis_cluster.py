"""RedisChannelLayer in cluster mode, against a real 3-master Redis Cluster.

One cluster (3 masters with a replica each, ``cluster-node-timeout`` 1 s) is
shared by the module. The layer's essentials run against it with channels
and group members spread over every master; then the faults: a master
killed while consumers wait in ``receive`` and a group gets a broadcast every
100 ms, slots moved during traffic, the whole cluster restarted empty. Tests
that change the layout look it up afresh and leave the cluster healthy.
channels_redis, pointed at the same cluster, is shown failing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_cluster import RedisCluster, tls_acl_cluster

from channels_runtime.exceptions import ChannelFull
from channels_runtime.layers.redis import RedisChannelLayer
from channels_runtime.layers.redis.cluster import NodeAddress, key_slot

pytestmark = pytest.mark.anyio

LOCAL = "127.0.0.1"
LOGGER = "channels_runtime.layers.redis"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(masters=3, replicas=1, node_timeout_ms=1000) as started:
        yield started


@pytest.fixture
def healthy(cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The cluster, brought back to 6 running nodes and healthy after the test."""
    yield cluster
    cluster.heal()


def url_of(cluster: RedisCluster) -> str:
    seeds = ",".join(f"{LOCAL}:{port}" for port in cluster.ports[:2])
    return f"redis+cluster://{seeds}"


@asynccontextmanager
async def cluster_layer(cluster: RedisCluster, **options: Any) -> AsyncIterator[RedisChannelLayer]:
    hosts = options.pop("hosts", [url_of(cluster)])
    layer = RedisChannelLayer(hosts=hosts, **options)
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close()
        # Nothing left open: every connection was given back, and is now closed.
        router = layer._state().router
        assert router is not None
        assert all(not pool.open for pool in router.pools.values()), router.pools


def master_of(cluster: RedisCluster, key: str) -> int:
    return cluster.master_of_slot(key_slot(key))


def evalsha_calls(cluster: RedisCluster, port: int) -> int:
    stats = cluster.info(port, "commandstats").get("cmdstat_evalsha", "calls=0,")
    return int(stats.split("calls=", 1)[1].split(",", 1)[0])


async def test_keys_are_tagged_and_send_receive_spreads_over_every_master(
    cluster: RedisCluster,
) -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisChannelLayer(hosts=[url_of(cluster)], prefix="{odd}")
    async with cluster_layer(cluster, prefix="app") as layer:
        names = [f"chat.room-{i}" for i in range(300)]
        masters = {master_of(cluster, layer._route(name)[0]) for name in names}
        assert masters == set(cluster.master_ports())
        # The channel's name (or process token, or group) is the key's hash tag.
        assert layer._route("a")[0] == "app:ch:{a}"
        assert layer._process_key == "app:pr:{" + layer.client_token + "}"
        assert layer._group_key("g") == "app:gr:{g}"
        for i, name in enumerate(names):
            await layer.send(name, {"type": "m", "n": i})
        for i, name in enumerate(names):
            with anyio.fail_after(5):
                assert await layer.receive(name) == {"type": "m", "n": i}

        specific = [await layer.new_channel() for _ in range(20)]
        for i, name in enumerate(specific):
            await layer.send(name, {"type": "s", "n": i})
        for i, name in reversed(list(enumerate(specific))):
            with anyio.fail_after(5):
                assert await layer.receive(name) == {"type": "s", "n": i}

        async def waiting(name: str, into: list[Any]) -> None:
            into.append(await layer.receive(name))

        got: list[Any] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting, "late", got)
                tg.start_soon(waiting, specific[0], got)
                await anyio.sleep(0.1)
                await layer.send("late", {"type": "late"})
                await layer.send(specific[0], {"type": "specific"})
        assert sorted(m["type"] for m in got) == ["late", "specific"]
        await layer.ping()


async def test_group_send_to_1000_members_is_one_round_trip_per_master(
    cluster: RedisCluster,
) -> None:
    async with cluster_layer(cluster) as layer:
        members = [f"member-{i}" for i in range(990)]
        members += [await layer.new_channel() for _ in range(10)]

        async def join(batch: list[str]) -> None:
            for name in batch:
                await layer.group_add("everyone", name)

        async with anyio.create_task_group() as tg:
            for start in range(0, len(members), 50):
                tg.start_soon(join, members[start : start + 50])

        router = layer._state().router
        assert router is not None
        masters = cluster.master_ports()
        home = master_of(cluster, layer._group_key("everyone"))
        slots_per_master = {port: set() for port in masters}
        for name in members:
            key = layer._route(name)[0]
            slots_per_master[master_of(cluster, key)].add(key_slot(key))
        assert all(slots_per_master.values())
        trips = dict(router.round_trips)
        calls = {port: evalsha_calls(cluster, port) for port in masters}

        await layer.group_send("everyone", {"type": "hello"})

        after = {port: evalsha_calls(cluster, port) for port in masters}
        for port in masters:
            address = NodeAddress(LOCAL, port)
            sent = router.round_trips.get(address, 0) - trips.get(address, 0)
            # The membership read, on the group's master, then one pipeline per master.
            assert sent == (2 if port == home else 1), (port, sent)
            # One script per slot holding members (and the membership script).
            scripts_run = after[port] - calls[port]
            assert scripts_run == len(slots_per_master[port]) + (port == home), port
        for name in members:
            with anyio.fail_after(5):
                assert await layer.receive(name) == {"type": "hello"}


async def test_cancelled_receives_lose_nothing(cluster: RedisCluster) -> None:
    """A receive cancelled at a random moment (in BLPOP, or with a message
    already popped) puts the message back, through the cluster, in order."""
    rng = random.Random(14)
    async with cluster_layer(cluster) as layer:
        for name in ("cancelled", await layer.new_channel()):
            for i in range(40):
                await layer.send(name, {"type": "c", "n": i})
            got: list[int] = []
            cancelled = 0
            with anyio.fail_after(20):
                while len(got) < 40:
                    # At the first wait, at some point on the way, or never.
                    timeout = rng.choice([0.0, rng.uniform(0, 0.002), 1.0])
                    with anyio.move_on_after(timeout) as scope:
                        got.append((await layer.receive(name))["n"])
                    cancelled += scope.cancelled_caught
            assert got == list(range(40)), name
            # (A specific channel's messages are buffered after the first read:
            # taking one from the buffer is never cancelled.)
            assert cancelled > 0 or "!" in name
            # Receivers cancelled while blocked leave nothing blocked behind.
            for _ in range(5):
                with anyio.move_on_after(0.02):
                    await layer.receive(name)
            await layer.send(name, {"type": "c", "n": 99})
            with anyio.fail_after(5):
                assert (await layer.receive(name))["n"] == 99


async def test_capacity_expiry_group_expiry_and_flush(cluster: RedisCluster) -> None:
    async with cluster_layer(cluster, capacity=2, expiry=1, group_expiry=1) as layer:
        for _ in range(2):
            await layer.send("full", {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send("full", {"type": "x"})
        specific = await layer.new_channel()
        await layer.send(specific, {"type": "x"})
        await layer.send(specific, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(specific, {"type": "x"})
        # A full member is skipped, the others get the message.
        await layer.group_add("g", "full")
        await layer.group_add("g", "roomy")
        await layer.group_send("g", {"type": "g"})
        assert await layer.receive("roomy") == {"type": "g"}
        await layer.group_add("short", "member")
        await anyio.sleep(1.2)
        # Expired messages neither count against capacity nor are received.
        await layer.send("full", {"type": "fresh"})
        assert await layer.receive("full") == {"type": "fresh"}
        # The membership has expired too.
        await layer.group_send("short", {"type": "late"})
        with anyio.move_on_after(0.3) as waited:
            await layer.receive("member")
        assert waited.cancelled_caught

        await layer.send("kept", {"type": "x"})
        await layer.group_add("g2", "kept")
        await layer.flush()
        prefix_keys = sum(len(cluster.call(p, "KEYS", "asgi:*")) for p in cluster.master_ports())
        assert prefix_keys == 0
        with anyio.move_on_after(0.3) as waited:
            await layer.receive("kept")
        assert waited.cancelled_caught


@pytest.mark.parametrize("retry_budget", [2.0, 6.0])
async def test_a_master_killed_while_consumers_wait_and_a_group_gets_broadcasts(
    healthy: RedisCluster, retry_budget: float, caplog: pytest.LogCaptureFixture
) -> None:
    """With the default ``retry_budget`` (2 s), shorter than this cluster's
    failover, a ``group_send`` in the middle of it can raise; with a longer
    one, sends wait the failover out."""
    cluster = healthy
    consumers = 30
    async with cluster_layer(cluster, retry_budget=retry_budget) as layer:
        names = [f"watcher-{i}" for i in range(consumers - 5)]
        names += [await layer.new_channel() for _ in range(5)]
        for name in names:
            await layer.group_add("broadcast", name)
        # The master holding this process's list: its specific channels are hit too.
        victim = master_of(cluster, layer._process_key)
        on_victim = [n for n in names if master_of(cluster, layer._route(n)[0]) == victim]
        sent_at: dict[int, float] = {}
        received: dict[str, list[int]] = {name: [] for name in names}
        arrivals: dict[str, list[float]] = {name: [] for name in names}
        failed_sends: list[float] = []
        longest_send = 0.0
        stop = anyio.Event()

        async def consume(name: str) -> None:
            while True:
                message = await layer.receive(name)
                received[name].append(message["n"])
                arrivals[name].append(time.monotonic())
                if message["n"] < 0:
                    return

        async def broadcast() -> None:
            nonlocal longest_send
            n = 0
            while not stop.is_set():
                sent_at[n] = time.monotonic()
                try:
                    await layer.group_send("broadcast", {"type": "b", "n": n})
                except Exception:
                    failed_sends.append(time.monotonic())
                longest_send = max(longest_send, time.monotonic() - sent_at[n])
                n += 1
                await anyio.sleep(0.1)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(consume, name)
                tg.start_soon(broadcast)
                await anyio.sleep(1)
                crashed_at = time.monotonic()
                replica = cluster.crash(victim)
                promoted_at = await anyio.to_thread.run_sync(cluster.wait_promoted, replica)
                await anyio.sleep(2)
                stop.set()
                await anyio.sleep(0.2)
                await layer.group_send("broadcast", {"type": "b", "n": -1})

        last = max(sent_at)
        lost_times = sorted(
            sent_at[n] for name in names for n in sent_at if n not in received[name]
        )
        window = (lost_times[-1] - lost_times[0] + 0.1) if lost_times else 0.0
        gap = max(
            later - earlier
            for name in on_victim
            for earlier, later in zip(arrivals[name], arrivals[name][1:], strict=False)
        )
        print(
            f"\nfailover (retry_budget {layer.retry_budget:g}s): promoted "
            f"{promoted_at - crashed_at:.2f}s after the kill; {len(on_victim)}/{consumers} "
            f"consumers on the killed master, longest gap between their messages {gap:.2f}s; "
            f"{len(lost_times)} deliveries lost of {len(sent_at) * consumers}, lost sends "
            f"within {window:.2f}s; {len(failed_sends)} group_send(s) raised, longest "
            f"group_send {longest_send:.2f}s"
        )
        # Every consumer got the broadcasts sent after the failover, and the end.
        for name in names:
            assert received[name][-1] == -1
            assert last in received[name] or last - 1 in received[name], name
        # Losses only around the failover.
        for at in lost_times:
            assert crashed_at - 0.5 <= at <= promoted_at + 1.0
        assert len(on_victim) > 0
        if retry_budget > 5:
            assert not failed_sends
        # The killed master is not counted as down: its replica serves its slots.
        assert layer.metrics_state()["redis_unavailable"] == 0
        assert "has been replaced after" in caplog.text


async def test_slots_moved_during_traffic(healthy: RedisCluster) -> None:
    cluster = healthy
    async with cluster_layer(cluster) as layer:
        names = [f"moving-{i}" for i in range(60)]
        source, target = cluster.master_ports()[:2]
        for name in names:
            await layer.group_add("movers", name)
        got: dict[str, list[int]] = {name: [] for name in names}
        done = anyio.Event()
        sent = 0

        async def consume(name: str) -> None:
            while True:
                message = await layer.receive(name)
                if message["n"] < 0:
                    return
                got[name].append(message["n"])

        async def traffic() -> None:
            nonlocal sent
            while not done.is_set():
                await layer.group_send("movers", {"type": "m", "n": sent})
                sent += 1
                await anyio.sleep(0.02)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(consume, name)
                tg.start_soon(traffic)
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(cluster.reshard, source, target, 2000)
                await anyio.sleep(0.3)
                done.set()
                await anyio.sleep(0.1)
                await layer.group_send("movers", {"type": "m", "n": -1})
        router = layer._state().router
        assert router is not None
        assert router.redirects > 0
        # Nothing lost: a migration moves keys, and every command followed.
        assert sent >= 10
        for name in names:
            assert got[name] == list(range(sent)), name


async def test_whole_cluster_restarted_empty(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = healthy
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with cluster_layer(cluster) as layer:
        names = [f"survivor-{i}" for i in range(20)] + [await layer.new_channel()]
        for name in names:
            await layer.group_add("survivors", name)
        got: dict[str, Any] = {}

        async def consume(name: str) -> None:
            got[name] = await layer.receive(name)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(consume, name)
                await anyio.sleep(0.2)
                await anyio.to_thread.run_sync(cluster.kill_all)
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(cluster.start_all)
                while len(got) < len(names):
                    # The memberships were lost with the data, and are restored
                    # by this process when it reconnects.
                    try:
                        await layer.group_send("survivors", {"type": "back"})
                    except Exception:  # the first ones may come before the cluster is ok
                        pass
                    await anyio.sleep(0.2)
        assert all(message == {"type": "back"} for message in got.values())
        restored = [r.getMessage() for r in caplog.records if "restored" in r.getMessage()]
        print("\n" + "\n".join(restored))
        counts = [int(line.split("restored ", 1)[1].split(" ", 1)[0]) for line in restored]
        # The node holding the group (one slot) restored all of them; the
        # others had none of this process's groups.
        assert len(names) in counts
        assert set(counts) <= {0, len(names)}


async def test_a_master_restarted_empty_gets_its_memberships_back(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A master killed and started again at once, before the cluster fails it
    over, comes back empty (so does its replica, which resyncs from it): the
    process notices on that node alone and adds its memberships there again."""
    cluster = healthy
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with cluster_layer(cluster) as layer:
        home = master_of(cluster, layer._group_key("phoenix"))
        names = [f"phoenix-{i}" for i in range(12)]
        for name in names:
            await layer.group_add("phoenix", name)
        got: dict[str, Any] = {}

        async def consume(name: str) -> None:
            got[name] = await layer.receive(name)

        def restart() -> None:
            node = cluster.node(home)
            node.kill()
            node.start()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(consume, name)
                await anyio.sleep(0.2)
                await anyio.to_thread.run_sync(restart)
                # Back well within cluster-node-timeout: still the master.
                assert cluster.role(home) == "master"
                while len(got) < len(names):
                    try:
                        await layer.group_send("phoenix", {"type": "again"})
                    except Exception:  # while the cluster is not ok yet
                        pass
                    await anyio.sleep(0.1)
        assert all(message == {"type": "again"} for message in got.values())
        restored = [r.getMessage() for r in caplog.records if "lost its data" in r.getMessage()]
        # Once, however many connections were opened to it at the same time.
        assert len(restored) == 1, restored
        assert f"127.0.0.1:{home}" in restored[0]
        assert f"restored {len(names)} group membership(s)" in restored[0]


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with tls_acl_cluster(tmp_path_factory.mktemp("layer-cluster-tls")) as secured:
        yield secured


async def test_tls_and_an_acl_user_come_from_the_cluster_entry(
    secure_cluster: RedisCluster,
) -> None:
    assert secure_cluster.tls is not None
    seeds = [f"rediss://{LOCAL}:{port}" for port in secure_cluster.ports[:2]]
    entry = {
        "cluster": True,
        "nodes": seeds,
        "username": "alice",
        "password": "wonder land",
        "ssl_ca_certs": str(secure_cluster.tls.ca),
    }
    async with cluster_layer(secure_cluster, hosts=[entry]) as layer:
        names = [f"secure-{i}" for i in range(30)] + [await layer.new_channel()]
        assert {master_of(secure_cluster, layer._route(n)[0]) for n in names} == set(
            secure_cluster.master_ports()
        )
        for name in names:
            await layer.group_add("secure", name)
        await layer.group_send("secure", {"type": "tls"})
        for name in names:
            with anyio.fail_after(5):
                assert await layer.receive(name) == {"type": "tls"}
        await layer.ping()


def test_channels_redis_fails_against_a_cluster(cluster: RedisCluster) -> None:
    """channels_redis talks to one node, and its scripts reach keys they
    compute: a key in another node's slot is refused, as ``MOVED`` (redis-py's
    MovedError) or, inside a script, "non local key"."""
    from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
    from redis.exceptions import ResponseError

    port = cluster.master_ports()[0]

    async def run() -> None:
        layer = ChannelsRedisLayer(hosts=[(LOCAL, port)], prefix="foreign")
        for i in range(50):
            await layer.send(f"room-{i}", {"type": "x"})

    pattern = r"^\d+ 127\.0\.0\.1:\d+$|non local key in a cluster node script"
    try:
        with pytest.raises(ResponseError, match=pattern) as raised:
            asyncio.run(run())
    finally:
        for master in cluster.master_ports():
            keys = cluster.call(master, "KEYS", "foreign*")
            for key in keys:
                cluster.call(master, "DEL", key)
    print(f"\nchannels_redis against a cluster: {type(raised.value).__name__}: {raised.value}")
