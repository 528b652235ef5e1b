"""Benchmark: both Redis layers on one redis-server against a 3-master Redis Cluster.

Run from the repository root::

    python bench/bench_redis_cluster.py            # 3 rounds, about 3 minutes
    python bench/bench_redis_cluster.py --quick    # 1 round, small sizes, about 30 s

The script starts, on free ports, one plain ``redis-server`` and a Redis
Cluster of 3 masters with a replica each (``tests/redis_cluster.py``, the
harness the cluster tests use), and stops them all at the end. Against each it
runs:

* **throughput**: ``--consumers`` consumers (200) in this one process, each on
  its own process-specific channel, exchange messages in pairs (each answers
  every message it receives with one to its partner, so ``--consumers``
  messages are always in flight); messages received in ``--seconds`` after
  ``--warmup``, per second;
* **group_send fan-out**: ``--members`` channels (1,000) in one group, made by
  ``--processes`` layer instances (50, each standing for a server process, so
  the members' process lists hash to as many slots, spread over all masters);
  one ``group_send`` at a time, timed until every member has received it,
  ``--repeats`` times per round; p50 and p99 over every repetition.

The layers: ours (``RedisChannelLayer`` and ``RedisPubSubChannelLayer``, on
asyncio; ``--trio`` adds them on trio), and channels_redis's two layers for
reference. channels_redis has no cluster mode: pointed at the cluster (at one
master, all it can talk to) it is run the same way, and where it fails the
table shows the error it ended with (and the figure of any round that did not
fail: its list layer keeps all of a process's channels in one key, which lands
on the master it was given about one time in three). Its Pub/Sub layer uses
classic ``PUBLISH``, which a cluster relays to every node, so it runs, all
through one node.

Implementations alternate round by round, in an order reversed every other
round; tables are markdown on stdout, progress goes to stderr. Nothing is
pinned to a CPU (the cluster's six processes would not fit on two anyway).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_redis_concurrency import (
    CAPACITY,
    MESSAGE,
    THEIR_MAX_CONNECTIONS,
    TheirCore,
    TheirPubSub,
    close_layer,
    fmt,
    machine,
    ping_pong,
)
from redis_cluster import RedisCluster
from runner import redis_server

from channels_runtime.layers.redis import RedisChannelLayer as OurCore
from channels_runtime.layers.redis import RedisPubSubChannelLayer as OurPubSub

#: key -> (label, layer class, anyio backend)
IMPLS: dict[str, tuple[str, Any, str]] = {
    "ours": ("ours RedisChannelLayer, asyncio", OurCore, "asyncio"),
    "ours-pubsub": ("ours RedisPubSubChannelLayer, asyncio", OurPubSub, "asyncio"),
    "ours-trio": ("ours RedisChannelLayer, trio", OurCore, "trio"),
    "ours-pubsub-trio": ("ours RedisPubSubChannelLayer, trio", OurPubSub, "trio"),
    "channels_redis": ("channels_redis RedisChannelLayer", TheirCore, "asyncio"),
    "channels_redis-pubsub": ("channels_redis RedisPubSubChannelLayer", TheirPubSub, "asyncio"),
}
TARGETS = ("single", "cluster")
#: A run that has not finished by then has hung (counted as a failure).
STEP_TIMEOUT = 60.0


class Failed(Exception):
    """A run that ended in an error: what is shown instead of a figure."""


def describe(exc: BaseException) -> str:
    """The first error inside (possibly nested) exception groups, as ``Class: message``."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    if len(text) > 100:
        text = text[:97] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- (a) throughput ----------------------------------------------------------------------


async def exchange(make: Callable[[], Any], consumers: int, warmup: float, seconds: float) -> float:
    """Pairs of consumers ping-pong through one layer; messages received per second."""

    async def measure(received: Callable[[], int]) -> float:
        start, began = received(), time.perf_counter()
        await anyio.sleep(seconds)
        return (received() - start) / (time.perf_counter() - began)

    with anyio.fail_after(warmup + seconds + STEP_TIMEOUT):
        rate = await ping_pong(make, consumers, warmup, measure)
    if rate == 0:
        raise Failed("no message arrived")
    return rate


# -- (b) group_send fan-out ----------------------------------------------------------------


