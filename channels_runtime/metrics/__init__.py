"""Prometheus metrics of a ``channels-runtime serve`` run (the ``metrics`` extra).

Off unless a metrics bind is configured (``--metrics-bind``, ``metrics_bind``
in ``hypercorn.toml``, or the ``CHANNELS_RUNTIME_METRICS_BIND`` setting); then
every call site is a single ``if metrics.enabled:`` check that is false, and
nothing else runs. See ``docs/metrics.md`` for the metrics and
``docs/architecture.md`` for how they are kept cheap and summed over workers:

* :mod:`.core`: counters, gauges and histograms in plain Python numbers;
* concept modules define the metrics and the one-line calls the runtime makes:
  :mod:`.connections`, :mod:`.consumers`, :mod:`.outbound`, :mod:`.layers`,
  :mod:`.http`;
* :mod:`.publish`: each worker copies its numbers to a file twice a second;
* :mod:`.aggregate`: the scrape sums the copies (live workers and retired ones);
* :mod:`.exposition`: the HTTP server of the metrics bind and its route table;
* :mod:`.serving`: what ``serve`` starts and stops.

Only :mod:`.aggregate` and :mod:`.serving` import ``prometheus_client``.
"""

from __future__ import annotations

__all__ = [
    "connections",
    "consumers",
    "disable",
    "enable",
    "enabled",
    "http",
    "layers",
    "outbound",
]

#: Whether the runtime counts. Read at every call site (``if metrics.enabled:``),
#: so turning metrics off costs one attribute lookup per instrumented point.
enabled = False


def enable() -> None:
    """Start counting in this process (``serve`` does it when a metrics bind is set)."""
    global enabled
    enabled = True


def disable() -> None:
    """Stop counting in this process (values so far are kept)."""
    global enabled
    enabled = False


# The concept modules, for call sites' ``metrics.connections.routed(...)``; they
# import neither prometheus_client nor the rest of the runtime.
from . import connections, consumers, http, layers, outbound  # noqa: E402
