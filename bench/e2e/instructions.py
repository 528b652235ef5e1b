"""Instructions the server executes per echo round trip, counted by callgrind.

Run from the repository root, e.g.::

    python bench/e2e/instructions.py raw-asyncio ours-asyncio serve-asyncio
    python bench/e2e/instructions.py serve-asyncio serve-asyncio-metrics --repeat 3
    python bench/e2e/instructions.py --case bcast raw-asyncio serve-asyncio
    python bench/e2e/instructions.py --calls raw-asyncio ours-asyncio

Why: on a shared two-CPU machine, round trips per second and even CPU seconds
per round trip move by several percent from run to run, which hides costs of
one or two percent (the metrics, a yield per message). Valgrind's callgrind
counts the instructions a process executes in user space, which do not depend
on what else the machine is doing. Each variant of ``bench_e2e.py`` is started
under ``valgrind --tool=callgrind`` (pinned to CPU 0, as there), the Node.js
load generator runs ``echo`` twice with different numbers of round trips per
connection, and the counters are zeroed before and dumped after each run with
``callgrind_control``. The difference between the two runs divided by the
extra round trips is the cost of one round trip, with connection set-up and
teardown cancelled out. Work that depends on time, not load (the metrics'
publishing every half second, timers) is measured over a few idle seconds
and subtracted for the extra seconds the longer run took (for a broadcast,
with as many idle connections open as it has members, since some of that
work grows with the connections): under valgrind a run lasts 20-50x longer
than it would, and would inflate it as much.

``--calls`` counts Python function calls per round trip instead, the same
way but without valgrind: ``sitecustomize.py`` in this folder profiles the
server with ``cProfile`` between two signals. Call counts do not depend on
the machine either; comparing two variants shows which functions the
extra instructions run in.

What it does not see: time in the kernel (system calls are one instruction
each here), so the number of system calls per round trip is shown beside it,
counted the same way with ``strace -c`` when ``--syscalls`` is given. The
server runs 20-50x slower under valgrind, so timing-dependent behaviour
(batching of frames that arrive together) can differ from a real run; the
load generator keeps one message in flight per connection, which keeps that
small.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_e2e import BY_KEY
from runner import HOST, free_port, idle_clients, loadgen, spawn

#: Connections of each echo run, and round trips per connection of the two runs.
CONNS = 10
SHORT, LONG = 20, 120
STARTUP_TIMEOUT = 300.0
#: Seconds without load over which the background work is measured.
IDLE_SECONDS = 5.0


def _totals(dump: Path) -> int:
    """The instruction total (``Ir``) of one callgrind dump file."""
    text = dump.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals line in {dump}")
    return int(found.group(1))


def _control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


@contextlib.contextmanager
def under_callgrind(key: str, out_dir: Path, log: Path) -> Iterator[tuple[int, int]]:
    """Start variant ``key`` under callgrind; yield (its pid, its port)."""
    variant = BY_KEY[key]
    port = free_port()
    if variant.config:
        variant.config_path().write_text(variant.config)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",  # start-up runs uninstrumented, so faster
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        *variant.command(port),
    ]
    with spawn(key, command, port, log, variant.env, startup_timeout=STARTUP_TIMEOUT) as proc:
        yield proc.pid, port


#: ``--case bcast``: members of the group, and broadcasts of the two runs.
BCAST_CLIENTS = 500
BCAST_SHORT, BCAST_LONG = 5, 25
#: Seconds after a broadcast run for the server to close its 500 connections.
BCAST_SETTLE = 10.0


def _bcast(port: int, repeats: int) -> None:
    """Broadcast ``repeats`` times to a fresh group, then let the server finish
    closing the members' connections (seconds under valgrind), so that the
    closes fall inside the measured run every time, not only sometimes."""
    options = {
        "url": f"ws://{HOST}:{port}/bcast",
        "trigger": f"ws://{HOST}:{port}/trigger",
        "clients": BCAST_CLIENTS,
        "repeats": repeats,
    }
    loadgen("bcast", options, None, 600)
    time.sleep(BCAST_SETTLE)


def _echo(port: int, rounds: int) -> None:
    loadgen(
        "echo", {"url": f"ws://{HOST}:{port}/echo", "conns": CONNS, "rounds": rounds}, None, 600
    )


def _measured_run(pid: int, port: int, load: Any, rounds: int, out_dir: Path) -> tuple[int, float]:
    """Instructions and seconds of one run of ``load`` (``rounds`` round trips
    per connection, or broadcasts; ``rounds=0``: :data:`IDLE_SECONDS` without load)."""
    for old in out_dir.glob("callgrind.out.*"):
        old.unlink()
    _control(pid, "--zero")
    started = time.monotonic()
    if rounds:
        load(port, rounds)
    else:
        time.sleep(IDLE_SECONDS)
    _control(pid, "--dump")
    seconds = time.monotonic() - started
    dumps = sorted(out_dir.glob("callgrind.out.*.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump in {out_dir}")
    return _totals(dumps[-1]), seconds


def _load_for(case: str) -> tuple[Any, int, int, int]:
    """(load function, short and long run sizes, connections) for ``case``."""
    if case == "echo":
        return _echo, SHORT, LONG, CONNS
    return _bcast, BCAST_SHORT, BCAST_LONG, BCAST_CLIENTS


def per_round_trip(key: str, repeat: int, log: Path, case: str = "echo") -> list[float]:
    """Instructions per round trip (per member of a broadcast) of ``key``, once per repeat."""
    load, short_n, long_n, unit = _load_for(case)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as scratch:
        out_dir = Path(scratch)
        with under_callgrind(key, out_dir, log) as (pid, port):
            _control(pid, "--instr=on")
            load(port, short_n)  # warm up: imports, caches, first connections
            with contextlib.ExitStack() as stack:
                if case == "bcast":
                    # Time-bound work can grow with the connections open (the
                    # metrics' publishing reads every transport's buffer): for a
                    # broadcast, measure it with as many connections idle.
                    url = f"ws://{HOST}:{port}/echo"
                    stack.enter_context(idle_clients(url, BCAST_CLIENTS, timeout=600))
                    time.sleep(BCAST_SETTLE)
                idle, idle_seconds = _measured_run(pid, port, load, 0, out_dir)
            if case == "bcast":
                time.sleep(BCAST_SETTLE)
            per_second = idle / idle_seconds
            for _ in range(repeat):
                short, short_seconds = _measured_run(pid, port, load, short_n, out_dir)
                long, long_seconds = _measured_run(pid, port, load, long_n, out_dir)
                background = per_second * (long_seconds - short_seconds)
                results.append((long - short - background) / (unit * (long_n - short_n)))
    print(f"{key}: {per_second:,.0f} instructions per second while idle", file=sys.stderr)
    return results


def _profiled_run(
    proc: subprocess.Popen[bytes], load: Any, port: int, rounds: int, stats: Path
) -> Any:
    import pstats

    stats.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    load(port, rounds)
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not stats.exists() or not stats.stat().st_size:
        if time.monotonic() > deadline:
            raise RuntimeError("the server wrote no call counts (is sitecustomize imported?)")
        time.sleep(0.1)
    time.sleep(0.2)
    return pstats.Stats(str(stats)).stats  # type: ignore[attr-defined]


def calls_per_round_trip(key: str, log: Path, case: str) -> dict[str, tuple[float, float]]:
    """Function -> (calls, µs of profiled time) per round trip (per broadcast
    member for ``case="bcast"``) of variant ``key``."""
    load, short_n, long_n, unit = _load_for(case)
    variant = BY_KEY[key]
    port = free_port()
    if variant.config:
        variant.config_path().write_text(variant.config)
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as scratch:
        stats = Path(scratch) / "calls.prof"
        env = (*variant.env, ("BENCH_CALLS_FILE", str(stats)))
        with spawn(key, variant.command(port), port, log, env) as proc:
            load(port, short_n)
            short = _profiled_run(proc, load, port, short_n, stats)
            long = _profiled_run(proc, load, port, long_n, stats)
    extra = unit * (long_n - short_n)
    result = {}
    for func, (_cc, calls, tottime, _ct, _callers) in long.items():
        before = short.get(func, (0, 0, 0.0, 0.0, None))
        name = f"{Path(func[0]).name}:{func[1]}({func[2]})"
        result[name] = ((calls - before[1]) / extra, (tottime - before[2]) / extra * 1e6)
    return result


def print_calls(keys: list[str], log: Path, case: str) -> None:
    counts = {key: calls_per_round_trip(key, log, case) for key in keys}
    names = sorted(
        {n for c in counts.values() for n, (calls, _) in c.items() if abs(calls) >= 0.05},
        key=lambda n: -max(abs(c.get(n, (0, 0))[0]) for c in counts.values()),
    )
    if case == "echo":
        print(f"\nPython calls per echo round trip ({CONNS} connections, {LONG} - {SHORT} each)\n")
    else:
        print(
            f"\nPython calls per broadcast member ({BCAST_CLIENTS} members, "
            f"{BCAST_LONG} - {BCAST_SHORT} broadcasts)\n"
        )
    print("| function | " + " | ".join(keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    for name in names:
        cells = [f"{counts[k].get(name, (0, 0))[0]:.2f}" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    totals = [sum(calls for calls, _ in counts[k].values()) for k in keys]
    print("| **all** | " + " | ".join(f"{t:.1f}" for t in totals) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="variant keys of bench_e2e.py")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per variant")
    parser.add_argument(
        "--calls", action="store_true", help="count Python calls per round trip instead"
    )
    parser.add_argument(
        "--case",
        choices=("echo", "bcast"),
        default="echo",
        help="echo, or bcast (per member of a 500-member broadcast)",
    )
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "node", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    unknown = [k for k in args.variants if k not in BY_KEY]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(BY_KEY)}")
    log = Path(tempfile.gettempdir()) / "bench_instructions.log"
    if args.calls:
        print_calls(args.variants, log, args.case)
        return
    started = time.monotonic()
    rows = []
    for key in args.variants:
        counts = per_round_trip(key, args.repeat, log, args.case)
        rows.append((key, counts))
        print(f"{key}: {', '.join(f'{c:,.0f}' for c in counts)}", file=sys.stderr)
    base = statistics.median(rows[0][1])
    took = f"{time.monotonic() - started:.0f} s"
    if args.case == "echo":
        print(
            f"\nInstructions per echo round trip (server, user space; {CONNS} connections, "
            f"{LONG} - {SHORT} round trips each; {took})\n"
        )
    else:
        print(
            f"\nInstructions per member of a broadcast (server, user space; {BCAST_CLIENTS} "
            f"members, {BCAST_LONG} - {BCAST_SHORT} broadcasts; {took})\n"
        )
    print(f"| variant | instructions, median (min-max) | ÷ {rows[0][0]} |")
    print("| --- | --- | --- |")
    for key, counts in rows:
        median = statistics.median(counts)
        print(
            f"| {BY_KEY[key].label} | {median:,.0f} ({min(counts):,.0f}-{max(counts):,.0f}) "
            f"| {median / base:.3f} |"
        )


if __name__ == "__main__":
    main()
