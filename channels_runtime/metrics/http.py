"""Metrics of Django HTTP requests served by :mod:`channels_runtime.http`.

Labelled by the *view route*: the pattern Django resolved the request to
(``ResolverMatch.route``, e.g. ``articles/<int:year>/``; ``""`` when no view
matched, as for a 404 from the resolver), never the path; and by status class
(``2xx`` ... ``5xx``, or ``none`` when the client left before a response was
started).

The request's application task holds an :class:`HttpRecord` in :data:`current`;
Django's handler notes the route when it resolves (in the request's worker
thread or on the loop, both see the record) and the response start notes the
status, and the record is counted on the event loop when the request ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from .core import Counter, Gauge, Histogram

__all__ = ["DURATION", "IN_PROGRESS", "REQUESTS", "note_route", "note_status", "serve"]

#: Seconds, from 1 ms to 30 s.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

REQUESTS = Counter(
    "channels_runtime_http_requests_total",
    "Django HTTP requests served, by status class (2xx..5xx, none) and view route.",
    ("status", "route"),
)
DURATION = Histogram(
    "channels_runtime_http_request_duration_seconds",
    "Time from a Django HTTP request's arrival to the end of its response, by view route.",
    ("route",),
    buckets=DURATION_BUCKETS,
)
IN_PROGRESS = Gauge(
    "channels_runtime_http_requests_in_progress",
    "Django HTTP requests being served now.",
)


class HttpRecord:
    __slots__ = ("route", "status")

    def __init__(self) -> None:
        self.route = ""
        self.status: int | None = None


current: ContextVar[HttpRecord | None] = ContextVar("channels_runtime_metrics_http", default=None)


def note_route(match: Any) -> None:
    """Django resolved the current request to ``match`` (a ``ResolverMatch``)."""
    record = current.get()
    if record is not None:
        record.route = str(getattr(match, "route", "") or "")


def note_status(status: int) -> None:
    """The current request's response starts with ``status``."""
    record = current.get()
    if record is not None and record.status is None:
        record.status = status


def _status_class(status: int | None) -> str:
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


async def serve(handle: Callable[[], Awaitable[None]]) -> None:
    """``await handle()`` (one request), counted and timed."""
    record = HttpRecord()
    token = current.set(record)
    IN_PROGRESS.inc()
    started = time.perf_counter()
    try:
        await handle()
    finally:
        elapsed = time.perf_counter() - started
        current.reset(token)
        IN_PROGRESS.dec()
        REQUESTS.inc((_status_class(record.status), record.route))
        DURATION.observe((record.route,), elapsed)
