"""Background workers: consumers for named channels, fed from the channel layer.

The ``channel`` part of an application (usually a ``ChannelNameRouter`` under
``ProtocolTypeRouter({"channel": ...})``) handles messages that code anywhere
sends with ``channel_layer.send("thumbnails", {...})``. A worker process runs it,
as Channels' ``runworker`` does:

* one application instance per channel at a time, called with the scope
  ``{"type": "channel", "channel": NAME}``; its ``receive()`` yields that
  channel's messages from the layer, in order;
* an instance is made when the first message arrives, and again for the next
  message after one ends (a consumer raising ``StopConsumer``, or an error,
  which is logged with its traceback: one bad message never stops the worker);
* a layer failure stops the worker with the error.

Differences from Channels 4.2, on purpose: messages come straight from the
layer into the instance's ``receive()`` (no unbounded in-process queue, so a
slow consumer leaves its backlog in the layer, where other workers can take
it); a message without a ``type`` is logged and dropped instead of stopping
the worker; and SIGINT/SIGTERM stop it gracefully: receiving stops, a message
being handled is finished (bounded by ``graceful_timeout``), and an instance
waiting for its next message is cancelled there.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn

import anyio
from anyio.abc import TaskStatus

from . import DEFAULT_CHANNEL_LAYER
from .asgi import ASGIApp, Message, Scope
from .exceptions import InvalidChannelLayerError
from .layers import get_channel_layer
from .server.signals import SHUTDOWN_SIGNALS, first_of, open_shutdown_signals

__all__ = [
    "WorkerConfigurationError",
    "WorkerOptions",
    "run_worker",
    "run_worker_command",
    "run_worker_sync",
]

logger = logging.getLogger("channels_runtime.worker")


class WorkerConfigurationError(ValueError):
    """The worker was asked for something impossible (no channels, a bad channel name)."""


#: Default for how long messages being handled may take to finish at shutdown.
DEFAULT_GRACEFUL_TIMEOUT = 10.0


class _ChannelRunner:
    """Application instances for one channel, one at a time."""

    def __init__(self, application: ASGIApp, layer: Any, channel: str) -> None:
        self.application = application
        self.layer = layer
        self.channel = channel
        self.stopping = False
        self.waiting = False  # blocked on the layer for the next message
        self._scope = anyio.CancelScope()

    async def run(self) -> None:
        with self._scope:
            while True:
                first = await self._next_message()
                await self._run_instance(first)

    def stop(self) -> None:
        """Stop at the next wait for a message (now, if waiting already)."""
        self.stopping = True
        if self.waiting:
            self._scope.cancel()

    async def _stop_here(self) -> NoReturn:
        self._scope.cancel()
        await anyio.sleep_forever()
        raise AssertionError("unreachable: the scope was cancelled")

    async def _next_message(self) -> Message:
        if self.stopping:
            await self._stop_here()
        while True:
            self.waiting = True
            try:
                message = await self.layer.receive(self.channel)
            finally:
                self.waiting = False
            if isinstance(message, dict) and message.get("type"):
                return message
            logger.error(
                "Dropped a message without a 'type' on channel %r: %r", self.channel, message
            )

    async def _send(self, message: Message) -> None:
        raise RuntimeError(
            f"The application for channel {self.channel!r} sent {message.get('type')!r}, but a "
            "worker has no client to send to; use the channel layer to reach other consumers"
        )

    async def _run_instance(self, first: Message) -> None:
        pending = [first]

        async def receive() -> Message:
            if pending:
                return pending.pop()
            return await self._next_message()

        scope: Scope = {"type": "channel", "channel": self.channel}
        try:
            await self.application(scope, receive, self._send)
        except Exception:
            logger.exception("Exception inside the application for channel %r", self.channel)


async def run_worker(
    application: ASGIApp,
    channels: Sequence[str],
    *,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``application`` for each of ``channels`` until asked to stop.

    Without ``shutdown_trigger``, SIGINT and SIGTERM start the graceful stop
    (main thread only); with one, the stop starts when it returns. Returns
    after the stop; raises what the channel layer raised if it fails, and
    ``InvalidChannelLayerError`` when ``layer_alias`` names no configured layer.
    ``task_status.started()`` is called once every channel is being received from.
    """
    if isinstance(channels, str):
        raise WorkerConfigurationError("channels must be a list of names, not a single string")
    names = list(channels)
    if not names:
        raise WorkerConfigurationError("a worker needs at least one channel name")
    layer = get_channel_layer(layer_alias)
    if layer is None:
        raise InvalidChannelLayerError(
            f"No channel layer is configured under {layer_alias!r} in CHANNEL_LAYERS; "
            "a worker needs one to receive from"
        )
    check = getattr(layer, "require_valid_channel_name", None)
    if check is not None:
        for name in names:
            try:
                check(name, receive=True)
            except TypeError as exc:
                raise WorkerConfigurationError(str(exc)) from None
    runners = [_ChannelRunner(application, layer, name) for name in names]
    signals = SHUTDOWN_SIGNALS if shutdown_trigger is None else ()
    triggers = () if shutdown_trigger is None else (shutdown_trigger,)

    finished = anyio.Event()
    async with open_shutdown_signals(signals) as received, anyio.create_task_group() as group:
        running = anyio.create_task_group()

        async def stop_when_asked() -> None:
            reason = await first_of(triggers, received)
            logger.info("Worker shutting down (%s)", reason)
            for runner in runners:
                runner.stop()
            with anyio.move_on_after(graceful_timeout):
                await finished.wait()
                return
            logger.warning(
                "Messages still being handled after %.1fs; cancelling them", graceful_timeout
            )
            running.cancel_scope.cancel()

        group.start_soon(stop_when_asked)
        async with running:
            for runner in runners:
                running.start_soon(runner.run)
            logger.info(
                "Worker running for channel%s %s (layer %r: %s)",
                "" if len(names) == 1 else "s",
                ", ".join(names),
                layer_alias,
                f"{type(layer).__module__}.{type(layer).__qualname__}",
            )
            task_status.started()
        finished.set()
        group.cancel_scope.cancel()


