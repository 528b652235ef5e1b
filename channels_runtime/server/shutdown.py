"""Closing open WebSockets politely when the server shuts down.

Left to itself, Hypercorn 0.18 gives an open WebSocket nothing at shutdown
until ``graceful_timeout`` runs out, then cancels the application: an asyncio
worker sends close code 1011 ("internal error"), a trio worker drops the TCP
connection without a close frame. Either way the consumer's ``disconnect``
handler never runs normally and its groups are left only by the teardown
fallback. ``lifespan.shutdown`` cannot help: it arrives after the connections
are gone.

:class:`GracefulShutdown` is an ASGI middleware that knows every open WebSocket.
When :meth:`GracefulShutdown.close_websockets` is called it, for each one:

1. marks the connection as going away, so later sends from the application
   are dropped instead of failing against a closed socket;
2. hands the application ``{"type": "websocket.disconnect", "code": 1001}``
   from its ``receive()`` (cancelling a pending wait for the client), so the
   consumer leaves its groups and runs ``disconnect(1001)`` as on any close;
3. sends ``{"type": "websocket.close", "code": 1001}`` ("going away") through
   the real ``send``, so the client sees a proper close frame;

then waits, bounded, for the applications to return. ``serve()`` runs this
right after telling Hypercorn to stop accepting; HTTP requests in flight are
left to Hypercorn's own graceful period.
"""

from __future__ import annotations

import logging

import anyio

from ..asgi import ASGIApp, Message, Receive, Scope, Send
from ..compat.hypercorn_fixes.app_inbox import AppInbox
from ..compat.interrupt import Interrupted, InterruptibleWait

__all__ = ["GOING_AWAY", "GracefulShutdown"]

logger = logging.getLogger("channels_runtime.server")

#: RFC 6455 close code 1001: the endpoint is going away (server shutdown).
GOING_AWAY = 1001


class _WebSocket:
    """One tracked WebSocket: the real ``receive``/``send`` and what has happened so far.

    This sits on every message's path, so it avoids anyio's per-call
    primitives (measured at 11 µs per echo round trip on asyncio, more on
    trio). Under ``serve`` the server's ``receive`` is the ``get`` of the
    connection's :class:`~channels_runtime.compat.hypercorn_fixes.app_inbox.AppInbox`,
    which :meth:`go_away` can end directly, so the application reads it
    unwrapped (:attr:`app_receive`) and a message costs nothing here. Any
    other ``receive`` is wrapped in an :class:`InterruptibleWait`: one task
    lookup per message on asyncio, a trio cancel scope on trio. Sends are
    counted instead of locked, because the only thing that must not overtake
    an application's frame is the close frame :meth:`go_away` sends once.
    """

    __slots__ = (
        "_drained",
        "_in_flight",
        "_inbox",
        "_receive",
        "_send",
        "_wait",
        "accepted",
        "close_sent",
        "disconnected",
        "going_away",
        "responding",
    )

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        inbox = getattr(receive, "__self__", None)
        self._inbox = inbox if isinstance(inbox, AppInbox) else None
        self._wait = InterruptibleWait() if self._inbox is None else None
        self._in_flight = 0  # application sends handed to the server, not yet returned
        self._drained: anyio.Event | None = None  # made by go_away() if it must wait for them
        self.accepted = False
        self.responding = False  # a denial response (websocket.http.response.*) started
        self.close_sent = False
        self.disconnected = False
        self.going_away = False

    @property
    def app_receive(self) -> Receive:
        """The ``receive`` to give the application: the server's own if it is an inbox."""
        return self._receive if self._inbox is not None else self.receive

    async def receive(self) -> Message:
        if self.going_away:
            return {"type": "websocket.disconnect", "code": GOING_AWAY}
        assert self._wait is not None  # receive() wraps only a receive that is not an inbox
        try:
            message = await self._wait.wait(self._receive)
        except Interrupted:
            return {"type": "websocket.disconnect", "code": GOING_AWAY}
        if message["type"] == "websocket.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        if self.going_away:
            # The server is going away: the client gets (or has got) the close frame
            # and the application learns it at its next receive(). Its sends meanwhile
            # have nowhere to go.
            return
        message_type = message.get("type")
        if message_type == "websocket.send":
            pass
        elif message_type == "websocket.accept":
            self.accepted = True
        elif message_type == "websocket.close":
            self.close_sent = True
        elif message_type == "websocket.http.response.start":
            self.responding = True
        self._in_flight += 1
        try:
            await self._send(message)
        finally:
            self._in_flight -= 1
            if self._drained is not None and not self._in_flight:
                self._drained.set()

    async def go_away(self) -> None:
        """Tell the application and the client that the server is going away."""
        if self.going_away:
            return
        self.going_away = True
        if self._inbox is not None:
            final: Message = {"type": "websocket.disconnect", "code": GOING_AWAY}
            if not self._inbox.interrupt(final):
                self.disconnected = True  # the client's own disconnect came first
        else:
            assert self._wait is not None
            self._wait.interrupt()
        if self.disconnected:
            return
        if self._in_flight:
            # Let the frames the application is writing go first; new ones are dropped.
            self._drained = anyio.Event()
            await self._drained.wait()
        if self.close_sent or self.responding:
            return
        self.close_sent = True
        # Before the handshake is accepted, Hypercorn answers a close with HTTP 403.
        close: Message = {"type": "websocket.close"}
        if self.accepted:
            close["code"] = GOING_AWAY
        try:
            await self._send(close)
        except Exception as exc:  # the connection may be half torn down already
            logger.debug("Could not send the going-away close frame: %r", exc)


