"""Which Redis server serves a name: the one piece that changes with the topology.

Today the servers in ``hosts`` are independent shards and a name goes to the
one its jump hash picks (:func:`~.hosts.shard_index`), the same in every
process. Both layers ask only through :class:`ShardRouter`, so another
topology (a cluster's key slots) replaces this class and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from .hosts import HostSpec, shard_index

__all__ = ["ShardRouter"]


class ShardRouter:
    """Names to servers for ``hosts`` used as independent shards."""

    __slots__ = ("hosts", "index_of")

    def __init__(self, hosts: Sequence[HostSpec]) -> None:
        self.hosts = list(hosts)
        #: The index in ``hosts`` of the server that holds ``name``. A plain
        #: callable rather than a method: it is called on every send, and this
        #: way no extra Python frame runs in between.
        self.index_of: Callable[[str], int] = partial(shard_index, shards=len(self.hosts))
