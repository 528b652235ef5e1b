"""An await that another task can interrupt, at almost no cost when it is not.

The server's graceful-shutdown middleware must be able to wake a WebSocket
application that is waiting in ``receive()`` for its client, so that the
application sees a "going away" disconnect. The portable way is a fresh
``anyio.CancelScope`` around every ``receive()``, but that is paid on every
message for an event that happens once per process lifetime: measured at
about 6 µs per call on asyncio, a tenth of the whole cost of an echo round
trip. This module does the same job with each loop's cheapest tool:

* asyncio (and uvloop): the waiting task is remembered, and an interruption
  is ``Task.cancel()``, taken back with ``Task.uncancel()`` when the
  cancellation reaches the wait. If something else cancelled the task as
  well (``uncancel()`` leaves a count above zero), the cancellation goes on
  unchanged. A normal call costs one ``current_task()`` lookup.
* trio: a native ``trio.CancelScope`` around the wait, without anyio's
  wrapper around it.

Only the awaited call itself is interrupted: a call that has already
finished when :meth:`InterruptibleWait.interrupt` runs is not affected, and
the caller finds out through its own state on the next call. The awaited
call must be cancel-safe, as the receive callables of ASGI servers are
(Hypercorn's leave an unread message queued when cancelled).

This is the one module besides the other ``compat`` modules that names the
event-loop libraries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels_runtime.compat.backend import running_on_trio

__all__ = ["Interrupted", "InterruptibleWait"]

T = TypeVar("T")


class Interrupted(Exception):
    """The wait was interrupted by :meth:`InterruptibleWait.interrupt`."""


class InterruptibleWait:
    """Runs awaits (one at a time) that :meth:`interrupt` can end early.

    Make one per waiting party (per connection, say), call :meth:`wait` for
    each await, and call :meth:`interrupt` from any task on the same event
    loop. An interrupted :meth:`wait` raises :class:`Interrupted`.
    """

    __slots__ = ("_asyncio_task", "_interrupted", "_on_trio", "_trio_scope")

    def __init__(self) -> None:
        self._on_trio: bool | None = None  # decided by the first wait()
        self._asyncio_task: asyncio.Task[Any] | None = None
        self._trio_scope: Any = None
        self._interrupted = False

    async def wait(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` and return its result, or raise :class:`Interrupted`."""
        on_trio = self._on_trio
        if on_trio is None:
            on_trio = self._on_trio = running_on_trio()
        if on_trio:
            return await self._wait_trio(call)
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - wait() always runs in a task
            return await call()
        self._asyncio_task = task
        try:
            result = await call()
        except asyncio.CancelledError:
            if self._interrupted:
                self._interrupted = False
                if task.uncancel() == 0:
                    raise Interrupted from None
            raise
        finally:
            self._asyncio_task = None
        if self._interrupted:
            # The call swallowed the cancellation and finished anyway: take the
            # request back so the task is not left counting a cancellation.
            self._interrupted = False
            task.uncancel()
        return result

    async def _wait_trio(self, call: Callable[[], Awaitable[T]]) -> T:
        import trio

        with trio.CancelScope() as scope:
            self._trio_scope = scope
            try:
                return await call()
            finally:
                self._trio_scope = None
        # Only reached when interrupt() cancelled this scope and the wait ended by it.
        raise Interrupted

    def interrupt(self) -> bool:
        """End the current :meth:`wait`, if there is one; return whether there was."""
        task = self._asyncio_task
        if task is not None:
            if not self._interrupted:
                self._interrupted = True
                task.cancel()
            return True
        scope = self._trio_scope
        if scope is not None:
            scope.cancel()
            return True
        return False
