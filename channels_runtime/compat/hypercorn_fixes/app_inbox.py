"""The application's receive queue: bounded for data, never full for the disconnect.

Hypercorn gives each application a queue of ``max_app_queue_size`` messages
(default 10) and puts every client message on it with a blocking ``put``.
That bound is what keeps a flooding client from growing the server's memory,
but Hypercorn also puts the final ``websocket.disconnect``/``http.disconnect``
through the same ``put``. Checked against Hypercorn 0.17.3 and 0.18.0, that
deadlocks whenever the queue is full while the application is blocked in
``send()``:

* the application sends to a client that stopped reading, so its ``send()``
  waits for the socket to drain;
* the client sends more than the queue holds, so Hypercorn's reader waits in
  ``put`` and stops reading;
* the client resets the connection: the failing write makes Hypercorn deliver
  the disconnect, from inside the application's own ``send()``, through the
  full queue that only the application (blocked in that very ``send()``)
  could empty.

The application never learns that the client has gone: its task, its
channel, its group memberships and its buffers stay until the server stops
(and on trio the socket's descriptor too). Daphne delivers the disconnect.

:class:`AppInbox` replaces that queue, keeping the bound for data messages
and taking the disconnect at once, whatever is queued: the application reads
the messages the client sent before it left, in order, then the disconnect,
and ``receive()`` keeps answering with the disconnect after that. Messages
that arrive after the disconnect are dropped, as they would be after any
close.

Installed by :func:`install` on both Hypercorn task groups (asyncio and
trio), because both build their queue in ``TaskGroup.spawn_app``. That queue
is then dropped as soon as the application starts (:func:`_drop_unused_queue`),
so an idle connection does not hold two queues.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from channels_runtime.compat.wakeup import Wakeup, new_wakeup

__all__ = ["AppInbox", "install"]

_FINAL_TYPES = frozenset({"websocket.disconnect", "http.disconnect"})


class AppInbox:
    """Messages from the server to one application: at most ``capacity`` waiting.

    :meth:`put` waits for room, except for a disconnect, which is kept aside
    and never waits. :meth:`get` returns queued messages in order, then the
    disconnect (again and again). Both are cancel-safe: a cancelled ``get``
    takes nothing, a cancelled ``put`` adds nothing.
    """

    __slots__ = ("_capacity", "_final", "_getter", "_items", "_putters")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(int(capacity), 1)
        # Lists, not deques: the queue is short (``max_app_queue_size``) and an
        # idle connection then holds about 60 bytes here instead of 1.5 KB.
        self._items: list[dict[str, Any]] = []
        self._final: dict[str, Any] | None = None
        self._getter: Wakeup | None = None
        self._putters: list[Wakeup] | None = None  # made when a put first waits

    def __len__(self) -> int:
        return len(self._items)

    @property
    def disconnected(self) -> bool:
        """Whether the disconnect has been put (it may not have been read yet)."""
        return self._final is not None

    def message_waiting(self) -> bool:
        """Whether :meth:`get` would return at once (a message or the disconnect waits).

        The dispatch loop asks this after each handled message: when the next
        ``get`` will wait anyway, the loop need not yield to the tasks the
        handler woke (:mod:`channels_runtime.dispatch`).
        """
        return bool(self._items) or self._final is not None

    def interrupt(self, final: dict[str, Any]) -> bool:
        """End the application's reading now: ``final`` replaces what is queued.

        For the server's graceful shutdown, which tells each WebSocket
        application that the server is going away (code 1001) without a cancel
        scope around every ``receive()``. Messages still queued are dropped, as
        the application is told the connection is over. Returns False, doing
        nothing, if the client's own disconnect had already been put.
        """
        if self._final is not None:
            return False
        self._items.clear()
        self._final = final
        self._wake_getter()
        self._wake_putters()
        return True

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.set()

    def _wake_putters(self) -> None:
        # Every waiting put re-checks: room for one, or a disconnect for all.
        putters, self._putters = self._putters, None
        for putter in putters or ():
            putter.set()

    async def put(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the application; wait for room unless it is the disconnect."""
        if self._final is not None:
            return  # the connection is over: nothing after the disconnect
        if message.get("type") in _FINAL_TYPES:
            self._final = message
            self._wake_getter()
            self._wake_putters()
            return
        while len(self._items) >= self._capacity:
            waiter = new_wakeup()
            putters = self._putters
            if putters is None:
                putters = self._putters = []
            putters.append(waiter)
            try:
                await waiter.wait()
            finally:
                if waiter in putters:  # still listed: cancelled, not woken
                    putters.remove(waiter)
            if self._final is not None:
                return
        self._items.append(message)
        self._wake_getter()

    async def get(self) -> dict[str, Any]:
        """The next message for the application (waits for one)."""
        while True:
            items = self._items
            if items:
                message = items.pop(0)
                if self._putters:
                    self._wake_putters()
                return message
            final = self._final
            if final is not None:
                return final
            waiter = self._getter = new_wakeup()
            try:
                await waiter.wait()
            finally:
                if self._getter is waiter:
                    self._getter = None


