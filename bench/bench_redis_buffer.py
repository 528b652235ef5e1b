"""Benchmark: how the Redis layers' local receive buffers grow when messages
arrive for process-specific channels nobody receives, ours against channels_redis 4.

Run from the repository root, with a Redis server to talk to::

    python bench/bench_redis_buffer.py          # 100,000 messages per run
    python bench/bench_redis_buffer.py --quick  # 20,000 messages per run
    python bench/bench_redis_buffer.py --redis redis://host:6379/1 --rounds 3
    python bench/bench_redis_buffer.py --scenarios few --messages 20000

Every run is one receiving process, a fresh subprocess, so its buffer counts,
RSS and tracemalloc figures hold that layer alone. It has one live channel,
made by ``new_channel()``, on which a task receives all the time, and abandoned
process-specific channels of the same layer instance, on which nothing ever
receives (consumers that went away while others still send to them). This
script is the sender, as other processes would be: it sends ``--messages``
messages with the same layer class as the receiver's, one in ``--live-every``
to the live channel and the others to the abandoned channels. Both layers pull
all of a process's messages from one Redis key, whichever local channel they
are for, and keep the ones nobody is waiting for in a local buffer; that
buffer is what is measured.

After every tenth of the messages the sender waits until the receiver has
pulled everything from Redis, and the receiver reports buffered messages,
channels holding a buffer, and RSS, the last as growth over a baseline taken
before the first message. After the last message the sender waits out
``--expiry``, sends one more message to the live channel (ours sweeps expired
buffered messages when it reads) and the receiver reports once more. Live
Python allocations (tracemalloc) come from separate runs of
``--traced-messages`` messages: tracing slows channels_redis's receiver two- to
fourfold, and it already takes minutes for 100,000 messages.

Both layers get the same ``capacity`` and ``expiry``; ours also has
``max_buffered`` (its default, 10,000), which channels_redis lacks. Both run
on asyncio (channels_redis runs only there). Implementations alternate (the
order flips every round); figures are medians over rounds with the min-max
range. Every run uses its own key prefix, and its keys are deleted afterwards.
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
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="bench", INSTALLED_APPS=[])
    import django

    django.setup()

from channels_runtime.exceptions import ChannelFull as OurFull
from channels_runtime.layers.redis import RedisChannelLayer as OurLayer

try:
    from channels.exceptions import ChannelFull as TheirFull
    from channels_redis.core import RedisChannelLayer as TheirLayer
except ImportError:  # pragma: no cover - the script says how to get it
    sys.exit("channels_redis is not installed: pip install channels_redis")

MESSAGE = {"type": "chat.message", "text": "hello, world", "user": 42, "tags": ["a", "b"]}
IMPLS: dict[str, Any] = {"ours": OurLayer, "channels_redis": TheirLayer}
OURS, THEIRS = "ours", "channels_redis"

#: scenario -> (title, how abandoned channels are named: "fixed" N or a fresh one per message)
SCENARIOS: dict[str, tuple[str, str, int]] = {
    "spread": ("1,000 abandoned channels", "fixed", 1000),
    "churn": ("a new abandoned channel per message", "fresh", 0),
    "few": ("10 abandoned channels", "fixed", 10),
}


# -- the receiving process --------------------------------------------------------


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def buffer_state(layer: Any) -> dict[str, int]:
    """Messages held in the process for local channels not yet received, the
    channels holding them, and (ours) the expiry heap's entries."""
    if isinstance(layer, OurLayer):
        locals_ = [state.local for state in layer._states.values()]
        return {
            "buffered": sum(local.buffered for local in locals_),
            "entries": sum(len(local.buffers) for local in locals_),
            "heap": sum(len(local.heap) for local in locals_),
        }
    queues = list(layer.receive_buffer.values())
    return {"buffered": sum(q.qsize() for q in queues), "entries": len(queues), "heap": 0}


def child(args: argparse.Namespace) -> None:
    """Receive on one live channel; report the buffer on each line read from stdin."""
    import tracemalloc

    layer = make_layer(args.child, args)

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    def sample(label: str, received: int) -> dict[str, Any]:
        gc.collect()
        record: dict[str, Any] = {"label": label, "received": received, **buffer_state(layer)}
        record["rss_kib"] = _proc_status_kib("VmRSS")
        record["hwm_kib"] = _proc_status_kib("VmHWM")
        if args.traced:
            record["traced_kib"] = tracemalloc.get_traced_memory()[0] / 1024
        return record

    async def run() -> None:
        live = await layer.new_channel()
        # Warm up connections, scripts and code paths so they are in the baseline.
        for _ in range(3):
            await layer.send(live, MESSAGE)
            await layer.receive(live)
        await anyio.to_thread.run_sync(lambda: None)
        if isinstance(layer, OurLayer):
            key = layer._process_key
        else:
            key = layer.prefix + layer.non_local_name(live)
        gc.collect()
        if args.traced:
            tracemalloc.start()
        received = 0
        final = anyio.Event()
        emit({"live": live, "key": key, **sample("base", received)})

        async def receiver() -> None:
            nonlocal received
            while True:
                message = await layer.receive(live)
                received += 1
                if message.get("final"):
                    final.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                command, _, label = line.strip().partition(" ")
                if command == "sample":
                    emit(sample(label, received))
                elif command == "final":
                    with anyio.move_on_after(30):
                        await final.wait()
                    emit({**sample(label, received), "final_seen": final.is_set()})
                else:  # "quit" or EOF
                    tg.cancel_scope.cancel()
                    break
        if args.traced:
            tracemalloc.stop()
        await layer.flush()
        await close_layer(layer)

    anyio.run(run, backend="asyncio")


