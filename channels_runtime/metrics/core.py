"""Metrics kept in plain Python numbers, cheap enough to update once per message.

A WebSocket echo costs the server about 55 µs of CPU (docs/performance.md);
``prometheus_client``'s own metric objects take a lock per update, and in its
multiprocess mode write to an mmap as well (1-2 µs each), which would cost
several percent of that. So the hot path updates the objects defined here:
a dict from label values to an ``int``/``float`` per metric, and a list of
bucket counts per histogram series, with no lock (each update runs on the
event loop's thread, or in a thread of its own only for the handful of
metrics that say so). :mod:`channels_runtime.metrics.publish` copies them off
the hot path, every :data:`~channels_runtime.metrics.publish.FLUSH_INTERVAL`
seconds, and :mod:`channels_runtime.metrics.aggregate` turns the copies of all
workers into one Prometheus exposition.

Definitions are module-level objects in the concept modules (``connections``,
``consumers``, ...), registered in :data:`REGISTRY` by name at import; the
process that answers scrapes imports the same modules, so it knows the type,
help text and labels of every metric, and the copies only carry values.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "REGISTRY",
    "BoundedLabel",
    "Counter",
    "Gauge",
    "Histogram",
    "Metric",
    "Snapshot",
    "clear_all",
    "on_clear",
    "snapshot",
    "snapshot_number",
]

#: The label values of one series, in the order of the metric's ``labels``.
Key = tuple[str, ...]

#: What :func:`snapshot` returns: name -> [[label values, value], ...] (JSON-ready).
Snapshot = dict[str, list[list[Any]]]


def _copy(
    values: dict[Key, float], collect: Callable[[], Iterable[tuple[Key, float]]] | None
) -> list[list[Any]]:
    """``values`` as JSON-ready pairs, plus what ``collect`` reports (summed per key)."""
    totals = values.copy()
    if collect is not None:
        for key, value in collect():
            totals[key] = totals.get(key, 0) + value
    return [[list(key), value] for key, value in totals.items()]


class Metric:
    """Name, help text and label names of one metric; values live in the subclasses."""

    kind = ""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> None:
        if not name.startswith("channels_runtime_"):
            raise ValueError(f"metric {name!r} must start with 'channels_runtime_'")
        self.name = name
        self.documentation = documentation
        self.labels = labels
        if REGISTRY.setdefault(name, self) is not self:
            raise ValueError(f"metric {name!r} is defined twice")

    def copy_values(self) -> list[list[Any]]:
        raise NotImplementedError

    def clear(self) -> None:
        """Forget every value (tests, and a fresh worker process)."""
        raise NotImplementedError


class _Values(Metric):
    """A plain number per series, and optionally ``collect``: a function returning
    ``(label values, value)`` pairs computed when the values are copied."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...] = (),
        *,
        collect: Callable[[], Iterable[tuple[Key, float]]] | None = None,
    ) -> None:
        super().__init__(name, documentation, labels)
        self.values: dict[Key, float] = {}
        self.collect = collect

    def inc(self, key: Key = (), amount: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + amount

    def copy_values(self) -> list[list[Any]]:
        return _copy(self.values, self.collect)

    def clear(self) -> None:
        self.values.clear()


class Counter(_Values):
    """Only goes up. ``values[key] += n`` is the whole update; :meth:`inc` is the readable form.

    The name is the Prometheus sample name, ``..._total`` included. ``collect``
    (as for :class:`Gauge`) adds values that only exist when copied, such as
    the seconds of an outage still in progress; they must only grow too.
    """

    kind = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...] = (),
        *,
        collect: Callable[[], Iterable[tuple[Key, float]]] | None = None,
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end with '_total'")
        super().__init__(name, documentation, labels, collect=collect)


class Gauge(_Values):
    """A value of this process now; summed over the live workers, dropped with a dead one.

    Either updated in place (``inc``/``dec``/``set``), or computed when copied by
    ``collect``: a function returning ``(label values, value)`` pairs, for values
    that already exist elsewhere (bytes buffered, groups known) and would only
    cost the hot path to mirror.
    """

    kind = "gauge"

    def dec(self, key: Key = (), amount: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) - amount

    def set(self, key: Key = (), value: float = 0) -> None:
        self.values[key] = value


class Histogram(Metric):
    """Bucket counts per series: ``[n(<= b0), n(b0 < v <= b1), ..., n(> last), sum]``.

    The counts are per bucket, not cumulative, so an observation adds to one
    cell; the exposition makes them cumulative.
    """

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...] = (),
        *,
        buckets: tuple[float, ...],
    ) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError(f"histogram {name!r}: buckets must increase")
        super().__init__(name, documentation, labels)
        self.buckets = buckets
        self.values: dict[Key, list[float]] = {}

    def observe(self, key: Key, value: float) -> None:
        cells = self.values.get(key)
        if cells is None:
            cells = self.values[key] = [0] * (len(self.buckets) + 2)
        cells[bisect_left(self.buckets, value)] += 1
        cells[-1] += value

    def copy_values(self) -> list[list[Any]]:
        return [[list(key), cells.copy()] for key, cells in self.values.copy().items()]

    def clear(self) -> None:
        self.values.clear()


#: Every metric defined, by name.
REGISTRY: dict[str, Metric] = {}

#: Called by :func:`clear_all`: caches that hold references into metric values.
_clear_hooks: list[Callable[[], object]] = []


def on_clear(hook: Callable[[], object]) -> None:
    """Have :func:`clear_all` call ``hook`` (a cache of references into values)."""
    _clear_hooks.append(hook)


def clear_all() -> None:
    """Forget every value of every metric (tests; a process starting afresh)."""
    for metric in REGISTRY.values():
        metric.clear()
    for hook in _clear_hooks:
        hook()


#: Snapshots taken so far, and the number of the one being taken (None between).
_snapshots = 0
_taking: int | None = None


def snapshot_number() -> int | None:
    """The number of the snapshot being taken, or None outside :func:`snapshot`.

    Several metrics may read one costly source, such as a layer's
    ``metrics_state()``, which walks every channel; keyed by this number it is
    read once per snapshot, not once per metric. Outside a snapshot (a metric's
    ``copy_values()`` called on its own) there is nothing to share.
    """
    return _taking


def snapshot() -> Snapshot:
    """A copy of every metric's values (the hot path may go on updating the originals)."""
    global _snapshots, _taking
    _snapshots += 1
    _taking = _snapshots
    try:
        return {name: metric.copy_values() for name, metric in REGISTRY.items()}
    finally:
        _taking = None


class BoundedLabel:
    """Maps open-ended strings to at most ``limit`` label values, then ``other``.

    For labels a user's code chooses (message types): the first ``limit``
    distinct values of a process are kept, later new ones become ``"other"``,
    so a buggy or hostile naming scheme cannot grow the series without bound.
    ``reduce`` maps a raw string to its label value first (say, a type to its
    family). Results are cached per raw string (up to ``cache`` of them), so
    the usual call is one dict lookup.
    """

    def __init__(self, reduce: Callable[[str], str], *, limit: int = 50, cache: int = 4096) -> None:
        self.reduce = reduce
        self.limit = limit
        self.cache_size = cache
        self.cache: dict[str, str] = {}
        self.seen: set[str] = set()

    def __call__(self, raw: str) -> str:
        label = self.cache.get(raw)
        if label is not None:
            return label
        label = self.reduce(raw)
        if label not in self.seen:
            if len(self.seen) >= self.limit:
                label = "other"
            else:
                self.seen.add(label)
        if len(self.cache) < self.cache_size:
            self.cache[raw] = label
        return label
