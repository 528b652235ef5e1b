"""Connection metrics: open now, opened and closed, close codes, handshakes denied."""

from __future__ import annotations

from .core import Counter, Gauge

__all__ = ["CLOSED", "DENIED", "OPEN", "OPENED"]

OPEN = Gauge(
    "channels_runtime_connections_open",
    "Connections open now, by protocol and route pattern.",
    ("protocol", "route"),
)
OPENED = Counter(
    "channels_runtime_connections_opened_total",
    "Connections accepted, by protocol and route pattern.",
    ("protocol", "route"),
)
CLOSED = Counter(
    "channels_runtime_connections_closed_total",
    "Connections closed, by protocol, route pattern and WebSocket close code.",
    ("protocol", "route", "code"),
)
DENIED = Counter(
    "channels_runtime_handshakes_denied_total",
    "WebSocket handshakes refused, by reason (origin, no_route, auth, consumer).",
    ("reason",),
)
