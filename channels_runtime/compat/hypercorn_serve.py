"""Running Hypercorn on whichever event loop anyio is running.

Hypercorn has one ``serve()`` per event loop library (``hypercorn.asyncio`` and
``hypercorn.trio``) with slightly different signatures, so choosing between them
means naming the libraries, which only this package may do. The rest of the
server code calls :func:`serve_hypercorn` and stays backend-neutral.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.config import Config

from channels_runtime.compat.backend import current_backend

__all__ = ["serve_hypercorn"]


async def serve_hypercorn(
    app: Any, config: Config, *, shutdown_trigger: Callable[[], Awaitable[None]]
) -> None:
    """Serve ``app`` with the Hypercorn flavour matching the running loop.

    A ``shutdown_trigger`` is required: with it neither flavour installs signal
    handlers of its own (the asyncio flavour otherwise would, and the trio one
    would install none), so the caller owns signal handling on every backend.
    ``mode="asgi"`` is passed because Hypercorn guesses WSGI for callables whose
    ``__call__`` is not itself a coroutine function.
    """
    if current_backend() == "trio":
        from hypercorn.trio import serve as trio_serve

        await trio_serve(app, config, shutdown_trigger=shutdown_trigger, mode="asgi")
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        try:
            await asyncio_serve(app, config, shutdown_trigger=shutdown_trigger, mode="asgi")
        except asyncio.InvalidStateError:
            # Hypercorn 0.18's asyncio worker_serve() ends with ``gathered.exception()``
            # in a ``finally``; when serve() itself is cancelled (a forced stop) while
            # the connections are still being gathered, that call raises
            # InvalidStateError instead of letting the cancellation through.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from None
            raise
