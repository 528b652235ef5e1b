"""Presence cost: join and leave per member, and one member list / count, for
groups of 10, 1,000 and 10,000 members, on the in-memory layer and Redis.

    python bench/bench_presence.py [--redis redis://127.0.0.1:6379/0] [--sizes 10,1000,10000]

Joins and leaves are timed one after another (each is one round trip on Redis,
plus its ``group_send`` of the event); members/count are the best of 5.
Members join with ``events=False``, so the figures are presence's own cost
(the event fan-out is a ``group_send``, measured by the layer benchmarks).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import anyio

from channels_runtime import presence
from channels_runtime.layers.inmemory import InMemoryChannelLayer
from channels_runtime.layers.redis import RedisChannelLayer


async def measure(layer: Any, size: int) -> dict[str, float]:
    tracker = presence.presence_for(layer)
    group = "bench"
    async with tracker.hosting():
        channels = [f"bench.x!{i:06d}" for i in range(size)]
        start = time.perf_counter()
        for ch in channels:
            await tracker.join(group, ch, {"name": ch[-6:]}, user=ch[-3:], events=False)
        join = (time.perf_counter() - start) / size
        best_members = best_count = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            found = await tracker.members(group)
            best_members = min(best_members, time.perf_counter() - start)
            start = time.perf_counter()
            n = await tracker.count(group)
            best_count = min(best_count, time.perf_counter() - start)
        assert len(found) == n == size
        start = time.perf_counter()
        for ch in channels:
            await tracker.leave(group, ch)
        leave = (time.perf_counter() - start) / size
        assert await tracker.count(group) == 0
    await tracker.close()
    return {"join": join, "leave": leave, "members": best_members, "count": best_count}


async def main(redis_url: str, sizes: list[int]) -> None:
    print(
        f"{'layer':10} {'members':>8} {'join µs':>9} {'leave µs':>9} {'list ms':>9} {'count ms':>9}"
    )
    for kind in ("inmemory", "redis"):
        for size in sizes:
            if kind == "inmemory":
                layer: Any = InMemoryChannelLayer()
            else:
                layer = RedisChannelLayer(hosts=[redis_url], prefix="b" + uuid.uuid4().hex[:8])
            r = await measure(layer, size)
            await layer.close()
            print(
                f"{kind:10} {size:8d} {r['join'] * 1e6:9.1f} {r['leave'] * 1e6:9.1f}"
                f" {r['members'] * 1e3:9.3f} {r['count'] * 1e3:9.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sizes", default="10,1000,10000")
    args = parser.parse_args()
    anyio.run(main, args.redis, [int(s) for s in args.sizes.split(",")])
