"""``serve()``: Hypercorn with graceful WebSocket shutdown, on whatever loop anyio runs.

The shutdown sequence, whatever asked for it (a signal, the caller's trigger,
the parent process of a worker):

1. Hypercorn's own shutdown trigger fires: it stops accepting connections,
   lets HTTP requests in flight finish (up to ``graceful_timeout``) and closes
   idle keep-alive connections;
2. at the same moment :class:`~channels_runtime.server.shutdown.GracefulShutdown`
   closes every open WebSocket with 1001 and delivers ``websocket.disconnect``
   (code 1001) to its application, then waits up to ``graceful_timeout`` for
   the applications to return;
3. once its connections are gone, Hypercorn runs lifespan shutdown, where
   ``ProtocolTypeRouter`` closes the channel layers.

With ``drain_seconds`` set (see :mod:`channels_runtime.server.health`), a
SIGTERM first starts a drain: readiness turns to 503 at once while the server
keeps accepting and serving for ``drain_seconds``, so that load balancers stop
sending clients before the sequence above begins. SIGINT (Ctrl-C) skips the
drain; a shutdown trigger drains too, unless the caller says otherwise.

A second SIGINT/SIGTERM during the drain or the wait cuts it short: everything
is cancelled at once.

Sockets are bound (and listening) before the application starts, as under
``hypercorn`` with workers, and handed to Hypercorn when it asks for them. So the
real addresses are known up front (port 0 works, and ``task_status`` reports
them), a busy port fails before any application code runs, and connections
arriving during startup wait in the backlog instead of being refused.
"""

from __future__ import annotations

import copy
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus
from hypercorn.config import Config, Sockets

from ..asgi import ASGIApp
from ..compat import hypercorn_fixes
from ..compat.hypercorn_fixes import tcp as connections
from ..compat.hypercorn_serve import serve_hypercorn
from ..exception_groups import failures_in
from .health import HealthChecker, HealthEndpoints, health_routes, options_from_config
from .readiness import ServerReadiness, ServerState
from .shutdown import GracefulShutdown
from .signals import SHUTDOWN_SIGNALS, first_of, open_shutdown_signals, signal_name

__all__ = ["ServeResult", "bind_sockets", "close_sockets", "serve", "serve_until", "socket_urls"]

logger = logging.getLogger("channels_runtime.server")

ShutdownTrigger = Callable[[], Awaitable[object]]

#: Seconds between cutting the connections still open at the end of
#: ``graceful_timeout`` and cancelling the applications that still run.
DISCONNECT_GRACE = 1.0


def bind_sockets(config: Config) -> Sockets:
    """Create, bind and start listening on the sockets ``config`` asks for."""
    sockets = config.create_sockets()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(config.backlog)
    return sockets


def _address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_UNIX:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    return str(name)


def socket_urls(sockets: Sockets) -> list[str]:
    """How clients reach ``sockets``: ``http://127.0.0.1:8000``, ``unix:/run/app.sock``..."""
    urls = []
    for scheme, group in (("https", sockets.secure_sockets), ("http", sockets.insecure_sockets)):
        for sock in group:
            address = _address(sock)
            urls.append(address if address.startswith("unix:") else f"{scheme}://{address}")
    for sock in sockets.quic_sockets:
        urls.append(f"https://{_address(sock)} (QUIC)")
    return urls


def _hand_over(config: Config, sockets: Sockets) -> Config:
    """A copy of ``config`` that makes Hypercorn serve ``sockets``.

    Both Hypercorn flavours call ``config.create_sockets()`` once the
    application has started; this copy answers with the sockets bound here.
    The socket objects stay the same ones throughout, so whoever closes them
    last (Hypercorn, or ``serve_until`` on the way out) closes each descriptor
    exactly once, whether or not Hypercorn got as far as taking them.
    """
    handed = copy.copy(config)
    handed.create_sockets = lambda: sockets  # type: ignore[method-assign]
    # serve_until cuts the connections still open when graceful_timeout runs out;
    # Hypercorn's own cancellation comes DISCONNECT_GRACE later, so the consumers
    # of those connections can still run their disconnect handlers.
    handed.graceful_timeout = float(config.graceful_timeout) + DISCONNECT_GRACE
    # One worker on a loop someone else started: Hypercorn's serve() warns about
    # these settings, which only matter to whoever makes processes and loops.
    handed.workers = 1
    handed.debug = False
    return handed


def close_sockets(sockets: Sockets) -> None:
    """Close every socket in ``sockets`` (closing one twice does nothing)."""
    for group in (sockets.secure_sockets, sockets.insecure_sockets, sockets.quic_sockets):
        for sock in group:
            sock.close()


@dataclass
class ServeResult:
    """How a serve run ended (for the command line's exit status and logs)."""

    reason: str = "cancelled"
    forced: bool = False
    urls: list[str] = field(default_factory=list)


