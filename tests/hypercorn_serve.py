"""Run an ASGI app under plain Hypercorn on a free port for the length of some client code.

Each backend uses its own Hypercorn ``serve``: trio's reports the bound URLs
through ``task_status``; asyncio's cannot, so a socket is bound here first and
handed over as ``fd://N`` (Hypercorn closes it).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


async def serve_with_hypercorn(
    app: Any, backend: str, client_code: Callable[[str], Awaitable[None]]
) -> None:
    """Serve ``app`` on ``backend`` while ``client_code(base_url)`` runs, then shut down."""
    from hypercorn.config import Config

    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1
    shutdown = anyio.Event()
    async with anyio.create_task_group() as tg:
        if backend == "trio":
            from hypercorn.trio import serve as trio_serve

            config.bind = ["127.0.0.1:0"]
            urls = await tg.start(
                functools.partial(trio_serve, app, config, shutdown_trigger=shutdown.wait)
            )
            base_url = next(url for url in urls if url.startswith("http://"))
        else:
            from hypercorn.asyncio import serve as asyncio_serve

            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            config.bind = [f"fd://{listener.detach()}"]
            tg.start_soon(
                functools.partial(asyncio_serve, app, config, shutdown_trigger=shutdown.wait)
            )
        try:
            await client_code(base_url)
        finally:
            shutdown.set()
