"""In-process cost of a consumer per message, without sockets or a server.

Run from the repository root::

    python bench/e2e/micro_consumer.py [--backend trio] [--profile]

A client task and the application exchange ``websocket.receive`` and
``websocket.send`` messages through anyio memory streams, one at a time, on
one connection. The raw ASGI echo, the channels_runtime ``Echo`` consumer and
the sync ``SyncEcho`` consumer from ``runtime_app`` run alternately; the table
shows µs per round trip (median of rounds, min-max), so what a consumer adds
to a message can be read without the noise of a network benchmark.
``--profile`` runs pyinstrument over the consumer case instead.
Memory per connection is measured in a real server instead: see memtrace.py.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

# runtime_app first: it makes itself the settings module (raw_app would too).
import runtime_app  # noqa: I001  (sets Django up with the in-memory layer)
import raw_app

TEXT = "hello, world: a small text frame"


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/" + path,
        "raw_path": ("/" + path).encode(),
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "asgi": {"version": "3.0"},
    }


async def round_trips(app: Any, path: str, n: int) -> float:
    """µs per round trip through ``app`` on one WebSocket connection."""
    to_app_send, to_app_receive = anyio.create_memory_object_stream[dict[str, Any]](1)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[dict[str, Any]](1)
    scope = _scope(path)
    message = {"type": "websocket.receive", "text": TEXT, "bytes": None}
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, scope, to_app_receive.receive, from_app_send.send)
        await to_app_send.send({"type": "websocket.connect"})
        accepted = await from_app_receive.receive()
        assert accepted["type"] == "websocket.accept", accepted
        for _ in range(200):  # warm up
            await to_app_send.send(message)
            await from_app_receive.receive()
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            await to_app_send.send(message)
            reply = await from_app_receive.receive()
        elapsed = time.perf_counter() - start
        assert reply["text"] == TEXT, reply
        with anyio.fail_after(5):  # every app returns after a disconnect
            await to_app_send.send({"type": "websocket.disconnect", "code": 1000})
    return elapsed / n * 1e6


async def broadcasts(app: Any, member: str, trigger: str, n: int, repeats: int) -> float:
    """µs per member from one trigger frame until all ``n`` members have sent the message."""
    got = 0
    all_sent = anyio.Event()
    stop = anyio.Event()

    async def member_send(message: dict[str, Any]) -> None:
        nonlocal got
        if message["type"] == "websocket.send":
            got += 1
            if got == n:
                all_sent.set()

    async def member_receive_factory() -> Any:
        state = {"connected": False}

        async def receive() -> dict[str, Any]:
            if not state["connected"]:
                state["connected"] = True
                return {"type": "websocket.connect"}
            await stop.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        return receive

    accepted = 0
    all_accepted = anyio.Event()

    async def count_accept(message: dict[str, Any]) -> None:
        nonlocal accepted
        if message["type"] == "websocket.accept":
            accepted += 1
            if accepted == n:
                all_accepted.set()
        else:
            await member_send(message)

    to_trigger, trigger_inbox = anyio.create_memory_object_stream[dict[str, Any]](1)

    async def trigger_send(message: dict[str, Any]) -> None:
        pass

    total = 0.0
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            # A distinct send callable per member, as a server gives.
            async def send(message: dict[str, Any]) -> None:
                await count_accept(message)

            tg.start_soon(app, _scope(member), await member_receive_factory(), send)
        tg.start_soon(app, _scope(trigger), trigger_inbox.receive, trigger_send)
        await to_trigger.send({"type": "websocket.connect"})
        with anyio.fail_after(30):
            await all_accepted.wait()
        for i in range(repeats + 3):  # 3 warm-up broadcasts
            got = 0
            all_sent = anyio.Event()
            gc.collect()
            start = time.perf_counter()
            await to_trigger.send({"type": "websocket.receive", "text": f"b{i}", "bytes": None})
            with anyio.fail_after(30):
                await all_sent.wait()
            if i >= 3:
                total += time.perf_counter() - start
        stop.set()
        await to_trigger.send({"type": "websocket.disconnect", "code": 1000})
    return total / repeats / n * 1e6


CASES = {
    "raw ASGI echo": (raw_app.application, "echo"),
    "Echo (AsyncWebsocketConsumer)": (runtime_app.application, "echo"),
    "SyncEcho (WebsocketConsumer)": (runtime_app.application, "sync"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=20_000, help="round trips per case and round")
    parser.add_argument("--profile", choices=["async", "sync"], help="pyinstrument one case")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    parser.add_argument("--broadcast", type=int, metavar="N", help="N-member broadcast instead")
    args = parser.parse_args()

    if args.profile:
        from pyinstrument import Profiler

        name = "Echo (AsyncWebsocketConsumer)"
        if args.profile == "sync":
            name = "SyncEcho (WebsocketConsumer)"
        app, path = CASES[name]
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        anyio.run(round_trips, app, path, args.n, backend=args.backend)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return

    cases = {k: v for k, v in CASES.items() if args.only is None or args.only in k}
    if args.broadcast:
        fan = {
            "raw ASGI loop of sends": (raw_app.application, "bcast", "trigger"),
            "raw ASGI, a task per member": (raw_app.application, "bcast-tasks", "trigger-tasks"),
            "Member consumers, group_send": (runtime_app.application, "bcast", "trigger"),
        }
        fan = {k: v for k, v in fan.items() if args.only is None or args.only in k}
        timings: dict[str, list[float]] = {name: [] for name in fan}
        for rnd in range(args.rounds):
            for name in fan if rnd % 2 == 0 else reversed(fan):
                app, member, trigger = fan[name]
                timings[name].append(
                    anyio.run(
                        broadcasts, app, member, trigger, args.broadcast, 10, backend=args.backend
                    )
                )
        print(
            f"{args.backend}, {args.broadcast} members, {args.rounds} rounds of 10 broadcasts; "
            "µs per member from the trigger until all have sent, median (min-max)\n"
        )
        print("| case | µs per member |")
        print("| --- | --- |")
        for name, values in timings.items():
            med = statistics.median(values)
            print(f"| {name} | {med:.2f} ({min(values):.2f}\N{EN DASH}{max(values):.2f}) |")
        return
    results: dict[str, list[float]] = {name: [] for name in cases}
    for rnd in range(args.rounds):
        names = list(cases) if rnd % 2 == 0 else list(reversed(cases))
        for name in names:
            app, path = cases[name]
            n = args.n // 5 if "Sync" in name else args.n
            results[name].append(anyio.run(round_trips, app, path, n, backend=args.backend))
    print(f"{args.backend}, {args.rounds} rounds; µs per round trip, median (min-max)\n")
    print("| case | µs per round trip | minus raw |")
    print("| --- | --- | --- |")
    raw = statistics.median(results.get("raw ASGI echo", [0.0]))
    for name, values in results.items():
        med = statistics.median(values)
        print(
            f"| {name} | {med:.2f} ({min(values):.2f}\N{EN DASH}{max(values):.2f}) "
            f"| {med - raw:+.2f} |"
        )


if __name__ == "__main__":
    main()
