"""Connection metrics: open now, opened and closed, close codes, handshakes denied.

Every connection the server hands to the application gets a
:class:`ConnectionRecord`, made where the connection starts and reachable from
the application's own task through :data:`current` (a context variable the
application's task inherits), so the routers and middleware on the way can
write on it in one line each:

* ``route``: the ``URLRouter`` pattern(s) matched, outermost first, joined
  (``"ws/" + "chat/<str:room>/"``): the pattern text, never the path, so the
  label has as many values as the project has routes; ``""`` when no
  ``URLRouter`` routed the connection;
* ``reason``: why a handshake is being refused (``origin``, ``no_route``), set
  by whoever refuses it; ``auth`` when the application refused a client whose
  user it had looked at and found anonymous; ``application`` for any other
  refusal by the application.

WebSocket connections are counted by the server's WebSocket stream
(``compat/hypercorn_fixes/ws_stream.py``): opened when the application accepts,
closed with the close code the application is told. HTTP connections (one per
request, as ASGI has them) are counted by ``ProtocolTypeRouter``: opened once
routed (or at once when no ``URLRouter`` is on the way), closed when the
application returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from ..asgi import ASGIApp
from . import outbound
from .core import Counter, Gauge

__all__ = [
    "CLOSED",
    "CLOSES",
    "DENIED",
    "OPEN",
    "OPENED",
    "ConnectionRecord",
    "closed",
    "counted_http",
    "current",
    "denied",
    "deny_reason",
    "handshake",
    "handshake_answered",
    "note_user",
    "opened",
    "routed",
]

OPEN = Gauge(
    "channels_runtime_connections_open",
    "Connections open now, by protocol (websocket, http) and route pattern.",
    ("protocol", "route"),
)
OPENED = Counter(
    "channels_runtime_connections_opened_total",
    "Connections opened (WebSocket: accepted), by protocol and route pattern.",
    ("protocol", "route"),
)
CLOSED = Counter(
    "channels_runtime_connections_closed_total",
    "Connections closed, by protocol and route pattern.",
    ("protocol", "route"),
)
CLOSES = Counter(
    "channels_runtime_websocket_closes_total",
    "WebSocket connections closed, by route pattern and the close code the application "
    "was told (1006: lost without a close handshake).",
    ("route", "code"),
)
DENIED = Counter(
    "channels_runtime_handshakes_denied_total",
    "WebSocket handshakes refused, by reason: origin, no_route, auth, application, error.",
    ("reason",),
)


class ConnectionRecord:
    """What the metrics know about one connection; see the module docstring."""

    __slots__ = ("done", "key", "outbound", "protocol", "reason", "route", "user")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.done = False
        #: [frames, bytes] sent on its route (metrics.outbound), once opened.
        self.outbound: list[float] | None = None
        self.route = ""
        self.reason: str | None = None
        self.user: Any = None
        #: The (protocol, route) it was counted open under; None until opened.
        self.key: tuple[str, str] | None = None


#: The record of the connection the running task serves (None outside one, or when off).
current: ContextVar[ConnectionRecord | None] = ContextVar(
    "channels_runtime_metrics_connection", default=None
)


async def handshake(stream: Any, handle: Callable[[Any], Awaitable[None]], event: Any) -> None:
    """``await handle(event)`` (the WebSocket stream starting the application) with a record.

    The application's task is started inside ``handle`` and inherits
    :data:`current`; the record is also kept as ``stream.metrics_record``.
    """
    record = stream.metrics_record = ConnectionRecord("websocket")
    token = current.set(record)
    try:
        await handle(event)
    finally:
        current.reset(token)


def _routes_on_path(application: Any) -> bool:
    """Whether a router (Channels' ``_path_routing`` marker) is reachable through ``.inner``."""
    current_app = application
    for _ in range(32):  # bounded, as routing's own walk
        if getattr(current_app, "_path_routing", False) is True:
            return True
        current_app = getattr(current_app, "inner", None)
        if current_app is None:
            return False
    return False


def counted_http(application: ASGIApp) -> ASGIApp:
    """An HTTP ``application`` whose call is one counted connection (``ProtocolTypeRouter``).

    With a ``URLRouter`` on the way the count is opened once it has matched (see
    :func:`routed`), so the route is known; otherwise at once, route ``""``.
    """
    routed_later = _routes_on_path(application)

    async def counted(scope: Any, receive: Any, send: Any) -> Any:
        record = ConnectionRecord("http")
        token = current.set(record)
        try:
            if not routed_later:
                opened(record)
            return await application(scope, receive, send)
        finally:
            closed(record)
            current.reset(token)

    return counted


def routed(pattern: str, *, final: bool) -> None:
    """A ``URLRouter`` matched ``pattern``; ``final``: it calls an application, not a router.

    An HTTP connection is counted open once its last router has matched, so the
    route label is whole.
    """
    record = current.get()
    if record is None or record.key is not None:
        return
    record.route += pattern
    if final and record.protocol == "http":
        opened(record)


def deny_reason(reason: str) -> None:
    """Say why the current connection's handshake is about to be refused."""
    record = current.get()
    if record is not None and record.reason is None:
        record.reason = reason


def note_user(user: Any) -> None:
    """Keep the scope's (lazy) user, to tell an authentication refusal from another."""
    record = current.get()
    if record is not None:
        record.user = user


def opened(record: ConnectionRecord) -> None:
    """Count ``record`` open, under its route as known now."""
    if record.key is not None or record.done:
        return
    key = record.key = (record.protocol, record.route)
    OPENED.inc(key)
    OPEN.inc(key)
    if record.protocol == "websocket":
        record.outbound = outbound.cells_for(record.route)


def closed(record: ConnectionRecord, code: int | None = None) -> None:
    """Count ``record`` closed (``code``: the WebSocket close code); once only."""
    key = record.key
    if key is None or record.done:
        return
    record.done = True
    CLOSED.inc(key)
    OPEN.dec(key)
    if code is not None:
        CLOSES.inc((key[1], str(code)))


def denied(record: ConnectionRecord) -> None:
    """The application refused ``record``'s handshake; count it under its reason."""
    reason = record.reason
    if reason is None:
        reason = "auth" if _anonymous(record.user) else "application"
    DENIED.inc((reason,))


def handshake_answered(record: ConnectionRecord, message: Any) -> None:
    """The application sent ``message`` before accepting (None: it ended without a word).

    A close or a denial response refuses the handshake; an application that
    ends (or fails) without answering is refused by the server with 500,
    counted under ``error``.
    """
    if message is None:
        DENIED.inc(("error",))
        return
    kind = message.get("type")
    if kind == "websocket.close" or kind == "websocket.http.response.start":
        denied(record)


def _anonymous(user: Any) -> bool:
    """Whether ``user`` was looked at (a lazy one is not evaluated here) and is anonymous."""
    if user is None:
        return False
    wrapped = user.__dict__.get("_wrapped", user) if hasattr(user, "__dict__") else user
    from django.utils.functional import empty

    if wrapped is empty:
        return False
    return getattr(wrapped, "is_authenticated", True) is False