class GracefulShutdown:
    """ASGI middleware that can close every open WebSocket with code 1001.

    Wraps ``app``; HTTP passes straight through. On a WebSocket, each
    ``receive()`` costs a task lookup and each ``send()`` a counter update.

    Also watches the lifespan protocol so :meth:`wait_started` can tell when
    the application has finished starting (or turned out not to speak
    lifespan), which is when ``serve()`` reports the server as started.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._open: set[_WebSocket] = set()
        self._shutting_down = False
        # Events belong to an event loop, so they are made on first use in async code.
        self._all_closed: anyio.Event | None = None
        self._started: anyio.Event | None = None

    @property
    def open_websockets(self) -> int:
        """How many WebSocket connections are open right now."""
        return len(self._open)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The WebSocket case inline, not in a method of its own: each message
        # resumes every frame of the connection's chain of awaits.
        scope_type = scope["type"]
        if scope_type == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope_type != "websocket":
            await self.app(scope, receive, send)
            return
        if self._shutting_down:
            # Accepted by the socket just before it stopped listening: refuse the
            # handshake rather than start an application that must end at once.
            message = await receive()
            if message.get("type") == "websocket.connect":
                await send({"type": "websocket.close"})
            return
        connection = _WebSocket(receive, send)
        self._open.add(connection)
        try:
            await self.app(scope, connection.app_receive, connection.send)
        finally:
            self._open.discard(connection)
            if not self._open and self._all_closed is not None:
                self._all_closed.set()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._started_event()
        failed = False

        async def watch_send(message: Message) -> None:
            nonlocal failed
            message_type = message.get("type")
            if message_type == "lifespan.startup.complete":
                started.set()
            elif message_type == "lifespan.startup.failed":
                failed = True
            await send(message)

        try:
            await self.app(scope, receive, watch_send)
        except Exception:
            # An application that raises instead of answering has no lifespan
            # support, and Hypercorn carries on serving without it; a reported
            # failure (which raises out of send) stops the server instead.
            if not failed:
                started.set()
            raise
        # Returning without a startup answer also lets Hypercorn carry on.
        started.set()

    def _started_event(self) -> anyio.Event:
        if self._started is None:
            self._started = anyio.Event()
        return self._started

    async def wait_started(self) -> None:
        """Return once lifespan startup has completed (or was skipped by the app)."""
        await self._started_event().wait()

    async def close_websockets(self, grace_period: float) -> int:
        """Close every open WebSocket with 1001 and wait up to ``grace_period`` s for the apps.

        From the first call on, new WebSocket handshakes are refused. Returns
        how many applications were still running when the time ran out (0 when
        all finished); those are left to the server's own shutdown.
        """
        self._shutting_down = True
        if self._all_closed is None:
            self._all_closed = anyio.Event()
        if not self._open:
            return 0
        count = len(self._open)
        logger.info("Closing %d open WebSocket connection(s) with code %d", count, GOING_AWAY)
        with anyio.move_on_after(grace_period):
            async with anyio.create_task_group() as group:
                for connection in list(self._open):
                    group.start_soon(connection.go_away)
            if self._open:
                await self._all_closed.wait()
        remaining = len(self._open)
        if remaining:
            logger.warning(
                "%d WebSocket application(s) still running after %.1fs; "
                "their connections are cut now",
                remaining,
                grace_period,
            )
        return remaining

    def __repr__(self) -> str:
        return f"<GracefulShutdown {self.app!r} open_websockets={len(self._open)}>"
