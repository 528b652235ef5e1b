"""Consumers: one instance per connection, messages dispatched by type.

An incoming message ``{"type": "websocket.receive", ...}`` is handled by the
consumer's ``websocket_receive`` method. Messages come from the client and,
when a channel layer is configured, from the consumer's own channel, and are
handled strictly one at a time (see :mod:`channels_runtime.dispatch`).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import anyio

from . import DEFAULT_CHANNEL_LAYER, metrics
from .asgi import Message, Receive, Scope, Send
from .compat.asyncio_on_trio import raise_if_asyncio_on_trio
from .compat.backend import ensure_bridge
from .db import _open_wrappers as _db_connections
from .db import aclose_old_connections, close_pass_due, database_sync_to_async
from .dispatch import ChannelSource, dispatch_serially
from .exceptions import StopConsumer
from .layers import get_channel_layer
from .metrics import consumers as consumer_metrics
from .metrics import outbound as outbound_metrics
from .sync_send import ThreadSender

_handler_names: dict[str, str] = {}


def get_handler_name(message: Message) -> str:
    """The method name that handles ``message``: its type with ``.`` replaced by ``_``.

    Types starting with an underscore are refused so a message can never reach
    a private method.
    """
    try:
        message_type = message["type"]
    except (KeyError, TypeError):
        raise ValueError(f"Incoming message has no 'type' attribute: {message!r}") from None
    try:
        return _handler_names[message_type]
    except (KeyError, TypeError):
        pass
    if not isinstance(message_type, str):
        raise ValueError(f"Message type must be a string, got {message_type!r}")
    handler_name = message_type.replace(".", "_")
    if handler_name.startswith("_"):
        raise ValueError(f"Malformed type in message (leading underscore): {message_type!r}")
    if len(_handler_names) < 4096:  # types are few; the bound only guards against misuse
        _handler_names[message_type] = handler_name
    return handler_name


class AsyncConsumer:
    """Base consumer: an ASGI application instance that dispatches by message type.

    Attributes set when the instance starts: ``scope``, ``channel_layer``
    (``None`` without a configured layer), ``channel_name`` and
    ``channel_receive`` (only with a layer).
    """

    _sync: ClassVar[bool] = False
    #: Which ``CHANNEL_LAYERS`` entry to use; ``None`` for no layer (and no channel).
    channel_layer_alias: ClassVar[str | None] = DEFAULT_CHANNEL_LAYER

    scope: Scope
    channel_layer: Any
    channel_name: str
    base_send: Send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ensure_bridge()
        self.scope = scope
        alias = self.channel_layer_alias
        self.channel_layer = None if alias is None else get_channel_layer(alias)
        sources: list[Receive] = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            if hasattr(self.channel_layer, "message_waiting"):
                source = ChannelSource(self.channel_layer, self.channel_name)
                self.channel_receive = source.receive
            else:
                self.channel_receive = functools.partial(
                    self.channel_layer.receive, self.channel_name
                )
            sources.append(self.channel_receive)
        self.base_send = send
        try:
            observe = consumer_metrics.observe if metrics.enabled else None
            await dispatch_serially(sources, self.dispatch, observe)
        except StopConsumer:
            pass
        except (RuntimeError, TypeError, AttributeError) as exc:
            # On trio, a library's asyncio call fails obscurely: name it, and the fix.
            raise_if_asyncio_on_trio(exc)
            raise

    async def dispatch(self, message: Message) -> None:
        """Call the handler for ``message``'s type, or raise ``ValueError`` naming the type.

        Old database connections are closed before the handler runs, as in
        Channels, and again once it has finished (or stopped the consumer), so
        an idle consumer holds no connection. Each pass costs nothing unless a
        connection is actually due (see :mod:`channels_runtime.db`).
        """
        # The hot path: one dict lookup for a known type (get_handler_name checks
        # and caches new ones), and no close pass unless a connection was ever
        # opened (_db_connections is db's live registry, empty until then).
        try:
            name = _handler_names[message["type"]]
        except (KeyError, TypeError):
            name = get_handler_name(message)
        handler = getattr(self, name, None)
        if handler is None:
            raise ValueError(
                f"No handler for message type {message['type']!r} on {type(self).__qualname__}"
            )
        if _db_connections and close_pass_due():
            await aclose_old_connections()
        try:
            await handler(message)
        except StopConsumer:
            if _db_connections and close_pass_due():
                await aclose_old_connections()
            raise
        if _db_connections and close_pass_due():
            await aclose_old_connections()

    async def send(self, message: Message) -> None:
        """Send ``message`` to the client (override to intercept outgoing messages)."""
        await self.base_send(message)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Any:
        """An ASGI application that makes a new instance of this consumer per connection.

        Like Django's ``as_view()``: ``initkwargs`` are passed to the constructor.
        The returned callable carries ``consumer_class`` and ``consumer_initkwargs``.
        """

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            consumer = cls(**initkwargs)
            await consumer(scope, receive, send)

        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())
        return app


class SyncConsumer(AsyncConsumer):
    """A consumer whose handlers are plain functions, run in the thread-sensitive thread.

    Handlers may use the ORM directly: old connections are closed before and
    after each handler (``database_sync_to_async``). Channel-layer calls go
    back to the loop with ``async_to_sync(self.channel_layer.group_send)(...)``.
    Both work on asyncio and trio.

    All sync handlers in the process share that one thread, so ``send`` never
    makes it wait for a client: WebSocket frames (``websocket.send``) and
    ``websocket.close`` are queued for the event loop and ``send`` returns at
    once. The next message is not handled until the server has taken all of
    them (a wait on the loop, free for the other consumers), and an error
    from the server's send is raised by the handler's next ``send`` or as the
    handler's exception. If a frame would take the queue past
    :attr:`max_queued_sends` frames or :attr:`max_queued_send_bytes` bytes,
    the client is not keeping up with what the handler sends: the queued
    frames are dropped, the connection is closed with code 1013 ("try again
    later"), one warning is logged, and the handler's later sends are
    dropped silently. Other messages (``websocket.accept``, HTTP responses)
    block the thread until the server has taken them, as in Channels, and
    so does every send with ``max_queued_sends = 0`` (see
    :mod:`channels_runtime.sync_send` for why).
    """

    _sync: ClassVar[bool] = True
    # Both bounds are memory safety nets, not a pace: the handler thread makes
    # frames far faster than the loop writes them (a 10,000-frame burst to a
    # local client that reads everything peaks at over 9,600 waiting), so
    # whatever one handler call sends is, in practice, queued at once. They
    # must hold the largest burst a handler legitimately sends.
    #: Frames (and closes) that may wait to be sent at once before the client is
    #: closed with 1013: ~300 bytes of bookkeeping each beyond the payload, so
    #: 16,384 cost ~5 MiB. 0 makes every send block instead, as in Channels.
    max_queued_sends: ClassVar[int] = 16384
    #: Payload bytes (``bytes``, or ``text`` as UTF-8) that may wait at once
    #: before the client is closed with 1013; a lone frame always fits. 16 MiB
    #: lets a 10 MB burst through to a client that reads, and is the most one
    #: client that does not read can pin until the server's write timeout.
    max_queued_send_bytes: ClassVar[int] = 16 * 1024 * 1024
    base_send: Any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One wrapper per connection rather than one per message: building a
        # SyncToAsync (update_wrapper, coroutine checks) costs ~5 µs. Dropped at
        # the end, as it refers back to this instance.
        self._threaded_dispatch = database_sync_to_async(self._dispatch_in_thread)
        cls = type(self)
        sender = self._sender = ThreadSender(
            send,
            self.max_queued_sends,
            self.max_queued_send_bytes,
            owner=f"{cls.__module__}.{cls.__qualname__}",
            client=scope.get("client"),
        )
        if metrics.enabled:
            outbound_metrics.track_sender(sender)
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(sender.run)
                try:
                    await super().__call__(scope, receive, sender)  # type: ignore[arg-type]
                except Exception as exc:
                    failure = exc  # re-raised below as itself, not in an ExceptionGroup
                finally:
                    group.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            failure = None  # break the frame -> exception reference cycle
            del self._threaded_dispatch, self._sender

    async def dispatch(self, message: Message) -> None:
        threaded = self.__dict__.get("_threaded_dispatch")
        if threaded is None:  # dispatch() called outside __call__
            threaded = database_sync_to_async(self._dispatch_in_thread)
        sender: ThreadSender | None = self.__dict__.get("_sender")
        if sender is None:
            await threaded(message)
            return
        try:
            await threaded(message)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException:
            # Frames the handler sent before it failed (or stopped) still go out.
            await sender.flush(raise_error=False)
            raise
        if sender.pending or sender.failed:
            await sender.flush()

    def _dispatch_in_thread(self, message: Message) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(
                f"No handler for message type {message['type']!r} on {type(self).__qualname__}"
            )
        handler(message)

    def send(self, message: Message) -> None:  # type: ignore[override]
        """Send ``message`` to the client (a frame is queued; see the class docstring)."""
        self.base_send(message)
