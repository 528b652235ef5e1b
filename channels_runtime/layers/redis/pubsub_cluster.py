"""Where the Pub/Sub layer's topics are subscribed on a Redis Cluster, for one event loop.

With a cluster, the Pub/Sub layer uses sharded Pub/Sub (Redis 7): a topic
lives in the slot of its name, ``SPUBLISH`` goes to the master serving that
slot, and only a connection to that master that has sent ``SSUBSCRIBE``
receives it. So the layer keeps one subscribed connection per master
(:class:`~.subscriber.ShardedSubscriber`), and each wanted topic is *placed*
on the one serving its slot.

Slots move (a migration, a failover). The node that loses one pushes
``sunsubscribe`` for its topics, answers ``MOVED`` to an ``SSUBSCRIBE``, or
simply goes away (its connection breaks). In each case the topics concerned
go back to :attr:`ShardedTopics.unplaced`, the slot map is refreshed, and the
layer's reader places them again: on the new master as soon as the map names
one, retrying every ``backoff_max`` (0.25 s) until then. Nothing here runs in
the background either: :meth:`ShardedTopics.place` runs in the reader's task.

Between losing a topic and the new master confirming it, messages published
to it are lost (at most once, as with a standalone server that restarts);
:attr:`ShardedTopics.lost` holds those topics and when they were lost, so the
layer can tell its channels (``on_disconnect``/``on_reconnect``) and log how
long it took.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .cluster import ClusterRouter, ClusterUnavailable, NodeAddress
from .connections import Outage
from .subscriber import ShardedSubscriber

__all__ = ["ShardedTopics"]

_monotonic = time.monotonic


class ShardedTopics:
    """One event loop's sharded subscriptions: a subscriber per master met so
    far, which of them holds each wanted topic, and the loop's router (the
    slot map, shared with publishing).

    ``subscribers`` is the layer's list of subscribed connections for this
    loop (its reader reads every one that has topics); nodes are appended as
    they are met and never removed, so an index stays valid.
    """

    __slots__ = (
        "delay",
        "loss_began",
        "lost",
        "nodes",
        "outage",
        "owner",
        "place_at",
        "recovered_in",
        "refresh_first",
        "regained",
        "router",
        "spec",
        "subscribers",
        "unplaced",
        "waiters",
    )

    def __init__(self, layer: Any, router: ClusterRouter, subscribers: list[Any]) -> None:
        self.spec = router.spec
        #: The loop's router (the layer's, which publishes through it too).
        self.router = router
        self.subscribers: list[ShardedSubscriber] = subscribers
        self.nodes: dict[NodeAddress, ShardedSubscriber] = {}
        #: topic -> the node's subscriber it is wanted on.
        self.owner: dict[bytes, ShardedSubscriber] = {}
        #: Wanted topics not on any node yet (new, or taken away by one).
        self.unplaced: set[bytes] = set()
        #: Callers waiting for a topic's subscription, whichever node it is on.
        self.waiters: dict[bytes, list[Any]] = {}
        #: When the reader should place ``unplaced`` next (anyio's clock), and
        #: the backoff while placing keeps failing.
        self.place_at = 0.0
        self.delay = 0.0
        #: Refresh the slot map before placing (a node said a slot moved).
        self.refresh_first = False
        #: Topics that stopped receiving (monotonic time they did), until a
        #: node confirms them again; and those confirmed since the first loss.
        self.lost: dict[bytes, float] = {}
        self.regained: set[bytes] = set()
        #: When the current loss began, and how long the last one lasted (from
        #: the first topic lost to the last one confirmed again), in seconds.
        self.loss_began: float | None = None
        self.recovered_in: float | None = None
        #: The cluster as this loop's reader sees it (for the metrics).
        self.outage = Outage(layer, router.spec.describe())

    def describe(self) -> str:
        return self.spec.describe()

    # -- what is wanted ----------------------------------------------------------

    def want(self, topic: bytes) -> bool:
        """Ask for ``topic`` to be subscribed; True if it already is."""
        sub = self.owner.get(topic)
        if sub is not None:
            return sub.want(topic)
        self.unplaced.add(topic)
        return False

    def unwant(self, topic: bytes) -> list[Any]:
        """Stop wanting ``topic``; the callers that were waiting for it."""
        self.unplaced.discard(topic)
        if self.lost.pop(topic, None) is not None and not self.lost:
            self.loss_began = None
            self.regained.clear()
            self.outage.ended(detail="; no lost topic is wanted any more")
        sub = self.owner.pop(topic, None)
        if sub is not None:
            return sub.unwant(topic)
        return self.waiters.pop(topic, [])

    def wanted(self) -> int:
        return len(self.owner) + len(self.unplaced)

    # -- slots moving -------------------------------------------------------------

    def take_back(self, sub: ShardedSubscriber, topics: Iterable[bytes], now: float) -> list[bytes]:
        """``sub``'s node no longer serves ``topics``: mark them lost and to be
        placed again (after a refresh of the slot map). Returns those newly lost."""
        moved = [topic for topic in topics if self.owner.get(topic) is sub]
        sub.give_up(moved)
        newly = []
        lost_at = _monotonic()
        for topic in moved:
            del self.owner[topic]
            self.unplaced.add(topic)
            if not self.lost:
                self.loss_began = lost_at
            if topic not in self.lost:
                self.lost[topic] = lost_at
                newly.append(topic)
        if moved:
            self.refresh_first = True
            self.place_at = min(self.place_at, now + self.delay)
        return newly

    def failed(
        self, sub: ShardedSubscriber, now: float, backoff: tuple[float, float]
    ) -> list[bytes]:
        """``sub``'s connection broke or could not be opened: every topic it
        held is placed again, after the next backoff step."""
        self.router.note_failure(sub.address)
        self.back_off(now, backoff)
        return self.take_back(sub, list(sub.wanted), now)

    def back_off(self, now: float, backoff: tuple[float, float]) -> None:
        """Place again no sooner than the next backoff step (placing keeps failing)."""
        low, high = backoff
        self.delay = low if not self.delay else min(self.delay * 2, high)
        self.place_at = now + self.delay

    def confirmed(self, topic: bytes) -> bool:
        """A node confirmed ``topic``: True if that ends the current loss (no
        topic is lost any more)."""
        self.delay = 0.0
        if self.lost.pop(topic, None) is None:
            return False
        self.regained.add(topic)
        if self.lost:
            return False
        if self.loss_began is not None:
            self.recovered_in = _monotonic() - self.loss_began
            self.loss_began = None
        return True

    async def place(self, now: float) -> None:
        """Put every unplaced topic on the master now serving its slot (topics
        whose slot no master serves stay unplaced, retried after a backoff step)."""
        router = self.router
        if self.refresh_first:
            self.refresh_first = False
            try:
                await router.refresh()
            except ClusterUnavailable:
                pass  # the old map, if any; failures to connect decide
        plan = await router.group_by_node(list(self.unplaced))
        for address, slots in plan.items():
            if address is None:
                continue
            sub = self.nodes.get(address)
            if sub is None:
                index = len(self.subscribers)
                sub = self.nodes[address] = ShardedSubscriber(
                    index,
                    address,
                    self.spec.node_spec(address.host, address.port),
                    self.outage,
                    self.waiters,
                )
                self.subscribers.append(sub)
            for topics in slots.values():
                for topic in topics:
                    self.unplaced.discard(topic)
                    self.owner[topic] = sub
                    sub.want(topic)
        if self.unplaced:
            self.place_at = now + max(self.delay, router.refresh_gap)

    # -- closing ------------------------------------------------------------------

    async def aclose(self) -> None:
        for sub in self.subscribers:
            await sub.disconnect()

    def abandon(self) -> None:
        for sub in self.subscribers:
            sub.abandon()