async def serve_until(
    app: ASGIApp,
    config: Config,
    *,
    triggers: Sequence[ShutdownTrigger] = (),
    signals: Sequence[signal.Signals] = (),
    sockets: Sockets | None = None,
    readiness: ServerReadiness | None = None,
    health: HealthEndpoints | None = None,
    drain_triggers: bool = True,
    task_status: TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> ServeResult:
    """Serve until a trigger returns or one of ``signals`` arrives, then shut down gracefully.

    The engine behind :func:`serve` and the command line. ``sockets`` are
    already-bound sockets to serve on (a worker process gets them from its
    parent); by default the ones ``config`` names are bound here.
    ``readiness`` is moved along as the server starts, drains and stops (pass
    one to read it from elsewhere); ``health``, the metrics bind's health
    routes, run their checks on this loop while it serves. With
    ``drain_triggers`` false only SIGTERM drains, not a trigger (a worker's
    parent has drained already when it asks the worker to stop).
    """
    if signals and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "Handling SIGINT/SIGTERM needs the main thread; pass a shutdown_trigger "
            "when serving from another thread"
        )
    hypercorn_fixes.install()
    lifecycle = readiness if readiness is not None else ServerReadiness()
    options = options_from_config(config)
    if options.healthz_path or options.readyz_path:
        checker = (
            health.checker
            if health is not None
            else HealthChecker(lifecycle.check, options.checks(), timeout=options.timeout)
        )
        app = health_routes(
            app, checker, healthz_path=options.healthz_path, readyz_path=options.readyz_path
        )
    guard = GracefulShutdown(app)
    if sockets is None:
        sockets = bind_sockets(config)
    result = ServeResult(urls=socket_urls(sockets))
    hypercorn_config = _hand_over(config, sockets)
    stop_accepting = anyio.Event()
    grace = float(config.graceful_timeout)

    def drains(reason: str) -> bool:
        if options.drain_seconds <= 0 or lifecycle.state is ServerState.STARTING:
            return False
        return reason == signal_name(signal.SIGTERM) or (
            drain_triggers and reason == "shutdown trigger"
        )

    async def supervise(received: Any, cancel_all: anyio.CancelScope) -> None:
        result.reason = await first_of(triggers, received)
        async with anyio.create_task_group() as group:
            if received is not None:
                group.start_soon(force_on_next_signal, received, cancel_all)
            if drains(result.reason):
                lifecycle.advance(ServerState.DRAINING)
                logger.info(
                    "Draining for %gs (%s): readiness reports 503, connections are still "
                    "accepted and served",
                    options.drain_seconds,
                    result.reason,
                )
                await anyio.sleep(options.drain_seconds)
            lifecycle.advance(ServerState.STOPPING)
            logger.info("Shutting down (%s)", result.reason)
            deadline = time.monotonic() + grace
            connections.set_shutdown_deadline(hypercorn_config, deadline)
            stop_accepting.set()
            await guard.close_websockets(grace)
            with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)):
                await connections.wait_all_closed(hypercorn_config)
            cut = connections.abort_all(hypercorn_config)
            if cut:
                logger.warning(
                    "Closed %d connection(s) still open after graceful_timeout (%gs)", cut, grace
                )
            group.cancel_scope.cancel()

    async def force_on_next_signal(received: Any, cancel_all: anyio.CancelScope) -> None:
        async for signum in received:
            logger.warning(
                "%s again: stopping now, without waiting for connections", signal_name(signum)
            )
            result.forced = True
            connections.set_shutdown_deadline(hypercorn_config, time.monotonic())
            connections.abort_all(hypercorn_config)
            cancel_all.cancel()
            return

    async def report_started() -> None:
        await guard.wait_started()
        lifecycle.advance(ServerState.SERVING)
        task_status.started(result.urls)

    async def run_hypercorn(done: anyio.CancelScope) -> None:
        # A task of its own, not the body of the task group: on Python 3.11,
        # asyncio.TaskGroup (inside Hypercorn's asyncio worker) cancels its parent
        # task when the shutdown trigger fires and never undoes that count
        # (fixed in later CPython versions). anyio then refuses to swallow its own
        # cancellation in that task, so the stray count must stay on a task that
        # ends right here.
        await serve_hypercorn(guard, hypercorn_config, shutdown_trigger=stop_accepting.wait)
        done.cancel()

    try:
        async with open_shutdown_signals(signals) as received, anyio.create_task_group() as group:
            if health is not None:
                await group.start(health.run_on_this_loop)
            group.start_soon(supervise, received, group.cancel_scope)
            group.start_soon(report_started)
            group.start_soon(run_hypercorn, group.cancel_scope)
    except BaseExceptionGroup as exc_group:
        leaves = failures_in(exc_group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    finally:
        connections.set_shutdown_deadline(hypercorn_config, None)
        close_sockets(sockets)
    return result


async def serve(
    app: ASGIApp,
    config: Config,
    *,
    shutdown_trigger: ShutdownTrigger | None = None,
    task_status: TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with Hypercorn on the running event loop until asked to stop.

    For embedding in an existing anyio program (asyncio, uvloop or trio: the
    Hypercorn flavour follows the loop). ``config`` is a Hypercorn ``Config``;
    it is not modified, and ``workers``, ``worker_class`` and ``use_reloader``
    are ignored here because the loop and the process are the caller's.

    Without ``shutdown_trigger``, SIGINT and SIGTERM start the graceful
    shutdown (main thread only), and a second one forces it. With a trigger,
    the shutdown starts when ``await shutdown_trigger()`` returns and signals
    are left alone. Either way open WebSockets are closed with code 1001 and
    their applications receive ``websocket.disconnect`` (1001) before the
    server stops; see :mod:`channels_runtime.server.serve`.

    Use ``await task_group.start(serve, app, config, ...)`` to wait until the
    application has started; the start value is the list of URLs served.
    Cancelling ``serve`` stops the server at once, without the graceful steps.
    """
    if shutdown_trigger is None:
        await serve_until(app, config, signals=SHUTDOWN_SIGNALS, task_status=task_status)
    else:
        await serve_until(app, config, triggers=[shutdown_trigger], task_status=task_status)
