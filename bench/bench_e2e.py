"""End-to-end benchmark: WebSocket consumers served over real sockets.

Run from the repository root::

    python bench/bench_e2e.py            # 3 rounds, about 6 minutes
    python bench/bench_e2e.py --quick    # 2 rounds, fewer broadcasts

Cases (see bench/README.md):

* echo: 50 connections x 200 round trips of a small text frame, async consumers;
* sync: the same through a sync ``WebsocketConsumer`` (the thread hop path);
* broadcast: 500 clients in one group, one ``group_send``, time until all have it;
* memory: RSS per idle connected WebSocket consumer, 1,000 idle clients.

Servers run as subprocesses pinned to CPU 0, the Node.js load generator (``ws``)
to CPU 1. Each round starts every server variant once, in alternating order
(reversed every other round), and runs the cases that apply to it; memory is
measured separately, in a fresh server per variant. Tables show the median over
rounds with the min-max range and ratios to a named base. Progress goes to
stderr, the markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from runner import Server, Variant, ensure_node_deps, idle_clients, loadgen, machine, running

VARIANTS = [
    Variant("raw-asyncio", "raw ASGI, Hypercorn asyncio", "hypercorn", "raw_app", "asyncio"),
    Variant("raw-uvloop", "raw ASGI, Hypercorn uvloop", "hypercorn", "raw_app", "uvloop"),
    Variant("raw-trio", "raw ASGI, Hypercorn trio", "hypercorn", "raw_app", "trio"),
    Variant("ours-asyncio", "channels_runtime, Hypercorn asyncio", "hypercorn", "runtime_app"),
    Variant(
        "ours-uvloop", "channels_runtime, Hypercorn uvloop", "hypercorn", "runtime_app", "uvloop"
    ),
    Variant("ours-trio", "channels_runtime, Hypercorn trio", "hypercorn", "runtime_app", "trio"),
    Variant(
        "serve-asyncio",
        "channels_runtime, `channels-runtime serve -k asyncio`",
        "serve",
        "runtime_app",
    ),
    Variant(
        "serve-trio",
        "channels_runtime, `channels-runtime serve -k trio`",
        "serve",
        "runtime_app",
        "trio",
    ),
    # The cost of channels_runtime's Hypercorn fixes: the same server with them off
    # (Hypercorn then always negotiates permessage-deflate, so the "fixed" side of the
    # comparison turns it on too) ...
    *(
        Variant(
            f"serve-{loop}-{kind}",
            f"channels_runtime, `serve -k {loop}`, {label}",
            "serve",
            "runtime_app",
            loop,
            config="websocket_permessage_deflate = true\n",
            env=env,
        )
        for loop in ("asyncio", "trio")
        for kind, label, env in (
            ("deflate", "permessage-deflate on", ()),
            ("unfixed", "Hypercorn fixes off", (("CHANNELS_RUNTIME_HYPERCORN_FIXES", "0"),)),
        )
    ),
    # ... and the cost of Prometheus metrics (docs/metrics.md): the same server counting
    # everything, its metrics bind open (nothing scrapes it; a scrape is off the hot path).
    *(
        Variant(
            f"serve-{loop}-metrics",
            f"channels_runtime, `serve -k {loop}`, metrics on",
            "serve",
            "runtime_app",
            loop,
            config='metrics_bind = "127.0.0.1:0"\n',
        )
        for loop in ("asyncio", "trio")
    ),
    Variant("channels-hypercorn", "Channels 4.2, Hypercorn asyncio", "hypercorn", "channels_app"),
    Variant("channels-daphne", "Channels 4.2, Daphne", "daphne", "channels_app"),
]
BY_KEY = {v.key: v for v in VARIANTS}
CHANNELS_BASE = "channels-hypercorn"
#: Rows that are not server variants: the raw app's fan-out through a task per member.
TASKS_SUFFIX = "+tasks"

# Which variants each case runs. The raw app has no sync consumer; memory leaves uvloop out.
CASE_VARIANTS = {
    "echo": [v.key for v in VARIANTS],
    "sync": [v.key for v in VARIANTS if not v.key.startswith("raw-")],
    "bcast": [v.key for v in VARIANTS],
    "memory": [v.key for v in VARIANTS if "uvloop" not in v.key],
}


def label(key: str) -> str:
    if key.endswith(TASKS_SUFFIX):
        return BY_KEY[key.removesuffix(TASKS_SUFFIX)].label + ", a task per member"
    return BY_KEY[key].label


def raw_base(key: str) -> str | None:
    """The raw ASGI variant on the same worker class as ``key`` (None for raw and Daphne)."""
    variant = BY_KEY.get(key)
    if variant is None or variant.server == "daphne" or variant.module == "raw_app":
        return None
    return f"raw-{variant.worker_class}"


# -- cases: each returns {row key: result} ---------------------------------------


def _echo(server: Server, args: argparse.Namespace, path: str, runs: int) -> list[dict[str, Any]]:
    # A run lasts well under a second, so a server gets several back to back.
    options = {"url": server.url(path), "conns": args.conns, "rounds": args.round_trips}
    return [loadgen("echo", options, server) for _ in range(runs)]


def case_echo(server: Server, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    return {server.variant.key: _echo(server, args, "echo", args.echo_runs)}


def case_sync(server: Server, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    return {server.variant.key: _echo(server, args, "sync", args.sync_runs)}


def case_bcast(server: Server, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    paths = [("", "bcast", "trigger")]
    if server.variant.module == "raw_app":
        paths.append((TASKS_SUFFIX, "bcast-tasks", "trigger-tasks"))
    out = {}
    for suffix, member, trigger in paths:
        options = {
            "url": server.url(member),
            "trigger": server.url(trigger),
            "clients": args.clients,
            "repeats": args.repeats,
        }
        out[server.variant.key + suffix] = [loadgen("bcast", options, server)]
    return out


def case_memory(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    # Warm up: let every code path a connection uses run once, so first-use
    # allocations (imports, caches, interned names) land in the baseline.
    loadgen("echo", {"url": server.url("echo"), "conns": 50, "rounds": 5, "warmup": 0})
    time.sleep(0.5)
    before = server.rss()
    with idle_clients(server.url("echo"), args.idle) as opened:
        time.sleep(args.settle)
        during = server.rss()
    return {"before": before, "during": during, "per_conn": (during - before) / opened}


CaseFunc = Callable[[Server, argparse.Namespace], dict[str, list[dict[str, Any]]]]
ROUND_CASES: list[tuple[str, CaseFunc]] = [
    ("echo", case_echo),
    ("sync", case_sync),
    ("bcast", case_bcast),
]


# -- formatting -----------------------------------------------------------------

Results = dict[str, dict[str, list[dict[str, Any]]]]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "—"
    text = f"{med(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f})"
    return text


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a == a and b == b and b else "—"


def field(results: Results, case: str, key: str, name: str) -> list[float]:
    return [float(r[name]) for r in results[case].get(key, [])]


def cpu_per(results: Results, case: str, key: str, per: str, scale: float) -> list[float]:
    """Server CPU time per unit of work (round trip, broadcast) in the measured window."""
    return [r["server_cpu_s"] / r[per] * scale for r in results[case].get(key, [])]


def echo_table(results: Results, case: str, title: str) -> list[str]:
    lines = [
        f"**{title}**",
        "",
        "| variant | round trips/s | p50 latency (ms) | server CPU (µs per round trip) "
        "| server CPU use | load gen CPU | ÷ raw ASGI, same loop | ÷ Channels on Hypercorn |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rps = {k: field(results, case, k, "per_second") for k in results[case]}
    for key in CASE_VARIANTS[case]:
        runs = results[case].get(key, [])
        if not runs:
            continue
        use = [r["server_cpu_s"] / r["seconds"] * 100 for r in runs]
        gen = [r["loadgen_cpu"] * 100 for r in runs]
        base = raw_base(key)
        vs_raw = ratio(med(rps[key]), med(rps[base])) if base in rps else "—"
        vs_channels = ratio(med(rps[key]), med(rps[CHANNELS_BASE])) if CHANNELS_BASE in rps else "—"
        lines.append(
            f"| {label(key)} | {fmt(rps[key], 0)} | {fmt(field(results, case, key, 'p50_ms'), 2)} "
            f"| {fmt(cpu_per(results, case, key, 'roundtrips', 1e6))} | {fmt(use, 0)} % "
            f"| {fmt(gen, 0)} % | {vs_raw} | {vs_channels} |"
        )
    return lines


def bcast_table(results: Results, args: argparse.Namespace) -> list[str]:
    lines = [
        f"**Broadcast: {args.clients} clients in one group, {args.repeats} broadcasts per round** "
        "(ms from sending the trigger frame until the last, the median and the first client "
        "has the message)",
        "",
        "| variant | all clients, p50 | all clients, p99 | median client | first client "
        "| server CPU (ms per broadcast) | load gen CPU | p50 ÷ raw ASGI loop, same loop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    p50 = {k: field(results, "bcast", k, "all_p50_ms") for k in results["bcast"]}
    keys = []
    for key in CASE_VARIANTS["bcast"]:
        keys += [key, key + TASKS_SUFFIX]
    for key in keys:
        runs = results["bcast"].get(key, [])
        if not runs:
            continue
        gen = [r["loadgen_cpu"] * 100 for r in runs]
        base = raw_base(key) or (
            key.removesuffix(TASKS_SUFFIX) if key.endswith(TASKS_SUFFIX) else None
        )
        vs_raw = ratio(med(p50[key]), med(p50[base])) if base in p50 else "—"
        lines.append(
            f"| {label(key)} | {fmt(p50[key])} "
            f"| {fmt(field(results, 'bcast', key, 'all_p99_ms'))} "
            f"| {fmt(field(results, 'bcast', key, 'client_p50_ms'))} "
            f"| {fmt(field(results, 'bcast', key, 'first_p50_ms'))} "
            f"| {fmt(cpu_per(results, 'bcast', key, 'repeats', 1e3))} | {fmt(gen, 0)} % "
            f"| {vs_raw} |"
        )
    return lines


def memory_table(results: Results, args: argparse.Namespace) -> list[str]:
    lines = [
        f"**Memory: {args.idle:,} idle WebSocket connections** (server RSS; KiB = 1,024 bytes)",
        "",
        "| variant | RSS before (MiB) | RSS with clients (MiB) | KiB per connection "
        "| KiB per connection above raw ASGI, same loop |",
        "| --- | --- | --- | --- | --- |",
    ]
    per = {k: [r["per_conn"] / 1024 for r in v] for k, v in results["memory"].items()}
    for key in CASE_VARIANTS["memory"]:
        runs = results["memory"].get(key, [])
        if not runs:
            continue
        base = raw_base(key)
        above = f"{med(per[key]) - med(per[base]):.1f}" if base in per else "—"
        lines.append(
            f"| {label(key)} | {fmt([r['before'] / 2**20 for r in runs])} "
            f"| {fmt([r['during'] / 2**20 for r in runs])} | {fmt(per[key])} | {above} |"
        )
    return lines


def targets(results: Results) -> list[str]:
    def m(case: str, key: str, name: str) -> float:
        return med(field(results, case, key, name))

    def cpu(case: str, key: str) -> float:
        return med(cpu_per(results, case, key, "roundtrips", 1e6))

    def kib(key: str) -> float:
        return med([r["per_conn"] / 1024 for r in results["memory"].get(key, [])])

    rps = "per_second"
    checks = [
        (
            "echo round trips/s, ours ÷ raw ASGI, Hypercorn asyncio",
            m("echo", "ours-asyncio", rps) / m("echo", "raw-asyncio", rps),
            ">=",
            0.85,
        ),
        (
            "echo round trips/s, ours ÷ raw ASGI, Hypercorn trio",
            m("echo", "ours-trio", rps) / m("echo", "raw-trio", rps),
            ">=",
            0.85,
        ),
        (
            "echo, same with server CPU per round trip (raw ÷ ours), asyncio",
            cpu("echo", "raw-asyncio") / cpu("echo", "ours-asyncio"),
            ">=",
            0.85,
        ),
        (
            "echo, same with server CPU per round trip (raw ÷ ours), trio",
            cpu("echo", "raw-trio") / cpu("echo", "ours-trio"),
            ">=",
            0.85,
        ),
        (
            "echo round trips/s, `serve -k asyncio` ÷ raw ASGI, Hypercorn asyncio",
            m("echo", "serve-asyncio", rps) / m("echo", "raw-asyncio", rps),
            ">=",
            0.85,
        ),
        (
            "echo round trips/s, `serve -k trio` ÷ raw ASGI, Hypercorn trio",
            m("echo", "serve-trio", rps) / m("echo", "raw-trio", rps),
            ">=",
            0.85,
        ),
        (
            "echo round trips/s, ours ÷ Channels, both Hypercorn asyncio",
            m("echo", "ours-asyncio", rps) / m("echo", CHANNELS_BASE, rps),
            ">=",
            2.0,
        ),
        (
            "broadcast p50, ours ÷ raw fan-out loop, Hypercorn asyncio",
            m("bcast", "ours-asyncio", "all_p50_ms") / m("bcast", "raw-asyncio", "all_p50_ms"),
            "<=",
            1.5,
        ),
        (
            "broadcast p50, ours ÷ raw fan-out loop, Hypercorn trio",
            m("bcast", "ours-trio", "all_p50_ms") / m("bcast", "raw-trio", "all_p50_ms"),
            "<=",
            1.5,
        ),
        (
            "KiB RSS per idle consumer above raw ASGI, Hypercorn asyncio",
            kib("ours-asyncio") - kib("raw-asyncio"),
            "<=",
            20.0,
        ),
        (
            "KiB RSS per idle connection in all, Hypercorn asyncio (raw ASGI alone: "
            f"{kib('raw-asyncio'):.1f})",
            kib("ours-asyncio"),
            "<=",
            20.0,
        ),
        (
            "sync echo round trips/s, ours ÷ Channels, both Hypercorn asyncio",
            m("sync", "ours-asyncio", rps) / m("sync", CHANNELS_BASE, rps),
            ">=",
            1.5,
        ),
        # Prometheus metrics may cost at most 3 % (docs/metrics.md).
        *(
            check
            for loop in ("asyncio", "trio")
            for check in (
                (
                    f"echo round trips/s, metrics on ÷ off, `serve -k {loop}`",
                    m("echo", f"serve-{loop}-metrics", rps) / m("echo", f"serve-{loop}", rps),
                    ">=",
                    0.97,
                ),
                (
                    f"echo server CPU per round trip, metrics off ÷ on, `serve -k {loop}`",
                    cpu("echo", f"serve-{loop}") / cpu("echo", f"serve-{loop}-metrics"),
                    ">=",
                    0.97,
                ),
                (
                    f"broadcast p50, metrics on ÷ off, `serve -k {loop}`",
                    m("bcast", f"serve-{loop}-metrics", "all_p50_ms")
                    / m("bcast", f"serve-{loop}", "all_p50_ms"),
                    "<=",
                    1.03,
                ),
            )
        ),
    ]
    lines = ["| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for name, value, op, goal in checks:
        if value != value:
            lines.append(f"| {name} | — | {op} {goal} | not run |")
            continue
        met = value >= goal if op == ">=" else value <= goal
        lines.append(f"| {name} | {value:.2f} | {op} {goal} | {'yes' if met else 'no'} |")
    return lines


# -- driver -----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 10 broadcasts, 1 memory")
    parser.add_argument("--rounds", type=int, help="rounds of echo, sync, broadcast (3)")
    parser.add_argument("--mem-rounds", type=int, help="memory measurements per variant (2)")
    parser.add_argument("--cases", default="echo,sync,bcast,memory", help="comma-separated")
    parser.add_argument("--variants", default=",".join(BY_KEY), help="comma-separated keys")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--echo-runs", type=int, default=3, help="echo runs per server start")
    parser.add_argument("--sync-runs", type=int, default=2, help="sync runs per server start")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--repeats", type=int, help="broadcasts per round (30)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for memory")
    parser.add_argument("--settle", type=float, default=1.0, help="s to wait before reading RSS")
    parser.add_argument("--log", default="/tmp/bench_e2e_servers.log", help="server output")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.mem_rounds = args.mem_rounds or (1 if args.quick else 2)
    args.repeats = args.repeats or (10 if args.quick else 30)
    cases = set(args.cases.split(","))
    chosen = [k for k in BY_KEY if k in set(args.variants.split(","))]
    log = Path(args.log)
    log.write_bytes(b"")

    ensure_node_deps()
    started = time.monotonic()
    results: Results = {case: {} for case in CASE_VARIANTS}

    for rnd in range(args.rounds):
        order = chosen if rnd % 2 == 0 else list(reversed(chosen))
        for key in order:
            todo = [(c, f) for c, f in ROUND_CASES if c in cases and key in CASE_VARIANTS[c]]
            if not todo:
                continue
            with running(BY_KEY[key], log) as server:
                for case, func in todo:
                    for row, runs in func(server, args).items():
                        results[case].setdefault(row, []).extend(runs)
                        for result in runs:
                            brief = {
                                k: round(v, 3) for k, v in result.items() if isinstance(v, float)
                            }
                            print(f"round {rnd + 1}: {case} [{row}] {brief}", file=sys.stderr)

    if "memory" in cases:
        for rnd in range(args.mem_rounds):
            order = chosen if rnd % 2 == 0 else list(reversed(chosen))
            for key in order:
                if key not in CASE_VARIANTS["memory"]:
                    continue
                with running(BY_KEY[key], log) as server:
                    result = case_memory(server, args)
                results["memory"].setdefault(key, []).append(result)
                print(
                    f"memory {rnd + 1}: [{key}] {result['per_conn'] / 1024:.1f} KiB/conn",
                    file=sys.stderr,
                )

    per_server = [
        f"{name} {runs}" + (" times" if runs > 1 else " time")
        for case, name, runs in (
            ("echo", "echo", args.echo_runs),
            ("sync", "sync", args.sync_runs),
            ("bcast", "broadcast", 1),
        )
        if case in cases
    ]
    memory = f" ({args.mem_rounds} for memory)" if "memory" in cases else ""
    out = [
        f"Machine: {machine()}.",
        f"Servers pinned to CPU 0, load generator to CPU 1. {args.rounds} rounds{memory}; "
        f"each round starts every server once and runs {', '.join(per_server)}; "
        f"median of all runs (min\N{EN DASH}max). Took {time.monotonic() - started:.0f} s.",
        "",
    ]
    if "echo" in cases:
        title = (
            f"WebSocket echo, async consumer: {args.conns} connections x "
            f"{args.round_trips} round trips"
        )
        out += [*echo_table(results, "echo", title), ""]
    if "sync" in cases:
        title = (
            f"WebSocket echo, sync consumer (WebsocketConsumer): {args.conns} connections "
            f"x {args.round_trips} round trips"
        )
        out += [*echo_table(results, "sync", title), ""]
    if "bcast" in cases:
        out += [*bcast_table(results, args), ""]
    if "memory" in cases:
        out += [*memory_table(results, args), ""]
    out += targets(results)
    print("\n".join(out))


if __name__ == "__main__":
    main()
