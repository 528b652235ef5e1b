"""Benchmark: channels_runtime's InMemoryChannelLayer against Django Channels'.

Run from the repository root::

    python bench/bench_inmemory.py            # 5 rounds
    python bench/bench_inmemory.py --rounds 3 --skip-channels-10k

Both layers run in this one process on asyncio (Channels' layer only runs on
asyncio), alternating implementations round by round so that drift in machine
load hits both alike. Each case reports the median over rounds with the min-max
range, and ours/theirs (below 1 means ours is faster or smaller).

Channels drains a 10,000-member group in tens of seconds (every receive scans
every channel), so that case runs it only ``--channels-10k-rounds`` times (1 by
default). Memory is measured in a fresh subprocess per implementation so each
RSS reading holds that layer's allocations alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="bench",
        INSTALLED_APPS=[],
        CHANNEL_LAYERS={"default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"}},
    )
    import django

    django.setup()

from channels.layers import InMemoryChannelLayer as TheirLayer

from channels_runtime.layers.inmemory import InMemoryChannelLayer as OurLayer

IMPLS: dict[str, Callable[..., Any]] = {"ours": OurLayer, "channels": TheirLayer}
MESSAGE = {"type": "chat.message", "text": "hello, world", "user": 42, "tags": ["a", "b"]}

Case = Callable[[Callable[..., Any]], Awaitable[float]]


# -- timed cases: each returns its figure (lower is better) ------------------


async def case_roundtrip(make: Callable[..., Any], n: int = 20_000) -> float:
    """µs per sequential send + receive on one channel."""
    layer = make()
    start = time.perf_counter()
    for _ in range(n):
        await layer.send("bench.rt", MESSAGE)
        await layer.receive("bench.rt")
    return (time.perf_counter() - start) / n * 1e6


async def case_pingpong(make: Callable[..., Any], n: int = 10_000) -> float:
    """µs per exchange between two tasks (each waits for the other's message)."""
    layer = make()

    async def echo() -> None:
        for _ in range(n):
            message = await layer.receive("bench.ping")
            await layer.send("bench.pong", message)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(echo)
        for _ in range(n):
            await layer.send("bench.ping", MESSAGE)
            await layer.receive("bench.pong")
    return (time.perf_counter() - start) / n * 1e6


async def case_pipelined(make: Callable[..., Any], n: int = 10_000) -> float:
    """ms to send 10k messages to one channel, then receive all 10k."""
    layer = make(capacity=n)
    start = time.perf_counter()
    for _ in range(n):
        await layer.send("bench.pipe", MESSAGE)
    for _ in range(n):
        await layer.receive("bench.pipe")
    return (time.perf_counter() - start) * 1e3


async def _group_fanout(make: Callable[..., Any], members: int) -> float:
    layer = make()
    names = [await layer.new_channel() for _ in range(members)]
    for name in names:
        await layer.group_add("bench", name)
    gc.collect()
    start = time.perf_counter()
    await layer.group_send("bench", MESSAGE)
    for name in names:
        await layer.receive(name)
    return (time.perf_counter() - start) * 1e3


async def case_group_1k(make: Callable[..., Any]) -> float:
    """ms for group_send to 1,000 members, then one receive per member."""
    return await _group_fanout(make, 1_000)


async def case_group_10k(make: Callable[..., Any]) -> float:
    """ms for group_send to 10,000 members, then one receive per member."""
    return await _group_fanout(make, 10_000)


async def case_churn(make: Callable[..., Any], n: int = 10_000) -> float:
    """µs per new_channel + group_add + group_discard."""
    layer = make()
    start = time.perf_counter()
    for _ in range(n):
        name = await layer.new_channel()
        await layer.group_add("bench.churn", name)
        await layer.group_discard("bench.churn", name)
    return (time.perf_counter() - start) / n * 1e6


CASES: list[tuple[str, str, Case]] = [
    ("send+receive round trip (sequential)", "µs/op", case_roundtrip),
    ("ping-pong between two tasks", "µs/exchange", case_pingpong),
    ("pipelined: send 10k, then receive 10k", "ms", case_pipelined),
    ("group_send to 1k members + drain", "ms", case_group_1k),
    ("group_send to 10k members + drain", "ms", case_group_10k),
    ("new_channel + group_add + group_discard", "µs/op", case_churn),
]


# -- memory, in a child process per implementation ---------------------------


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(impl: str, channels: int, expiry: float, traced: bool) -> None:
    """Send one message to each of ``channels`` fresh channels, never receive,
    then wait out the expiry and let one operation trigger clean-up.

    Reports RSS (VmRSS, and VmHWM for the peak) in KiB or, when ``traced``, the
    bytes of live Python allocations per tracemalloc: RSS is what the machine
    pays, tracemalloc tells whether the layer still holds the objects or the
    allocator merely kept the pages.
    """
    import tracemalloc

    layer = IMPLS[impl](expiry=expiry)

    def now_kib(field: str) -> float:
        if traced:
            return tracemalloc.get_traced_memory()[0] / 1024
        return _proc_status_kib(field)

    async def run() -> dict[str, float]:
        # Warm up the code paths so their one-off allocations are in the baseline.
        await layer.send("warm.up", MESSAGE)
        await layer.receive("warm.up")
        gc.collect()
        if traced:
            tracemalloc.start()
        base = now_kib("VmRSS")
        for _ in range(channels):
            await layer.send(await layer.new_channel(), MESSAGE)
        gc.collect()
        peak = now_kib("VmHWM")
        await anyio.sleep(expiry + 0.2)
        # Both layers clean up on a receive (Channels scans everything then).
        await layer.send("after.expiry", MESSAGE)
        await layer.receive("after.expiry")
        gc.collect()
        after = now_kib("VmRSS")
        return {"base": base, "peak": peak, "after": after}

    print(json.dumps(anyio.run(run, backend="asyncio")))


def measure_memory(channels: int, expiry: float, traced: bool) -> dict[str, dict[str, float]]:
    out = {}
    for impl in IMPLS:
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            impl,
            "--mem-channels",
            str(channels),
            "--mem-expiry",
            str(expiry),
        ]
        if traced:
            command.append("--traced")
        proc = subprocess.run(command, check=True, capture_output=True, text=True)
        out[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# -- driver ----------------------------------------------------------------------


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.2f} (1 run)"
    return f"{med:,.2f} ({min(values):,.2f}\N{EN DASH}{max(values):,.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--channels-10k-rounds",
        type=int,
        default=1,
        help="rounds of Channels' 10k-member drain (slow: ~40 s each)",
    )
    parser.add_argument("--skip-channels-10k", action="store_true")
    parser.add_argument("--mem-channels", type=int, default=100_000)
    parser.add_argument("--mem-expiry", type=float, default=2.0)
    parser.add_argument("--memory-child", choices=list(IMPLS))
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        memory_child(args.memory_child, args.mem_channels, args.mem_expiry, args.traced)
        return

    results: dict[str, dict[str, list[float]]] = {
        name: {impl: [] for impl in IMPLS} for name, _, _ in CASES
    }
    for rnd in range(args.rounds):
        order = list(IMPLS) if rnd % 2 == 0 else list(reversed(IMPLS))
        for name, _, case in CASES:
            for impl in order:
                if (
                    case is case_group_10k
                    and impl == "channels"
                    and (args.skip_channels_10k or rnd >= args.channels_10k_rounds)
                ):
                    continue
                gc.collect()
                value = anyio.run(case, IMPLS[impl], backend="asyncio")
                results[name][impl].append(value)
                print(f"round {rnd + 1}: {name} [{impl}] {value:,.2f}", file=sys.stderr)

    rss = measure_memory(args.mem_channels, args.mem_expiry, traced=False)
    traced = measure_memory(args.mem_channels, args.mem_expiry, traced=True)

    slow_rounds = 0 if args.skip_channels_10k else min(args.rounds, args.channels_10k_rounds)
    print(
        f"\nPython {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs; asyncio; {args.rounds} rounds "
        f"(Channels' 10k-member drain: {slow_rounds}).\n"
    )
    print("| case | unit | channels_runtime | Channels 4.2 | ours/theirs |")
    print("| --- | --- | --- | --- | --- |")
    for name, unit, _ in CASES:
        ours, theirs = results[name]["ours"], results[name]["channels"]
        ratio = (
            f"{statistics.median(ours) / statistics.median(theirs):.4f}" if ours and theirs else "—"
        )
        print(f"| {name} | {unit} | {fmt(ours)} | {fmt(theirs)} | {ratio} |")
    n = f"{args.mem_channels // 1000}k abandoned channels"
    rows = (
        (f"peak RSS growth, {n}", rss, "peak"),
        (f"RSS growth after expiry, {n}", rss, "after"),
        (f"live Python allocations at peak (tracemalloc), {n}", traced, "peak"),
        (f"live Python allocations after expiry (tracemalloc), {n}", traced, "after"),
    )
    for label, memory, key in rows:
        mib = {i: (memory[i][key] - memory[i]["base"]) / 1024 for i in IMPLS}
        ratio = f"{mib['ours'] / mib['channels']:.3f}" if mib["channels"] > 0 else "—"
        print(f"| {label} | MiB | {mib['ours']:,.1f} | {mib['channels']:,.1f} | {ratio} |")


if __name__ == "__main__":
    main()
