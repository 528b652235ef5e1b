"""Outbound metrics: WebSocket frames and bytes sent, slow-client actions, bytes held.

* Frames are the application's ``websocket.send`` messages the server put on
  the wire (counted by the WebSocket stream); bytes are what the stream wrote
  for them and for every other frame of the connection (close, ping, pong),
  after permessage-deflate and with framing, as the client receives them.
* Slow-client actions are the two policies that close a client which does not
  keep up: the server's ``write_timeout`` (any protocol; the WebSocket is told
  1013) and a sync consumer's full send queue (closed with 1013).
* Bytes held are computed when the metrics are published, from what already
  exists: the asyncio transports' write buffers, the writes in progress on
  trio, and the sync consumers' send queues.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .core import Counter, Gauge, Key, on_clear

__all__ = [
    "BUFFERED",
    "BYTES",
    "FRAMES",
    "SLOW_CLIENTS",
    "cells_for",
    "frame_sent",
    "slow_client",
    "sync_send_queue_full",
    "track_sender",
]

#: Route -> [frames, bytes] sent: a connection keeps its route's list (cells_for).
_sent: dict[str, list[float]] = {}


def _sent_column(column: int) -> Callable[[], Iterator[tuple[Key, float]]]:
    def collect() -> Iterator[tuple[Key, float]]:
        for route, cells in _sent.copy().items():
            yield (route,), cells[column]

    return collect


FRAMES = Counter(
    "channels_runtime_websocket_frames_sent_total",
    "WebSocket messages sent to clients (the application's websocket.send), by route pattern.",
    ("route",),
    collect=_sent_column(0),
)
BYTES = Counter(
    "channels_runtime_websocket_sent_bytes_total",
    "Bytes of WebSocket frames written to clients (framing and compression included, close "
    "and ping frames too), by route pattern.",
    ("route",),
    collect=_sent_column(1),
)
on_clear(_sent.clear)


def cells_for(route: str) -> list[float]:
    """The [frames, bytes] counts of ``route``, kept by each of its connections."""
    cells = _sent.get(route)
    if cells is None:
        cells = _sent[route] = [0, 0]
    return cells


SLOW_CLIENTS = Counter(
    "channels_runtime_slow_client_closes_total",
    "Connections closed because the client did not keep up, by policy: write_timeout (a "
    "write waited past write_timeout) or sync_send_queue (a sync consumer's send queue "
    "was full).",
    ("policy",),
)

#: Sync consumers' senders alive now (``channels_runtime.sync_send.ThreadSender``).
_senders: weakref.WeakSet[Any] = weakref.WeakSet()


def frame_sent(record: Any, data_frame: bool, size: int) -> None:
    """The WebSocket stream of ``record``'s connection wrote a frame of ``size`` bytes.

    ``data_frame``: an application message (not close, ping or pong). Two list
    updates: the connection holds its route's cells (set when it opened).
    """
    cells = record.outbound
    if cells is not None:
        if data_frame:
            cells[0] += 1
        cells[1] += size


def track_sender(sender: Any) -> None:
    """Count ``sender``'s queued bytes in :data:`BUFFERED` while it lives."""
    _senders.add(sender)


def slow_client(policy: str) -> None:
    """A slow-client policy closed a connection (call on the event loop's thread)."""
    SLOW_CLIENTS.inc((policy,))


def sync_send_queue_full() -> None:
    """A sync consumer's send queue was full: its client is closed with 1013."""
    SLOW_CLIENTS.inc(("sync_send_queue",))


def _held() -> Iterator[tuple[Key, float]]:
    from ..compat.hypercorn_fixes import tcp

    yield ("transport",), float(tcp.buffered_bytes())
    yield ("sync_send_queue",), float(sum(sender.pending_bytes for sender in list(_senders)))


BUFFERED = Gauge(
    "channels_runtime_outbound_buffered_bytes",
    "Bytes waiting to be sent to clients now, by where they wait: transport (the server's "
    "write buffers, writes in progress) or sync_send_queue (sync consumers' send queues).",
    ("where",),
    collect=_held,
)
