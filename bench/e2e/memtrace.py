"""Diagnostics: where a server process's Python memory goes (tracemalloc).

Imported by the app modules only when ``BENCH_TRACEMALLOC=1`` is in the
environment. The first SIGUSR1 takes a baseline snapshot; each later one
prints to stderr the growth since the baseline by allocation site (top 70).
"""

from __future__ import annotations

import gc
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parents[2]) + "/"

tracemalloc.start(4)
_baseline: list[tracemalloc.Snapshot] = []


def _on_signal(signum: int, frame: Any) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    if not _baseline:
        _baseline.append(snapshot)
        print("[memtrace] baseline taken", file=sys.stderr, flush=True)
        return
    stats = snapshot.compare_to(_baseline[0], "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"[memtrace] growth {total:,} bytes", file=sys.stderr)
    for stat in stats[:70]:
        frame = stat.traceback[0]
        where = frame.filename.split("site-packages/")[-1].removeprefix(_REPO)
        line = f"{stat.size_diff:>12,} B {stat.count_diff:>8,} blocks  {where}:{frame.lineno}"
        print(f"[memtrace] {line}", file=sys.stderr)
    sys.stderr.flush()


signal.signal(signal.SIGUSR1, _on_signal)
