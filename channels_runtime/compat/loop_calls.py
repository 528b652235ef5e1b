"""Scheduling a plain function on the event loop from another thread.

A sync consumer's handler runs in a worker thread and hands its frames to the
event loop without waiting (see :mod:`channels_runtime.sync_send`). Each loop
library has its own thread-safe "call this soon" entry point:
``loop.call_soon_threadsafe`` on asyncio (and uvloop) and
``TrioToken.run_sync_soon`` on trio. :func:`loop_caller` captures the right
one while running on the loop, so the thread can use it later without
knowing which library it talks to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from channels_runtime.compat.backend import running_on_trio

__all__ = ["LoopGone", "loop_caller"]

LoopCaller = Callable[[Callable[[], object]], None]


class LoopGone(RuntimeError):
    """The event loop a call was meant for has finished."""


def loop_caller() -> LoopCaller:
    """A thread-safe ``call_soon(fn)`` for the running loop.

    Must be called on the loop. The returned function may be called from any
    thread; ``fn`` then runs on the loop's thread, between tasks. It raises
    :class:`LoopGone` once the loop has finished.
    """
    if running_on_trio():
        import trio

        token = trio.lowlevel.current_trio_token()

        def call_on_trio(fn: Callable[[], object]) -> None:
            try:
                token.run_sync_soon(fn)
            except trio.RunFinishedError:
                raise LoopGone("the trio run this call was meant for has finished") from None

        return call_on_trio

    loop = asyncio.get_running_loop()

    def call_on_asyncio(fn: Callable[[], object]) -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError as exc:  # "Event loop is closed"
            raise LoopGone(f"the asyncio loop this call was meant for is gone: {exc}") from None

    return call_on_asyncio