@dataclass
class WorkerOptions:
    """What ``channels-runtime worker`` was asked to do (already checked)."""

    channels: list[str]
    application: str | None = None
    layer_alias: str = DEFAULT_CHANNEL_LAYER
    worker_class: str = "asyncio"
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    log_level: str = "info"


def run_worker_sync(
    application: ASGIApp,
    channels: Sequence[str],
    *,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    worker_class: str = "asyncio",
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
) -> None:
    """Run :func:`run_worker` on a new event loop (``asyncio``, ``uvloop`` or ``trio``)
    until SIGINT/SIGTERM; for ``manage.py runworker`` and other sync callers."""
    from .server.run import anyio_backend

    backend, options = anyio_backend(worker_class)
    anyio.run(
        partial(
            run_worker,
            application,
            channels,
            layer_alias=layer_alias,
            graceful_timeout=graceful_timeout,
        ),
        backend=backend,
        backend_options=options,
    )


def run_worker_command(options: WorkerOptions) -> int:
    """``channels-runtime worker``: load the project, run the worker; returns the exit status."""
    from .routing import get_default_application
    from .server.project import (
        ProjectError,
        import_application,
        prepare_django,
        settings_hint_for,
        split_target,
    )
    from .server.run import configure_logging

    configure_logging(options.log_level)
    try:
        if options.application:
            target = split_target(options.application, default_attr="")
            chosen = prepare_django(target.module)
            application = import_application(
                target, settings_hint=chosen or settings_hint_for(target.module)
            )
        else:
            if prepare_django(None) is None:
                raise ProjectError(
                    "Cannot find the Django settings: set DJANGO_SETTINGS_MODULE, or pass "
                    "--application myproject.asgi.application"
                )
            from django.core.exceptions import ImproperlyConfigured

            try:
                application = get_default_application()
            except ImproperlyConfigured as exc:
                raise ProjectError(str(exc)) from exc
        configure_logging(options.log_level)  # again: the settings' LOGGING may have run
        run_worker_sync(
            application,
            options.channels,
            layer_alias=options.layer_alias,
            worker_class=options.worker_class,
            graceful_timeout=options.graceful_timeout,
        )
    except (ProjectError, InvalidChannelLayerError, WorkerConfigurationError) as exc:
        print(f"channels-runtime worker: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        logger.exception("Worker stopped by an error: %s: %s", type(exc).__name__, exc)
        return 1
    logger.info("Worker stopped")
    return 0
