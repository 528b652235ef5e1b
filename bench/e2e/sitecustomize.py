"""Function call counts in a benchmark server, for ``instructions.py --calls``.

Python imports ``sitecustomize`` at start-up from the path; the benchmark
servers have this folder on ``PYTHONPATH``, so they all import it. It does
nothing unless ``BENCH_CALLS_FILE`` is set. Then ``SIGUSR1`` starts a fresh
``cProfile`` profile of the main thread (the event loop's), and ``SIGUSR2``
stops it and writes its stats (``pstats`` format) to ``BENCH_CALLS_FILE``,
so a benchmark can count the calls one stretch of load made.
"""

from __future__ import annotations

import os

_target = os.environ.get("BENCH_CALLS_FILE")

if _target:
    import cProfile
    import signal
    from typing import Any

    _profile: list[cProfile.Profile] = []

    def _start(_signum: int, _frame: Any) -> None:
        profile = cProfile.Profile()
        _profile[:] = [profile]
        profile.enable()

    def _stop(_signum: int, _frame: Any) -> None:
        if _profile:
            profile = _profile.pop()
            profile.disable()
            profile.dump_stats(_target)

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
