"""One companion task beside the current one, for what every connection holds.

A consumer with a channel layer reads two sources at once, its client and its
channel (:mod:`channels_runtime.dispatch`), so each connection needs a second
task for as long as it lives. With an anyio task group that task costs about
3 KB on asyncio, most of it not the task: anyio 4.16 gives the group a cancel
scope, and every task it starts another cancel scope (two sets each) and a
finished-``Event`` (a loop event with its own deque). An idle server holds one
per connection, so this is the largest single item of what an idle consumer
costs above the raw ASGI app.

:func:`run_with_companion` gives the same structure for less: one function
runs on the ``main`` argument in the calling task, inside one anyio cancel
scope, and on the ``companion`` argument in a task of its own, and neither
outlives the call:

* either may call ``scope.cancel()`` to end ``main``; the companion is
  cancelled as soon as ``main`` has ended, however it ended, and the call
  returns only once the companion has finished (waiting for it is shielded, so
  a cancelled caller still does not leave it running);
* on asyncio, an exception escaping the companion cancels ``main`` and is
  re-raised here; one escaping ``main`` is re-raised after the companion has
  stopped. On trio both come out of the task group (grouped), so callers
  that want their own exception back catch it in ``main`` and ``companion``,
  as the dispatch loop's pumps do.

On asyncio (and uvloop) the companion is a plain task from
``loop.create_task``, held by this call's frame; cancelling it is
``Task.cancel``, which anyio code inside it sees as the cancellation of its
task, as it would from a task group. On trio the companion runs in a trio
nursery: trio's own tasks and nurseries have no such extra parts, so only
anyio's wrapper around them is saved there.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

__all__ = ["run_with_companion"]

#: ``pump(source, scope)``: what runs in each of the two tasks.
Pump = Callable[[Any, anyio.CancelScope], Coroutine[Any, Any, None]]


async def run_with_companion(pump: Pump, main: Any, companion: Any) -> None:
    """Run ``pump(main, scope)`` here and ``pump(companion, scope)`` beside it.

    See the module docstring. One function and two arguments rather than two
    closures or partials: each of those would be kept for the whole connection.
    """
    loop = _running_asyncio_loop()
    if loop is None:
        # trio: its own nursery, not an anyio task group around one (anyio adds
        # a cancel scope and a finished-Event per task, about 1.3 KB). Inline,
        # not a helper coroutine: its frame would be kept as long. Exceptions
        # come out grouped.
        import trio

        async with trio.open_nursery() as nursery:
            scope: Any = nursery.cancel_scope  # has the cancel() the pumps call
            nursery.start_soon(pump, companion, scope)
            try:
                await pump(main, scope)
            finally:
                scope.cancel()
        return
    scope = anyio.CancelScope()
    task: asyncio.Task[None] = loop.create_task(pump(companion, scope))
    # A partial, not a closure: it is kept for the whole connection, and a
    # function with its cell costs about twice as much.
    task.add_done_callback(functools.partial(_end_main_on_failure, scope))
    try:
        with scope:
            await pump(main, scope)
    finally:
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait((task,))
    if not task.cancelled():
        failure = task.exception()
        if failure is not None:
            try:
                raise failure
            finally:
                del failure  # no frame -> exception -> frame cycle


def _end_main_on_failure(scope: anyio.CancelScope, task: asyncio.Task[None]) -> None:
    """The companion ended: if by an exception, end main, so it is reported at once."""
    if not task.cancelled() and task.exception() is not None:
        scope.cancel()


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None under trio.

    Not ``try: get_running_loop() except RuntimeError``: the caller would then
    run the whole connection inside that ``except`` block, keeping the
    exception (and its traceback) alive for as long.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
