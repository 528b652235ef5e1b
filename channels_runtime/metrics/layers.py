"""Channel layer metrics, for the in-memory layer and both Redis layers.

Labelled by ``layer``: the ``CHANNEL_LAYERS`` alias the layer was made for
(``default``), or its class name for a layer made directly. Counters are
updated by the layers' own methods (one line each, behind
``if metrics.enabled``); the gauges are read from each layer when the metrics
are published, through its ``metrics_state()`` method, so the hot path does not
mirror what the layer already knows.

What each layer can tell (the others leave those series out):

================================  ==========  ==============  ===========
metric                            in-memory   Redis (lists)   Redis pub/sub
================================  ==========  ==============  ===========
sent, received, group_sends       yes         yes             yes
group fan-out                     members     members         subscribers reached
ChannelFull (send, group_send)    yes         yes             never raised
expired                           yes         read expired    yes
evicted (process buffer full)     —           yes             yes
buffered messages                 queued      local buffers   local queues
groups                            yes         —               local members
Redis reconnects, unavailable     —           yes             yes
================================  ==========  ==============  ===========
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .core import Counter, Gauge, Histogram, Key, snapshot_number

__all__ = [
    "BUFFERED",
    "EVICTED",
    "EXPIRED",
    "FANOUT",
    "FULL",
    "GROUPS",
    "GROUP_SENDS",
    "RECEIVED",
    "RECONNECTS",
    "SENT",
    "UNAVAILABLE",
    "UNAVAILABLE_SECONDS",
    "channel_full",
    "evicted",
    "expired",
    "group_sent",
    "received",
    "reconnected",
    "sent",
    "track",
]

FANOUT_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

SENT = Counter(
    "channels_runtime_layer_messages_sent_total",
    "Messages sent to a channel with send(), by layer.",
    ("layer",),
)
RECEIVED = Counter(
    "channels_runtime_layer_messages_received_total",
    "Messages returned by receive(), by layer.",
    ("layer",),
)
GROUP_SENDS = Counter(
    "channels_runtime_layer_group_sends_total",
    "group_send() calls, by layer.",
    ("layer",),
)
FANOUT = Histogram(
    "channels_runtime_layer_group_send_fanout",
    "Channels a group_send() delivered to (Redis pub/sub: subscribed processes reached), by layer.",
    ("layer",),
    buckets=FANOUT_BUCKETS,
)
FULL = Counter(
    "channels_runtime_layer_channel_full_total",
    "Messages refused because the channel was at capacity, by layer and operation "
    "(send: ChannelFull raised; group_send: the member was skipped).",
    ("layer", "operation"),
)
EXPIRED = Counter(
    "channels_runtime_layer_messages_expired_total",
    "Messages dropped undelivered because they outlived the layer's expiry, by layer.",
    ("layer",),
)
EVICTED = Counter(
    "channels_runtime_layer_messages_evicted_total",
    "Messages dropped because this process's buffer of received messages was full "
    "(max_buffered or the channel's capacity), by layer.",
    ("layer",),
)
RECONNECTS = Counter(
    "channels_runtime_redis_reconnects_total",
    "Times a Redis server became reachable again after being unreachable, by layer.",
    ("layer",),
)

#: Every layer with metrics: tracked by the manager when made, or on first count.
_layers: weakref.WeakSet[Any] = weakref.WeakSet()


def track(layer: Any, alias: str | None = None) -> None:
    """Count ``layer``'s metrics under ``alias`` (default: its class name).

    A third-party layer that takes no attributes (``__slots__``) is left
    alone: only this package's layers count anything.
    """
    try:
        layer._metrics_key = (alias or type(layer).__name__,)
        _layers.add(layer)
    except (AttributeError, TypeError):
        pass


def _key(layer: Any) -> Key:
    try:
        key: Key = layer._metrics_key
    except AttributeError:
        track(layer)
        key = layer._metrics_key
    return key


_sent = SENT.values
_received = RECEIVED.values


def sent(layer: Any) -> None:
    key = layer._metrics_key  # set by BaseChannelLayer
    _sent[key] = _sent.get(key, 0) + 1


def received(layer: Any) -> None:
    key = layer._metrics_key
    _received[key] = _received.get(key, 0) + 1


def group_sent(layer: Any, fanout: int, full: int = 0) -> None:
    """One group_send delivered to ``fanout`` channels and skipped ``full`` at capacity."""
    key = _key(layer)
    GROUP_SENDS.inc(key)
    FANOUT.observe(key, fanout)
    if full:
        FULL.inc((key[0], "group_send"), full)


def channel_full(layer: Any, operation: str, count: int = 1) -> None:
    FULL.inc((_key(layer)[0], operation), count)


def expired(layer: Any, count: int = 1) -> None:
    EXPIRED.inc(_key(layer), count)


def evicted(layer: Any, count: int = 1) -> None:
    EVICTED.inc(_key(layer), count)


def reconnected(layer: Any, unavailable_for: float) -> None:
    """Redis is reachable again after ``unavailable_for`` seconds."""
    key = _key(layer)
    RECONNECTS.inc(key)
    UNAVAILABLE_SECONDS.inc(key, unavailable_for)


#: (snapshot number, {id(layer): its metrics_state()}): read once per snapshot.
_states: tuple[int | None, dict[int, dict[str, float]]] = (None, {})


def _state(layer: Any) -> dict[str, float] | None:
    """``layer.metrics_state()``, computed once per snapshot for all the metrics
    that read it (the in-memory layer's walks every channel)."""
    global _states
    method = getattr(layer, "metrics_state", None)
    if method is None:
        return None
    number = snapshot_number()
    if number is None:
        return method()
    if _states[0] != number:
        _states = (number, {})
    states = _states[1]
    found = states.get(id(layer))
    if found is None:
        found = states[id(layer)] = method()
    return found


def _state_of(name: str) -> Callable[[], Iterator[tuple[Key, float]]]:
    def collect() -> Iterator[tuple[Key, float]]:
        for layer in list(_layers):
            state = _state(layer)
            if state is None:
                continue
            value = state.get(name)
            if value is not None:
                yield _key(layer), float(value)

    return collect


BUFFERED = Gauge(
    "channels_runtime_layer_buffered_messages",
    "Messages held in this process waiting for a receiver, by layer.",
    ("layer",),
    collect=_state_of("buffered"),
)
GROUPS = Gauge(
    "channels_runtime_layer_groups",
    "Groups with members known to this process, by layer.",
    ("layer",),
    collect=_state_of("groups"),
)
UNAVAILABLE = Gauge(
    "channels_runtime_redis_unavailable",
    "Redis servers of the layer unreachable now (0 when all are reachable), by layer.",
    ("layer",),
    collect=_state_of("redis_unavailable"),
)
UNAVAILABLE_SECONDS = Counter(
    "channels_runtime_redis_unavailable_seconds_total",
    "Seconds Redis servers of the layer have been unreachable (an outage in progress "
    "included), by layer.",
    ("layer",),
    collect=_state_of("redis_unavailable_seconds"),
)
