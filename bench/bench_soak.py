"""Soak benchmark: minutes of churn with misbehaving clients, then everything back to idle.

Run from the repository root::

    python bench/bench_soak.py                                  # 3 min per worker class, all three
    python bench/bench_soak.py --duration 180 --worker-class trio

For each worker class in turn it serves ``bench/soak_app`` with ``channels-runtime
serve``, churns it with well-behaved clients (echo, group chat, database
consumers, HTTP streams read to the end) and misbehaving ones (clients that
stop reading, reset, half-close, vanish, or leave a stream early), then checks
that RSS, descriptors, threads, tasks, consumers, database connections and the
channel layer's channels and groups come back to their idle values. Prints
markdown tables to stdout (progress to stderr) and exits with status 1 if any
check fails. After each soak, one more check on the same worker class: how long
the server holds the connections of clients that closed a keep-alive
connection (``closed_keep_alive_linger``); its table is printed, not judged.

The harness is ``tests/soak_harness.py``, shared with ``tests/test_soak.py``
(seconds of churn instead of minutes); this script is its command line. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soak_harness import (
    WORKER_CLASSES,
    SoakSettings,
    closed_keep_alive_linger,
    linger_report,
    markdown_report,
    run_soak,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker-class",
        default="all",
        help="asyncio, uvloop, trio, a comma-separated list, or all (default: all, in turn)",
    )
    parser.add_argument("--duration", type=float, default=180.0, help="s of churn per class")
    parser.add_argument("--sample-interval", type=float, default=5.0, help="s between samples")
    parser.add_argument(
        "--settle-timeout", type=float, default=60.0, help="s the metrics get to come back"
    )
    parser.add_argument("--scale", type=int, default=2, help="client threads per behaviour, x")
    parser.add_argument("--rss-slack-mib", type=float, default=20.0)
    parser.add_argument("--rss-slack-pct", type=float, default=10.0)
    parser.add_argument(
        "--workdir", type=Path, help="server logs and databases (default: a new temp dir)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument(
        "--plain-hypercorn",
        action="store_true",
        help="turn channels-runtime's Hypercorn fixes off, to see the leaks they fix",
    )
    args = parser.parse_args()

    chosen = WORKER_CLASSES if args.worker_class == "all" else args.worker_class.split(",")
    unknown = sorted(set(chosen) - set(WORKER_CLASSES))
    if unknown:
        parser.error(f"unknown worker class(es): {', '.join(unknown)}")
    if args.duration < 10:
        parser.error("--duration must be at least 10 s, for at least two samples of churn")
    settings = SoakSettings(
        duration=args.duration,
        sample_interval=args.sample_interval,
        settle_timeout=args.settle_timeout,
        scale=args.scale,
        rss_slack_mib=args.rss_slack_mib,
        rss_slack_ratio=args.rss_slack_pct / 100,
        hypercorn_fixes=not args.plain_hypercorn,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_soak_"))
    print(f"server logs and databases in {workdir}", file=sys.stderr)

    results, lingers = [], []
    for worker_class in chosen:
        result = run_soak(
            worker_class,
            workdir / worker_class,
            settings,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        results.append(result)
        if not result.ok:
            print(result.failures(), file=sys.stderr)
        print(f"{worker_class}: closed keep-alive connections", file=sys.stderr)
        lingers.append(closed_keep_alive_linger(worker_class, workdir / f"{worker_class}-linger"))

    title = (
        f"**Soak: {args.duration:g} s of churn per worker class, {args.scale}x client threads"
        + (", Hypercorn fixes off" if args.plain_hypercorn else "")
        + "**"
    )
    report = (
        f"{title}\n\n{markdown_report(results)}\n\n"
        f"**Keep-alive connections the client closed**\n\n{linger_report(lingers)}\n"
    )
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
