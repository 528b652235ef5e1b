"""Consumer metrics: messages handled by type family, handler time, exceptions, turn waits.

The *type family* of a message is its type up to the first ``.``:
``websocket.receive`` and ``websocket.connect`` are ``websocket``, a group
message ``chat.message`` is ``chat``. Families are chosen by the project's
code, so they are few; still, a process keeps at most :data:`FAMILY_LIMIT`
distinct ones and counts the rest as ``other``, so a scheme that builds types
from data (``user_42.update``) cannot grow the series without bound.

A consumer whose connection starts while metrics are on has its messages
observed by its dispatch loop (:func:`observe`), so the check is per
connection, not per message. The messages counter is the handler
histogram's count, so a message costs one histogram update.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from ..exceptions import StopConsumer
from .core import BoundedLabel, Counter, Histogram, Key, on_clear

__all__ = [
    "DURATION",
    "EXCEPTIONS",
    "FAMILY_LIMIT",
    "HANDLED",
    "TURN_WAIT",
    "observe",
    "type_family",
    "wait_turn",
]

#: Distinct type families a process labels before the rest become ``other``.
FAMILY_LIMIT = 50

#: Seconds: from 50 µs (an echo handler) to 10 s (a handler waiting on a slow service).
DURATION_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

DURATION = Histogram(
    "channels_runtime_consumer_handler_seconds",
    "Time consumers' handlers took per message, by type family.",
    ("type",),
    buckets=DURATION_BUCKETS,
)


def _handled() -> Iterator[tuple[Key, float]]:
    # Every handled message is one observation of DURATION: its counts are the counter.
    for key, cells in DURATION.values.copy().items():
        yield key, sum(cells[:-1])


HANDLED = Counter(
    "channels_runtime_consumer_messages_total",
    "Messages handled by consumers, by type family (the type up to its first '.').",
    ("type",),
    collect=_handled,
)
EXCEPTIONS = Counter(
    "channels_runtime_consumer_exceptions_total",
    "Handlers that raised (StopConsumer excepted), by type family and exception class.",
    ("type", "exception"),
)
TURN_WAIT = Histogram(
    "channels_runtime_consumer_turn_wait_seconds",
    "Time a message waited for its consumer to finish the previous one (only messages "
    "that had to wait: the count is how many did).",
    buckets=DURATION_BUCKETS,
)


def _family(message_type: str) -> str:
    return message_type.partition(".")[0] or "other"


#: A message type -> its label: the family, or ``other`` past FAMILY_LIMIT.
type_family = BoundedLabel(_family, limit=FAMILY_LIMIT)

#: Exception class names are the code's own, but a bound costs nothing.
_exception_label = BoundedLabel(lambda name: name, limit=FAMILY_LIMIT)

#: Message type -> the DURATION cells of its family: one dict lookup per message.
_cells_by_type: dict[str, list[float]] = {}
_CELLS_CACHE = 4096


def _cells_for(message: Any) -> list[float]:
    """The DURATION cells for ``message``'s family (the slow path: a type not seen yet)."""
    try:
        message_type = message["type"]
        label = type_family(message_type) if isinstance(message_type, str) else "other"
    except (KeyError, TypeError):
        message_type, label = None, "other"  # dispatch() names the mistake
    key = (label,)
    cells = DURATION.values.get(key)
    if cells is None:
        cells = DURATION.values[key] = [0] * (len(DURATION.buckets) + 2)
    if message_type is not None and len(_cells_by_type) < _CELLS_CACHE:
        _cells_by_type[message_type] = cells
    return cells


on_clear(_cells_by_type.clear)

_perf_counter = time.perf_counter
_buckets = DURATION.buckets
_first_bucket = _buckets[0]


def observe(message: Any, started: float, failure: BaseException | None) -> None:
    """One message was handled, from ``started`` (``perf_counter()``) until now.

    Called by :func:`~channels_runtime.dispatch.dispatch_serially` after each
    message while metrics are on: a clock read, a dict lookup, a bisect and two
    list updates (the messages counter is this histogram's count).
    """
    elapsed = _perf_counter() - started
    try:
        cells = _cells_by_type[message["type"]]
    except (KeyError, TypeError):
        cells = _cells_for(message)
    # Most handlers finish within the first bucket: one comparison, not a bisect.
    cells[0 if elapsed <= _first_bucket else bisect_left(_buckets, elapsed)] += 1
    cells[-1] += elapsed
    if failure is not None and isinstance(failure, Exception):
        _count_exception(message, failure)


def _count_exception(message: Any, exc: Exception) -> None:
    if isinstance(exc, StopConsumer):
        return  # how a consumer ends, not a failure
    try:
        label = type_family(message["type"])
    except (KeyError, TypeError):
        label = "other"
    EXCEPTIONS.inc((label, _exception_label(type(exc).__name__)))


async def wait_turn(turn: Any) -> None:
    """``await turn.wait()``, timed (the slow path of taking a consumer's turn)."""
    started = _perf_counter()
    try:
        await turn.wait()
    finally:
        TURN_WAIT.observe((), _perf_counter() - started)