async def fan_out(
    make: Callable[[], Any], processes: int, members: int, repeats: int
) -> list[float]:
    """Seconds from each ``group_send`` until all ``members`` have received it."""
    layers = [make() for _ in range(processes)]
    group = f"room-{uuid.uuid4().hex[:6]}"
    counts: dict[int, int] = {}
    done: dict[int, anyio.Event] = {}
    try:
        owned: list[tuple[Any, str]] = []
        for i in range(members):
            layer = layers[i % processes]
            owned.append((layer, await layer.new_channel()))
        with anyio.fail_after(STEP_TIMEOUT):
            for layer, name in owned:
                await layer.group_add(group, name)

        async def member(layer: Any, name: str) -> None:
            while True:
                message = await layer.receive(name)
                rep = message["rep"]
                counts[rep] = counts.get(rep, 0) + 1
                if counts[rep] == members:
                    done[rep].set()

        latencies = []
        async with anyio.create_task_group() as tg:
            for layer, name in owned:
                tg.start_soon(member, layer, name)
            await anyio.sleep(0.2)  # every receiver waiting (and, Pub/Sub, subscribed)
            for rep in range(repeats + 1):  # the first one warms up
                done[rep] = anyio.Event()
                began = time.perf_counter()
                with anyio.fail_after(STEP_TIMEOUT):
                    await layers[rep % processes].group_send(group, {**MESSAGE, "rep": rep})
                    await done[rep].wait()
                if rep:
                    latencies.append(time.perf_counter() - began)
            tg.cancel_scope.cancel()
        return latencies
    finally:
        for layer in layers:
            await close_layer(layer)


# -- running -----------------------------------------------------------------------------------


