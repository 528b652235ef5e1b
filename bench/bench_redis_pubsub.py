"""Benchmark: channels_runtime's RedisPubSubChannelLayer against channels_redis's.

Run from the repository root, with a Redis server to talk to::

    pip install channels_redis             # the comparison point
    python bench/bench_redis_pubsub.py     # 5 rounds, redis://127.0.0.1:6379/0
    python bench/bench_redis_pubsub.py --rounds 3 --redis redis://host:6379/1

Both layers use the same Redis in this one process. channels_redis only runs
on asyncio, so the ratio column compares ours on asyncio with it on asyncio;
ours on uvloop and on trio are shown alongside. Implementations alternate
round by round, and the order flips every round, so that drift in machine or
server load hits all alike. Each figure is the median over rounds with the
min-max range. Every case uses its own prefix; Pub/Sub leaves no keys behind.

Cases:

* throughput: one producer and one consumer task on one channel, in one
  process, for 3,000 messages (the local queue is made large enough for none
  to be dropped; channels_redis's queue is unbounded);
* latency: a receiver is waiting; the time from calling ``send`` to the
  receiver having the message, p50 and p99 over 500 messages;
* group_send to 1,000 members: 1,000 process-specific channels of one process
  in one group, each with a waiting receiver; the time of the call, and until
  every member has the message.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="bench", INSTALLED_APPS=[])
    import django

    django.setup()

from channels_runtime.layers.redis import RedisPubSubChannelLayer as OurLayer

try:
    from channels_redis.pubsub import RedisPubSubChannelLayer as TheirLayer
except ImportError:  # pragma: no cover - the docstring says how to get it
    sys.exit("channels_redis is not installed: pip install channels_redis")

MESSAGE = {"type": "chat.message", "text": "hello, world", "user": 42, "tags": ["a", "b"]}

#: name -> (layer class, anyio backend, backend options)
IMPLS: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "ours-asyncio": (OurLayer, "asyncio", {}),
    "channels_redis": (TheirLayer, "asyncio", {}),
    "ours-uvloop": (OurLayer, "asyncio", {"use_uvloop": True}),
    "ours-trio": (OurLayer, "trio", {}),
}
BASELINE, CONTENDER = "channels_redis", "ours-asyncio"

Case = Callable[[Callable[..., Any]], Awaitable[dict[str, float]]]


async def _cleanup(layer: Any) -> None:
    if isinstance(layer, OurLayer):
        await layer.close()
    else:
        await layer.flush()  # channels_redis: also closes its connections


# -- cases: each returns one or more named figures -----------------------------------


async def _throughput(layer: Any, channel: str, count: int) -> float:
    """Messages/s with one producer and one consumer task on ``channel``."""
    all_received = anyio.Event()

    async def consume() -> None:
        for _ in range(count):
            await layer.receive(channel)
        all_received.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.1)  # subscribed (a normal channel subscribes on receive)
        start = time.perf_counter()
        with anyio.fail_after(60):
            for i in range(count):
                await layer.send(channel, {**MESSAGE, "i": i})
            await all_received.wait()
        elapsed = time.perf_counter() - start
    return count / elapsed


async def case_throughput_specific(make: Callable[..., Any]) -> dict[str, float]:
    layer = make(capacity=10_000)
    try:
        return {"value": await _throughput(layer, await layer.new_channel(), 3000)}
    finally:
        await _cleanup(layer)


async def case_throughput_normal(make: Callable[..., Any]) -> dict[str, float]:
    layer = make(capacity=10_000)
    try:
        return {"value": await _throughput(layer, "bench.normal", 3000)}
    finally:
        await _cleanup(layer)


async def _latency(layer: Any, channel: str, samples: int) -> dict[str, float]:
    """One-way latency: a receiver is waiting; the time from calling send to
    the receiver having the message."""
    latencies: list[float] = []
    got = anyio.Event()

    async def receiver() -> None:
        for _ in range(samples):
            message = await layer.receive(channel)
            latencies.append(time.perf_counter() - message["t"])
            got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.sleep(0.1)
        for _ in range(samples):
            got = anyio.Event()
            await layer.send(channel, {**MESSAGE, "t": time.perf_counter()})
            with anyio.fail_after(10):
                await got.wait()
            await anyio.sleep(0.0005)  # let the receiver go back to waiting
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2] * 1e6,
        "p99": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


async def case_latency_specific(make: Callable[..., Any]) -> dict[str, float]:
    layer = make()
    try:
        return await _latency(layer, await layer.new_channel(), 500)
    finally:
        await _cleanup(layer)


async def case_latency_normal(make: Callable[..., Any]) -> dict[str, float]:
    layer = make()
    try:
        return await _latency(layer, "bench.latency", 500)
    finally:
        await _cleanup(layer)


async def case_group_1k(make: Callable[..., Any]) -> dict[str, float]:
    """group_send to 1,000 process-specific members of one process (as 1,000
    WebSocket consumers of one worker), and the time until all have it."""
    layer = make()
    try:
        names = [await layer.new_channel() for _ in range(1000)]
        for name in names:
            await layer.group_add("bench.group", name)
        done = 0
        all_done = anyio.Event()

        async def member(name: str) -> None:
            nonlocal done
            await layer.receive(name)
            done += 1
            if done == len(names):
                all_done.set()

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(member, name)
            await anyio.sleep(0.2)  # every member is waiting
            gc.collect()
            start = time.perf_counter()
            await layer.group_send("bench.group", MESSAGE)
            call_ms = (time.perf_counter() - start) * 1e3
            with anyio.fail_after(30):
                await all_done.wait()
            total_ms = (time.perf_counter() - start) * 1e3
        return {"call": call_ms, "delivered": total_ms}
    finally:
        await _cleanup(layer)


CASES: list[tuple[str, str, str, bool, Case]] = [
    # (label, figure key, unit, higher is better, case)
    ("send/receive throughput, specific channel", "value", "msg/s", True, case_throughput_specific),
    ("send/receive throughput, normal channel", "value", "msg/s", True, case_throughput_normal),
    ("latency p50, specific channel", "p50", "µs", False, case_latency_specific),
    ("latency p99, specific channel", "p99", "µs", False, case_latency_specific),
    ("latency p50, normal channel", "p50", "µs", False, case_latency_normal),
    ("latency p99, normal channel", "p99", "µs", False, case_latency_normal),
    ("group_send to 1,000 members: the call", "call", "ms", False, case_group_1k),
    ("group_send to 1,000 members: all delivered", "delivered", "ms", False, case_group_1k),
]  # fmt: skip


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    digits = 1 if med < 100 else 0
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--only", choices=list(IMPLS), action="append", help="limit the run")
    args = parser.parse_args()
    impls = args.only or list(IMPLS)

    # One run per (case function, impl, round); a function feeding several rows runs once.
    functions = list(dict.fromkeys(case for *_, case in CASES))
    results: dict[tuple[Any, str], list[dict[str, float]]] = {
        (f, i): [] for f in functions for i in impls
    }
    for rnd in range(args.rounds):
        order = impls if rnd % 2 == 0 else list(reversed(impls))
        for function in functions:
            for impl in order:
                cls, backend, options = IMPLS[impl]
                prefix = f"bench{uuid.uuid4().hex[:8]}"

                def make(_cls: Any = cls, _prefix: str = prefix, **kwargs: Any) -> Any:
                    if _cls is TheirLayer:
                        kwargs = {}  # it has no capacity: its queues are unbounded
                    return _cls(hosts=[args.redis], prefix=_prefix, **kwargs)

                gc.collect()
                figures = anyio.run(function, make, backend=backend, backend_options=options)
                results[(function, impl)].append(figures)
                shown = ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
                print(f"round {rnd + 1}: {function.__name__} [{impl}] {shown}", file=sys.stderr)

    import channels_redis

    print(
        f"\nPython {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"channels_redis {channels_redis.__version__}; Redis at {args.redis}; "
        f"{args.rounds} rounds; median (min\N{EN DASH}max).\n"
    )
    print(f"| case | unit | {' | '.join(impls)} | {CONTENDER} / {BASELINE} |")
    print("| --- | --- | " + " | ".join("---" for _ in impls) + " | --- |")
    for label, key, unit, higher, function in CASES:
        cells = []
        medians = {}
        for impl in impls:
            values = [figures[key] for figures in results[(function, impl)]]
            cells.append(fmt(values))
            medians[impl] = statistics.median(values) if values else None
        ours, theirs = medians.get(CONTENDER), medians.get(BASELINE)
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "—"
        better = "higher" if higher else "lower"
        print(f"| {label} ({better} is better) | {unit} | {' | '.join(cells)} | {ratio} |")


if __name__ == "__main__":
    main()
