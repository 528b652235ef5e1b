"""Benchmark: channels_runtime's RedisChannelLayer against channels_redis 4.

Run from the repository root, with a Redis server to talk to::

    pip install channels_redis        # the comparison point
    python bench/bench_redis.py       # 5 rounds, redis://127.0.0.1:6379/0
    python bench/bench_redis.py --rounds 3 --redis redis://host:6379/1

Both layers use the same Redis in this one process. channels_redis only runs
on asyncio, so the comparison (the ratio column) is ours on asyncio against it
on asyncio; ours on uvloop and on trio are shown alongside. Implementations
alternate round by round (and the order flips every round) so that drift in
machine or server load hits all alike. Each figure is the median over rounds
with the min-max range. Every case uses its own key prefix and deletes its keys
afterwards.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
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

from channels_runtime.layers.redis import RedisChannelLayer as OurLayer

try:
    from channels_redis.core import RedisChannelLayer as TheirLayer
except ImportError:  # pragma: no cover - the script says how to get it
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
    await layer.flush()
    close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
    if close is not None:
        await close()


# -- cases: each returns one or more named figures -----------------------------------


async def _throughput(layer: Any, channels: list[str], per_channel: int) -> float:
    """Messages/s with one producer and one consumer task per channel, running
    concurrently (producers retry on ChannelFull, as a polite app would)."""
    from channels_runtime.exceptions import ChannelFull as OurFull

    try:
        from channels.exceptions import ChannelFull as TheirFull
    except ImportError:  # pragma: no cover
        TheirFull = OurFull

    async def produce(channel: str) -> None:
        for i in range(per_channel):
            while True:
                try:
                    await layer.send(channel, {**MESSAGE, "i": i})
                    break
                except (OurFull, TheirFull):
                    await anyio.sleep(0.001)

    async def consume(channel: str) -> None:
        for _ in range(per_channel):
            await layer.receive(channel)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for channel in channels:
            tg.start_soon(consume, channel)
            tg.start_soon(produce, channel)
    return len(channels) * per_channel / (time.perf_counter() - start)


async def case_throughput_normal(make: Callable[..., Any]) -> dict[str, float]:
    layer = make(capacity=1000)
    try:
        return {"value": await _throughput(layer, ["bench.normal"], 3000)}
    finally:
        await _cleanup(layer)


async def case_throughput_specific(make: Callable[..., Any]) -> dict[str, float]:
    layer = make(capacity=1000)
    try:
        return {"value": await _throughput(layer, [await layer.new_channel()], 3000)}
    finally:
        await _cleanup(layer)


async def case_throughput_fan(make: Callable[..., Any]) -> dict[str, float]:
    layer = make(capacity=1000)
    try:
        channels = [await layer.new_channel() for _ in range(20)]
        return {"value": await _throughput(layer, channels, 200)}
    finally:
        await _cleanup(layer)


async def case_group_1k(make: Callable[..., Any]) -> dict[str, float]:
    """group_send to 1,000 process-specific members (one process, as 1,000
    WebSocket consumers of one worker), and the time until all have it."""
    layer = make()
    try:
        names = [await layer.new_channel() for _ in range(1000)]
        for name in names:
            await layer.group_add("bench.group", name)
        done = 0
        all_done = anyio.Event()
        call_ms = 0.0

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
            await all_done.wait()
            total_ms = (time.perf_counter() - start) * 1e3
        return {"call": call_ms, "delivered": total_ms}
    finally:
        await _cleanup(layer)


async def _latency(layer: Any, channel: str, samples: int) -> dict[str, float]:
    """One-way latency: a receiver is waiting; the time from calling send to
    the receiver having the message."""
    latencies: list[float] = []
    got = anyio.Event()

    async def receiver() -> None:
        nonlocal got
        for _ in range(samples):
            message = await layer.receive(channel)
            latencies.append(time.perf_counter() - message["t"])
            got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.sleep(0.05)
        for _ in range(samples):
            got = anyio.Event()
            await layer.send(channel, {**MESSAGE, "t": time.perf_counter()})
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


async def case_memory(make: Callable[..., Any]) -> dict[str, float]:
    """Client: peak Python allocations (tracemalloc) while 1,000 consumers get a
    group message. Redis: used_memory per message queued on a channel."""
    layer = make(capacity=5000)
    try:
        names = [await layer.new_channel() for _ in range(1000)]
        for name in names:
            await layer.group_add("bench.mem", name)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(layer.receive, name)
            await anyio.sleep(0.2)
            await layer.group_send("bench.mem", MESSAGE)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        before = await _used_memory()
        for i in range(2000):
            await layer.send("bench.mem.queue", {**MESSAGE, "i": i})
        after = await _used_memory()
        return {"client_kib": peak / 1024, "redis_bytes": (after - before) / 2000}
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await _cleanup(layer)


async def _used_memory() -> int:
    stream = await anyio.connect_tcp(REDIS_HOST, REDIS_PORT)
    async with stream:
        await stream.send(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
        data = b""
        while b"used_memory:" not in data or not data.endswith(b"\r\n"):
            data += await stream.receive()
    for line in data.decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory in INFO")


CASES: list[tuple[str, str, str, bool, Case]] = [
    # (label, figure key, unit, higher is better, case)
    ("send/receive throughput, normal channel", "value", "msg/s", True, case_throughput_normal),
    ("send/receive throughput, specific channel", "value", "msg/s", True, case_throughput_specific),
    ("throughput, 20 specific channels at once", "value", "msg/s", True, case_throughput_fan),
    ("group_send to 1,000 members: the call", "call", "ms", False, case_group_1k),
    ("group_send to 1,000 members: all delivered", "delivered", "ms", False, case_group_1k),
    ("latency p50, specific channel", "p50", "µs", False, case_latency_specific),
    ("latency p99, specific channel", "p99", "µs", False, case_latency_specific),
    ("latency p50, normal channel", "p50", "µs", False, case_latency_normal),
    ("latency p99, normal channel", "p99", "µs", False, case_latency_normal),
    ("client memory, 1,000-member group_send (peak)", "client_kib", "KiB", False, case_memory),
    ("Redis memory per queued message", "redis_bytes", "bytes", False, case_memory),
]  # fmt: skip

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.0f}"
    return f"{med:,.0f} ({min(values):,.0f}\N{EN DASH}{max(values):,.0f})"


def main() -> None:
    global REDIS_URL, REDIS_HOST, REDIS_PORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL (default %(default)s)")
    parser.add_argument("--only", choices=list(IMPLS), action="append", help="limit the run")
    args = parser.parse_args()
    REDIS_URL = args.redis
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    REDIS_HOST, REDIS_PORT = parts.hostname or "127.0.0.1", parts.port or 6379
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
                    return _cls(hosts=[REDIS_URL], prefix=_prefix, **kwargs)

                gc.collect()
                figures = anyio.run(function, make, backend=backend, backend_options=options)
                results[(function, impl)].append(figures)
                shown = ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
                print(f"round {rnd + 1}: {function.__name__} [{impl}] {shown}", file=sys.stderr)

    import channels_redis

    print(
        f"\nPython {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"channels_redis {channels_redis.__version__}; Redis at {REDIS_URL} (same machine); "
        f"{args.rounds} rounds; median (min\N{EN DASH}max).\n"
    )
    header = " | ".join(impls)
    print(f"| case | unit | {header} | {CONTENDER} / {BASELINE} |")
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
