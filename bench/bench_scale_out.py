"""Scale-out benchmark: one group_send to WebSocket clients on two server processes and one Redis.

Run from the repository root (bench/README.md says how to make the Channels 4.3 venv)::

    python bench/bench_scale_out.py --channels-python /tmp/ch43/bin/python   # 3 rounds
    python bench/bench_scale_out.py --clients 100 --rounds 1 \
        --variants ours-core-x2,channels-core-daphne

Every variant runs two server processes against one private ``redis-server``.
``--clients`` WebSocket clients (1,000) connect to a consumer that joins group
``bench``, spread evenly over the two processes (``serve -w 2``: over its one
port, the kernel spreads them). Two more connections are triggers: each frame a
trigger receives becomes one ``group_send`` to the group, from the consumer of
the implementation under test, through its channel layer.

* **latency**: 3 unmeasured broadcasts, then ``--repeats`` (30), one at a time,
  20 ms apart; the time from sending the trigger frame until *every* client has
  the message: p50 and p99 over the broadcasts, with server and Redis CPU per
  broadcast.
* **rate**: broadcasts sent on schedule at a rate R for a step of a few
  seconds; a step passes when its p99 is at most ``--limit`` ms (100) and every
  broadcast reached every client. R rises by 1.5x while steps pass, then two
  bisection steps narrow it (a failed step is tried once more): the sustained
  rate is the highest R that passed.

Variants (``--variants``): ours (``channels-runtime serve``, asyncio) with
``RedisChannelLayer`` (``core``) and ``RedisPubSubChannelLayer`` (``pubsub``),
as ``serve -w 2`` and as two ``serve`` processes (``x2``); and Django Channels
with channels_redis's ``RedisChannelLayer`` and ``RedisPubSubChannelLayer`` on
two Daphne and on two uvicorn processes. Channels runs from ``--channels-python``
(default: this Python), which needs Channels, channels_redis, Daphne and uvicorn;
variants whose server it lacks are skipped, with a note. ``--placement split``
(the default) pins each server process (each worker of ``serve -w 2``) to a CPU
of its own and leaves the load generator and Redis unpinned; ``shared`` puts
both servers on CPU 0 and the rest on CPU 1. Each round starts every variant
once, in an order reversed every other round; tables (markdown on stdout,
progress on stderr) show the median over rounds (min-max) and ratios to the
best Channels variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from runner import (
    BIN,
    HOST,
    LOADGEN_CPU,
    SERVER_CPU,
    ensure_node_deps,
    free_port,
    idle_clients,
    loadgen,
    machine,
    redis_info,
    redis_server,
    spawn,
)


@dataclass(frozen=True)
class Variant:
    """Two server processes of one implementation, on one Redis layer."""

    key: str
    label: str
    impl: str  # "ours" or "channels"
    layer: str  # "core" or "pubsub"
    server: str  # "serve-w2", "serve-x2", "daphne" or "uvicorn"
    worker_class: str = "asyncio"

    def commands(self, ports: list[int], channels_python: str) -> list[list[str]]:
        """One command per server process (``serve -w 2`` is one, with two workers)."""
        app = "scale_app:application"
        if self.server.startswith("serve"):
            workers = ["--workers", "2"] if self.server == "serve-w2" else []
            return [
                [
                    str(BIN / "channels-runtime"), "serve", app, *workers,
                    "--worker-class", self.worker_class, "--bind", f"{HOST}:{port}",
                    "--log-level", "warning",
                ]
                for port in ports
            ]  # fmt: skip
        if self.server == "daphne":
            return [
                [channels_python, "-m", "daphne", "-b", HOST, "-p", str(port), "-v", "0", app]
                for port in ports
            ]
        if self.server == "uvicorn":
            return [
                [
                    channels_python, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
                    "--log-level", "warning", "--no-access-log",
                ]
                for port in ports
            ]  # fmt: skip
        raise ValueError(f"unknown server {self.server!r}")


LAYER_NAMES = {
    ("ours", "core"): "RedisChannelLayer",
    ("ours", "pubsub"): "RedisPubSubChannelLayer",
    ("channels", "core"): "channels_redis RedisChannelLayer",
    ("channels", "pubsub"): "channels_redis RedisPubSubChannelLayer",
}
SERVER_NAMES = {
    "serve-w2": "`serve -w 2`",
    "serve-x2": "two `serve`",
    "daphne": "Channels, two Daphne",
    "uvicorn": "Channels, two uvicorn",
}


def _variant(impl: str, layer: str, server: str, worker_class: str = "asyncio") -> Variant:
    short = {"serve-w2": "w2", "serve-x2": "x2"}.get(server, server)
    key = f"{impl}-{layer}-{short}" + ("" if worker_class == "asyncio" else f"-{worker_class}")
    loop = "" if worker_class == "asyncio" else f" -k {worker_class}"
    label = f"{SERVER_NAMES[server]}{loop}, {LAYER_NAMES[(impl, layer)]}"
    if impl == "ours":
        label = f"ours, {label}"
    return Variant(key, label, impl, layer, server, worker_class)


VARIANTS = [
    *(
        _variant(impl, layer, server)
        for impl, servers in (
            ("ours", ("serve-w2", "serve-x2")),
            ("channels", ("daphne", "uvicorn")),
        )
        for layer in ("core", "pubsub")
        for server in servers
    ),
    # Not run by default: ours on the other loops.
    *(
        _variant("ours", layer, "serve-x2", loop)
        for layer in ("core", "pubsub")
        for loop in ("uvloop", "trio")
    ),
]  # fmt: skip
BY_KEY = {v.key: v for v in VARIANTS}
DEFAULT = [v.key for v in VARIANTS if v.worker_class == "asyncio"]


class Processes:
    """CPU time of some processes and of all their children (``serve -w 2``'s
    workers), read with psutil; the per-process connection counts on a port."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.roots = [psutil.Process(pid) for pid in pids]

    def all(self) -> list[Any]:
        import psutil

        found = []
        for root in self.roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                found += [root, *root.children(recursive=True)]
        return found

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for proc in self.all():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def pin_workers(self, cpus: tuple[str, str]) -> None:
        """Pin the two workers of one supervisor one to each of ``cpus``."""
        import psutil

        # Workers are started with multiprocessing's "spawn"; the supervisor's other
        # child is multiprocessing's resource tracker.
        workers = sorted(
            (c for c in self.roots[0].children() if "spawn_main" in " ".join(c.cmdline())),
            key=lambda proc: proc.pid,
        )
        if len(workers) != 2:
            raise RuntimeError(f"expected two workers, found {len(workers)}: {workers}")
        for proc, cpu in zip(workers, cpus, strict=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.cpu_affinity([int(cpu)])

    def connections(self, ports: set[int]) -> list[int]:
        """Established connections to ``ports`` held by each process that has any."""
        counts = []
        for proc in self.all():
            held = sum(
                1
                for conn in proc.net_connections(kind="tcp")
                if conn.status == "ESTABLISHED" and conn.laddr and conn.laddr.port in ports
            )
            if held:
                counts.append(held)
        return sorted(counts, reverse=True)


class RedisClock:
    """Redis's CPU time, from ``INFO cpu``."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def cpu_seconds(self) -> float:
        cpu = redis_info(self.address, "cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


#: Where processes run, by --placement: (CPUs of the first and second server
#: process, of the load generator, of Redis); None is not pinned.
PLACEMENTS: dict[str, tuple[tuple[str, str], str | None, str | None]] = {
    # Each server process on a CPU of its own, as two processes are meant to scale
    # out; the load generator and Redis go wherever the kernel puts them.
    "split": (("0", "1"), None, None),
    # bench_e2e's layout: both servers share CPU 0, load generator and Redis on CPU 1.
    "shared": ((SERVER_CPU, SERVER_CPU), LOADGEN_CPU, LOADGEN_CPU),
}


PLACEMENT_TEXT = {
    "split": "Each server process pinned to a CPU of its own (`serve -w 2`: each worker), the "
    "load generator and Redis not pinned.",
    "shared": "Both server processes pinned to CPU 0, the load generator and Redis to CPU 1.",
}


@contextlib.contextmanager
def running(
    variant: Variant, redis_url: str, args: argparse.Namespace
) -> Iterator[tuple[list[int], Processes]]:
    """Start ``variant``'s server processes where ``--placement`` says; yield
    their ports and processes."""
    ports = [free_port()] if variant.server == "serve-w2" else [free_port(), free_port()]
    env = [
        ("BENCH_LAYER", variant.layer),
        ("BENCH_IMPL", variant.impl),
        ("BENCH_REDIS_URL", redis_url),
        ("BENCH_PREFIX", f"so{uuid.uuid4().hex[:8]}"),
    ]
    python = args.channels_python
    servers, _, _ = PLACEMENTS[args.placement]
    # serve -w 2 is one supervisor: it may use both CPUs, and its workers are
    # pinned one to each below.
    cpus = [",".join(dict.fromkeys(servers))] if variant.server == "serve-w2" else servers
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(spawn(variant.key, command, port, args.log, env, where))
            for command, port, where in zip(
                variant.commands(ports, python), ports, cpus, strict=True
            )
        ]
        # Listening is not serving yet (serve -w 2 binds before its workers start).
        time.sleep(args.settle)
        group = Processes([p.pid for p in procs])
        if variant.server == "serve-w2":
            group.pin_workers(servers)
        yield ports, group


def available(python: str) -> dict[str, str]:
    """For each Channels server, "" if ``python`` can run it, else why not."""
    out = {}
    for server, modules in (("daphne", "daphne"), ("uvicorn", "uvicorn")):
        check = f"import channels, channels_redis, {modules}"
        proc = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=60)
        out[server] = "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]
    return out


def versions(python: str) -> str:
    code = (
        "from importlib import metadata as m\n"
        "names = ['channels', 'channels_redis', 'daphne', 'uvicorn', 'Twisted', 'uvloop', "
        "'websockets', 'Django']\n"
        "out = []\n"
        "for n in names:\n"
        "    try: out.append(f'{n} {m.version(n)}')\n"
        "    except Exception: pass\n"
        "print(', '.join(out))\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return proc.stdout.strip()


# -- running one variant ------------------------------------------------------------------


def measure(
    variant: Variant,
    redis_url: str,
    address: tuple[str, int],
    args: argparse.Namespace,
    cases: set[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    redis = RedisClock(address)
    with running(variant, redis_url, args) as (ports, procs):
        members = ",".join(f"ws://{HOST}:{port}/member" for port in ports)
        # Two triggers: one per process where the ports say which (x2); over the
        # one port of serve -w 2, wherever the kernel puts them.
        triggers = ",".join(f"ws://{HOST}:{ports[i % len(ports)]}/trigger" for i in range(2))
        common = {"url": members, "trigger": triggers, "clients": args.clients}
        if "latency" in cases:
            options = {**common, "repeats": args.repeats, "pause": 20}
            out["latency"] = loadgen(
                "bcast", options, procs, args.timeout, {"redis": redis}, args.loadgen_cpus
            )
        if "rate" in cases:
            start = args.rate_start
            if start is None:
                # A share of the rate one CPU could sustain at the latency run's
                # server CPU per broadcast (scaled to the rate's clients), so the
                # ladder starts near where it will end.
                per = out["latency"]["server_cpu_s"] / args.repeats if "latency" in out else 0
                per *= args.rate_clients / args.clients
                start = max(1.0, args.rate_start_share / per) if per > 0 else 5.0
            options = {
                **common,
                "clients": args.rate_clients,
                "limit": args.limit,
                "percentile": args.percentile,
                "step": args.step,
                "min-broadcasts": args.min_broadcasts,
                "rate-start": round(start, 2),
                "rate-max": args.rate_max,
                "refine": args.refine,
                "retries": args.retries,
            }
            out["rate"] = loadgen(
                "rate", options, procs, args.timeout * 3, {"redis": redis}, args.loadgen_cpus
            )
        if variant.server == "serve-w2":
            with idle_clients(members, args.clients, args.timeout, args.loadgen_cpus):
                time.sleep(0.5)
                out["spread"] = procs.connections(set(ports))
    return out


# -- formatting -----------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    text = f"{med(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f})"
    return text


def number(value: Any) -> float:
    return float("inf") if value is None else float(value)


def best_step(run: dict[str, Any]) -> dict[str, Any] | None:
    """The passing step at the sustained rate (None if nothing passed)."""
    passing = [s for s in run["steps"] if s["pass"]]
    return max(passing, key=lambda s: s["rate"]) if passing else None


def tables(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    keys = [k for k in BY_KEY if results.get(k)]
    lat = {k: [r["latency"] for r in results[k] if "latency" in r] for k in keys}
    rate = {k: [r["rate"] for r in results[k] if "rate" in r] for k in keys}
    out: list[str] = []

    def p50(key: str) -> float:
        return med([number(r["all_p50_ms"]) for r in lat[key]])

    def sustained(key: str) -> float:
        return med([float(r["sustained_rate"]) for r in rate[key]])

    channels = [k for k in keys if BY_KEY[k].impl == "channels"]
    best_lat = min(channels, key=p50, default=None) if any(lat[k] for k in channels) else None
    best_rate = (
        max(channels, key=sustained, default=None) if any(rate[k] for k in channels) else None
    )

    if any(lat.values()):
        base = f"÷ best Channels ({best_lat})" if best_lat else "÷ best Channels"
        out += [
            f"**Latency: one `group_send` to {args.clients:,} clients over two processes, "
            f"{args.repeats} broadcasts per round** (ms from sending the trigger frame until "
            "the last, the median and the first client has the message)",
            "",
            "| variant | all clients, p50 | all clients, p99 | median client | first client "
            "| server CPU (ms per broadcast) | Redis CPU (ms per broadcast) | load gen CPU "
            f"| p50 {base} |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]  # fmt: skip
        for key in keys:
            runs = lat[key]
            if not runs:
                continue
            ratio = f"{p50(key) / p50(best_lat):.2f}" if best_lat else "—"
            out.append(
                f"| {BY_KEY[key].label} | {fmt([number(r['all_p50_ms']) for r in runs])} "
                f"| {fmt([number(r['all_p99_ms']) for r in runs])} "
                f"| {fmt([number(r['client_p50_ms']) for r in runs])} "
                f"| {fmt([number(r['first_p50_ms']) for r in runs])} "
                f"| {fmt([r['server_cpu_s'] / r['repeats'] * 1e3 for r in runs])} "
                f"| {fmt([r['redis_cpu_s'] / r['repeats'] * 1e3 for r in runs], 2)} "
                f"| {fmt([r['loadgen_cpu'] * 100 for r in runs], 0)} % | {ratio} |"
            )
        out.append("")

    if any(rate.values()):
        base = f"÷ best Channels ({best_rate})" if best_rate else "÷ best Channels"
        out += [
            "**Sustained broadcast rate: the highest rate of `group_send` to "
            f"{args.rate_clients:,} clients at which p{args.percentile:g} stayed ≤ {args.limit:g} "
            "ms and nothing "
            "was lost** "
            "(figures at that rate's step)",
            "",
            "| variant | broadcasts/s | messages/s delivered | first failing rate "
            "| p50 / p99 at that rate (ms) | server CPU (% of one CPU) "
            "| server CPU (ms per broadcast) "
            f"| Redis CPU (% of one CPU) | load gen CPU | {base} |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key in keys:
            runs = rate[key]
            if not runs:
                continue
            passed = [(r, s) for r in runs if (s := best_step(r)) is not None]

            def at(name: str, per_broadcast: bool, _passed: Any = passed) -> list[float]:
                """A CPU figure over the window of each run's step at its sustained rate."""
                values = []
                for run, step in _passed:
                    cpu = run.get("cpu", {}).get(f"s{run['steps'].index(step)}", {})
                    if name in cpu:
                        per = step["broadcasts"] if per_broadcast else step["seconds"]
                        values.append(cpu[name] / per * (1e3 if per_broadcast else 100))
                return values

            ratio = (
                f"{sustained(key) / sustained(best_rate):.2f}"
                if best_rate and sustained(best_rate)
                else "—"
            )
            fails = [number(r["first_failure"]) for r in runs]
            out.append(
                f"| {BY_KEY[key].label} | {fmt([float(r['sustained_rate']) for r in runs])} "
                f"| {fmt([float(r['sustained_rate']) * args.rate_clients for r in runs], 0)} "
                f"| {fmt(fails)} "
                f"| {fmt([s['p50_ms'] for _, s in passed])} "
                f"/ {fmt([s['p99_ms'] for _, s in passed])} "
                f"| {fmt(at('server', False), 0)} % | {fmt(at('server', True), 2)} "
                f"| {fmt(at('redis', False), 0)} % "
                f"| {fmt([s['loadgen_cpu'] * 100 for _, s in passed], 0)} % | {ratio} |"
            )
        out.append("")

    spreads = {k: [r["spread"] for r in results[k] if "spread" in r] for k in keys}
    if any(spreads.values()):
        out += ["Connections per worker of `serve -w 2` (kernel's choice, one port): "]
        for key, seen in spreads.items():
            if seen:
                out.append(f"{key}: " + "; ".join(" / ".join(map(str, s)) for s in seen) + ".")
        out.append("")

    checks = ["| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for key in keys:
        if BY_KEY[key].impl != "ours":
            continue
        if best_lat and lat[key]:
            value = p50(key) / p50(best_lat)
            checks.append(
                f"| p50, {key} ÷ {best_lat} | {value:.2f} | <= 0.33 "
                f"| {'yes' if value <= 1 / 3 else 'no'} |"
            )
        if best_rate and rate[key]:
            theirs, ours = sustained(best_rate), sustained(key)
            if theirs:
                value = f"{ours / theirs:.2f}"
                met = "yes" if ours / theirs >= 3 else "no"
            else:  # nothing of Channels' passed: no ratio
                value = f"{ours:.1f}/s against 0"
                met = "—"
            checks.append(f"| sustained rate, {key} ÷ {best_rate} | {value} | >= 3.0 | {met} |")
    if len(checks) > 2:
        out += checks
    return out


# -- driver -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(DEFAULT), help="comma-separated keys")
    parser.add_argument("--cases", default="latency,rate", help="latency, rate or both")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument(
        "--rate-clients", type=int, help="clients for the rate (default: --clients)"
    )
    parser.add_argument("--repeats", type=int, default=30, help="broadcasts per latency run")
    parser.add_argument(
        "--limit", type=float, default=100.0, help="latency limit (ms) for the rate"
    )
    parser.add_argument(
        "--percentile", type=float, default=99.0, help="which percentile --limit applies to"
    )
    parser.add_argument("--step", type=float, default=3.0, help="least seconds per rate step")
    parser.add_argument(
        "--min-broadcasts", type=int, default=30, help="least broadcasts per rate step"
    )
    parser.add_argument(
        "--rate-start",
        type=float,
        help="first rate tried (/s; default: --rate-start-share of what the latency run's "
        "server CPU per broadcast allows)",
    )
    parser.add_argument("--rate-start-share", type=float, default=0.3, help="see --rate-start")
    parser.add_argument("--rate-max", type=float, default=5000.0, help="highest rate tried (/s)")
    parser.add_argument("--retries", type=int, default=1, help="more tries of a failed step")
    parser.add_argument(
        "--rate-rounds", type=int, help="rounds that also measure the rate (default: all)"
    )
    parser.add_argument("--refine", type=int, default=2, help="bisection steps for the rate")
    parser.add_argument(
        "--channels-python",
        default=sys.executable,
        help="the Python that runs Daphne and uvicorn with Channels and channels_redis "
        "(default: this one)",
    )
    parser.add_argument("--redis", help="use this Redis (default: start one on CPU 1)")
    parser.add_argument(
        "--placement",
        choices=list(PLACEMENTS),
        default="split",
        help="split: a CPU per server process, load generator and Redis unpinned; shared: "
        "both servers on CPU 0, load generator and Redis on CPU 1",
    )
    parser.add_argument("--settle", type=float, default=1.0, help="s between listening and load")
    parser.add_argument("--timeout", type=float, default=300.0, help="per load generator run")
    parser.add_argument("--log", default="/tmp/bench_scale_out_servers.log", help="server output")
    parser.add_argument("--json", help="also save every result to this file")
    args = parser.parse_args()
    args.cases = set(args.cases.split(","))
    args.rate_clients = args.rate_clients or args.clients
    args.loadgen_cpus = PLACEMENTS[args.placement][1]
    args.log = Path(args.log)
    args.log.write_bytes(b"")
    chosen = [k for k in args.variants.split(",") if k]
    unknown = [k for k in chosen if k not in BY_KEY]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; known: {', '.join(BY_KEY)}")

    notes = []
    missing = available(args.channels_python)
    for key in list(chosen):
        reason = missing.get(BY_KEY[key].server)
        if reason:
            chosen.remove(key)
            notes.append(f"{key} skipped: {args.channels_python} cannot run it ({reason}).")
            print(notes[-1], file=sys.stderr)
    ensure_node_deps()

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        url = args.redis
        if url is None:
            url, _ = stack.enter_context(redis_server(PLACEMENTS[args.placement][2]))
        parts = urlsplit(url)
        address = (parts.hostname or HOST, parts.port or 6379)
        redis_version = redis_info(address, "server").get("redis_version", "?")
        for rnd in range(args.rounds):
            order = chosen if rnd % 2 == 0 else list(reversed(chosen))
            for key in order:
                cases = set(args.cases)
                if args.rate_rounds is not None and rnd >= args.rate_rounds:
                    cases.discard("rate")
                result = measure(BY_KEY[key], url, address, args, cases)
                results.setdefault(key, []).append(result)
                brief = []
                if "latency" in result:
                    lat = result["latency"]
                    brief.append(
                        f"p50 {number(lat['all_p50_ms']):.1f} ms, "
                        f"p99 {number(lat['all_p99_ms']):.1f} ms"
                    )
                if "rate" in result:
                    brief.append(f"sustained {result['rate']['sustained_rate']:.1f}/s")
                if "spread" in result:
                    brief.append(f"spread {result['spread']}")
                print(f"round {rnd + 1}: [{key}] {', '.join(brief)}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    took = time.monotonic() - started
    channels_from = (
        "this Python" if args.channels_python == sys.executable else args.channels_python
    )
    out = [
        f"Machine: {machine()}.",
        f"Channels side ({channels_from}): {versions(args.channels_python)}. Redis {redis_version}"
        + (" (private)" if args.redis is None else f" at {args.redis}")
        + ".",
        PLACEMENT_TEXT[args.placement] + " "
        f"{args.rounds} rounds, each starting every variant once (order reversed every other "
        f"round); median over rounds (min\N{EN DASH}max). Took {took:.0f} s; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
        *notes,
        "",
        *tables(results, args),
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
