"""Benchmark: the Redis layers under concurrency, against channels_redis and a raw-client ceiling.

Run from the repository root::

    python bench/bench_redis_concurrency.py               # 5 rounds of 5 s, about 4 minutes
    python bench/bench_redis_concurrency.py --rounds 1 --seconds 1 --consumers 20

200 consumers (``--consumers``) in this one process, each with its own
process-specific channel (``new_channel()``, as a WebSocket consumer has),
exchange messages in pairs through the layer: each sends one message to its
partner, then answers every message it receives with one to its partner, so
``--consumers`` messages are in flight all the time. After ``--warmup``
seconds, messages received are counted for ``--seconds``. The layers:

* ours: ``RedisChannelLayer`` on asyncio, uvloop and trio, and
  ``RedisPubSubChannelLayer`` on asyncio and trio;
* channels_redis (4.3): ``RedisChannelLayer`` and ``RedisPubSubChannelLayer``,
  asyncio only, with ``max_connections`` raised to 1,000 (with redis-py's
  default of 100, the 101st send in flight raises ``MaxConnectionsError``).

The ceilings use one raw socket (no event loop, replies checked byte for byte
against what they must be, so the client costs almost nothing) pipelining the
commands our layers issue for this traffic, ``--consumers`` messages per
batch: for ``RedisChannelLayer``, ``EVALSHA`` of its send script onto the
process list, then ``LPOP <list> 100`` until the batch is taken back, the
commands ``INFO commandstats`` shows it issuing (the blocking ``BLPOP`` it uses
when the list is empty is not needed: a pipeline never finds it empty); for the
Pub/Sub layer, ``PUBLISH`` on one connection, read back from a second one
subscribed to the topic. ``redis-benchmark`` cannot do either: it repeats one
command, and neither pattern is one command.

By default the script starts its own ``redis-server`` on a free port, pinned to
CPU 1, and pins itself to CPU 0 (``--redis URL`` uses another server instead,
unpinned). Implementations alternate round by round, in an order reversed
every other round. Tables (markdown on stdout, progress on stderr): messages
per second, median over rounds (min-max); this process's and Redis's CPU time
per message; and the Redis commands issued per message, from ``INFO
commandstats``, with Redis's own time in each.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent / "e2e"))

from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="bench", INSTALLED_APPS=[])
    import django

    django.setup()

from runner import recv_exactly, redis_info, redis_server, resp

from channels_runtime.layers.redis import RedisChannelLayer as OurCore
from channels_runtime.layers.redis import RedisPubSubChannelLayer as OurPubSub
from channels_runtime.layers.redis import scripts

try:
    from channels_redis.core import RedisChannelLayer as TheirCore
    from channels_redis.pubsub import RedisPubSubChannelLayer as TheirPubSub
except ImportError:  # pragma: no cover - the script says how to get it
    sys.exit("channels_redis is not installed: pip install -e .[bench]")

T = TypeVar("T")

MESSAGE = {"type": "chat.message", "text": "hello, world", "user": 42, "tags": ["a", "b"]}
#: Per-channel capacity for every layer: far above the one message in flight per
#: channel, so that no send meets ChannelFull (ours counts a process's specific
#: channels against one list, which holds up to --consumers messages).
CAPACITY = 1000
#: channels_redis's connection pool (redis-py's) allows 100 connections in use by
#: default and raises ``MaxConnectionsError`` for the 101st instead of waiting;
#: with 200 consumers sending at once it fails at the first round, so it gets
#: this many (ours waits for a connection past its ``max_connections``).
THEIR_MAX_CONNECTIONS = 1000

#: key -> (label, layer class, anyio backend, backend options)
IMPLS: dict[str, tuple[str, Any, str, dict[str, Any]]] = {
    "ours-asyncio": ("ours RedisChannelLayer, asyncio", OurCore, "asyncio", {}),
    "ours-uvloop": ("ours RedisChannelLayer, uvloop", OurCore, "asyncio", {"use_uvloop": True}),
    "ours-trio": ("ours RedisChannelLayer, trio", OurCore, "trio", {}),
    "ours-pubsub-asyncio": ("ours RedisPubSubChannelLayer, asyncio", OurPubSub, "asyncio", {}),
    "ours-pubsub-trio": ("ours RedisPubSubChannelLayer, trio", OurPubSub, "trio", {}),
    "channels_redis": ("channels_redis RedisChannelLayer, asyncio", TheirCore, "asyncio", {}),
    "channels_redis-pubsub": (
        "channels_redis RedisPubSubChannelLayer, asyncio",
        TheirPubSub,
        "asyncio",
        {},
    ),
}
CEILINGS = {
    "ceiling": "raw client, pipelined: EVALSHA send script + LPOP 100 (RedisChannelLayer's)",
    "ceiling-pubsub": "raw client, pipelined: PUBLISH + a subscribed reader (Pub/Sub layer's)",
}
#: (ours, theirs, ceiling) compared in the targets table.
PAIRS = [
    ("ours-asyncio", "channels_redis", "ceiling"),
    ("ours-trio", "channels_redis", "ceiling"),
    ("ours-pubsub-asyncio", "channels_redis-pubsub", "ceiling-pubsub"),
    ("ours-pubsub-trio", "channels_redis-pubsub", "ceiling-pubsub"),
]


# -- Redis's own figures ---------------------------------------------------------------


def redis_cpu(address: tuple[str, int]) -> float:
    cpu = redis_info(address, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def commandstats(address: tuple[str, int]) -> dict[str, tuple[int, int]]:
    """Per command: (calls, microseconds spent in it) so far."""
    out = {}
    for key, value in redis_info(address, "commandstats").items():
        if key.startswith("cmdstat_"):
            fields = dict(item.split("=") for item in value.split(","))
            out[key.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
    return out


class Window:
    """CPU of this process and of Redis, and Redis's command counts, over a window."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.redis = redis_cpu(address)
        self.stats = commandstats(address)

    def close(self, messages: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        redis = redis_cpu(self.address) - self.redis
        after = commandstats(self.address)
        commands = {}
        for name, (calls, usec) in after.items():
            calls0, usec0 = self.stats.get(name, (0, 0))
            if name != "info" and calls > calls0:
                commands[name] = (calls - calls0, usec - usec0)
        return {
            "per_second": messages / wall,
            "messages": messages,
            "seconds": wall,
            "client_cpu_us": cpu / messages * 1e6,
            "client_cpu_share": cpu / wall,
            "redis_cpu_us": redis / messages * 1e6,
            "redis_cpu_share": redis / wall,
            "commands": commands,
        }


# -- the layers ----------------------------------------------------------------------------


async def ping_pong(
    make: Callable[[], Any],
    consumers: int,
    warmup: float,
    measure: Callable[[Callable[[], int]], Awaitable[T]],
) -> T:
    """Pairs of consumers ping-pong messages through one layer made by ``make``.

    After ``warmup`` seconds, ``measure(received)`` times its own window
    (``received()`` is the count of messages so far) and its result is
    returned; then the consumers stop and the layer is flushed and closed.
    """
    layer = make()
    received = 0
    try:
        names = [await layer.new_channel() for _ in range(consumers)]

        async def consumer(me: int) -> None:
            nonlocal received
            mine, partner = names[me], names[me ^ 1]
            await layer.send(partner, {**MESSAGE, "n": 0})
            while True:
                message = await layer.receive(mine)
                received += 1
                await layer.send(partner, {**MESSAGE, "n": message["n"] + 1})

        async with anyio.create_task_group() as tg:
            for me in range(consumers):
                tg.start_soon(consumer, me)
            await anyio.sleep(warmup)
            result = await measure(lambda: received)
            tg.cancel_scope.cancel()
        return result
    finally:
        await close_layer(layer)


async def close_layer(layer: Any) -> None:
    """Flush and close ``layer`` (each bounded), even after a failed run."""
    with anyio.CancelScope(shield=True):
        try:
            with anyio.move_on_after(10):
                await layer.flush()
        except Exception:  # a failed run's layer may not flush; close it anyway
            pass
        close = getattr(layer, "close", None)
        if close is not None:
            with anyio.move_on_after(10):
                await close()


async def exchange(
    make: Callable[[], Any], consumers: int, warmup: float, seconds: float, address: tuple[str, int]
) -> dict[str, Any]:
    """Messages through one layer in ``seconds``, with Redis's counts for the window."""

    async def measure(received: Callable[[], int]) -> dict[str, Any]:
        window, start = Window(address), received()
        await anyio.sleep(seconds)
        return window.close(received() - start)

    return await ping_pong(make, consumers, warmup, measure)


# -- the ceilings -------------------------------------------------------------------------------


def ceiling_core(
    address: tuple[str, int], prefix: str, batch: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """RedisChannelLayer's commands for this traffic, pipelined from one socket.

    Each round of the pipeline: ``batch`` sends of the layer's ``SEND`` script
    onto one process list (the element built as the layer builds it: deadline,
    nonce, channel, msgpack payload), then ``LPOP <list> 100`` (the layer's
    ``receive_batch``) until the batch is back out. The replies of every round
    are the same bytes, so they are compared, not parsed.
    """
    import msgpack

    pop = OurCore.receive_batch
    key = f"{prefix}:pr:ceiling".encode()
    channel = b"specific.ceiling!abcdefghijkl"
    deadline_ms = int(time.time() * 1000) + 3_600_000
    element = b"%d:%x:%s|%s" % (deadline_ms, 0x1234ABCD, channel, msgpack.packb(MESSAGE))
    send = resp("EVALSHA", scripts.SEND.sha, 1, key, CAPACITY, 60_000, element, "0")
    request = send * batch
    reply = b":1\r\n" * batch
    left = batch
    while left:
        n = min(pop, left)
        request += resp("LPOP", key, pop)
        reply += b"*%d\r\n" % n + (b"$%d\r\n%s\r\n" % (len(element), element)) * n
        left -= n
    with socket.create_connection(address) as sock:
        sock.sendall(resp("SCRIPT", "LOAD", scripts.SEND.source))
        recv_exactly(sock, len(b"$40\r\n") + 40 + 2)

        def one_round() -> None:
            sock.sendall(request)
            got = recv_exactly(sock, len(reply))
            if got != reply:
                raise RuntimeError(f"unexpected reply in the ceiling run: {got[:200]!r}")

        return _timed(one_round, batch, address, warmup, seconds)


def ceiling_pubsub(
    address: tuple[str, int], prefix: str, batch: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """The Pub/Sub layer's commands: ``batch`` pipelined ``PUBLISH`` on one
    socket, the ``batch`` pushes read back from a second socket subscribed to the
    topic (what the layer's reader does)."""
    import msgpack

    topic = f"{prefix}:pr:ceiling".encode()
    payload = b"specific.ceiling!abcdefghijkl|" + msgpack.packb(MESSAGE)
    request = resp("PUBLISH", topic, payload) * batch
    reply = b":1\r\n" * batch
    push = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(topic), topic, len(payload), payload,
    )  # fmt: skip
    pushes = push * batch
    with socket.create_connection(address) as pub, socket.create_connection(address) as sub:
        subscribe = resp("SUBSCRIBE", topic)
        sub.sendall(subscribe)
        confirm = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(topic), topic)
        recv_exactly(sub, len(confirm))

        def one_round() -> None:
            pub.sendall(request)
            got = recv_exactly(pub, len(reply))
            if got != reply:
                raise RuntimeError(f"unexpected PUBLISH reply: {got[:200]!r}")
            got = recv_exactly(sub, len(pushes))
            if got != pushes:
                raise RuntimeError(f"unexpected push in the ceiling run: {got[:200]!r}")

        return _timed(one_round, batch, address, warmup, seconds)


def _timed(
    one_round: Callable[[], None],
    batch: int,
    address: tuple[str, int],
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        one_round()
    window = Window(address)
    rounds = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        one_round()
        rounds += 1
    return window.close(rounds * batch)


# -- output -------------------------------------------------------------------------------------


def fmt(values: list[float], digits: int = 0) -> str:
    if not values:
        return "—"
    text = f"{statistics.median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f})"
    return text


def med(results: dict[str, list[dict[str, Any]]], key: str, name: str) -> float:
    values = [r[name] for r in results.get(key, [])]
    return statistics.median(values) if values else float("nan")


def labels(key: str) -> str:
    return CEILINGS[key] if key in CEILINGS else IMPLS[key][0]


def tables(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    keys = [k for k in [*IMPLS, *CEILINGS] if results.get(k)]
    out = [
        f"**{args.consumers} consumers in one process, in pairs, {args.consumers} messages in "
        f"flight; {args.seconds:g} s measured after {args.warmup:g} s, {args.rounds} rounds**",
        "",
        "| layer | messages/s | ÷ channels_redis (same kind) | ÷ ceiling (same kind) "
        "| client CPU, µs/msg | client CPU use | Redis CPU, µs/msg | Redis CPU use |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in keys:
        runs = results[key]
        pubsub = "pubsub" in key
        theirs = "channels_redis-pubsub" if pubsub else "channels_redis"
        ceiling = "ceiling-pubsub" if pubsub else "ceiling"
        rate = med(results, key, "per_second")
        vs_theirs = rate / med(results, theirs, "per_second")
        vs_ceiling = rate / med(results, ceiling, "per_second")
        out.append(
            f"| {labels(key)} | {fmt([r['per_second'] for r in runs])} "
            f"| {vs_theirs:.2f} | {vs_ceiling:.2f} "
            f"| {fmt([r['client_cpu_us'] for r in runs], 1)} "
            f"| {fmt([r['client_cpu_share'] * 100 for r in runs])} % "
            f"| {fmt([r['redis_cpu_us'] for r in runs], 1)} "
            f"| {fmt([r['redis_cpu_share'] * 100 for r in runs])} % |"
        )
    out += [
        "",
        "**Redis commands per message** (from `INFO commandstats` over the measured window, "
        "median round: calls per message, and Redis's own µs per message in that command)",
        "",
        "| layer | commands |",
        "| --- | --- |",
    ]
    for key in keys:
        runs = sorted(results[key], key=lambda r: r["per_second"])
        run = runs[len(runs) // 2]
        parts = [
            f"{name} {calls / run['messages']:.2f} ({usec / run['messages']:.1f} µs)"
            for name, (calls, usec) in sorted(run["commands"].items(), key=lambda kv: -kv[1][1])
            if calls / run["messages"] >= 0.005
        ]
        out.append(f"| {labels(key)} | {', '.join(parts)} |")
    out += ["", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for ours, theirs, ceiling in PAIRS:
        rate = med(results, ours, "per_second")
        for name, base, op, goal in (
            (f"{ours} ÷ {theirs}", med(results, theirs, "per_second"), ">=", 3.0),
            (f"{ours} ÷ {ceiling}", med(results, ceiling, "per_second"), ">=", 0.5),
        ):
            value = rate / base
            if value != value:
                out.append(f"| messages/s, {name} | — | {op} {goal} | not run |")
            else:
                out.append(
                    f"| messages/s, {name} | {value:.2f} | {op} {goal} "
                    f"| {'yes' if value >= goal else 'no'} |"
                )
    return out


def machine(address: tuple[str, int]) -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = redis_info(address, "server")
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("anyio", "trio", "uvloop", "msgpack", "channels", "channels_redis", "redis")
    )
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, CPython "
        f"{platform.python_version()}, Redis {server.get('redis_version', '?')}, {versions}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured, before")
    parser.add_argument("--consumers", type=int, default=200, help="an even number")
    parser.add_argument("--only", help="comma-separated keys: " + ", ".join([*IMPLS, *CEILINGS]))
    parser.add_argument("--redis", help="use this Redis (default: start one, pinned to CPU 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin this process to CPU 0")
    args = parser.parse_args()
    if args.consumers < 2 or args.consumers % 2:
        parser.error("--consumers must be an even number, 2 or more")
    chosen = args.only.split(",") if args.only else [*IMPLS, *CEILINGS]
    unknown = set(chosen) - set(IMPLS) - set(CEILINGS)
    if unknown:
        parser.error(f"unknown keys: {', '.join(sorted(unknown))}")

    with ExitStack() as stack:
        url = args.redis
        if url is None:
            url, _ = stack.enter_context(redis_server("1"))
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        if not args.no_pin and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        results: dict[str, list[dict[str, Any]]] = {}
        for rnd in range(args.rounds):
            order = chosen if rnd % 2 == 0 else list(reversed(chosen))
            for key in order:
                prefix = f"bench{uuid.uuid4().hex[:8]}"
                if key == "ceiling":
                    result = ceiling_core(
                        address, prefix, args.consumers, args.warmup, args.seconds
                    )
                elif key == "ceiling-pubsub":
                    result = ceiling_pubsub(
                        address, prefix, args.consumers, args.warmup, args.seconds
                    )
                else:
                    _, cls, backend, options = IMPLS[key]

                    host: Any = url
                    if key.startswith("channels_redis"):
                        # redis-py's pool raises MaxConnectionsError past 100
                        # connections in use, and every send in flight holds one.
                        host = {"address": url, "max_connections": THEIR_MAX_CONNECTIONS}

                    def make(_cls: Any = cls, _prefix: str = prefix, _host: Any = host) -> Any:
                        return _cls(hosts=[_host], prefix=_prefix, capacity=CAPACITY)

                    result = anyio.run(
                        exchange, make, args.consumers, args.warmup, args.seconds, address,
                        backend=backend, backend_options=options,
                    )  # fmt: skip
                results.setdefault(key, []).append(result)
                print(
                    f"round {rnd + 1}: [{key}] {result['per_second']:,.0f} msg/s, client "
                    f"{result['client_cpu_us']:.1f} µs/msg, "
                    f"Redis {result['redis_cpu_us']:.1f} µs/msg",
                    file=sys.stderr,
                )
        took = time.monotonic() - started
        pinned = "this process pinned to CPU 0, " if not args.no_pin else ""
        where = "a private redis-server pinned to CPU 1" if args.redis is None else url
        out = [
            f"Machine: {machine(address)}.",
            f"Redis: {where}; {pinned}median over rounds (min\N{EN DASH}max). Took {took:.0f} s; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
            "",
            *tables(results, args),
        ]
        print("\n".join(out))


if __name__ == "__main__":
    main()
