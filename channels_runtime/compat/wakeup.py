"""A one-shot wake-up for one waiting task, made for hot paths.

The in-memory layer parks every blocked ``receive()`` until a ``send()``
hands it a message. An ``anyio.Event`` per wait works, but making one asks
sniffio which loop is running and builds a loop event with its own deque of
waiters: 7.5 % of a 500-member broadcast's profile went there. A wake-up for
exactly one waiter needs much less, and each loop has a primitive for it:

* asyncio (and uvloop): a bare future from ``loop.create_future()``;
* trio: the task itself, parked with ``wait_task_rescheduled`` and woken with
  ``reschedule``.

Which one is picked by ``asyncio.get_running_loop()``, a C call that fails
at once under trio. Cancellation works as for an event: a waiter cancelled
before :meth:`Wakeup.set` is withdrawn; one cancelled after it may still be
cancelled (asyncio) or will return normally (trio), so the caller must
handle both, as the in-memory layer does by giving a handed-over message back.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["Wakeup", "new_wakeup"]


class Wakeup(Protocol):
    """Set once by anyone on the loop; awaited by one task."""

    def set(self) -> None:
        """Wake the waiter (now, or at once when it starts waiting)."""

    async def wait(self) -> None:
        """Wait until :meth:`set` has been called."""


class _AsyncioWakeup:
    __slots__ = ("_future",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._future: asyncio.Future[None] = loop.create_future()

    def set(self) -> None:
        future = self._future
        if not future.done():  # a cancelled waiter's future is already done
            future.set_result(None)

    async def wait(self) -> None:
        await self._future


class _TrioWakeup:
    __slots__ = ("_is_set", "_task")

    def __init__(self) -> None:
        self._is_set = False
        self._task: Any = None

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        task = self._task
        if task is not None:
            self._task = None
            _trio_lowlevel().reschedule(task)

    async def wait(self) -> None:
        lowlevel = _trio_lowlevel()
        if self._is_set:
            await lowlevel.checkpoint()
            return
        self._task = lowlevel.current_task()

        def abort(raise_cancel: Any) -> Any:
            self._task = None
            return lowlevel.Abort.SUCCEEDED

        await lowlevel.wait_task_rescheduled(abort)


_lowlevel: Any = None


def _trio_lowlevel() -> Any:
    global _lowlevel
    if _lowlevel is None:
        import trio.lowlevel

        _lowlevel = trio.lowlevel
    return _lowlevel


def new_wakeup() -> Wakeup:
    """A wake-up for the running loop: asyncio's when one runs, else trio's."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _TrioWakeup()
    return _AsyncioWakeup(loop)
