"""Diagnostics: where a server process's Python memory goes (tracemalloc).

Imported by the app modules only when ``BENCH_TRACEMALLOC`` is in the
environment. The first SIGUSR1 takes a baseline snapshot; each later one
prints to stderr the growth since the baseline by allocation site (top 70).
``BENCH_TRACEMALLOC=traceback`` groups by the last four frames instead of the
allocating line, to tell apart the callers of a shared line (a ``deque()`` in
``asyncio.Event``, say).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parents[2]) + "/"

_GROUPING = "traceback" if os.environ.get("BENCH_TRACEMALLOC") == "traceback" else "lineno"

tracemalloc.start(4)
_baseline: list[tracemalloc.Snapshot] = []


def _place(frame: tracemalloc.Frame) -> str:
    return frame.filename.split("site-packages/")[-1].removeprefix(_REPO) + f":{frame.lineno}"


def _on_signal(signum: int, frame: Any) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    if not _baseline:
        _baseline.append(snapshot)
        print("[memtrace] baseline taken", file=sys.stderr, flush=True)
        return
    stats = snapshot.compare_to(_baseline[0], _GROUPING)
    total = sum(s.size_diff for s in stats)
    print(f"[memtrace] growth {total:,} bytes", file=sys.stderr)
    for stat in stats[:70]:
        where = " < ".join(_place(frame) for frame in reversed(stat.traceback))
        line = f"{stat.size_diff:>12,} B {stat.count_diff:>8,} blocks  {where}"
        print(f"[memtrace] {line}", file=sys.stderr)
    sys.stderr.flush()


signal.signal(signal.SIGUSR1, _on_signal)
