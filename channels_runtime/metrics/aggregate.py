"""Scrape side: one exposition from the copies every worker publishes.

The files in a serve run's metrics directory (``<pid>.json``, written by
:mod:`channels_runtime.metrics.publish`) hold each live worker's cumulative
values. A scrape sums them:

* counters and histograms: live workers plus the *retired* totals, the last
  copy of every worker that has exited. The supervisor calls :meth:`retire`
  when it reaps a worker (exited, crashed or SIGKILLed): its file is folded
  into the retired totals and deleted under the same lock a scrape takes, so a
  scrape counts a dead worker exactly once, and a replacement starts from zero
  without the total going down;
* gauges (connections open now, bytes buffered...): live workers only, so a
  dead worker's connections stop being counted the moment it is reaped.

With one worker the scrape is answered in that same process and reads its own
file the same way. ``process_*`` and ``python_*`` metrics come from
``prometheus_client``'s own collectors: with one worker, exactly as
``prometheus_client`` exposes them for the server process; with ``--workers
N`` (or ``--reload``) every ``process_*``/``python_gc_*`` series carries ``pid`` and ``role``
(``supervisor`` or ``worker``) labels, one set per live process, so
``sum(process_resident_memory_bytes)`` is the whole server's memory in both
cases.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import core

__all__ = ["Aggregator"]

logger = logging.getLogger("channels_runtime.metrics")

Totals = dict[str, dict[tuple[str, ...], Any]]


def _add(totals: Totals, name: str, series: Iterable[list[Any]]) -> None:
    metric_totals = totals.setdefault(name, {})
    for labels, value in series:
        key = tuple(labels)
        if isinstance(value, list):
            cells = metric_totals.get(key)
            if cells is None or len(cells) != len(value):
                metric_totals[key] = list(value)
            else:
                for index, cell in enumerate(value):
                    cells[index] += cell
        else:
            metric_totals[key] = metric_totals.get(key, 0) + value


def _format_bound(bound: float) -> str:
    return repr(float(bound))


def _relabel(raw: Iterable[list[Any]], extra: dict[str, str], into: dict[str, Metric]) -> None:
    """Merge published ``[name, type, help, unit, samples]`` families into ``into``."""
    for name, kind, documentation, unit, samples in raw:
        family = into.get(name)
        if family is None:
            family = into[name] = Metric(name, documentation, kind, unit)
        for sample_name, labels, value in samples:
            family.add_sample(sample_name, {**labels, **extra}, value)


def _families_of(collector: Collector) -> list[list[Any]]:
    return [
        [f.name, f.type, f.documentation, f.unit, [[s.name, s.labels, s.value] for s in f.samples]]
        for f in collector.collect()
    ]


class Aggregator(Collector):
    """Sums the published copies in ``directory``; see the module docstring.

    ``supervised``: the workers are child processes and this process is their
    supervisor, so process metrics are labelled per process.
    """

    def __init__(self, directory: str | os.PathLike[str], *, supervised: bool) -> None:
        self.directory = Path(directory)
        self.supervised = supervised
        self._lock = threading.Lock()
        self._retired: Totals = {}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)
        # This process's own: unlabelled with one worker (it is the server),
        # relabelled as the supervisor's in collect() with several.
        self._own_process = CollectorRegistry(auto_describe=False)
        own = self._own_process if supervised else self._registry
        ProcessCollector(registry=own)
        GCCollector(registry=own)
        PlatformCollector(registry=self._registry)

    # -- files ----------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable metrics file %s: %s", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _live_files(self) -> list[Path]:
        return sorted(self.directory.glob("*.json"))

    def retire(self, pid: int) -> None:
        """Fold the last copy of worker ``pid`` (now gone) into the retired totals."""
        path = self.directory / f"{pid}.json"
        with self._lock:
            data = self._read(path)
            if data is not None:
                for name, series in data.get("metrics", {}).items():
                    metric = core.REGISTRY.get(name)
                    if metric is not None and metric.kind != "gauge":
                        _add(self._retired, name, series)
            path.unlink(missing_ok=True)
            (self.directory / f"{pid}.json.tmp").unlink(missing_ok=True)

    # -- exposition -----------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        process_families: dict[str, Metric] = {}
        with self._lock:
            totals: Totals = {
                name: {key: (list(v) if isinstance(v, list) else v) for key, v in series.items()}
                for name, series in self._retired.items()
            }
            for path in self._live_files():
                data = self._read(path)
                if data is None:
                    continue
                for name, series in data.get("metrics", {}).items():
                    if name in core.REGISTRY:
                        _add(totals, name, series)
                if self.supervised:
                    extra = {"pid": str(data.get("pid", path.stem)), "role": "worker"}
                    _relabel(data.get("process", []), extra, process_families)
        if self.supervised:
            own = {"pid": str(os.getpid()), "role": "supervisor"}
            _relabel(_families_of(self._own_process), own, process_families)
        for name, metric in core.REGISTRY.items():
            yield self._family(metric, totals.get(name, {}))
        yield from process_families.values()

    def _family(self, metric: core.Metric, series: dict[tuple[str, ...], Any]) -> Metric:
        labels = list(metric.labels)
        if not labels and not series:
            # An unlabelled metric has its one series from the start: 0 so far.
            zero = [0] * (len(metric.buckets) + 2) if isinstance(metric, core.Histogram) else 0
            series = {(): zero}
        family: Metric
        if isinstance(metric, core.Histogram):
            family = HistogramMetricFamily(metric.name, metric.documentation, labels=labels)
            for key, cells in sorted(series.items()):
                running = 0.0
                buckets = []
                for bound, count in zip((*metric.buckets, float("inf")), cells[:-1], strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else _format_bound(bound)
                    buckets.append((le, running))
                family.add_metric(list(key), buckets, cells[-1])
            return family
        if isinstance(metric, core.Counter):
            family = CounterMetricFamily(
                metric.name.removesuffix("_total"), metric.documentation, labels=labels
            )
        else:
            family = GaugeMetricFamily(metric.name, metric.documentation, labels=labels)
        for key, value in sorted(series.items()):
            family.add_metric(list(key), value)
        return family

    def render(self) -> bytes:
        """The Prometheus text exposition of everything (the ``/metrics`` body)."""
        return generate_latest(self._registry)
