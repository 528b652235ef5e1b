"""The Pub/Sub layer in cluster mode (sharded Pub/Sub) against a real Redis Cluster.

One 6-node cluster (3 masters, 3 replicas, ``cluster-node-timeout`` 1 s) is
shared by the module; tests that move slots or kill a master look the layout
up afresh and leave the cluster healthy. Every async test runs on asyncio,
uvloop and trio; without ``redis-server`` they are skipped.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_cluster import RedisCluster, tls_acl_cluster

from channels_runtime.layers.redis import RedisPubSubChannelLayer, RedisUnavailable
from channels_runtime.layers.redis.cluster import key_slot

LOCAL = "127.0.0.1"

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(masters=3, replicas=1, node_timeout_ms=1000) as started:
        yield started


def cluster_url(cluster: RedisCluster) -> str:
    return "redis+cluster://" + ",".join(f"{LOCAL}:{port}" for port in cluster.ports[:2])


@asynccontextmanager
async def pubsub(cluster: RedisCluster, **options: Any) -> AsyncIterator[RedisPubSubChannelLayer]:
    layer = RedisPubSubChannelLayer(hosts=[cluster_url(cluster)], **options)
    try:
        yield layer
    finally:
        await layer.close()


def masters_of(layer: RedisPubSubChannelLayer) -> set[int]:
    """The ports of the masters this loop's layer holds subscribed topics on."""
    cluster = layer._state().cluster
    assert cluster is not None
    return {sub.address.port for sub in cluster.subscribers if sub.wanted and sub.conn}


