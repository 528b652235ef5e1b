"""Shutdown signals, handled the same way on every event loop.

Hypercorn's asyncio flavour installs SIGINT/SIGTERM handlers itself, its trio
flavour installs none (a single-process trio server dies on SIGTERM without
any cleanup). channels-runtime therefore always passes Hypercorn a shutdown
trigger and listens for the signals itself, through anyio, so asyncio, uvloop
and trio behave alike.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import anyio

__all__ = [
    "SHUTDOWN_SIGNALS",
    "first_of",
    "open_shutdown_signals",
    "signal_name",
    "wait_until_readable",
]

#: Signals that ask for a graceful shutdown: Ctrl-C and what process managers send.
SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@asynccontextmanager
async def open_shutdown_signals(
    signals: Sequence[signal.Signals],
) -> AsyncIterator[AsyncIterator[int] | None]:
    """Receive ``signals`` for the duration of the block (``None`` if there are none).

    Signal handlers can only be installed from the main thread; saying so here
    is clearer than the backend's own error.
    """
    if not signals:
        yield None
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "Handling SIGINT/SIGTERM needs the main thread; pass a shutdown_trigger "
            "when serving from another thread"
        )
    with anyio.open_signal_receiver(*signals) as received:
        yield received


async def first_of(
    triggers: Sequence[Callable[[], Awaitable[object]]],
    received: AsyncIterator[int] | None,
) -> str:
    """Wait until any trigger returns or a signal arrives; say which it was.

    With neither, waits until cancelled.
    """
    reason = "cancelled"
    async with anyio.create_task_group() as group:

        async def wait_trigger(trigger: Callable[[], Awaitable[object]]) -> None:
            nonlocal reason
            await trigger()
            reason = "shutdown trigger"
            group.cancel_scope.cancel()

        async def wait_signal(signals: AsyncIterator[int]) -> None:
            nonlocal reason
            async for signum in signals:
                reason = signal_name(signum)
                group.cancel_scope.cancel()
                return

        for trigger in triggers:
            group.start_soon(wait_trigger, trigger)
        if received is not None:
            group.start_soon(wait_signal, received)
        if not triggers and received is None:
            await anyio.sleep_forever()
    return reason


async def wait_until_readable(fd: int) -> None:
    """Return once ``fd`` (a pipe) is readable: data arrived or the writer went away.

    A worker process watches a pipe from its parent this way: the parent
    closes its end to ask for a shutdown, and if the parent dies the kernel
    closes it too, so a worker is never left serving without a supervisor.
    """
    await anyio.wait_readable(fd)
