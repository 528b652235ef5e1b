"""Redis Pub/Sub on our RESP2 client: the subscribed connection to one server.

A connection that has sent ``SUBSCRIBE`` is in *subscribed mode*: from then on
the server writes to it on its own (``["message", topic, data]``), and answers
``SUBSCRIBE``/``UNSUBSCRIBE``/``PING`` with pushes of the same shape
(``["subscribe", topic, count]``, ``["pong", ""]``) in the order the commands
were sent. :class:`~.protocol.Connection` already reads any RESP2 reply, pushes
included, and can be cancelled mid-read without losing bytes, so this module
adds no reading of its own: it is the bookkeeping around one such connection.

* which topics this event loop *wants* subscribed (``wanted``), so that after a
  reconnect every one of them is subscribed again;
* which ``SUBSCRIBE``/``UNSUBSCRIBE`` commands still have to be written, so
  that callers never write to the socket themselves: the layer's single reader
  writes them (see :mod:`.pubsub` for why one task owns the socket);
* which subscriptions the server has confirmed. A caller that needs to know its
  subscription is in effect (``group_add`` must not return before a
  ``group_send`` from another process would reach it) waits for the
  confirmation; a topic is in effect once every command written for it has been
  answered and the last one was ``SUBSCRIBE``. Counting answers per topic,
  rather than remembering "subscribed or not", keeps that right when a topic is
  unsubscribed and subscribed again before the server has answered.

Nothing here is bound to an event loop except the connection itself, and
nothing runs in the background.

:class:`ShardedSubscriber` is the same bookkeeping for a Redis Cluster node
with sharded Pub/Sub (``SSUBSCRIBE``): one command per topic (a command's
topics must share a slot, and each topic has a slot of its own), and a way to
give topics up when their slot has moved to another node.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import anyio

from .cluster.slots import key_slot
from .connections import FAILURES_OR_REPLIES, Outage, Pool
from .hosts import HostSpec, SentinelError, ServerTime, named_master, open_connection
from .protocol import Connection, encode_command

__all__ = ["ShardedSubscriber", "Subscriber"]

_SUB = b"subscribe"
_UNSUB = b"unsubscribe"
#: Topics per SUBSCRIBE command when many are (re)subscribed at once, to keep
#: each command, and the server's work per command, small.
_CHUNK = 500


def _commands(verb: str, topics: Iterable[bytes]) -> list[bytes]:
    names = list(topics)
    return [
        encode_command(verb, *names[start : start + _CHUNK])
        for start in range(0, len(names), _CHUNK)
    ]


class Subscriber:
    """The subscribed connection to one Redis server, as one event loop sees it.

    ``waiters`` maps a topic to the callers waiting for its subscription to take
    effect; :meth:`confirmed` hands them back when it has. Their type is the
    layer's business.
    """

    __slots__ = (
        "_last",
        "_outstanding",
        "_resubscribing",
        "_to_sub",
        "_to_unsub",
        "clock",
        "conn",
        "delay",
        "index",
        "last_error",
        "last_heard",
        "lost_connection",
        "outage",
        "pinged_at",
        "retry_at",
        "spec",
        "waiters",
        "wanted",
        "watch_due",
        "watched",
    )

    #: The commands that (un)subscribe topics on this connection.
    subscribe_command = "SUBSCRIBE"
    unsubscribe_command = "UNSUBSCRIBE"

    def __init__(self, index: int, spec: HostSpec, clock: ServerTime, outage: Outage) -> None:
        self.index = index
        self.spec = spec
        self.clock = clock
        self.conn: Connection | None = None
        self.wanted: set[bytes] = set()
        self.waiters: dict[bytes, list[Any]] = {}
        self._to_sub: set[bytes] = set()
        self._to_unsub: set[bytes] = set()
        # Per topic: the last command written on this connection, and how many
        # written commands the server has not answered yet.
        self._last: dict[bytes, bytes] = {}
        self._outstanding: dict[bytes, int] = {}
        # Answers still expected for the batch that re-subscribed after (re)connecting.
        self._resubscribing = 0
        #: Reconnection state, kept by the layer's reader (in anyio's clock).
        self.retry_at = 0.0
        self.delay = 0.0
        #: Whether the server is down as this loop's reader sees it.
        self.outage = outage
        self.last_error: BaseException | None = None
        #: True from a lost connection until the re-subscription is confirmed.
        self.lost_connection = False
        #: Health check, kept here rather than by one reader so that it spans
        #: readers: when the server was last heard from (monotonic), and when
        #: an unanswered PING was sent.
        self.last_heard = 0.0
        self.pinged_at: float | None = None
        #: Sentinel: when to check next that the server is still the master.
        self.watched = bool(spec.sentinels)
        self.watch_due = 0.0

    # -- what is wanted ---------------------------------------------------------------

    def in_effect(self, topic: bytes) -> bool:
        """Whether the server has confirmed ``topic`` and nothing has changed since."""
        return (
            self.conn is not None
            and self._last.get(topic) is _SUB
            and topic not in self._outstanding
            and topic in self.wanted
        )

    def want(self, topic: bytes) -> bool:
        """Ask for ``topic`` to be subscribed; True if it already is."""
        self._to_unsub.discard(topic)
        self.wanted.add(topic)
        if self.conn is None:
            return False  # connecting subscribes every wanted topic
        last = self._last.get(topic)
        if last is _SUB:
            # Subscribed, or will be once the answers already due have come.
            return topic not in self._outstanding
        self._to_sub.add(topic)
        return False

    def unwant(self, topic: bytes) -> list[Any]:
        """Stop wanting ``topic``; return the callers that were waiting for it
        (nothing is left for them to wait for)."""
        self.wanted.discard(topic)
        self._to_sub.discard(topic)
        if self.conn is not None and self._last.get(topic) is _SUB:
            self._to_unsub.add(topic)
        return self.waiters.pop(topic, [])

    @property
    def has_writes(self) -> bool:
        return bool(self._to_sub or self._to_unsub)

    @property
    def needs_reading(self) -> bool:
        """Whether anything is (or should be) subscribed, or answers are due."""
        return bool(self.wanted) or (
            self.conn is not None and bool(self._outstanding or self._to_unsub)
        )

    # -- the connection -----------------------------------------------------------------

    async def connect(self, connect_timeout: float, socket_timeout: float) -> None:
        """Open the connection and subscribe every wanted topic (not waiting for
        the answers: the reader reads them like any other push)."""
        conn = await open_connection(self.spec, 0, self.clock, connect_timeout)
        self.conn = conn
        self.last_heard = time.monotonic()
        self.pinged_at = None
        self._last = {}
        self._outstanding = {}
        self._to_unsub = set()
        self._to_sub = set(self.wanted)
        self._resubscribing = len(self._to_sub)
        try:
            await self.flush(socket_timeout)
        except BaseException:
            await self.disconnect()
            raise

    async def flush(self, write_timeout: float) -> None:
        """Write the pending UNSUBSCRIBE and SUBSCRIBE commands in one write.

        Shielded: a write cut short by a cancellation would leave half a
        command on the wire. Bounded by ``write_timeout``; a failure is raised for the
        reader to drop the connection (the bookkeeping is redone on reconnect).
        """
        conn = self.conn
        assert conn is not None
        parts: list[bytes] = []
        for verb, topics in ((_UNSUB, self._to_unsub), (_SUB, self._to_sub)):
            if not topics:
                continue
            command = self.subscribe_command if verb is _SUB else self.unsubscribe_command
            parts += self._encode(command, topics)
            last, outstanding = self._last, self._outstanding
            for topic in topics:
                last[topic] = verb
                outstanding[topic] = outstanding.get(topic, 0) + 1
            topics.clear()
        if parts:
            with anyio.CancelScope(shield=True), anyio.fail_after(write_timeout):
                await conn.send(b"".join(parts))

    def _encode(self, command: str, topics: Iterable[bytes]) -> list[bytes]:
        return _commands(command, topics)

    async def ping(self, write_timeout: float) -> None:
        """Ask the server for a sign of life (answered ``["pong", ""]``)."""
        assert self.conn is not None
        with anyio.CancelScope(shield=True), anyio.fail_after(write_timeout):
            await self.conn.send(encode_command("PING"))
        self.pinged_at = time.monotonic()

    async def disconnect(self) -> None:
        """Close the connection at once; the wanted topics are kept for the next one."""
        conn, self.conn = self.conn, None
        self._last = {}
        self._outstanding = {}
        self._to_sub.clear()
        self._to_unsub.clear()
        self._resubscribing = 0
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.aclose()

    async def check_master(self, connect_timeout: float) -> None:
        """Raise :class:`~.hosts.SentinelError` if the sentinels name another
        master than the one this connection leads to (a switchover: the old
        master keeps running until Sentinel demotes it, and publishers have
        moved on, see :class:`~.connections.Pool`). Sentinels that do not
        answer are not a reason to drop a working connection."""
        self.watch_due = time.monotonic() + Pool.sentinel_check_interval
        conn = self.conn
        try:
            named = await named_master(self.spec, connect_timeout)
        except FAILURES_OR_REPLIES:
            return
        if conn is not None and conn.address is not None and named != conn.address:
            raise SentinelError(
                f"the sentinels name {named[0]}:{named[1]} as master now, "
                f"not {conn.address[0]}:{conn.address[1]}"
            )

    def abandon(self) -> None:
        """The event loop has ended: shut the socket down without it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abandon()

    # -- answers ------------------------------------------------------------------------

    def confirmed(self, verb: bytes, topic: bytes) -> tuple[list[Any], bool]:
        """Account for one ``subscribe``/``unsubscribe`` answer.

        Returns the callers whose subscription is now in effect, and whether
        this answer completed the re-subscription after (re)connecting.
        """
        resubscribed = False
        if self._resubscribing and verb == _SUB:
            self._resubscribing -= 1
            resubscribed = self._resubscribing == 0
        count = self._outstanding.get(topic, 0) - 1
        if count > 0:
            self._outstanding[topic] = count
            return [], resubscribed
        self._outstanding.pop(topic, None)
        last = self._last.get(topic)
        if last is _UNSUB:
            del self._last[topic]
        elif last is _SUB and topic in self.wanted:
            return self.waiters.pop(topic, []), resubscribed
        return [], resubscribed

    def describe(self) -> str:
        return self.spec.describe()