def layer_maker(key: str, target: str, urls: dict[str, str]) -> Callable[[], Any]:
    _, cls, _ = IMPLS[key]
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    host: Any = urls[target]
    if key.startswith("channels_redis"):
        # Its hosts take one server: on the cluster, the first seed (a master).
        if target == "cluster":
            host = urls["cluster-first"]
        # redis-py's pool raises MaxConnectionsError past 100 connections in use.
        host = {"address": host, "max_connections": THEIR_MAX_CONNECTIONS}

    def make() -> Any:
        return cls(hosts=[host], prefix=prefix, capacity=CAPACITY)

    return make


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def tables(
    rates: dict[tuple[str, str], list[float | str]],
    fans: dict[tuple[str, str], list[float | str]],
    keys: list[str],
    args: argparse.Namespace,
) -> list[str]:
    def cell_rate(runs: list[float | str]) -> str:
        numbers = [r for r in runs if isinstance(r, float)]
        errors = [r for r in runs if isinstance(r, str)]
        if errors and numbers:
            return f"fails in {len(errors)} of {len(runs)} rounds: `{errors[0]}`; {fmt(numbers)}"
        if errors:
            return f"fails in {len(errors)} of {len(runs)} rounds: `{errors[0]}`"
        return fmt(numbers)

    def cell_fan(runs: list[float | str]) -> tuple[str, str]:
        numbers = [r * 1000 for r in runs if isinstance(r, float)]
        errors = [r for r in runs if isinstance(r, str)]
        if errors:
            return f"fails in {len(errors)} of {args.rounds} rounds: `{errors[0]}`", "—"
        return f"{percentile(numbers, 50):.1f}", f"{percentile(numbers, 99):.1f}"

    out = [
        f"**(a) Throughput: {args.consumers} consumers in pairs, {args.consumers} messages in "
        f"flight; messages/s over {args.seconds:g} s after {args.warmup:g} s, median of "
        f"{args.rounds} rounds (min\N{EN DASH}max)**",
        "",
        "| layer | one redis-server | cluster, 3 masters + 3 replicas | cluster ÷ one |",
        "| --- | --- | --- | --- |",
    ]
    for key in keys:
        one, many = rates[(key, "single")], rates[(key, "cluster")]
        ratio = "—"
        one_n = [r for r in one if isinstance(r, float)]
        many_n = [r for r in many if isinstance(r, float)]
        if len(one_n) == len(one) and len(many_n) == len(many):
            ratio = f"{statistics.median(many_n) / statistics.median(one_n):.2f}"
        out.append(f"| {IMPLS[key][0]} | {cell_rate(one)} | {cell_rate(many)} | {ratio} |")
    out += [
        "",
        f"**(b) group_send to {args.members:,} members on {args.processes} layer instances: "
        f"ms until every member has received it, over {args.repeats} sends x {args.rounds} "
        "rounds**",
        "",
        "| layer | one: p50 | one: p99 | cluster: p50 | cluster: p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in keys:
        one50, one99 = cell_fan(fans[(key, "single")])
        many50, many99 = cell_fan(fans[(key, "cluster")])
        out.append(f"| {IMPLS[key][0]} | {one50} | {one99} | {many50} | {many99} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round at small sizes")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float, help="measured per throughput run")
    parser.add_argument("--warmup", type=float, help="unmeasured, before")
    parser.add_argument("--consumers", type=int, help="an even number")
    parser.add_argument("--members", type=int, help="group members")
    parser.add_argument("--processes", type=int, help="layer instances the members are on")
    parser.add_argument("--repeats", type=int, help="group_sends timed per round")
    parser.add_argument("--trio", action="store_true", help="also run our layers on trio")
    parser.add_argument("--only", help="comma-separated keys: " + ", ".join(IMPLS))
    args = parser.parse_args()
    defaults = (
        {"rounds": 1, "seconds": 1.0, "warmup": 0.5, "consumers": 40, "members": 100,
         "processes": 10, "repeats": 10}
        if args.quick
        else {"rounds": 3, "seconds": 4.0, "warmup": 1.0, "consumers": 200, "members": 1000,
              "processes": 50, "repeats": 20}
    )  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.consumers < 2 or args.consumers % 2:
        parser.error("--consumers must be an even number, 2 or more")
    if args.only:
        keys = args.only.split(",")
        unknown = set(keys) - set(IMPLS)
        if unknown:
            parser.error(f"unknown keys: {', '.join(sorted(unknown))}")
    else:
        keys = [k for k in IMPLS if args.trio or not k.endswith("-trio")]
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is not installed (apt-get install redis-server)")

    # channels_redis's Pub/Sub layer logs a traceback for every receive cancelled
    # at the end of a run (a thousand per fan-out run); its errors are caught here.
    logging.getLogger("channels_redis").setLevel(logging.CRITICAL)
    with ExitStack() as stack:
        url, single = stack.enter_context(redis_server(None))
        print("starting a Redis Cluster (3 masters, 3 replicas)...", file=sys.stderr)
        cluster = stack.enter_context(RedisCluster(masters=3, replicas=1, node_timeout_ms=5000))
        pids = ", ".join(f"pid {pid}" for pid in [single.pid, *cluster.pids()])
        print(f"redis-server processes (stopped at the end): {pids}", file=sys.stderr)
        masters = cluster.master_ports()
        urls = {
            "single": url,
            "cluster": "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in masters),
            "cluster-first": f"redis://127.0.0.1:{masters[0]}/0",
        }
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        rates: dict[tuple[str, str], list[float | str]] = {}
        fans: dict[tuple[str, str], list[float | str]] = {}
        steps = [(key, target) for key in keys for target in TARGETS]
        for rnd in range(args.rounds):
            order = steps if rnd % 2 == 0 else list(reversed(steps))
            for key, target in order:
                backend = IMPLS[key][2]
                rate: float | str
                try:
                    rate = anyio.run(
                        exchange, layer_maker(key, target, urls), args.consumers,
                        args.warmup, args.seconds, backend=backend,
                    )  # fmt: skip
                    shown = f"{rate:,.0f} msg/s"
                except Exception as exc:  # the error is the result
                    rate = shown = describe(exc)
                rates.setdefault((key, target), []).append(rate)
                latencies: list[float | str]
                try:
                    measured = anyio.run(
                        fan_out, layer_maker(key, target, urls), args.processes,
                        args.members, args.repeats, backend=backend,
                    )  # fmt: skip
                    latencies = list(measured)
                    fanned = f"p50 {percentile(measured, 50) * 1000:.1f} ms"
                except Exception as exc:  # the error is the result
                    latencies = [fanned := describe(exc)]
                fans.setdefault((key, target), []).extend(latencies)
                print(f"round {rnd + 1}: [{key} on {target}] {shown}; {fanned}", file=sys.stderr)
        took = time.monotonic() - started
        out = [
            f"Machine: {machine(address)}.",
            f"Redis: a private redis-server, and a private cluster of 3 masters with a replica "
            f"each (cluster-node-timeout 5 s), all on this machine, unpinned; "
            f"channels_redis on the cluster is given its first master. Took {took:.0f} s; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
            "",
            *tables(rates, fans, keys, args),
        ]
        print("\n".join(out))


if __name__ == "__main__":
    main()
