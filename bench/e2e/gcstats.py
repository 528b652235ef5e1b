"""Diagnostics: log the garbage collector's work in a server process.

Imported by the app modules only when ``BENCH_GC_STATS=1`` is in the
environment. Every 2 s, if anything was collected, one line goes to stderr:
collections and total pause per generation since start.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

_started: dict[int, float] = {}
counts = [0, 0, 0]
pauses = [0.0, 0.0, 0.0]


def _callback(phase: str, info: dict[str, int]) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.perf_counter()
    elif generation in _started:
        counts[generation] += 1
        pauses[generation] += time.perf_counter() - _started.pop(generation)


def _report() -> None:
    last = None
    while True:
        time.sleep(2)
        now = (tuple(counts), tuple(round(p, 4) for p in pauses))
        if now != last:
            last = now
            text = ", ".join(f"gen{g}: {counts[g]} x, {pauses[g] * 1e3:.1f} ms" for g in range(3))
            print(f"[gcstats {os.getpid()}] {text}", file=sys.stderr, flush=True)


gc.callbacks.append(_callback)
threading.Thread(target=_report, name="gcstats", daemon=True).start()