async def close_layer(layer: Any) -> None:
    if isinstance(layer, OurLayer):
        await layer.close()
    else:
        await layer.close_pools()


def make_layer(impl: str, args: argparse.Namespace) -> Any:
    host: Any = args.redis
    if impl == THEIRS:
        # redis-py 8 reads with a 5 s socket timeout by default, and
        # channels_redis blocks in BZPOPMIN for 5 s: a receive idle that long
        # dies with "Timeout reading from ..." (redis/redis-py#4091). No
        # timeout, as with redis-py 7 and before.
        host = {"address": args.redis, "socket_timeout": None}
    return IMPLS[impl](hosts=[host], prefix=args.prefix, capacity=args.capacity, expiry=args.expiry)


# -- the sending side (this process) ----------------------------------------------


class Receiver:
    """The receiving subprocess, driven one line at a time."""

    def __init__(self, impl: str, args: argparse.Namespace, prefix: str, traced: bool) -> None:
        command = [sys.executable, __file__, "--child", impl, "--prefix", prefix]
        command += ["--redis", args.redis, "--capacity", str(args.capacity)]
        command += ["--expiry", str(args.expiry)]
        if traced:
            command.append("--traced")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await anyio.to_thread.run_sync(self.proc.stdout.readline)
        if not line:
            raise RuntimeError(f"receiver exited ({self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await self.read()

    def finish(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.returncode:
            raise RuntimeError(f"receiver exited with {self.proc.returncode}")


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (both layers' keys start with it)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    deleted = 0
    try:
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            deleted += await client.unlink(key)
    finally:
        await client.aclose()
    return deleted


async def one_run(
    impl: str, scenario: str, traced: bool, messages: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Drive one receiving subprocess through ``messages`` messages of the
    scenario; its samples (every tenth of the way, and after expiry) and figures."""
    from redis.asyncio import Redis

    prefix = f"benchbuf{uuid.uuid4().hex[:10]}"
    _, naming, count = SCENARIOS[scenario]
    receiver = Receiver(impl, args, prefix, traced)
    client = Redis.from_url(args.redis)
    sender = make_layer(impl, argparse.Namespace(**{**vars(args), "prefix": prefix}))
    full_waits = 0
    live_sent = 0
    try:
        first = await receiver.read()
        live, key = first["live"], first["key"]
        samples = [first]
        stem = live[: live.index("!") + 1]
        fixed = [f"{stem}idle{j}" for j in range(count)]
        abandoned = 0

        def target(i: int) -> str:
            nonlocal abandoned, live_sent
            if i % args.live_every == 0:
                live_sent += 1
                return live
            abandoned += 1
            return fixed[abandoned % count] if naming == "fixed" else f"{stem}gone{abandoned}"

        async def send(channel: str, i: int) -> None:
            nonlocal full_waits
            while True:
                try:
                    await sender.send(channel, {**MESSAGE, "i": i})
                    return
                except (OurFull, TheirFull):
                    # The receiver's Redis list holds ``capacity``: let it catch up.
                    full_waits += 1
                    await anyio.sleep(0.002)

        async def worker(todo: list[tuple[str, int]]) -> None:
            while todo:
                channel, i = todo.pop()
                await send(channel, i)

        busy = 0.0
        sent = 0
        every = max(1, messages // 10)
        while sent < messages:
            chunk = min(every, messages - sent)
            todo = [(target(i), i) for i in range(sent + 1, sent + chunk + 1)]
            todo.reverse()
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(args.senders):
                    tg.start_soon(worker, todo)
            # Wait until the receiver has pulled everything from Redis.
            with anyio.fail_after(120):
                while await client.exists(key):  # noqa: ASYNC110 - polling Redis
                    await anyio.sleep(0.005)
            busy += time.perf_counter() - started
            sent += chunk
            await anyio.sleep(0.02)  # the last message pulled is handed out
            samples.append(await receiver.ask(f"sample {sent}"))
            print(
                f"  [{impl}{' traced' if traced else ''}] {scenario} {sent:,} sent: "
                f"{samples[-1]['buffered']:,} buffered",
                file=sys.stderr,
            )
        await anyio.sleep(args.expiry + 0.5)  # every abandoned message has expired
        live_sent += 1
        await sender.send(live, {**MESSAGE, "final": True})
        samples.append(await receiver.ask("final after-expiry"))
    finally:
        try:
            receiver.finish()
        finally:
            await sender.flush()
            await close_layer(sender)
            await client.aclose()
            await delete_prefix(args.redis, prefix)
    return {
        "samples": samples,
        "rate": messages / busy,
        "full_waits": full_waits,
        "live_sent": live_sent,
        "live_received": samples[-1]["received"],
    }


# -- driver -----------------------------------------------------------------------


def fmt(values: list[float], digits: int = 0) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f})"


def ratio(ours: list[float], theirs: list[float]) -> str:
    if not ours or not theirs or statistics.median(theirs) == 0:
        return "—"
    return f"{statistics.median(ours) / statistics.median(theirs):.3f}"


def point_name(label: str) -> str:
    if label == "after-expiry":
        return "after expiry"
    n = int(label)
    return f"{n // 1000:,}k sent" if n % 1000 == 0 else f"{n:,} sent"


def tenths(messages: int) -> list[str]:
    every = max(1, messages // 10)
    labels = [str(min(messages, every * k)) for k in range(1, 11)]
    if labels[-1] != str(messages):
        labels.append(str(messages))
    return list(dict.fromkeys(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--messages", type=int, default=100_000, help="messages per run")
    parser.add_argument(
        "--traced-messages",
        type=int,
        default=10_000,
        help="messages per tracemalloc run (0: none); tracing slows channels_redis 2-4x",
    )
    parser.add_argument("--live-every", type=int, default=10, help="1 in N goes to the live one")
    parser.add_argument("--capacity", type=int, default=100, help="both layers")
    parser.add_argument(
        "--expiry", type=int, default=5, help="seconds, both layers (channels_redis: whole)"
    )
    parser.add_argument("--senders", type=int, default=4, help="concurrent send tasks")
    parser.add_argument(
        "--scenarios",
        default="spread,churn",
        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20,000 messages, 5,000 traced, expiry 3 s"
    )
    parser.add_argument("--only", choices=list(IMPLS), action="append", help="limit the run")
    parser.add_argument("--json", metavar="PATH", help="also write every sample there")
    parser.add_argument("--from-json", metavar="PATH", help="print the tables of a --json file")
    parser.add_argument("--child", choices=list(IMPLS), help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.messages, args.traced_messages, args.expiry = 20_000, 5_000, 3
    if args.expiry < 1:
        parser.error("--expiry must be at least 1 (channels_redis truncates it to whole seconds)")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    modes = [(False, args.messages)]
    if args.traced_messages > 0:
        modes.append((True, args.traced_messages))
    impls = list(dict.fromkeys(args.only or IMPLS))
    results: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        vars(args).update(saved["args"])
        results = {
            (entry["scenario"], entry["impl"], entry["traced"]): entry["runs"]
            for entry in saved["results"]
        }
        impls = [impl for impl in IMPLS if any(key[1] == impl for key in results)]
        scenarios = list(dict.fromkeys(key[0] for key in results))
        report(args, results, saved["elapsed"], impls, scenarios)
        return

    started = time.monotonic()
    for rnd in range(args.rounds):
        order = impls if rnd % 2 == 0 else list(reversed(impls))
        for scenario in scenarios:
            for traced, messages in modes:
                for impl in order:
                    what = f"{scenario} [{impl}{', tracemalloc' if traced else ''}]"
                    print(f"round {rnd + 1}: {what}, {messages:,} messages", file=sys.stderr)
                    run = anyio.run(one_run, impl, scenario, traced, messages, args)
                    results.setdefault((scenario, impl, traced), []).append(run)
                    print(
                        f"round {rnd + 1}: {what}: {run['rate']:,.0f} msg/s, "
                        f"{run['live_sent'] - run['live_received']} live messages lost",
                        file=sys.stderr,
                    )
    elapsed = time.monotonic() - started
    if args.json:
        kept = ["redis", "rounds", "messages", "traced_messages", "live_every", "capacity"]
        kept += ["expiry", "senders"]
        saved = {
            "args": {name: getattr(args, name) for name in kept},
            "elapsed": elapsed,
            "results": [
                {"scenario": scenario, "impl": impl, "traced": traced, "runs": runs}
                for (scenario, impl, traced), runs in results.items()
            ],
        }
        Path(args.json).write_text(json.dumps(saved, indent=1))
    report(args, results, elapsed, impls, scenarios)


def report(
    args: argparse.Namespace,
    results: dict[tuple[str, str, bool], list[dict[str, Any]]],
    elapsed: float,
    impls: list[str],
    scenarios: list[str],
) -> None:
    """Print the markdown tables."""

    def values(scenario: str, impl: str, traced: bool, field: str, label: str) -> list[float]:
        out = []
        for run in results.get((scenario, impl, traced), []):
            by_label = {s["label"]: s for s in run["samples"]}
            base, point = by_label["base"], by_label[label]
            if field == "peak_kib":
                # The kernel updates VmHWM only now and then (when memory is
                # unmapped, say), so it can miss a peak a sample saw; and the
                # baseline's VmHWM may be start-up's, above what was then held.
                peak = max([point["hwm_kib"]] + [s["rss_kib"] for s in run["samples"]])
                out.append((peak - base["rss_kib"]) / 1024)
            elif field.endswith("_kib"):
                out.append((point[field] - base[field]) / 1024)
            else:
                out.append(point[field])
        return out

    def figures(scenario: str, impl: str, key: str) -> list[float]:
        runs = results.get((scenario, impl, False), [])
        if key == "lost":
            return [r["live_sent"] - r["live_received"] for r in runs]
        return [r[key] for r in runs]

    def shown(messages: int) -> list[str]:
        labels = tenths(messages)
        picked = dict.fromkeys([labels[0], labels[len(labels) // 2 - 1], labels[-1]])
        return [*picked, "after-expiry"]

    import channels_redis

    print(
        f"\nPython {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"channels_redis {channels_redis.__version__}; Redis at {args.redis}; asyncio. "
        f"{args.messages:,} messages per run ({args.traced_messages:,} under tracemalloc), "
        f"1 in {args.live_every} to the live channel, {args.senders} sending tasks; "
        f"capacity {args.capacity} and expiry {args.expiry} s for both layers, "
        f"max_buffered 10,000 (ours only). {args.rounds} round(s) in {elapsed / 60:.1f} min; "
        f"median (min\N{EN DASH}max).\n"
    )
    print(f"| scenario | figure | at | {OURS} | {THEIRS} | ours/theirs |")
    print("| --- | --- | --- | --- | --- | --- |")

    def row(title: str, name: str, at: str, ours: list[float], theirs: list[float], d: int) -> None:
        print(
            f"| {title} | {name} | {at} | {fmt(ours, d)} | {fmt(theirs, d)} | "
            f"{ratio(ours, theirs)} |"
        )

    for scenario in scenarios:
        title = SCENARIOS[scenario][0]
        table: list[tuple[str, str, bool, int]] = [
            ("buffered messages", "buffered", False, 0),
            ("channels holding a buffer", "entries", False, 0),
            ("RSS growth, MiB", "rss_kib", False, 1),
        ]
        if args.traced_messages > 0:
            table.append(("live Python allocations (tracemalloc), MiB", "traced_kib", True, 2))
        for name, field, traced, digits in table:
            for label in shown(args.traced_messages if traced else args.messages):
                ours = values(scenario, OURS, traced, field, label)
                theirs = values(scenario, THEIRS, traced, field, label)
                row(title, name, point_name(label), ours, theirs, digits)
        last = tenths(args.messages)[-1]
        ours = values(scenario, OURS, False, "peak_kib", "after-expiry")
        theirs = values(scenario, THEIRS, False, "peak_kib", "after-expiry")
        row(title, "peak RSS growth, MiB", "whole run", ours, theirs, 1)
        for label in (last, "after-expiry"):
            ours = values(scenario, OURS, False, "heap", label)
            row(title, "ours: expiry-heap entries", point_name(label), ours, [], 0)
        lost = f"live-channel messages lost (of {args.messages // args.live_every + 1:,})"
        for name, key in ((lost, "lost"), ("msg/s through the receiver", "rate")):
            ours, theirs = figures(scenario, OURS, key), figures(scenario, THEIRS, key)
            row(title, name, "whole run", ours, theirs, 0)

    growth = [("buffered messages", "buffered", False, 0), ("RSS growth, MiB", "rss_kib", False, 1)]
    if args.traced_messages > 0:
        growth.append(("live Python allocations (tracemalloc), MiB", "traced_kib", True, 2))
    for what, field, traced, digits in growth:
        messages = args.traced_messages if traced else args.messages
        labels = [*tenths(messages), "after-expiry"]
        print(f"\nGrowth: {what} after each tenth of {messages:,} messages (median):\n")
        print("| scenario | layer | " + " | ".join(point_name(x) for x in labels) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in labels) + " |")
        for scenario in scenarios:
            for impl in impls:
                cells = []
                for label in labels:
                    found = values(scenario, impl, traced, field, label)
                    cells.append(f"{statistics.median(found):,.{digits}f}" if found else "—")
                print(f"| {SCENARIOS[scenario][0]} | {impl} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
