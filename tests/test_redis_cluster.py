"""The Redis Cluster building blocks against real clusters the tests start.

One 6-node cluster (3 masters, 3 replicas, ``cluster-node-timeout`` 1 s) is
shared by the module; tests that move slots or kill a master look the layout
up afresh rather than assuming it, and leave the cluster healthy (a killed
master is restarted and rejoins as a replica). A second, TLS-only cluster with
an ACL user checks encryption and authentication. Every async test runs on
asyncio, uvloop and trio; without ``redis-server`` they are skipped (or fail
under ``CI=true``).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_cluster import RedisCluster, keys_in_slot, tls_acl_cluster
from redis_server import free_port

from channels_runtime.layers.redis.cluster import (
    SLOT_COUNT,
    ClusterRouter,
    ClusterSpec,
    ClusterUnavailable,
    NodeAddress,
    Topology,
    channels_by_node,
    crc16,
    decode_cluster,
    find_cluster,
    group_by_slot,
    hash_tag,
    key_slot,
    parse_redirect,
    parse_sharded_push,
)
from channels_runtime.layers.redis.cluster.client import _Job
from channels_runtime.layers.redis.connections import Pool
from channels_runtime.layers.redis.hosts import ConfigurationError, HostSpec, ServerTime
from channels_runtime.layers.redis.protocol import ReplyError

LOCAL = "127.0.0.1"

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(masters=3, replicas=1, node_timeout_ms=1000) as started:
        yield started


def spec_of(cluster: RedisCluster, **options: Any) -> ClusterSpec:
    ports = ",".join(f"{LOCAL}:{port}" for port in cluster.ports[:2])
    return decode_cluster({"cluster": True, "address": f"redis+cluster://{ports}", **options})


@asynccontextmanager
async def routing(
    cluster: RedisCluster, router_class: type[ClusterRouter] = ClusterRouter, **kwargs: Any
) -> AsyncIterator[ClusterRouter]:
    options = kwargs.pop("options", {})
    router = router_class(spec_of(cluster, **options), **kwargs)
    try:
        yield router
    finally:
        await router.aclose()
        # Nothing left open: every connection was given back, and is now closed.
        assert all(not pool.open for pool in router.pools.values()), router.pools


# -- slots -----------------------------------------------------------------------------


def test_crc16_and_hash_tags() -> None:
    # The check value of CRC-16/XMODEM, and the tag rules of the cluster specification.
    assert crc16(b"123456789") == 0x31C3
    assert hash_tag("{user1000}.following") == b"user1000"
    assert hash_tag("foo{}{bar}") == b"foo{}{bar}"  # empty first tag: whole key
    assert hash_tag("foo{{bar}}zap") == b"{bar"
    assert hash_tag("foo{bar}{zap}") == b"bar"
    assert hash_tag("no tag}{") == b"no tag}{"
    assert key_slot("{a}x") == key_slot("{a}y") == key_slot("a")


def test_key_slot_matches_cluster_keyslot(cluster: RedisCluster) -> None:
    """Our slot for thousands of keys is the one the server computes."""
    rng = random.Random(14)
    keys: list[bytes] = [b"", b"{}", b"{", b"}", b"{{}}", b"a{b}c{d}", "é{ü}".encode()]
    keys += [f"asgi:ch:{n}".encode() for n in range(1000)]
    keys += [f"x{{{n}}}y".encode() for n in range(500)]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(1500)]
    keys += [rng.choice([b"{", b"}", b"a", b"\x00"]) * rng.randrange(1, 6) for _ in range(200)]
    replies = cluster.call_many(cluster.ports[0], [("CLUSTER", "KEYSLOT", k) for k in keys])
    mismatches = [
        (k, key_slot(k), r) for k, r in zip(keys, replies, strict=True) if key_slot(k) != r
    ]
    assert mismatches == []
    groups = group_by_slot(keys)
    assert sum(map(len, groups.values())) == len(keys)
    assert all(key_slot(k) == slot for slot, ks in groups.items() for k in ks)


# -- settings --------------------------------------------------------------------------


def test_settings_forms(tmp_path: Path) -> None:
    url = decode_cluster("redis+cluster://alice:s%40cret@h1:7000,h2,h3:7002?socket_timeout=3")
    assert [(s.host, s.port) for s in url.seeds] == [("h1", 7000), ("h2", 6379), ("h3", 7002)]
    assert {(s.username, s.password, s.socket_timeout) for s in url.seeds} == {
        ("alice", "s@cret", 3.0)
    }
    assert not url.tls
    assert url.describe() == "redis+cluster://h1:7000,h2:6379,h3:7002"
    tls = decode_cluster("rediss+cluster://h1:7000?ssl_cert_reqs=none")
    assert tls.tls
    assert tls.describe().startswith("rediss+cluster://")
    # A discovered node gets the seeds' settings, and its own host for TLS.
    node = tls.node_spec("10.0.0.5", 7003)
    assert (node.host, node.port, node.tls_hostname) == ("10.0.0.5", 7003, "10.0.0.5")
    assert node.ssl_context is tls.template.ssl_context
    nodes = decode_cluster(
        {"cluster": True, "nodes": ["redis://h1:1", ("h2", 2)], "password": "pw", "username": "u"}
    )
    assert [(s.host, s.port, s.username, s.password) for s in nodes.seeds] == [
        ("h1", 1, "u", "pw"),
        ("h2", 2, "u", "pw"),
    ]
    single = decode_cluster({"cluster": True, "address": "rediss://h:9", "ssl_cert_reqs": "none"})
    assert single.tls
    assert single.seeds[0].port == 9
    assert find_cluster(["redis://h:1", "redis://h:2"]) is None
    assert find_cluster(None) is None
    found = find_cluster([{"address": "redis+cluster://h:1,h:2"}])
    assert found is not None
    assert len(found.seeds) == 2

    bad: list[tuple[Any, str]] = [
        ("redis+cluster://h:1/2", "only database 0"),
        ({"cluster": True}, "either 'address' or 'nodes'"),
        ({"cluster": True, "nodes": []}, "non-empty list"),
        ({"cluster": True, "nodes": [42]}, "seed node 0"),
        ({"cluster": True, "address": "redis://h:1", "db": 3}, "only database 0"),
        ({"cluster": True, "address": "redis://h:1", "bogus": 1}, "bogus"),
        ({"cluster": True, "address": "unix:///tmp/r.sock"}, "over TCP"),
        (
            {"cluster": True, "sentinels": [("h", 1)], "master_name": "m", "address": "redis://h"},
            "Sentinel",
        ),
        ("redis+cluster://", "names no node"),
    ]
    for entry, message in bad:
        with pytest.raises(ConfigurationError, match=message):
            decode_cluster(entry)
    with pytest.raises(ConfigurationError, match="only entry"):
        find_cluster(["redis+cluster://h:1", "redis://h:2"])


def test_redirect_parsing() -> None:
    moved = parse_redirect(ReplyError("MOVED 3999 127.0.0.1:6381"))
    assert moved is not None
    assert not moved.ask
    assert (moved.slot, moved.address) == (3999, NodeAddress("127.0.0.1", 6381))
    ask = parse_redirect("ASK 1 ::1:7000")
    assert ask is not None
    assert ask.ask
    assert ask.address == NodeAddress("::1", 7000)
    # An empty host means the node that answered.
    same = parse_redirect("MOVED 5 :7001", replied_by=NodeAddress("10.1.1.1", 7000))
    assert same is not None
    assert same.address == NodeAddress("10.1.1.1", 7001)
    assert parse_redirect("MOVED 5 :7001") is None
    assert parse_redirect(ReplyError("ERR unknown command")) is None
    assert parse_redirect("MOVED x h:1") is None


# -- topology ----------------------------------------------------------------------------


def owners(topology: Topology) -> dict[int, int]:
    found = {}
    for slot in range(SLOT_COUNT):
        master = topology.master_for_slot(slot)
        assert master is not None, slot
        found[slot] = master.port
    return found


async def test_topology_discovery(cluster: RedisCluster) -> None:
    """Masters, their replicas and every slot's owner, as the nodes say;
    the same from CLUSTER SLOTS (servers before 7), and from any seed, even
    when the first seed is down or is a replica."""
    expected = cluster.slot_owners(cluster.ports[0])
    async with routing(cluster) as router:
        topology = await router.refresh()
        assert owners(topology) == expected
        assert sorted(m.port for m in topology.masters) == cluster.master_ports()
        for master in topology.masters:
            assert [r.port for r in topology.replicas_of(master)] == [
                cluster.replica_of(master.port)
            ]
        assert router._use_shards
        router._use_shards = False  # what a server without CLUSTER SHARDS leads to
        router.topology = None
        assert owners(await router.refresh()) == expected
    # The layer's hook makes each node's pool; a node's spec has its address.
    made: list[tuple[int, str | None, int]] = []

    def factory(index: int, spec: HostSpec) -> Pool:
        made.append((index, spec.host, spec.port))
        return Pool(None, index, spec, 4, ServerTime(), 1.0)

    async with routing(cluster, pool_factory=factory) as router:
        await router.execute_many([(slot, ("PING",)) for slot in (0, 8000, 16383)])
        assert [i for i, _, _ in made] == list(range(len(made)))
        assert {NodeAddress(str(h), p) for _, h, p in made} == set(router.pools)
        assert {m.port for m in router.pools} >= set(cluster.master_ports())
    # The first seed refuses connections, the second is a replica: still found.
    replica = cluster.replica_of(cluster.master_ports()[0])
    spec = decode_cluster({"cluster": True, "nodes": [(LOCAL, free_port()), (LOCAL, replica)]})
    router = ClusterRouter(spec, connect_timeout=1)
    try:
        assert owners(await router.refresh()) == expected
    finally:
        await router.aclose()


async def test_commands_go_to_the_master_of_their_slot(cluster: RedisCluster) -> None:
    """Each key is written on the master that owns its slot, never on a
    replica (no connection of ours reaches one), in one round trip per node
    for a batch spread over the whole cluster."""
    run_id = random.getrandbits(32)
    keys = [f"route:{run_id}:{n}" for n in range(300)]
    calls: list[NodeAddress] = []

    class Counting(ClusterRouter):
        async def _run_on_node(self, address: NodeAddress, jobs: list[_Job]) -> list[Any]:
            calls.append(address)
            return await super()._run_on_node(address, jobs)

    async with routing(cluster, Counting, options={"client_name": f"route{run_id}"}) as router:
        for key in keys[:30]:
            assert await router.execute(key, "SET", key, key) == b"OK"
        by_slot = group_by_slot(keys[30:])
        calls.clear()
        replies = await router.execute_many(
            [(slot, ("MSET", *[x for k in ks for x in (k, k)])) for slot, ks in by_slot.items()]
        )
        assert replies == [b"OK"] * len(by_slot)
        # One pipeline per master, though the keys span hundreds of slots.
        assert sorted(calls) == sorted(router.topology.masters if router.topology else [])
        owner = cluster.slot_owners(cluster.ports[0])
        for key in keys:
            assert cluster.call(owner[key_slot(key)], "GET", key) == key
        pipelined = await router.pipeline(keys[0], [("GET", keys[0]), ("STRLEN", keys[0])])
        assert pipelined == [keys[0].encode(), len(keys[0])]
        # An error reply is the caller's: raised by execute, returned by pipeline.
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await router.execute(keys[0], "LPUSH", keys[0], "x")
        plan = await router.group_by_node(keys)
        assert sum(len(ks) for by in plan.values() for ks in by.values()) == len(keys)
        assert None not in plan
        masters = set(cluster.master_ports())
        for node in cluster.running():
            clients = cluster.call(node.port, "CLIENT", "LIST")
            ours = f"name=route{run_id}" in clients
            assert ours == (node.port in masters), (node.port, masters)


# -- redirects ---------------------------------------------------------------------------


async def test_moved_during_a_live_reshard(cluster: RedisCluster) -> None:
    """Writers keep counting while redis-cli moves 300 slots (and their keys)
    to another master: every increment lands exactly once, no error reaches
    them, and the router learnt the new owners from MOVED/ASK redirects."""
    run_id = random.getrandbits(32)
    keys = [f"count:{run_id}:{n}" for n in range(400)]
    done: dict[str, int] = dict.fromkeys(keys, 0)
    source, target = cluster.master_ports()[:2]
    async with routing(cluster, retry_budget=10) as router:
        await router.refresh()
        moving = anyio.Event()

        async def writer(mine: list[str]) -> None:
            while not moving.is_set():
                for key in mine:
                    await router.execute(key, "INCR", key)
                    done[key] += 1

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(writer, keys[n::4])
            await anyio.sleep(0.2)
            await anyio.to_thread.run_sync(cluster.reshard, source, target, 300)
            await anyio.sleep(0.2)
            moving.set()
        assert router.redirects > 0
        replies = await router.execute_many([(k, ("GET", k)) for k in keys])
        assert {k: int(r) for k, r in zip(keys, replies, strict=True)} == done
        moved = [s for s, port in cluster.slot_owners(source).items() if port == target]
        assert all(router.topology and router.topology.master_for_slot(s) for s in moved)
    await anyio.to_thread.run_sync(cluster.reshard, target, source, 300)


async def test_ask_during_a_slot_migration(cluster: RedisCluster) -> None:
    """Half-way through moving a slot, keys already moved are reached with
    ASKING on the target, the others on the source, new keys land on the
    target; the slot map changes only once the move is final (MOVED)."""
    masters = cluster.master_ports()
    slot = random.Random().randrange(SLOT_COUNT)
    source = cluster.master_of_slot(slot)
    target = next(port for port in masters if port != source)
    a, b, c = keys_in_slot(slot, 3, key_slot, prefix=f"ask{random.getrandbits(24)}:")
    async with routing(cluster) as router:
        await router.execute(a, "SET", a, "A")
        await router.execute(b, "SET", b, "B")
        await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
        try:
            await anyio.to_thread.run_sync(cluster.migrate_keys, slot, source, target, [a])
            before = router.redirects
            assert await router.execute(a, "GET", a) == b"A"  # moved: ASK
            assert await router.execute(b, "GET", b) == b"B"  # not yet moved
            assert await router.execute(c, "SET", c, "C") == b"OK"  # new: ASK
            assert router.redirects == before + 2
            assert await router.pipeline(slot, [("GET", a), ("GET", b), ("GET", c)]) == [
                b"A",
                b"B",
                b"C",
            ]
            assert router.topology is not None
            assert router.topology.master_for_slot(slot) == NodeAddress(LOCAL, source)
            # A multi-key command over keys the migration has split: TRYAGAIN,
            # retried until the migration is over.
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, finish_later, cluster, slot, source, target)
                assert await router.execute(slot, "MGET", a, b) == [b"A", b"B"]
        finally:
            if cluster.master_of_slot(slot) != target:
                await anyio.to_thread.run_sync(cluster.finish_migration, slot, source, target)
        assert await router.execute(b, "GET", b) == b"B"  # MOVED now
        assert router.topology.master_for_slot(slot) == NodeAddress(LOCAL, target)
        assert cluster.call(target, "GET", c) == "C"


def finish_later(cluster: RedisCluster, slot: int, source: int, target: int) -> None:
    time.sleep(0.3)
    cluster.finish_migration(slot, source, target)


async def test_scripts_retries_and_periodic_refresh(cluster: RedisCluster) -> None:
    """EVALSHA on a node that lost its script cache (as a promoted replica
    has none) is re-sent as EVAL; a command whose connection broke after it
    was written is rebuilt knowing it may have run; the slot map is fetched
    again once ``refresh_interval`` has passed."""
    source = b"return redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(source).hexdigest().encode()
    key = f"script:{random.getrandbits(32)}"
    name = f"script{random.getrandbits(32)}"
    async with routing(
        cluster, script_sources={sha: source}, refresh_interval=0.2, options={"client_name": name}
    ) as router:
        master = await router.master_for(key)
        assert cluster.call(master.port, "SCRIPT", "FLUSH") == "OK"
        assert await router.execute(key, "EVALSHA", sha, 1, key, 5) == 5
        assert await router.execute(key, "EVALSHA", sha, 1, key, 5) == 10
        async with routing(cluster) as plain:
            assert cluster.call(master.port, "SCRIPT", "FLUSH") == "OK"
            with pytest.raises(ReplyError, match="NOSCRIPT"):
                await plain.execute(key, "EVALSHA", sha, 1, key, 5)

        built: list[bool] = []

        def build(maybe_applied: bool) -> tuple[Any, ...]:
            built.append(maybe_applied)
            return ("BLPOP", f"{{{key}}}:list", 0.5 if maybe_applied else 5)

        async def kill_our_blpop() -> None:
            def ours() -> list[str]:
                listing = str(cluster.call(master.port, "CLIENT", "LIST"))
                return [
                    line.split()[0].split("=")[1]
                    for line in listing.splitlines()
                    if f"name={name}" in line and "cmd=blpop" in line
                ]

            for _ in range(500):
                if ours():
                    break
                await anyio.sleep(0.02)
            for client_id in ours():
                cluster.call(master.port, "CLIENT", "KILL", "ID", client_id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_our_blpop)
            assert await router.execute(key, build) is None  # the retry timed out empty
        assert built == [False, True]

        before = router.refreshes
        await anyio.sleep(0.3)
        assert await router.execute(key, "GET", key) == b"10"
        assert router.refreshes == before + 1


# -- sharded Pub/Sub ----------------------------------------------------------------------


async def read_push(conn: Any, seconds: float = 10) -> Any:
    with anyio.fail_after(seconds):
        return await conn.read_reply()


async def test_sharded_pubsub_follows_a_moved_slot(cluster: RedisCluster) -> None:
    """SSUBSCRIBE on the master of the channel's slot receives SPUBLISH; when
    the slot moves, the node pushes sunsubscribe, the old node answers MOVED,
    and subscribing on the new master works again."""
    channel = f"shard:{random.getrandbits(32)}"
    slot = key_slot(channel)
    async with routing(cluster) as router:
        address, pool, conn = await router.lease(channel, blocking=True)
        try:
            await conn.send(
                b"*2\r\n$10\r\nSSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel.encode())
            )
            assert parse_sharded_push(await read_push(conn)) == ("ssubscribe", channel.encode(), 1)
            assert await router.execute(channel, "SPUBLISH", channel, "one") == 1
            assert parse_sharded_push(await read_push(conn)) == (
                "smessage",
                channel.encode(),
                b"one",
            )
            source = address.port
            target = next(p for p in cluster.master_ports() if p != source)
            await anyio.to_thread.run_sync(cluster.begin_migration, slot, target)
            await anyio.to_thread.run_sync(cluster.finish_migration, slot, source, target)
            assert parse_sharded_push(await read_push(conn)) == (
                "sunsubscribe",
                channel.encode(),
                0,
            )
        finally:
            await pool.discard(conn, blocking=True, fault=False)
        # The old node redirects a new subscription; the router learns from it.
        old = router.pool(NodeAddress(LOCAL, source))
        conn = await old.lease_blocking()
        try:
            reply = await conn.request("SSUBSCRIBE", channel)
            assert isinstance(reply, ReplyError)
            redirect = router.note_redirect(reply, NodeAddress(LOCAL, source))
            assert redirect is not None
            assert redirect.address == NodeAddress(LOCAL, target)
        finally:
            await old.discard(conn, blocking=True, fault=False)
        address, pool, conn = await router.lease(channel, blocking=True)
        try:
            assert address.port == target
            confirmed = parse_sharded_push(await conn.request("SSUBSCRIBE", channel))
            assert confirmed == ("ssubscribe", channel.encode(), 1)
            assert await router.execute(channel, "SPUBLISH", channel, "two") == 1
            assert parse_sharded_push(await read_push(conn)) == (
                "smessage",
                channel.encode(),
                b"two",
            )
        finally:
            await pool.discard(conn, blocking=True, fault=False)
        # Channels to subscribe to, by node then slot: one SSUBSCRIBE per slot.
        names = [channel, *(f"other:{n}" for n in range(20))]
        plan = await channels_by_node(router, names)
        assert plan[NodeAddress(LOCAL, target)][slot] == [channel]
        assert sorted(c for by in plan.values() for cs in by.values() for c in cs) == sorted(names)
    assert parse_sharded_push([b"pong", b""]) is None


# -- failover ----------------------------------------------------------------------------


async def test_manual_failover_is_followed(cluster: RedisCluster) -> None:
    """CLUSTER FAILOVER on a replica under a loop of writes: the writes carry
    on at the promoted replica, none fails."""
    key = f"manual:{random.getrandbits(32)}"
    master = cluster.master_of_slot(key_slot(key))
    writes = 0
    async with routing(cluster, retry_budget=10) as router:
        stop = anyio.Event()

        async def writer() -> None:
            nonlocal writes
            while not stop.is_set():
                await router.execute(key, "INCR", key)
                writes += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.sleep(0.1)
            promoted = await anyio.to_thread.run_sync(cluster.fail_over, master)
            await anyio.sleep(0.1)
            stop.set()
        # Where the cluster says the slot is now: the promoted replica, unless
        # on a busy machine the 1 s node timeout made the old master fail back.
        views = {n.port: cluster.slot_owners(n.port)[key_slot(key)] for n in cluster.running()}
        assert len(set(views.values())) == 1, views
        owner = NodeAddress(LOCAL, views[promoted])
        assert await router.master_for(key) == owner, (master, promoted, views)
        if owner.port == promoted:
            assert router.redirects > 0
        # A manual failover waits for the replica to have every write: none lost.
        assert int(await router.execute(key, "GET", key)) == writes


async def test_master_killed_under_writes(cluster: RedisCluster, anyio_backend: Any) -> None:
    """SIGKILL a master while writers run on every slot: once its replica is
    promoted the writers carry on there. With a retry budget longer than the
    failover no write fails, the longest stall is the failover window; with a
    short budget, writes to the dead master's slots fail for about that long.
    No task or connection is left behind."""
    await anyio.to_thread.run_sync(cluster.heal)
    run_id = random.getrandbits(32)
    keys = [f"kill:{run_id}:{n}" for n in range(60)]
    victim = cluster.master_of_slot(key_slot(keys[0]))
    stats: dict[str, Any] = {"stall": 0.0, "errors": [], "acked": []}
    tasks_before = len(anyio.get_running_tasks())
    stop = anyio.Event()

    async def writer(router: ClusterRouter, mine: list[str], record: bool) -> None:
        seq = 0
        while not stop.is_set():
            for key in mine:
                seq += 1
                started = time.monotonic()
                written = f"{{{key}}}:{seq}"  # in the slot of ``key``
                try:
                    await router.execute(key, "SET", written, 1)
                except ClusterUnavailable:
                    stats["errors"].append((started, time.monotonic()))
                    await anyio.sleep(0.05)
                    continue
                lasted = time.monotonic() - started
                if record:
                    stats["stall"] = max(stats["stall"], lasted)
                    stats["acked"].append((written, started))

    async with (
        routing(cluster, retry_budget=15) as patient,
        routing(cluster, retry_budget=0.3) as hasty,
    ):
        await patient.refresh()
        await hasty.refresh()
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(3):
                    tg.start_soon(writer, patient, keys[n::3], True)
                tg.start_soon(writer, hasty, keys, False)
                await anyio.sleep(0.3)
                killed_at = time.monotonic()
                replica = cluster.crash(victim)
                promoted_at = await anyio.to_thread.run_sync(cluster.wait_promoted, replica)
                await anyio.sleep(0.5)
                stop.set()
        assert await patient.master_for(keys[0]) == NodeAddress(LOCAL, replica)
        # Acknowledged writes that the replica had not received are lost: count them.
        acked = stats["acked"]
        replies = await patient.execute_many([(k, ("EXISTS", k)) for k, _ in acked])
        lost = [at for (_, at), there in zip(acked, replies, strict=True) if not there]
    assert len(anyio.get_running_tasks()) == tasks_before
    errors = stats["errors"]
    # From the start of the first failed write to the end of the last one.
    window = (errors[-1][1] - errors[0][0]) if errors else 0.0
    report = (
        f"[{anyio_backend[0]}{'+uvloop' if anyio_backend[1] else ''}] promotion "
        f"{promoted_at - killed_at:.2f}s after SIGKILL; patient writers: longest stall "
        f"{stats['stall']:.2f}s, 0 errors, {len(acked)} acked writes, {len(lost)} lost; "
        f"hasty (0.3 s budget): {len(errors)} errors over {window:.2f}s, the first "
        f"{errors[0][0] - killed_at if errors else 0:.2f}s after SIGKILL"
    )
    print(report)
    assert stats["stall"] < promoted_at - killed_at + 3.0, report
    assert errors, report  # the short budget did see the outage
    assert window < promoted_at - killed_at + 3.0, report
    assert all(at >= killed_at - 1.0 for at in lost), report
    await anyio.to_thread.run_sync(cluster.revive, victim)


async def test_whole_cluster_restarted(cluster: RedisCluster) -> None:
    """Every node killed, then started again (no persistence): a command sent
    during the outage waits, and runs once the cluster is back; the router
    keeps working on its reborn nodes."""
    await anyio.to_thread.run_sync(cluster.heal)
    key = f"restart:{random.getrandbits(32)}"
    async with routing(cluster, retry_budget=30) as router:
        await router.execute(key, "SET", key, "before")
        cluster.kill_all()
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, restart_later, cluster)
            with anyio.fail_after(40):
                assert await router.execute(key, "SET", key, "after", "GET") is None
        assert await router.execute(key, "GET", key) == b"after"
        keys = [f"{key}:{n}" for n in range(100)]
        assert await router.execute_many([(k, ("SET", k, 1)) for k in keys]) == [b"OK"] * 100


def restart_later(cluster: RedisCluster) -> None:
    time.sleep(0.5)
    cluster.start_all()


# -- TLS and ACL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with tls_acl_cluster(tmp_path_factory.mktemp("cluster-tls")) as secured:
        yield secured


async def test_tls_and_acl_user(secure_cluster: RedisCluster) -> None:
    """A TLS-only cluster whose nodes require an ACL user: discovery finds
    the TLS ports, commands reach every master, and a wrong password or an
    unknown CA fail with errors that say so."""
    assert secure_cluster.tls is not None
    ca = secure_cluster.tls.ca
    port = secure_cluster.ports[0]
    url = f"rediss+cluster://alice:wonder%20land@{LOCAL}:{port}?ssl_ca_certs={ca}"
    router = ClusterRouter(decode_cluster(url), retry_budget=1)
    try:
        topology = await router.refresh()
        assert sorted(m.port for m in topology.masters) == secure_cluster.master_ports()
        keys = [f"tls:{n}" for n in range(50)]
        assert await router.execute_many([(k, ("SET", k, k)) for k in keys]) == [b"OK"] * 50
        assert len({key_slot(k) for k in keys}) > 3
        assert secure_cluster.call(secure_cluster.master_of_slot(key_slot(keys[7])), "GET", keys[7])
    finally:
        await router.aclose()
    wrong = ClusterRouter(
        decode_cluster(f"rediss+cluster://alice:nope@{LOCAL}:{port}?ssl_ca_certs={ca}"),
        retry_budget=0.3,
    )
    with pytest.raises(ClusterUnavailable, match="WRONGPASS"):
        await wrong.execute("k", "GET", "k")
    await wrong.aclose()
    untrusting = ClusterRouter(
        decode_cluster(f"rediss+cluster://alice:wonder%20land@{LOCAL}:{port}"), retry_budget=0.3
    )
    with pytest.raises(ClusterUnavailable, match="TLS connection"):
        await untrusting.execute("k", "GET", "k")
    await untrusting.aclose()
