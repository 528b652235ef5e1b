"""Profile one server variant under one benchmark load with py-spy.

Run from the repository root, e.g.::

    python bench/e2e/profile_server.py ours-asyncio echo
    python bench/e2e/profile_server.py ours-trio bcast --top 40

Starts the variant as bench_e2e does (CPU 0), attaches ``py-spy record`` to
it, drives the load (CPU 1) for about ``--seconds`` and prints two tables from
the samples: self time per function and inclusive time per function, as a
share of all samples taken while the server was busy (idle samples dropped).
A third table sums self time per package (per channels_runtime module) in µs
of server CPU per round trip or per broadcast. ``--raw PATH`` keeps the
collapsed stacks (feed them to a flame graph tool if you like).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_e2e import BY_KEY
from runner import BIN, idle_clients, loadgen, running

LOADS = {
    "echo": lambda s, n: loadgen("echo", {"url": s.url("echo"), "conns": 50, "rounds": n}),
    "sync": lambda s, n: loadgen("echo", {"url": s.url("sync"), "conns": 50, "rounds": n}),
    "bcast": lambda s, n: loadgen(
        "bcast",
        {"url": s.url("bcast"), "trigger": s.url("trigger"), "clients": 500, "repeats": n},
    ),
}


def _package(frame: str) -> str:
    """``trio``, ``hypercorn``, ``channels_runtime/dispatch.py``... for a py-spy frame."""
    where = frame.rpartition("(")[2].rstrip(")").split(":")[0]
    parts = where.split("/")
    if parts[0] == "channels_runtime":
        return where  # our own modules one by one
    return parts[0] if len(parts) > 1 else where


def summarise(raw: Path, top: int, rate: int, units: int, unit: str) -> None:
    """Print self and inclusive time per function, and self time per package.

    ``units`` is how much work the load did (round trips or broadcasts), so the
    package table can say how many µs of server CPU each unit cost.
    """
    packages: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} busy samples = {total / rate / units * 1e6:.1f} µs of CPU per {unit}")
    print(f"\n-- self time per package (µs per {unit}) --")
    for package, count in packages.most_common(top):
        print(f"{count / rate / units * 1e6:7.1f}  {100 * count / total:5.1f}%  {package}")
    for title, counter in (("self", self_time), ("inclusive", inclusive)):
        print(f"\n-- {title} --")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=list(BY_KEY))
    parser.add_argument("load", choices=[*LOADS, "idle"])
    parser.add_argument("--amount", type=int, default=0, help="round trips / broadcasts")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--raw", type=Path)
    args = parser.parse_args()
    amount = args.amount or {"echo": 1000, "sync": 400, "bcast": 100, "idle": 1000}[args.load]

    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "stacks.txt"
        log = Path(tmp) / "server.log"
        with running(BY_KEY[args.variant], log) as server:
            if args.load != "idle":
                LOADS[args.load](server, 20)  # warm up
            spy = subprocess.Popen(
                [
                    str(BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--threads",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1.0)  # py-spy attaching
                started = time.monotonic()
                if args.load == "idle":
                    with idle_clients(server.url("echo"), amount):
                        time.sleep(1.0)
                else:
                    LOADS[args.load](server, amount)
                print(f"load took {time.monotonic() - started:.1f} s", file=sys.stderr)
            finally:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                spy.wait(timeout=30)
        if args.load == "bcast":
            units, unit = amount, "broadcast"
        else:
            units, unit = amount * (50 if args.load != "idle" else 1), "round trip"
        summarise(raw, args.top, args.rate, units, unit)


if __name__ == "__main__":
    main()