async def poll(condition: Callable[[], Any], what: str, seconds: float = 20) -> None:
    """Wait until ``condition()`` is true, checking every 5 ms (the tests time
    re-subscriptions, so the check must be finer than what it measures)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        await anyio.sleep(0.005)


def node_of(layer: RedisPubSubChannelLayer, topic: str) -> int | None:
    """The port of the master on which ``topic`` is subscribed (confirmed) now."""
    cluster = layer._state().cluster
    assert cluster is not None
    sub = cluster.owner.get(topic.encode())
    return sub.address.port if sub is not None and sub.in_effect(topic.encode()) else None


async def test_settings_forms(cluster: RedisCluster) -> None:
    """The cluster forms of ``hosts`` select sharded Pub/Sub; ping reaches every master."""
    seeds = [(LOCAL, port) for port in cluster.ports[:2]]
    for hosts in (
        [cluster_url(cluster)],
        [{"cluster": True, "nodes": seeds}],
        [{"cluster": True, "address": f"redis://{LOCAL}:{cluster.ports[0]}"}],
    ):
        layer = RedisPubSubChannelLayer(hosts=hosts)
        assert layer.cluster is not None
        assert "127.0.0.1" in repr(layer)
        await layer.ping()
        await layer.close()
    with pytest.raises(Exception, match="only entry"):
        RedisPubSubChannelLayer(hosts=[cluster_url(cluster), "redis://localhost:6379"])


async def test_send_receive_over_all_slots(cluster: RedisCluster) -> None:
    """Normal and process-specific channels whose topics fall on every master:
    each message arrives once, in order per channel; queued messages wait for
    their receiver; flush drops them."""
    async with pubsub(cluster) as sender, pubsub(cluster) as receiver:
        names = [f"chan{n}" for n in range(60)]
        assert {cluster.master_of_slot(key_slot(f"asgi:ch:{n}")) for n in names} == set(
            cluster.master_ports()
        )
        specific = [await receiver.new_channel() for _ in range(20)]
        got: dict[str, list[int]] = {}

        async def consume(name: str, count: int) -> None:
            for _ in range(count):
                message = await receiver.receive(name)
                got.setdefault(name, []).append(message["n"])

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(consume, name, 3)
                # Every channel's topic subscribed before anything is sent.
                await poll(lambda: masters_of(receiver) == set(cluster.master_ports()), "topics")
                await anyio.sleep(0.2)
                for n in range(3):
                    for name in [*names, *specific]:
                        await sender.send(name, {"type": "m", "n": n})
                for name in specific:
                    for n in range(3):
                        assert (await receiver.receive(name))["n"] == n
        assert got == {name: [0, 1, 2] for name in names}
        assert masters_of(receiver) == set(cluster.master_ports())
        # Queued for a channel with no receiver yet, then flushed.
        with anyio.move_on_after(0.5):  # a waiting receiver reads for everyone
            await sender.send(specific[0], {"type": "m", "n": 9})
            await receiver.receive(specific[1])
        assert receiver._state().buffered == 1
        await receiver.flush()
        assert receiver._state().buffered == 0


async def test_group_send_to_many_members(cluster: RedisCluster) -> None:
    """200 members in 40 groups spread over every master, in two layers: one
    SPUBLISH per group reaches every member; group_discard stops one."""
    async with pubsub(cluster) as one, pubsub(cluster) as two:
        groups = [f"g{n}" for n in range(40)]
        assert {cluster.master_of_slot(key_slot(f"asgi:gr:{g}")) for g in groups} == set(
            cluster.master_ports()
        )
        members: list[tuple[RedisPubSubChannelLayer, str, str]] = []
        for n in range(200):
            layer = one if n % 2 else two
            channel = await layer.new_channel()
            group = groups[n % len(groups)]
            await layer.group_add(group, channel)
            members.append((layer, group, channel))
        with anyio.fail_after(20):
            for group in groups:
                await one.group_send(group, {"type": "hello", "group": group})
            for layer, group, channel in members:
                assert await layer.receive(channel) == {"type": "hello", "group": group}
            layer, group, channel = members[0]
            await layer.group_discard(group, channel)
            await two.group_send(group, {"type": "again"})
            for other, other_group, name in members[1:]:
                if other_group == group:
                    assert await other.receive(name) == {"type": "again"}
            with anyio.move_on_after(0.3):
                await layer.receive(channel)
                pytest.fail("a discarded member received a group message")


async def test_slot_migration_during_traffic(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel's slot moved (migration by hand, then redis-cli reshard of
    further slots) while messages flow: the old node's sunsubscribe makes the
    layer subscribe the topic on the new master, and delivery goes on. Each
    re-subscription takes well under a second from the move."""
    caplog.set_level(logging.INFO, "channels_runtime.layers.redis")
    await anyio.to_thread.run_sync(cluster.heal)
    async with pubsub(cluster) as sender, pubsub(cluster) as receiver:
        channel = f"moving{random.getrandbits(32)}"
        topic = f"asgi:ch:{channel}"
        slot = key_slot(topic)
        got: list[int] = []
        stop = anyio.Event()
        sent = 0

        async def consume() -> None:
            while True:
                got.append((await receiver.receive(channel))["n"])

        async def produce() -> None:
            nonlocal sent
            while not stop.is_set():
                await sender.send(channel, {"type": "m", "n": sent})
                sent += 1
                await anyio.sleep(0.01)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await poll(lambda: node_of(receiver, topic), "the subscription")
                tg.start_soon(produce)
                await anyio.sleep(0.3)
                source = cluster.master_of_slot(slot)
                target = next(p for p in cluster.master_ports() if p != source)
                await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
                await anyio.to_thread.run_sync(cluster.finish_migration, slot, source, target)
                await poll(lambda: node_of(receiver, topic) == target, "the re-subscription")
                # From the sunsubscribe push to the new master's confirmation.
                resubscribed = receiver._state().cluster.recovered_in  # type: ignore[union-attr]
                assert resubscribed is not None
                before = len(got)
                await anyio.sleep(0.3)
                assert len(got) > before, "no delivery after the slot moved"
                # And a reshard of further slots with redis-cli while traffic goes on.
                await anyio.to_thread.run_sync(cluster.reshard, target, source, 50)
                await anyio.sleep(0.3)
                owner = cluster.master_of_slot(slot)
                await poll(lambda: node_of(receiver, topic) == owner, "the re-subscription")
                stop.set()
                await anyio.sleep(0.2)
                tg.cancel_scope.cancel()
        print(f"slot migration: re-subscribed on the new master {resubscribed:.3f}s after the move")
        assert resubscribed is not None
        assert resubscribed < 0.5
        # Everything sent arrived except around the move, in order.
        assert got == sorted(got)
        assert sent - len(got) < 60, (sent, len(got))
        assert "gave up 1 topic(s)" in caplog.text
        # The reshard may have moved the slot on again (or back).
        owner = cluster.master_of_slot(slot)
        if owner != source:
            await anyio.to_thread.run_sync(cluster.begin_migration, slot, source)
            await anyio.to_thread.run_sync(cluster.finish_migration, slot, owner, source)


