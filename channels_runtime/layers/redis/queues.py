"""Messages a process holds for its own channels until a receiver takes them.

Both Redis layers keep, per local channel, a deque of ``(local deadline,
message)`` in arrival order, and a running count of everything held in the
event loop (``buffered``) that bounds the total. Taking a message means
skipping the ones whose deadline has passed: they count as expired.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from ... import metrics

__all__ = ["Counted", "pop_live"]


class Counted(Protocol):
    """Whatever keeps the event loop's count of held messages."""

    buffered: int


def pop_live(queue: deque[tuple[float, Any]], now: float, counts: Counted, layer: Any) -> Any:
    """Remove and return the oldest message of ``queue`` still live at ``now``,
    or None if there is none; the expired ones before it are dropped (and
    counted in ``layer``'s metrics)."""
    while queue:
        deadline, candidate = queue.popleft()
        counts.buffered -= 1
        if deadline > now:
            return candidate
        if metrics.enabled:
            metrics.layers.expired(layer)
    return None
