"""Sharded Pub/Sub (Redis 7): what a subscribed connection to a cluster node
receives, and where each channel is served.

A sharded channel lives in the slot of its name, like a key: ``SPUBLISH`` goes
to the master serving that slot (:meth:`.ClusterRouter.execute` routes it),
and ``SSUBSCRIBE`` must be sent to that same node, all channels of one
command in one slot (:func:`channels_by_node` groups them). So a subscriber
holds one subscribed connection per node it needs.

When a slot moves away (a migration finishes, a failover), the node tells each
subscriber with a ``sunsubscribe`` push it did not ask for: the subscription
is gone and must be made again on the slot's new master (after refreshing the
map, e.g. :meth:`.ClusterRouter.note_redirect` or ``refresh``). An
``SSUBSCRIBE`` sent to the wrong node is answered ``-MOVED``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from .client import ClusterRouter
from .topology import NodeAddress

__all__ = ["ShardedPush", "channels_by_node", "parse_sharded_push"]

_KINDS = {b"smessage": "smessage", b"ssubscribe": "ssubscribe", b"sunsubscribe": "sunsubscribe"}


class ShardedPush(NamedTuple):
    """One push on a sharded-subscribed connection. ``kind`` is ``"smessage"``
    (``data``: the message), ``"ssubscribe"`` or ``"sunsubscribe"`` (``data``:
    how many sharded channels the connection is left subscribed to)."""

    kind: str
    channel: bytes
    data: bytes | int


def parse_sharded_push(reply: Any) -> ShardedPush | None:
    """The push ``reply`` is, or ``None`` if it is not a sharded Pub/Sub push
    (e.g. a ``PONG``, or an error reply such as ``MOVED``)."""
    if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], bytes)):
        return None
    kind = _KINDS.get(reply[0].lower())
    if kind is None or not isinstance(reply[1], bytes):
        return None
    return ShardedPush(kind, reply[1], reply[2])


async def channels_by_node(
    router: ClusterRouter, channels: Iterable[str | bytes]
) -> dict[NodeAddress | None, dict[int, list[str | bytes]]]:
    """Channel names by the master serving them, then by slot: one
    ``SSUBSCRIBE`` per slot, on that node's subscribed connection."""
    return await router.group_by_node(channels)
