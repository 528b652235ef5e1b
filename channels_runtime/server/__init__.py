"""Serving a channels_runtime project with Hypercorn, on asyncio, uvloop or trio.

* :func:`serve`: await it inside your own anyio program;
* ``channels-runtime serve``: the command line (:mod:`channels_runtime.cli`),
  with worker processes and exit statuses a process manager can trust;
* :class:`GracefulShutdown`: the middleware that closes open WebSockets with
  1001 at shutdown, so consumers run their ``disconnect`` handlers.

See ``docs/serving.md``.
"""

from .config import ConfigError
from .serve import serve
from .shutdown import GOING_AWAY, GracefulShutdown

__all__ = ["GOING_AWAY", "ConfigError", "GracefulShutdown", "serve"]
