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

import anyio.lowlevel

__all__ = ["Notice", "Wakeup", "new_wakeup", "wait_until"]


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
        # A bound method, not a closure: an idle connection keeps two parked
        # wake-ups, and a function with its cell costs about 140 bytes more.
        await lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel: Any) -> Any:
        self._task = None
        return _trio_lowlevel().Abort.SUCCEEDED


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


async def wait_until(wakeup: Wakeup, deadline: float) -> None:
    """Wait for ``wakeup`` or until ``deadline`` (``anyio.current_time()``'s clock).

    For a task that waits for the same thing for a long time, such as a
    connection's keepalive: an anyio cancel scope and event around the wait
    cost about 1.5 KB per waiter on asyncio. Here asyncio schedules one timer
    that sets the wake-up (its loop clock is anyio's), and trio enters its own
    ``move_on_at``.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        import trio

        with trio.move_on_at(deadline):
            await wakeup.wait()
        return
    timer = loop.call_at(deadline, wakeup.set)
    try:
        await wakeup.wait()
    finally:
        timer.cancel()


class Notice:
    """Set once; any number of tasks wait for it, each until its own deadline.

    The cheap stand-in for an ``anyio.Event`` waited on with a timeout: nothing
    is allocated until a task waits, and a waiter holds one :class:`Wakeup`
    (and, on asyncio, one timer) while it waits.
    """

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[Wakeup] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        """Set it and wake every waiter (idempotent)."""
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.set()

    async def wait_until(self, deadline: float) -> bool:
        """Wait until set or ``deadline`` (``anyio.current_time()``); return whether set.

        Always a checkpoint, like ``anyio.Event.wait`` inside ``move_on_at``.
        """
        if self._is_set:
            await anyio.lowlevel.checkpoint()
            return True
        wakeup = new_wakeup()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(wakeup)
        try:
            await wait_until(wakeup, deadline)
        finally:
            if wakeup in waiters:
                waiters.remove(wakeup)
        return self._is_set  # a deadline already past yielded too: the timer runs on the loop