async def test_master_killed_during_receive_and_broadcasts(
    cluster: RedisCluster, anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL a master while consumers wait in receive and a group gets a
    broadcast every 100 ms: the replica is promoted, the layer re-subscribes
    the dead master's topics on it, broadcasts arrive again, no task is left
    behind. A patient publisher (retry budget 15 s) waits the failover out; a
    hasty one (0.3 s) loses broadcasts, only within the failover window."""
    caplog.set_level(logging.INFO, "channels_runtime.layers.redis")
    await anyio.to_thread.run_sync(cluster.heal)
    tasks_before = len(anyio.get_running_tasks())
    async with (
        pubsub(cluster, retry_budget=15, on_reconnect="redis.reconnect") as layer,
        pubsub(cluster, retry_budget=15) as publisher,
        pubsub(cluster, retry_budget=0.3) as hasty,
    ):
        group = f"room{random.getrandbits(32)}"
        victim = cluster.master_of_slot(key_slot(f"asgi:gr:{group}"))
        members = [await layer.new_channel() for _ in range(10)]
        for channel in members:
            await layer.group_add(group, channel)
        arrivals: dict[str, list[tuple[int, float]]] = {c: [] for c in members}
        sent: list[tuple[int, float]] = []
        stalls: list[float] = []
        # The hasty publisher's broadcasts: (number, started, ended, whether sent).
        hasty_sent: list[tuple[int, float, float, bool]] = []
        hasty_got: dict[str, set[int]] = {c: set() for c in members}
        notices: dict[str, int] = dict.fromkeys(members, 0)
        stop = anyio.Event()

        async def member(channel: str) -> None:
            while True:
                message = await layer.receive(channel)
                if message["type"] == "tick":
                    arrivals[channel].append((message["n"], time.monotonic()))
                elif message["type"] == "hasty":
                    hasty_got[channel].add(message["n"])
                else:
                    assert message == {"type": "redis.reconnect"}
                    notices[channel] += 1

        async def hasty_broadcaster() -> None:
            n = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await hasty.group_send(group, {"type": "hasty", "n": n})
                except RedisUnavailable:
                    hasty_sent.append((n, started, time.monotonic(), False))
                else:
                    hasty_sent.append((n, started, time.monotonic(), True))
                n += 1
                await anyio.sleep(0.1)

        async def broadcaster() -> None:
            n = 0
            while not stop.is_set():
                started = time.monotonic()
                await publisher.group_send(group, {"type": "tick", "n": n})
                sent.append((n, time.monotonic()))
                stalls.append(sent[-1][1] - started)
                n += 1
                await anyio.sleep(0.1)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for channel in members:
                    tg.start_soon(member, channel)
                tg.start_soon(broadcaster)
                tg.start_soon(hasty_broadcaster)
                await anyio.sleep(0.5)
                killed_at = time.monotonic()
                replica = cluster.crash(victim)
                promoted_at = await anyio.to_thread.run_sync(cluster.wait_promoted, replica)
                await poll(lambda: node_of(layer, f"asgi:gr:{group}") == replica, "the replica")
                resubscribed_at = time.monotonic()
                recovered_in = layer._state().cluster.recovered_in  # type: ignore[union-attr]
                await anyio.sleep(1.0)
                stop.set()
                await anyio.sleep(0.3)
                tg.cancel_scope.cancel()
        subscribed = layer.metrics_state()
        assert subscribed["groups"] == 1
        assert subscribed["redis_unavailable"] == 0, subscribed
    assert len(anyio.get_running_tasks()) == tasks_before
    numbers = [n for n, _ in sent]
    lost_per_member = {c: sorted(set(numbers) - {n for n, _ in got}) for c, got in arrivals.items()}
    lost = lost_per_member[members[0]]
    sent_at = dict(sent)
    window = (sent_at[lost[-1]] - sent_at[lost[0]] + 0.1) if lost else 0.0
    hasty_lost = [
        (started, ended)
        for n, started, ended, ok in hasty_sent
        if not ok or any(n not in got for got in hasty_got.values())
    ]
    hasty_window = hasty_lost[-1][1] - hasty_lost[0][0] if hasty_lost else 0.0
    report = (
        f"[{anyio_backend[0]}{'+uvloop' if anyio_backend[1] else ''}] promotion "
        f"{promoted_at - killed_at:.2f}s after SIGKILL; re-subscribed on the new master "
        f"{resubscribed_at - promoted_at:+.2f}s after the promotion was seen "
        f"({recovered_in:.2f}s after the connection broke); "
        f"longest group_send {max(stalls):.2f}s (SPUBLISH retried until the promotion); "
        f"{len(lost)} of {len(sent)} broadcasts lost per member, over {window:.2f}s; "
        f"hasty publisher (0.3 s budget): {len(hasty_lost)} of {len(hasty_sent)} lost "
        f"({sum(not ok for *_, ok in hasty_sent)} raised RedisUnavailable) over "
        f"{hasty_window:.2f}s, the first {hasty_lost[0][0] - killed_at if hasty_lost else 0:.2f}s "
        f"after SIGKILL"
    )
    print(report)
    # Every member lost the same broadcasts: those sent while the group's slot had no master.
    assert all(v == lost for v in lost_per_member.values()), report
    assert window < promoted_at - killed_at + 1.0, report
    assert resubscribed_at - promoted_at < 0.5 + 0.5, report
    # After the new master is subscribed, every broadcast arrives.
    assert all(sent_at[n] < resubscribed_at for n in lost), report
    assert hasty_lost, report  # the short budget did see the outage
    assert hasty_window < promoted_at - killed_at + 1.0, report
    assert all(ended < resubscribed_at + 0.5 for _, ended in hasty_lost), report
    assert all(count == 1 for count in notices.values()), notices
    assert "Re-subscribed" in caplog.text
    await anyio.to_thread.run_sync(cluster.revive, victim)


async def test_whole_cluster_restarted(cluster: RedisCluster) -> None:
    """Every node killed, then started again (no persistence): a receiver
    waiting meanwhile keeps waiting, the layer re-subscribes its topics once
    the cluster is back, and sends work again."""
    await anyio.to_thread.run_sync(cluster.heal)
    async with pubsub(cluster, retry_budget=30) as sender, pubsub(cluster) as receiver:
        channel = await receiver.new_channel()
        group = f"all{random.getrandbits(32)}"
        await receiver.group_add(group, channel)
        await sender.send(channel, {"type": "before"})
        with anyio.fail_after(60):
            assert await receiver.receive(channel) == {"type": "before"}
            got: list[dict[str, Any]] = []

            async def wait_one() -> None:
                got.append(await receiver.receive(channel))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_one)
                await anyio.to_thread.run_sync(cluster.kill_all)
                await anyio.sleep(0.5)
                started = time.monotonic()
                await anyio.to_thread.run_sync(cluster.start_all)
                healthy = time.monotonic()
                topics = [receiver._process_topic.decode(), f"asgi:gr:{group}"]
                await poll(lambda: None not in [node_of(receiver, t) for t in topics], "topics")
                resubscribed = time.monotonic()
                await sender.group_send(group, {"type": "after"})
            assert got == [{"type": "after"}]
        outage = receiver._state().cluster.recovered_in  # type: ignore[union-attr]
        print(
            f"whole cluster restarted: nodes started, cluster healthy after "
            f"{healthy - started:.2f}s, topics re-subscribed {resubscribed - healthy:+.2f}s "
            f"after that; subscriptions were lost for {outage:.2f}s in all"
        )
        assert resubscribed - healthy < 0.5


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with tls_acl_cluster(tmp_path_factory.mktemp("pubsub-cluster-tls")) as started:
        yield started


async def test_tls_and_acl_user(secure_cluster: RedisCluster) -> None:
    """A TLS-only cluster whose nodes require an ACL user: the subscribed
    connections to every master use TLS and the user, like the publishing ones."""
    assert secure_cluster.tls is not None
    url = (
        f"rediss+cluster://alice:wonder%20land@{LOCAL}:{secure_cluster.ports[0]}"
        f"?ssl_ca_certs={secure_cluster.tls.ca}"
    )
    layer = RedisPubSubChannelLayer(hosts=[url])
    try:
        await layer.ping()
        channels = [await layer.new_channel() for _ in range(3)]
        groups = [f"secure{n}" for n in range(12)]
        for group in groups:
            await layer.group_add(group, channels[0])
        assert len(masters_of(layer)) == 3
        with anyio.fail_after(10):
            for group in groups:
                await layer.group_send(group, {"type": "g", "group": group})
            # (In order per topic; topics on different masters may interleave.)
            got = [(await layer.receive(channels[0]))["group"] for _ in groups]
            assert sorted(got) == sorted(groups)
            await layer.send(channels[2], {"type": "direct"})
            assert await layer.receive(channels[2]) == {"type": "direct"}
    finally:
        await layer.close()


@pytest.mark.parametrize("backend", ["RedisPubSubChannelLayer", "RedisChannelLayer"])
def test_asyncio_and_trio_servers_share_a_group(
    backend: str, cluster: RedisCluster, tmp_path: Path
) -> None:
    """Two real ``channels-runtime serve`` processes, one asyncio and one trio,
    with a Redis layer on the cluster (the list layer too, though this file is
    the Pub/Sub one's): a WebSocket client's message to the shared room reaches
    the clients of both."""
    from e2e_app.harness import Server, base_env, cli_command
    from websockets.sync.client import connect

    (tmp_path / "cluster_settings.py").write_text(
        "from tests.e2e_app.settings import *  # noqa: F403\n"
        "CHANNEL_LAYERS = {'default': {"
        f"'BACKEND': 'channels_runtime.layers.redis.{backend}', "
        f"'CONFIG': {{'hosts': [{cluster_url(cluster)!r}]}}}}}}\n"
    )
    env = base_env(
        DJANGO_SETTINGS_MODULE="cluster_settings", E2E_EVENTS_FILE=str(tmp_path / "ev.txt")
    )
    env["PYTHONPATH"] += ":" + str(tmp_path)
    with ExitStack() as stack:
        servers = {}
        for kind in ("asyncio", "trio"):
            server = Server(
                [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", "-k", kind],
                log_path=tmp_path / f"{kind}.log",
                env=env,
            )
            stack.callback(server.close)
            server.start()
            assert backend in server.log(), server.log()
            servers[kind] = server
        clients = {}
        for kind, server in servers.items():
            for n in range(2):
                ws = stack.enter_context(
                    connect(server.ws_url + "/ws/room/shared/", open_timeout=10)
                )
                assert ws.recv(timeout=10) == "joined"
                clients[f"{kind}-{n}"] = ws
        for sender in ("asyncio-0", "trio-1"):
            clients[sender].send(f"from {sender}")
            for label, ws in clients.items():
                assert ws.recv(timeout=10) == f"from {sender}", label
        for server in servers.values():
            server.signal(signal.SIGTERM)
        for kind, server in servers.items():
            assert server.wait(15) == 0, f"{kind}:\n{server.log()}"
