"""Reading what actually failed out of a task group's ``ExceptionGroup``.

When one task of a group fails, anyio cancels its siblings, and the group that
comes out mixes the failure with those cancellations, nested as deep as the
task groups were. Callers that report or re-raise "the" error want the leaves
that are not cancellations, in order; the server's run loop and the metrics
publisher both do.
"""

from __future__ import annotations

import anyio

__all__ = ["failures_in"]


def failures_in(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The leaves of ``group``, depth first, leaving out the event loop's cancellations."""
    cancelled = anyio.get_cancelled_exc_class()
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(failures_in(exc))
        elif not isinstance(exc, cancelled):
            found.append(exc)
    return found
