"""What one command's round trip costs the Redis layers' client, against a plain asyncio client.

Run from the repository root::

    python bench/redis_round_trip.py                 # 3 rounds, N = 1 and 200 senders
    python bench/redis_round_trip.py --senders 1,10,200 --seconds 2

A look inside ``bench_redis_concurrency.py``: there our layers are bound by this
process's CPU, far below the pipelined ceiling. This script separates the two
causes. N tasks send as fast as they can, each to its own normal channel, and
nothing receives, so every message is exactly one command and its reply:

* ``ours``: ``RedisChannelLayer.send`` (``EVALSHA`` of its send script) and
  ``RedisPubSubChannelLayer.send`` (``PUBLISH``), asyncio;
* ``raw``: the same command with the same arguments from a plain asyncio
  client, one connection per task (``asyncio.open_connection``, ``write`` then
  ``readline``), no pipelining either.

The gap between the two rows of a kind is what the layer's machinery costs per
command; the gap between ``raw`` and ``bench_redis_concurrency.py``'s ceiling is
what pipelining would add. Reported per row: sends per second, this process's
CPU per send, and Redis's. This process runs on CPU 0 and a private
``redis-server`` on CPU 1; the rows alternate round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent / "e2e"))

from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="bench", INSTALLED_APPS=[])
    import django

    django.setup()

import msgpack
from runner import redis_info, redis_server, resp

from channels_runtime.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer, scripts

MESSAGE = {"type": "chat.message", "text": "hello, world", "user": 42, "tags": ["a", "b"]}
#: Nothing is received: let the lists grow for the run (a few MB).
CAPACITY = 10**8


def redis_cpu(address: tuple[str, int]) -> float:
    cpu = redis_info(address, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def measure(
    start: Callable[[int, list[int]], Awaitable[Any]],
    senders: int,
    warmup: float,
    seconds: float,
    address: tuple[str, int],
) -> dict[str, float]:
    """Run ``senders`` copies of a sending loop; count sends over ``seconds``."""
    counts = [0]
    stop = await start(senders, counts)
    await anyio.sleep(warmup)
    c0, t0, p0, r0 = counts[0], time.perf_counter(), time.process_time(), redis_cpu(address)
    await anyio.sleep(seconds)
    c1, t1, p1, r1 = counts[0], time.perf_counter(), time.process_time(), redis_cpu(address)
    await stop()
    sent = c1 - c0
    return {
        "per_second": sent / (t1 - t0),
        "client_us": (p1 - p0) / sent * 1e6,
        "redis_us": (r1 - r0) / sent * 1e6,
    }


def ours(layer_class: Any, url: str, prefix: str) -> Callable[..., Awaitable[Any]]:
    async def start(senders: int, counts: list[int]) -> Callable[[], Awaitable[None]]:
        layer = layer_class(hosts=[url], prefix=prefix, capacity=CAPACITY)
        tasks = []

        async def loop(i: int) -> None:
            channel = f"rt.ch{i}"
            while True:
                await layer.send(channel, MESSAGE)
                counts[0] += 1

        for i in range(senders):
            tasks.append(asyncio.ensure_future(loop(i)))

        async def stop() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await layer.flush()
            await layer.close()

        return stop

    return start


def raw(kind: str, address: tuple[str, int], prefix: str) -> Callable[..., Awaitable[Any]]:
    payload = msgpack.packb(MESSAGE)

    async def start(senders: int, counts: list[int]) -> Callable[[], Awaitable[None]]:
        conns = [await asyncio.open_connection(*address) for _ in range(senders)]
        reader, writer = conns[0]
        writer.write(resp("SCRIPT", "LOAD", scripts.SEND.source))
        await reader.readline()
        await reader.readline()

        def command(i: int) -> bytes:
            if kind == "publish":
                return resp("PUBLISH", f"{prefix}:ch:rt.ch{i}", payload)
            # As the layer builds a send: deadline and nonce, then the payload.
            element = b"%d:%x:%s" % (int(time.time() * 1000) + 3_600_000, i, payload)
            key = f"{prefix}:ch:rt.ch{i}"
            return resp("EVALSHA", scripts.SEND.sha, 1, key, CAPACITY, 60_000, element, "0")

        async def loop(i: int) -> None:
            reader, writer = conns[i]
            request = command(i)
            while True:
                writer.write(request)
                line = await reader.readline()
                if not line.startswith(b":"):
                    raise RuntimeError(f"unexpected reply {line!r}")
                counts[0] += 1

        tasks = [asyncio.ensure_future(loop(i)) for i in range(senders)]

        async def stop() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            reader, writer = conns[0]
            drop = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end"
            writer.write(resp("EVAL", drop, 0, f"{prefix}:*"))
            await reader.readline()
            for _, writer in conns:
                writer.close()

        return stop

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--senders", default="1,200", help="comma-separated task counts")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    counts = [int(n) for n in args.senders.split(",")]
    rows = [
        ("ours RedisChannelLayer.send (EVALSHA)", "ours-core"),
        ("raw asyncio client, the same EVALSHA", "raw-core"),
        ("ours RedisPubSubChannelLayer.send (PUBLISH)", "ours-pubsub"),
        ("raw asyncio client, the same PUBLISH", "raw-pubsub"),
    ]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with redis_server("1") as (url, _):
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        address = (host, int(port))
        for rnd in range(args.rounds):
            order = rows if rnd % 2 == 0 else list(reversed(rows))
            for n in counts:
                for _, key in order:
                    prefix = f"rt{rnd}{key.replace('-', '')}{n}"
                    if key.startswith("ours"):
                        layer = RedisChannelLayer if key == "ours-core" else RedisPubSubChannelLayer
                        start = ours(layer, url, prefix)
                    else:
                        start = raw("publish" if key == "raw-pubsub" else "send", address, prefix)
                    result = asyncio.run(measure(start, n, args.warmup, args.seconds, address))
                    results.setdefault((key, n), []).append(result)
                    print(
                        f"round {rnd + 1}: [{key}, {n} senders] {result['per_second']:,.0f}/s, "
                        f"client {result['client_us']:.1f} µs, Redis {result['redis_us']:.1f} µs",
                        file=sys.stderr,
                    )

    def fmt(values: list[float], digits: int) -> str:
        text = f"{statistics.median(values):,.{digits}f}"
        if len(values) > 1:
            text += f" ({min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f})"
        return text

    print(
        f"{args.rounds} rounds of {args.seconds:g} s; this process on CPU 0, Redis on CPU 1; "
        f"load average {os.getloadavg()[0]:.1f} at the end; median (min\N{EN DASH}max).\n"
    )
    print("| client | senders | sends/s | client CPU, µs per send | Redis CPU, µs per send |")
    print("| --- | --- | --- | --- | --- |")
    for n in counts:
        for label, key in rows:
            runs = results[(key, n)]
            print(
                f"| {label} | {n} | {fmt([r['per_second'] for r in runs], 0)} "
                f"| {fmt([r['client_us'] for r in runs], 1)} "
                f"| {fmt([r['redis_us'] for r in runs], 1)} |"
            )


if __name__ == "__main__":
    main()
