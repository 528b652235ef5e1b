"""Detached background tasks, for the few places that cannot use a task group.

Everything else in channels-runtime runs its tasks inside anyio task groups. The
exception is an API inherited from Django Channels that starts work in one call
and finishes it in another, with no ``async with`` around the two — the testing
communicators are the example: ``await comm.connect()`` must leave the
application running until ``await comm.disconnect()``. That needs a task whose
lifetime is not bound to a lexical block, which anyio deliberately does not
offer, so this module makes one per backend:

* asyncio: ``loop.create_task`` with a strong reference kept here, because the
  event loop only holds tasks weakly and an unreferenced task may be
  garbage-collected mid-flight.
* trio: ``trio.lowlevel.spawn_system_task``. Trio turns any exception escaping a
  system task into ``TrioInternalError`` and tears the whole run down, so the
  wrapper below stores every exception instead of letting it escape.

The task is still owned: the caller keeps the returned :class:`BackgroundTask`,
which can cancel it (through an anyio cancel scope entered inside the task) and
wait for it to finish. Whoever starts one is responsible for doing both.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

import anyio

from channels_runtime.compat.backend import running_on_trio

__all__ = ["BackgroundTask", "start_background_task"]

# asyncio keeps only weak references to tasks; this set keeps ours alive until done.
_asyncio_tasks: set[asyncio.Task[None]] = set()


class BackgroundTask:
    """Handle on a task started by :func:`start_background_task`.

    The handle, not the event loop, is the owner: it is the only way to cancel the
    task and to learn how it ended.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # Created here, in the caller's task, and entered inside the background task,
        # so that cancel() works even before the task has had its first turn.
        self._cancel_scope = anyio.CancelScope()
        self._finished = anyio.Event()
        self._exception: BaseException | None = None

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<BackgroundTask {self.name!r} {state}>"

    @property
    def done(self) -> bool:
        """Whether the task has finished, however it ended."""
        return self._finished.is_set()

    @property
    def exception(self) -> BaseException | None:
        """What escaped the task's function, if anything.

        Cancellation through :meth:`cancel` is absorbed by the task's own cancel
        scope and leaves this ``None``; a cancellation from outside (event loop
        shutdown) is recorded here like any other exception.
        """
        return self._exception

    def cancel(self) -> None:
        """Ask the task to stop; it unwinds at its next checkpoint."""
        self._cancel_scope.cancel()

    async def wait(self) -> None:
        """Wait until the task has finished. Never raises what the task raised."""
        await self._finished.wait()

    async def _run(self, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            with self._cancel_scope:
                await fn()
        except BaseException as exc:
            # Nothing may escape: on trio it would abort the whole run, on asyncio it
            # would end up as an unretrieved-exception log line. The owner reads it
            # from ``exception`` instead.
            self._exception = exc
        finally:
            self._finished.set()

    def _asyncio_task_done(self, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step (event loop shutdown right after it
        # was created) never enters _run: the CancelledError is thrown in at the very
        # start of the coroutine. Record that here so the handle still reports the end.
        if not self._finished.is_set():
            self._exception = asyncio.CancelledError("cancelled before it started")
            self._finished.set()


def start_background_task(
    fn: Callable[[], Awaitable[object]],
    *,
    name: str | None = None,
    context: contextvars.Context | None = None,
) -> BackgroundTask:
    """Start ``fn()`` in a new task that outlives the calling block, and return its handle.

    ``context`` is the :class:`contextvars.Context` the task runs in; by default a
    copy of the caller's, which is what a task-group child would get (trio system
    tasks would otherwise start from the context trio itself started with).

    Must be called from inside a running event loop (asyncio or trio).
    """
    handle = BackgroundTask(name if name is not None else repr(fn))
    if context is None:
        context = contextvars.copy_context()
    if running_on_trio():
        import trio

        trio.lowlevel.spawn_system_task(handle._run, fn, name=handle.name, context=context)
        return handle

    loop = asyncio.get_running_loop()
    coro = handle._run(fn)
    try:
        task = loop.create_task(coro, name=handle.name, context=context)
    except BaseException:
        coro.close()  # never started: close it so it is not reported as never awaited
        raise
    _asyncio_tasks.add(task)
    task.add_done_callback(_asyncio_tasks.discard)
    task.add_done_callback(handle._asyncio_task_done)
    return handle