class ShardedSubscriber(Subscriber):
    """The subscribed connection to one master of a Redis Cluster, holding
    ``SSUBSCRIBE``s for the topics whose slots that master serves.

    The layer decides which topics go here; this class adds what a node can
    do that a standalone server cannot: take a topic away (``sunsubscribe``
    pushed unasked when its slot moved, ``MOVED`` in answer to
    ``SSUBSCRIBE``), after which :meth:`give_up` forgets it here so that the
    layer can subscribe it on the slot's new master. ``waiters`` is shared by
    every node of one event loop, since a waiting caller follows its topic
    from node to node.
    """

    __slots__ = ("address",)

    subscribe_command = "SSUBSCRIBE"
    unsubscribe_command = "SUNSUBSCRIBE"

    def __init__(
        self,
        index: int,
        address: Any,
        spec: HostSpec,
        outage: Outage,
        waiters: dict[bytes, list[Any]],
    ) -> None:
        super().__init__(index, spec, ServerTime(), outage)
        self.address = address
        self.waiters = waiters

    def _encode(self, command: str, topics: Iterable[bytes]) -> list[bytes]:
        # Each topic is in a slot of its own: one command each (CROSSSLOT otherwise).
        return [encode_command(command, topic) for topic in topics]

    def asked(self, topic: bytes) -> bool:
        """Whether an answer for ``topic`` is still due (an unsolicited
        ``sunsubscribe`` is not one)."""
        return topic in self._outstanding

    def in_slot(self, slot: int) -> list[bytes]:
        """The wanted topics whose slot is ``slot``."""
        return [topic for topic in self.wanted if key_slot(topic) == slot]

    def give_up(self, topics: Iterable[bytes]) -> None:
        """Forget ``topics`` here without unsubscribing them (the node already
        has, or never had them); their waiters stay in the shared ``waiters``."""
        for topic in topics:
            self.wanted.discard(topic)
            self._to_sub.discard(topic)
            self._to_unsub.discard(topic)
            self._last.pop(topic, None)
            due = self._outstanding.pop(topic, 0)
            if due and self._resubscribing:
                self._resubscribing = max(0, self._resubscribing - due)