AppWrapper = Callable[..., Awaitable[None]]


async def _replaced_receive() -> dict[str, Any]:
    raise RuntimeError("Hypercorn's receive queue is replaced by AppInbox; this is never read")


def _app_reading_inbox(
    app: AppWrapper,
    inbox: AppInbox,
    scope: Any,
    receive: Any,
    send: Any,
    sync_spawn: Any,
    call_soon: Any,
) -> Awaitable[None]:
    """Hypercorn's application call, with the inbox's ``get`` as ``receive``.

    Returns the application's coroutine rather than awaiting it: every
    resumption of the connection's task walks its chain of awaiting frames,
    so a wrapper frame would cost each message.
    """
    return app(scope, inbox.get, send, sync_spawn, call_soon)


def _patch(task_group_class: Any) -> None:
    original = task_group_class.spawn_app
    if getattr(original, "_channels_runtime_inbox", False):
        return

    async def spawn_app(
        self: Any, app: AppWrapper, config: Any, scope: Any, send: Any
    ) -> Callable[[dict[str, Any]], Awaitable[None]]:
        inbox = AppInbox(config.max_app_queue_size)
        # A partial, not a closure: Hypercorn keeps it for the whole connection.
        app_reading_inbox = functools.partial(_app_reading_inbox, app, inbox)
        await original(self, app_reading_inbox, config, scope, send)
        return inbox.put

    spawn_app._channels_runtime_inbox = True  # type: ignore[attr-defined]
    spawn_app.__wrapped__ = original  # type: ignore[attr-defined]
    task_group_class.spawn_app = spawn_app
    _drop_unused_queue(sys.modules[task_group_class.__module__])


def _drop_unused_queue(module: Any) -> None:
    """Let Hypercorn's own receive queue go as soon as the application starts.

    ``spawn_app`` still makes it (an ``asyncio.Queue``: four deques, about
    3.3 KB; a trio memory channel, about 1 KB) and hands its ``get`` to the
    task's ``_handle``, whose frame would keep it for the whole connection
    although the application reads its :class:`AppInbox`. This wrapper of
    ``_handle`` (looked up by ``spawn_app`` at each call) passes a placeholder
    on instead, so the queue is freed when ``spawn_app`` returns.
    """
    original = module._handle
    if getattr(original, "_channels_runtime_inbox", False):
        return

    # Returns Hypercorn's coroutine rather than awaiting it: no frame of its own
    # in the connection's chain of awaits (see app_reading_inbox above).
    def _handle(app: Any, config: Any, scope: Any, receive: Any, *rest: Any) -> Awaitable[None]:
        del receive
        return original(app, config, scope, _replaced_receive, *rest)

    _handle._channels_runtime_inbox = True  # type: ignore[attr-defined]
    _handle.__wrapped__ = original  # type: ignore[attr-defined]
    module._handle = _handle


def install() -> None:
    """Give every application Hypercorn starts an :class:`AppInbox` (idempotent)."""
    from hypercorn.asyncio.task_group import TaskGroup as AsyncioTaskGroup

    _patch(AsyncioTaskGroup)
    try:
        from hypercorn.trio.task_group import TaskGroup as TrioTaskGroup
    except ImportError:  # trio is an optional extra
        return
    _patch(TrioTaskGroup)
