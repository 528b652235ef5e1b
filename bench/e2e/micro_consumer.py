"""In-process cost of a consumer per message, without sockets or a server.

Run from the repository root::

    /work/venv/bin/python bench/e2e/micro_consumer.py [--backend trio] [--profile]

A client task and the application exchange ``websocket.receive`` and
``websocket.send`` messages through anyio memory streams, one at a time, on
one connection. The raw ASGI echo, the channels_runtime ``Echo`` consumer and
the sync ``SyncEcho`` consumer from ``runtime_app`` run alternately; the table
shows µs per round trip (median of rounds, min-max), so what a consumer adds
to a message can be read without the noise of a network benchmark.
``--profile`` runs pyinstrument over the consumer case instead.
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

import raw_app  # noqa: E402
import runtime_app  # noqa: E402  (sets Django up with the in-memory layer)

TEXT = "hello, world: a small text frame"


async def round_trips(app: Any, path: str, n: int) -> float:
    """µs per round trip through ``app`` on one WebSocket connection."""
    to_app_send, to_app_receive = anyio.create_memory_object_stream[dict[str, Any]](1)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[dict[str, Any]](1)
    scope = {
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
    args = parser.parse_args()

    if args.profile:
        from pyinstrument import Profiler

        app, path = CASES[
            "Echo (AsyncWebsocketConsumer)" if args.profile == "async" else "SyncEcho (WebsocketConsumer)"
        ]
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        anyio.run(round_trips, app, path, args.n, backend=args.backend)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return

    results: dict[str, list[float]] = {name: [] for name in CASES}
    for rnd in range(args.rounds):
        names = list(CASES) if rnd % 2 == 0 else list(reversed(CASES))
        for name in names:
            app, path = CASES[name]
            n = args.n // 5 if "Sync" in name else args.n
            results[name].append(anyio.run(round_trips, app, path, n, backend=args.backend))
    print(f"{args.backend}, {args.rounds} rounds; µs per round trip, median (min-max)\n")
    print("| case | µs per round trip | minus raw |")
    print("| --- | --- | --- |")
    raw = statistics.median(results["raw ASGI echo"])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} ({min(values):.2f}\N{EN DASH}{max(values):.2f}) "
              f"| {med - raw:+.2f} |")


if __name__ == "__main__":
    main()
