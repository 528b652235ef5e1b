"""The Redis Pub/Sub channel layer: lower latency, at most once, nothing stored in Redis.

``CHANNEL_LAYERS = {"default": {"BACKEND":
"channels_runtime.layers.redis.RedisPubSubChannelLayer", "CONFIG": {"hosts":
["redis://localhost:6379/0"]}}}``

Messages travel as Redis Pub/Sub messages, which Redis forwards to whoever is
subscribed at that moment and then forgets. So a message reaches a process
only if the process is subscribed when it is published, and nothing waits in
Redis: no capacity, no expiry, no keys. In exchange a message costs one
``PUBLISH`` and one push, and a ``group_send`` one ``PUBLISH`` however many
members the group has.

Topics (Pub/Sub channel names; ``prefix`` is the layer's):

* ``<prefix>:pr:<token>`` carries every process-specific channel of one layer
  instance (``new_channel()`` names are ``<prefix>.<token>!<letters>``); the
  message names its channel. One subscription per process rather than one per
  consumer: ``new_channel()`` costs no round trip once the process is
  subscribed, and Redis tracks one topic per process, not one per WebSocket;
* ``<prefix>:ch:<name>`` carries a normal channel; a process subscribes when it
  first receives on it (or adds it to a group);
* ``<prefix>:gr:<group>`` carries a group. Membership is local to the process:
  ``group_add`` records the member here and subscribes the process to the group
  topic, and the process fans a group message out to its own members.

Each topic lives on the server its name hashes to (the same jump hash as the
list-based layer), so several ``hosts`` are shards.

**Redis Cluster** (a ``redis+cluster://`` entry, or ``{"cluster": True, ...}``,
as the only ``hosts`` entry): sharded Pub/Sub, Redis 7 or later. A topic lives
in the slot of its name; ``SPUBLISH`` goes to the master serving it (through
the loop's :class:`~.cluster.ClusterRouter`, which follows ``MOVED`` and
failovers within ``retry_budget``), and the loop holds one subscribed
connection per master, with ``SSUBSCRIBE`` for the topics of that master's
slots. When a slot moves (``sunsubscribe`` pushed unasked, ``MOVED`` to an
``SSUBSCRIBE``) or a node's connection breaks, its topics are placed again on
the master the refreshed slot map names, retried every ``backoff_max`` until
one does (see :mod:`.pubsub_cluster`). Everything else below is the same.

**Who reads the sockets.** Every event loop holds one subscribed connection per
server, and something must read it. A background reader task would have no
owner: the layer is called from many unrelated tasks (consumers, views, scripts)
and none of them opens a block that could host it, and a task nobody awaits is
exactly what this project rules out. So the layer uses the pattern of the
list-based layer's process channels: the ``receive`` call that has waited
longest reads the sockets for every waiter in the event loop, hands each message
to its receiver (or queues it), and when it has its own message, or is
cancelled, passes the job to the next waiter. Callers that need a subscription
confirmed (``group_add``, ``new_channel``) wait the same way and read if nobody
else is. Reading a second server happens in a task group *inside* that call.
Only the current reader ever writes to or reads from a subscribed socket, so
commands and their answers cannot interleave; others leave their
``SUBSCRIBE``/``UNSUBSCRIBE`` with :class:`~.subscriber.Subscriber` and *poke*
the reader (cancel its read, which loses nothing: a part-read reply stays
buffered) so that it writes them. Every piece of work therefore runs in a
caller's task, under the caller's cancel scope, and nothing is left running when
the callers stop. The price: nobody reads while nobody waits, and pushes then
pile up in the socket and in Redis's output buffer (Redis drops a subscriber
past ``client-output-buffer-limit pubsub``, 32 MB by default; the layer then
reconnects). A process that serves WebSockets always has a waiting receiver.

**Delivery is at most once.** Lost: messages published while a process is not
subscribed (before ``new_channel``/``receive``/``group_add``, or while the
connection is down), messages for a channel whose local queue is full (the
newest is dropped, logged at DEBUG), queued messages older than ``expiry``, and
everything queued in a process when it ends. A ``PUBLISH`` whose connection
broke after it was written is retried within ``retry_budget``; if Redis had in
fact forwarded it before the break, it arrives twice: the one exception to "at
most once". Cancelling a ``receive`` never loses a message that was already
read from the socket: it goes to the next receiver of that channel, or back to
the front of its queue.

**Redis restarts.** The reader notices at once (the socket ends), reconnects
with backoff (capped at ``backoff_max``, 0.25 s, so it is back within a fraction
of a second of Redis), and re-subscribes every topic that has a local receiver,
queue or member, which restores this process's group memberships; waiting
receivers simply go on waiting. With Sentinel it also checks every 0.5 s that
the server is still the master (see :class:`~.connections.Pool`).
``on_disconnect`` and ``on_reconnect`` (message types, as in channels_redis)
are sent to the affected local channels so consumers can re-sync. Sends while
Redis is down retry for ``retry_budget`` seconds, then raise
:class:`~.core.RedisUnavailable`.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Unpack

import anyio
import anyio.abc
import anyio.lowlevel

from ... import metrics
from ...compat.wakeup import Wakeup, new_wakeup
from ..base import Message
from .cluster import ClusterUnavailable
from .connections import FAILURES, Outage, RedisUnavailable
from .layer import LayerOptions, LoopState, RedisLayer
from .protocol import Connection, ProtocolError, ReplyError
from .pubsub_cluster import ShardedTopics
from .queues import pop_live
from .subscriber import ShardedSubscriber, Subscriber

__all__ = ["RedisPubSubChannelLayer"]

logger = logging.getLogger(__name__)

_monotonic = time.monotonic
#: What a local queue holds: a message as published (serialised, decoded by the
#: receiver that takes it), or a notification dict made here.
_Pending = bytes | memoryview | Message


class _Refused(Exception):
    """An error reply on the subscribed connection (e.g. ``NOPERM`` for a topic
    the ACL forbids): the connection is dropped and retried with backoff."""


#: What makes the reader drop a subscribed connection and reconnect.
_READER_FAILURES: tuple[type[BaseException], ...] = (*FAILURES, _Refused, ReplyError)


class _Channel:
    """A channel this event loop receives on: its queue of messages nobody has
    taken yet (``(local deadline, pending message)``), its waiting receivers,
    and the local groups it is in. ``topic`` on server ``shard`` carries its
    messages."""

    __slots__ = (
        "capacity",
        "groups",
        "last_active",
        "name",
        "queue",
        "scheduled",
        "shard",
        "topic",
        "waiters",
    )

    def __init__(self, name: str, topic: bytes, shard: int, capacity: int, now: float) -> None:
        self.name = name
        self.topic = topic
        self.shard = shard
        self.capacity = capacity
        self.queue: deque[tuple[float, _Pending]] = deque()
        self.waiters: deque[_Waiter] = deque()
        self.groups: set[str] = set()
        self.last_active = now
        #: Whether the clean-up heap holds an entry for this channel.
        self.scheduled = False


class _Waiter:
    """One call waiting in this event loop: a ``receive`` (``channel`` set) or a
    caller waiting for a subscription to take effect (``channel`` is None).

    It is finished (``done``) with a message, or with an ``error`` (a
    subscription that Redis did not confirm in time); until then it may be
    handed the reader's job. ``scope`` is its read scope while it reads.
    ``event`` wakes it while it is parked: a one-waiter wake-up (see
    :mod:`channels_runtime.compat.wakeup`), cheaper to make than an
    ``anyio.Event``; one cancelled after being woken may still raise, which
    ``_wait`` handles by giving a handed-over message back.
    """

    __slots__ = ("channel", "done", "error", "event", "message", "scope", "started")

    def __init__(self, channel: _Channel | None) -> None:
        self.channel = channel
        self.done = False
        self.error: BaseException | None = None
        self.message: _Pending | None = None
        self.event: Wakeup | None = None
        self.scope: anyio.CancelScope | None = None
        self.started = 0.0


class _LoopState(LoopState):
    """Everything the layer keeps for one event loop besides the publishing
    pools (sockets, events and the waiters parked on them only work in the
    loop that made them)."""

    __slots__ = (
        "buffered",
        "channels",
        "cluster",
        "group_adds",
        "groups",
        "heap",
        "in_reader",
        "memberships",
        "poked",
        "process_refs",
        "reader",
        "seq",
        "subscribers",
        "waiters",
    )

    def __init__(self, layer: RedisPubSubChannelLayer, token: Any) -> None:
        super().__init__(layer, token)
        self.subscribers: list[Subscriber] = []
        #: Cluster mode: the sharded subscriptions (one subscriber per master,
        #: appended to ``subscribers`` as masters are met).
        self.cluster: ShardedTopics | None = None
        if self.router is not None:
            self.cluster = ShardedTopics(layer, self.router, self.subscribers)
        else:
            self.subscribers += [
                Subscriber(i, spec, layer._clocks[i], Outage(layer, spec.describe()))
                for i, spec in enumerate(layer.hosts)
            ]
        self.channels: dict[str, _Channel] = {}
        #: group -> {member channel: monotonic time its membership ends}
        self.groups: dict[str, dict[str, float]] = {}
        self.memberships = 0
        self.group_adds = 0
        #: Every unfinished waiter, oldest first: the next reader is the first.
        self.waiters: dict[_Waiter, None] = {}
        self.reader: _Waiter | None = None
        #: True while reader code runs synchronously (dispatching a push): a
        #: message for the reader itself then needs no poke.
        self.in_reader = False
        #: Set by every poke, so one that comes while the reader is between
        #: reads (connecting) is not lost.
        self.poked = False
        self.heap: list[tuple[float, int, _Channel]] = []
        self.seq = 0
        self.buffered = 0
        #: Channels on this instance's process topic; it is wanted while > 0.
        self.process_refs = 0

    def outages(self) -> Iterator[Outage]:
        if self.cluster is not None:
            # Subscriptions as one (a loss ends when every topic is back), and
            # the publishing pools of the nodes.
            yield self.cluster.outage
            yield from super().outages()
            return
        for sub in self.subscribers:
            yield sub.outage

    def abandon(self) -> None:
        if self.cluster is not None:
            self.cluster.abandon()
        for sub in self.subscribers:
            sub.abandon()
        super().abandon()


class RedisPubSubChannelLayer(RedisLayer[_LoopState]):
    """A channel layer on Redis Pub/Sub, configured like channels_redis's.

    Lower latency than :class:`~.core.RedisChannelLayer` and nothing stored in
    Redis, but at most once with fewer guarantees: a message reaches only the
    processes subscribed when it is sent, a normal channel received on in
    several processes delivers each message to *each* of them, and group
    membership lives in the process that called ``group_add``. See the module
    docstring and ``docs/scaling-out.md``.

    ``capacity``, ``channel_capacity`` and ``expiry`` bound the per-process
    queues of messages that arrived before anyone received them; ``send`` never
    raises ``ChannelFull``.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]

    #: Seconds of silence on a subscribed connection before the reader PINGs
    #: it; no answer within ``socket_timeout`` marks it dead. Catches a peer
    #: that vanished without closing (a network partition, a NAT timeout).
    health_check_interval: ClassVar[float] = 30.0

    #: With a cluster in ``hosts``, each loop gets a router (``state.router``):
    #: it publishes, and tells where each topic is subscribed.
    routes_cluster: ClassVar[bool] = True

    def __init__(
        self,
        hosts: Sequence[Any] | None = None,
        prefix: str = "asgi",
        on_disconnect: str | None = None,
        on_reconnect: str | None = None,
        **settings: Unpack[LayerOptions],
    ) -> None:
        for name, value in (("on_disconnect", on_disconnect), ("on_reconnect", on_reconnect)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"{name} must be a message type string such as 'redis.disconnect' "
                    f"(sent to local channels), got {value!r}"
                )
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._topic_prefix = f"{prefix}:".encode()
        self._plen = len(self._topic_prefix)
        self._channel_topics = self._topic_prefix + b"ch:"
        self._group_topics = self._topic_prefix + b"gr:"
        super().__init__(hosts, prefix, **settings)

    def _token_changed(self) -> None:
        self._process_topic = self._topic_prefix + b"pr:" + self.client_token.encode()

    def _new_state(self, token: Any) -> _LoopState:
        return _LoopState(self, token)

    # -- names ------------------------------------------------------------------------

    def _route(self, channel: str) -> tuple[bytes, int, bytes]:
        """Topic, shard, and body prefix for a message to ``channel``."""
        bang = channel.find("!")
        if bang < 0:
            return (
                self._channel_topics + channel.encode(),
                self._shard_of(channel),
                b"",
            )
        token = channel[:bang].rpartition(".")[2]
        return (
            self._topic_prefix + b"pr:" + token.encode(),
            self._shard_of(token),
            channel.encode() + b"|",
        )

    def _group_topic(self, group: str) -> tuple[bytes, int]:
        return self._group_topics + group.encode(), self._shard_of(group)

    # -- sending ------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Publish ``message`` to ``channel``'s topic.

        It reaches the process(es) subscribed to it now, or nobody: ``send``
        cannot tell, and never raises ``ChannelFull``. Raises
        :class:`~.core.RedisUnavailable` when Redis cannot be reached within
        ``retry_budget`` seconds, ``MessageTooLarge`` past ``max_message_size``.
        """
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        self.require_valid_channel_name(channel)
        payload = self._serializer.dumps(message, channel)
        topic, index, head = self._route(channel)
        data = head + payload if head else payload
        state = self._state()
        if state.router is not None:
            await self._cluster_command(
                state.router, topic, ("SPUBLISH", topic, data), "send to", channel
            )
        else:
            pool = state.pools[index]
            await self._command(pool, ("PUBLISH", topic, data), "send to", channel)
        if metrics.enabled:
            metrics.layers.sent(self)

    async def group_send(self, group: str, message: Message) -> None:
        """Publish ``message`` once to ``group``'s topic; every process with
        members hands it to each of its own members."""
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        self.require_valid_group_name(group)
        payload = self._serializer.dumps(message, f"group {group}")
        topic, index = self._group_topic(group)
        state = self._state()
        # PUBLISH answers how many subscribed connections Redis forwarded it to.
        if state.router is not None:
            reached = int(
                await self._cluster_command(
                    state.router, topic, ("SPUBLISH", topic, payload), "group_send to", group
                )
            )
        else:
            pool = state.pools[index]
            reached = int(
                await self._command(pool, ("PUBLISH", topic, payload), "group_send to", group)
            )
        if metrics.enabled:  # fan-out: the subscribed processes Redis forwarded it to
            metrics.layers.group_sent(self, reached)

    # -- receiving ------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-specific channel, ``"<prefix>.<token>!<12 letters>"``.

        Messages sent to it from now on are kept (up to its capacity, for
        ``expiry`` seconds) until it is received on. Only the first call in an
        event loop waits for Redis (to subscribe this process's topic); it
        raises :class:`~.core.RedisUnavailable` if Redis is down meanwhile.
        """
        name = self._new_channel_name(prefix)
        state = self._state()
        rec = self._open(state, name, _monotonic())
        try:
            await self._subscribed(
                state, self._process_shard, self._process_topic, f"new_channel {name!r}"
            )
        except BaseException:
            if state.channels.get(name) is rec and not rec.waiters:
                self._drop(state, rec)
            raise
        return name

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on ``channel``.

        Waits through Redis outages. Several receivers of one channel in one
        process each get different messages, in the order they started
        waiting; a cancelled receive loses no message.
        """
        self.require_valid_channel_name(channel)
        state = self._state()
        now = _monotonic()
        if state.heap and state.heap[0][0] <= now:
            self._sweep(state, now)
        rec = state.channels.get(channel)
        if rec is None:
            rec = self._open(state, channel, now)
        while True:
            queue = rec.queue
            pending = pop_live(queue, now, state, self) if queue else None
            if pending is None:
                waiter = _Waiter(rec)
                rec.waiters.append(waiter)
                try:
                    await self._wait(state, waiter)
                finally:
                    rec.last_active = _monotonic()
                    if not rec.waiters and not rec.groups:
                        self._schedule(state, rec, rec.last_active + self.expiry)
                pending = waiter.message
                assert pending is not None
            now = rec.last_active = _monotonic()
            # Decoded here, in the receiver's task, rather than by the reader:
            # a group message's members each decode their own copy, in their
            # own time, and a dropped message is never decoded at all.
            if isinstance(pending, dict):
                if metrics.enabled:
                    metrics.layers.received(self)
                return pending
            try:
                message = self._serializer.loads(pending)
            except Exception:
                logger.exception("Dropped an unreadable message on %r", channel)
                continue
            if type(message) is dict:
                if metrics.enabled:
                    metrics.layers.received(self)
                return message
            logger.error("Dropped a message on %r that is not a dict: %r", channel, message)

    def _open(self, state: _LoopState, name: str, now: float) -> _Channel:
        """Start receiving ``name`` in this event loop: a queue for it, and its
        topic wanted (the reader subscribes it)."""
        topic, index, head = self._route(name)
        if head:
            if topic != self._process_topic:
                raise ValueError(
                    f"{name!r} was not made by this layer's new_channel(); a process can "
                    "only receive on (and add to groups) its own process-specific channels"
                )
            state.process_refs += 1
        rec = _Channel(name, topic, index, self.get_capacity(name), now)
        state.channels[name] = rec
        if not self._want(state, index, topic):
            self._poke(state)
        self._schedule(state, rec, now + self.expiry)
        return rec

    def _drop(self, state: _LoopState, rec: _Channel) -> None:
        """Forget a channel: its queue, its groups, and (when nothing else here
        needs it) its topic's subscription."""
        del state.channels[rec.name]
        state.buffered -= len(rec.queue)
        rec.queue.clear()
        for group in list(rec.groups):
            self._leave(state, group, rec.name)
        if rec.topic == self._process_topic:
            state.process_refs -= 1
            if state.process_refs:
                return
        self._unwant(state, rec.shard, rec.topic)

    def _want(self, state: _LoopState, index: int, topic: bytes) -> bool:
        """Ask for ``topic`` (on server ``index``, or in cluster mode on the
        master of its slot) to be subscribed; True if it already is."""
        if state.cluster is not None:
            return state.cluster.want(topic)
        return state.subscribers[index].want(topic)

    def _unwant(self, state: _LoopState, index: int, topic: bytes) -> None:
        # Written by the reader when it next reads: no hurry, a message that
        # arrives meanwhile finds no local channel and is dropped.
        if state.cluster is not None:
            waiters = state.cluster.unwant(topic)
        else:
            waiters = state.subscribers[index].unwant(topic)
        for waiter in waiters:
            self._finish(state, waiter)

    def _schedule(self, state: _LoopState, rec: _Channel, when: float) -> None:
        """Look at ``rec`` again at ``when`` (one heap entry per channel at most;
        an entry that comes due early is simply looked at and rescheduled)."""
        if rec.scheduled:
            return
        rec.scheduled = True
        state.seq += 1
        heapq.heappush(state.heap, (when, state.seq, rec))

    def _sweep(self, state: _LoopState, now: float) -> None:
        """Drop queued messages older than ``expiry``, and channels that have had
        no receiver, no message and no group for ``expiry`` seconds."""
        heap = state.heap
        while heap and heap[0][0] <= now:
            rec = heapq.heappop(heap)[2]
            rec.scheduled = False
            if state.channels.get(rec.name) is not rec:
                continue
            queue = rec.queue
            if queue and queue[0][0] <= now:
                dropped = 0
                while queue and queue[0][0] <= now:
                    queue.popleft()
                    dropped += 1
                state.buffered -= dropped
                logger.debug("Dropped %d expired message(s) queued for %r", dropped, rec.name)
                if metrics.enabled:
                    metrics.layers.expired(self, dropped)
            if queue:
                self._schedule(state, rec, queue[0][0])
            elif not rec.waiters and not rec.groups:
                idle_until = rec.last_active + self.expiry
                if idle_until <= now:
                    self._drop(state, rec)
                else:
                    self._schedule(state, rec, idle_until)

    # -- waiting and reading --------------------------------------------------------------

    async def _wait(self, state: _LoopState, me: _Waiter) -> None:
        """Wait until ``me`` is finished, reading the sockets for everyone while
        ``me`` is the reader. On the way out (also when cancelled) a message
        handed to ``me`` but not taken goes to the next receiver, and the
        reader's job to the longest-waiting caller."""
        state.waiters[me] = None
        try:
            while not me.done:
                if state.reader is None:
                    state.reader = me
                if state.reader is me:
                    await self._read(state, me)
                else:
                    event = me.event = new_wakeup()
                    await event.wait()
        except BaseException:
            state.waiters.pop(me, None)
            rec = me.channel
            if rec is not None:
                try:
                    rec.waiters.remove(me)
                except ValueError:
                    pass
                if me.message is not None:
                    message, me.message = me.message, None
                    self._deliver(state, rec, message, _monotonic(), front=True)
            self._pass_role(state, me)
            raise
        state.waiters.pop(me, None)
        self._pass_role(state, me)

    def _pass_role(self, state: _LoopState, leaving: _Waiter) -> None:
        if state.reader is not leaving:
            return
        state.reader = None
        for waiter in state.waiters:
            state.reader = waiter
            if waiter.event is not None:
                waiter.event.set()
            return

    def _finish(self, state: _LoopState, waiter: _Waiter) -> None:
        waiter.done = True
        state.waiters.pop(waiter, None)
        if waiter is state.reader:
            # Reading in another task's place: stop it. (From the reader's own
            # code it sees ``done`` by itself.)
            scope = waiter.scope
            if scope is not None and not state.in_reader:
                scope.cancel()
        elif waiter.event is not None:
            waiter.event.set()

    def _poke(self, state: _LoopState) -> None:
        """Make the reader look again at what to write and which servers to
        read (cancelling its read loses nothing)."""
        state.poked = True
        reader = state.reader
        if reader is not None and reader.scope is not None and not state.in_reader:
            reader.scope.cancel()

    async def _read(self, state: _LoopState, me: _Waiter) -> None:
        """Read every subscribed server for this loop until ``me`` is finished:
        (re)connect the ones that need it, then pump the connected ones."""
        cluster = state.cluster
        while not me.done:
            state.poked = False
            now = anyio.current_time()
            wake_at = math.inf
            if cluster is not None and cluster.unplaced:
                if cluster.place_at <= now:
                    await self._place(state, cluster, now)
                    if me.done:
                        return
                    now = anyio.current_time()
                if cluster.unplaced:
                    wake_at = cluster.place_at
            readable: list[Subscriber] = []
            for sub in state.subscribers:
                if not sub.needs_reading:
                    continue
                if sub.conn is None:
                    if sub.retry_at <= now:
                        await self._connect(state, sub)
                        if me.done:
                            return
                    if sub.conn is None:
                        wake_at = min(wake_at, sub.retry_at)
                        continue
                readable.append(sub)
            if state.poked:
                continue  # something changed while connecting: look again
            with anyio.CancelScope(deadline=wake_at) as scope:
                me.scope = scope
                try:
                    if len(readable) == 1:
                        await self._pump(state, readable[0], me)
                    elif readable:
                        async with anyio.create_task_group() as tg:
                            for sub in readable:
                                tg.start_soon(self._pump_until_any_stops, state, sub, me, tg)
                    else:
                        await anyio.sleep_forever()
                finally:
                    me.scope = None

    async def _pump_until_any_stops(
        self, state: _LoopState, sub: Subscriber, me: _Waiter, tg: anyio.abc.TaskGroup
    ) -> None:
        await self._pump(state, sub, me)
        tg.cancel_scope.cancel()

    async def _pump(self, state: _LoopState, sub: Subscriber, me: _Waiter) -> None:
        """Write what is pending and handle pushes from ``sub`` until ``me`` is
        finished; a broken connection is dropped (the caller reconnects)."""
        conn = sub.conn
        assert conn is not None
        interval = self.health_check_interval
        try:
            while not me.done:
                now = _monotonic()
                pinged_at = sub.pinged_at
                if pinged_at is None:
                    due = sub.last_heard + interval
                else:
                    due = pinged_at + self.socket_timeout
                if due <= now:
                    if pinged_at is not None:
                        raise TimeoutError(f"no answer to PING within {self.socket_timeout:g}s")
                    await sub.ping(self.socket_timeout)
                    continue
                if sub.watched:
                    if sub.watch_due <= now:
                        await sub.check_master(self.connect_timeout)
                        continue
                    due = min(due, sub.watch_due)
                with anyio.move_on_after(due - now) as quiet:
                    refresh_at = now + 1.0
                    while not me.done:
                        if sub.has_writes:
                            await sub.flush(self.socket_timeout)
                        reply = await conn.read_reply()
                        now = sub.last_heard = _monotonic()
                        if sub.pinged_at is not None or now >= refresh_at:
                            # Heard from: push the silence deadline on (at most
                            # once a second, unless a PING was waiting), but
                            # not past the next check of the Sentinel master.
                            sub.pinged_at = None
                            quiet.deadline = anyio.current_time() + (
                                min(interval, sub.watch_due - now) if sub.watched else interval
                            )
                            refresh_at = now + 1.0
                        self._on_push(state, sub, reply)
                        cluster = state.cluster
                        if (
                            cluster is not None
                            and cluster.unplaced
                            and cluster.place_at <= anyio.current_time()
                        ):
                            return  # topics to place on another node: back to _read
        except _READER_FAILURES as exc:
            await self._lost(state, sub, conn, exc)

    def _on_push(self, state: _LoopState, sub: Subscriber, reply: Any) -> None:
        outer, state.in_reader = state.in_reader, True
        try:
            if type(reply) is list and reply:
                kind = reply[0]
                if kind == b"message" and len(reply) == 3:
                    self._dispatch(state, reply[1], reply[2])
                    return
                if state.cluster is not None and isinstance(sub, ShardedSubscriber):
                    if self._on_sharded_push(state, state.cluster, sub, reply):
                        return
                elif kind in (b"subscribe", b"unsubscribe") and len(reply) == 3:
                    released, resubscribed = sub.confirmed(kind, reply[1])
                    for waiter in released:
                        self._finish(state, waiter)
                    if resubscribed:
                        self._resubscribed(state, sub)
                    return
                if kind == b"pong":
                    return
            elif reply == b"PONG":  # a PING answered outside subscribed mode
                return
            if isinstance(reply, ReplyError):
                if (
                    state.cluster is not None
                    and isinstance(sub, ShardedSubscriber)
                    and self._on_sharded_error(state, state.cluster, sub, reply)
                ):
                    return
                raise _Refused(str(reply))
            raise ProtocolError(f"unexpected message on a subscribed connection: {reply!r}")
        finally:
            state.in_reader = outer

    def _on_sharded_push(
        self, state: _LoopState, cluster: ShardedTopics, sub: ShardedSubscriber, reply: list[Any]
    ) -> bool:
        """Handle a sharded Pub/Sub push; False if it is not one."""
        kind = reply[0]
        if len(reply) != 3:
            return False
        topic = reply[1]
        if kind == b"smessage":
            self._dispatch(state, topic, reply[2])
        elif kind == b"ssubscribe":
            released, _ = sub.confirmed(b"subscribe", topic)
            for waiter in released:
                self._finish(state, waiter)
            if sub.in_effect(topic) and cluster.confirmed(topic):
                self._sharded_restored(state, cluster)
        elif kind == b"sunsubscribe":
            if sub.asked(topic):
                sub.confirmed(b"unsubscribe", topic)
            else:
                # Unasked: the slot has moved to another node.
                self._moved_away(state, cluster, sub, [topic], "its slot moved")
        else:
            return False
        return True

    def _on_sharded_error(
        self, state: _LoopState, cluster: ShardedTopics, sub: ShardedSubscriber, error: ReplyError
    ) -> bool:
        """An ``SSUBSCRIBE`` answered ``MOVED``/``ASK``: place the topics of that
        slot again. False for another error (the connection is then dropped)."""
        redirect = cluster.router.note_redirect(error, sub.address)
        if redirect is None:
            return False
        if redirect.ask:
            # The slot is being migrated: ask the slot map again shortly.
            cluster.back_off(anyio.current_time(), (self.backoff_min, self.backoff_max))
        self._moved_away(state, cluster, sub, sub.in_slot(redirect.slot), str(error))
        return True

    def _moved_away(
        self,
        state: _LoopState,
        cluster: ShardedTopics,
        sub: ShardedSubscriber,
        topics: list[bytes],
        why: str,
    ) -> None:
        newly = cluster.take_back(sub, topics, anyio.current_time())
        if newly:
            logger.info(
                "Redis Cluster node %s gave up %d topic(s) (%s); re-subscribing them on "
                "the new master",
                sub.address,
                len(newly),
                why,
            )
            self._notify_topics(state, set(newly), self.on_disconnect)

    def _sharded_restored(self, state: _LoopState, cluster: ShardedTopics) -> None:
        """Every topic lost to a moved slot or a failed node is subscribed again."""
        regained, cluster.regained = cluster.regained, set()
        cluster.outage.ended(detail=f"; re-subscribed {len(regained)} topic(s)")
        lasted = cluster.recovered_in
        restored = sum(
            len(members)
            for group, members in state.groups.items()
            if self._group_topics + group.encode() in regained
        )
        logger.warning(
            "Re-subscribed %d topic(s) on Redis Cluster %s%s: restored %d group "
            "membership(s) of this process",
            len(regained),
            cluster.describe(),
            "" if lasted is None else f" {lasted:.3f}s after losing the first",
            restored,
        )
        self._notify_topics(state, regained, self.on_reconnect)

    def _dispatch(self, state: _LoopState, topic: bytes, data: bytes) -> None:
        """Hand one published message, still serialised, to its local
        channel(s): the waiting receiver, else the queue. Members of a group
        share the bytes; each receiver decodes its own copy."""
        plen = self._plen
        kind = topic[plen : plen + 3]
        now = _monotonic()
        if state.heap and state.heap[0][0] <= now:
            self._sweep(state, now)
        channels = state.channels
        targets: list[_Channel] = []
        payload: bytes | memoryview = data
        try:
            if kind == b"pr:":
                bar = data.index(b"|")
                rec = channels.get(data[:bar].decode())
                payload = memoryview(data)[bar + 1 :]
                if rec is not None:
                    targets.append(rec)
            elif kind == b"gr:":
                group = topic[plen + 3 :].decode()
                members = state.groups.get(group)
                if members:
                    expired: list[str] = []
                    for name, until in members.items():
                        if until <= now:
                            expired.append(name)
                        else:
                            rec = channels.get(name)
                            if rec is not None:
                                targets.append(rec)
                    for name in expired:
                        self._leave(state, group, name)
            elif kind == b"ch:":
                rec = channels.get(topic[plen + 3 :].decode())
                if rec is not None:
                    targets.append(rec)
        except (ValueError, UnicodeDecodeError):
            logger.warning("Dropped a malformed message on %r", topic)
            return
        if not targets:
            logger.debug("Dropped a message on %r: no local receiver", topic)
            return
        for rec in targets:
            self._deliver(state, rec, payload, now)

    def _deliver(
        self, state: _LoopState, rec: _Channel, message: _Pending, now: float, front: bool = False
    ) -> None:
        """Give ``message`` to ``rec``'s first waiting receiver, else queue it.
        A full queue drops the new message (as a full channel refuses one);
        ``front`` (a message a cancelled receiver gives back) always fits."""
        waiters = rec.waiters
        if waiters:
            waiter = waiters.popleft()
            waiter.message = message
            self._finish(state, waiter)
            return
        queue = rec.queue
        if not front:
            if len(queue) >= rec.capacity:
                logger.debug(
                    "Dropped a message for %r: its queue is full (%d)", rec.name, rec.capacity
                )
                if metrics.enabled:
                    metrics.layers.evicted(self)
                return
            if state.buffered >= self.max_buffered:
                logger.debug(
                    "Dropped a message for %r: the process holds max_buffered=%d messages",
                    rec.name,
                    self.max_buffered,
                )
                if metrics.enabled:
                    metrics.layers.evicted(self)
                return
            queue.append((now + self.expiry, message))
        else:
            queue.appendleft((now + self.expiry, message))
        state.buffered += 1
        self._schedule(state, rec, queue[0][0])

    # -- connections ------------------------------------------------------------------------

    async def _connect(self, state: _LoopState, sub: Subscriber) -> None:
        """Open ``sub``'s connection and re-subscribe its topics, or note the failure."""
        try:
            await sub.connect(self.connect_timeout, self.socket_timeout)
        except _READER_FAILURES as exc:
            self._connect_failed(state, sub, exc)
            return
        sub.delay = 0.0
        if state.cluster is not None:
            state.cluster.outage.reached()
            return
        sub.outage.ended(detail=f"; re-subscribing {len(sub.wanted)} topic(s)")
        if not sub.wanted:
            self._resubscribed(state, sub)

    def _connect_failed(self, state: _LoopState, sub: Subscriber, exc: BaseException) -> None:
        now = anyio.current_time()
        sub.last_error = exc
        if state.cluster is not None and isinstance(sub, ShardedSubscriber):
            # Try the slot map again: its topics may have a new master by now.
            cluster = state.cluster
            if cluster.outage.begin():
                cluster.outage.announce(exc)
            topics = set(sub.wanted)
            cluster.failed(sub, now, (self.backoff_min, self.backoff_max))
            self._expire_waiters(state, cluster.waiters, topics, exc, now)
            return
        sub.outage.begin()
        if not sub.delay:  # the first failed attempt of this outage
            sub.outage.announce(exc)
        sub.delay = self.backoff_min if not sub.delay else min(sub.delay * 2, self.backoff_max)
        sub.retry_at = now + sub.delay * random.uniform(0.5, 1.0)
        self._expire_waiters(state, sub.waiters, None, exc, now)

    def _expire_waiters(
        self,
        state: _LoopState,
        waiting: dict[bytes, list[Any]],
        topics: set[bytes] | None,
        exc: BaseException,
        now: float,
    ) -> None:
        """Callers waiting for a subscription (of ``topics``, or any) give up
        once the budget is spent."""
        outer, state.in_reader = state.in_reader, True
        try:
            for topic, waiters in list(waiting.items()):
                if topics is not None and topic not in topics:
                    continue
                keep = []
                for waiter in waiters:
                    if waiter.started + self.retry_budget <= now:
                        waiter.error = exc
                        self._finish(state, waiter)
                    else:
                        keep.append(waiter)
                if keep:
                    waiting[topic] = keep
                else:
                    del waiting[topic]
        finally:
            state.in_reader = outer

    async def _lost(
        self, state: _LoopState, sub: Subscriber, conn: Connection, exc: BaseException
    ) -> None:
        """A connection that was up broke: drop it, reconnect at once, and tell
        local channels (``on_disconnect``) that messages may have been missed."""
        if sub.conn is not conn:
            return  # closed on purpose by close()
        await sub.disconnect()
        sub.last_error = exc
        if state.cluster is not None and isinstance(sub, ShardedSubscriber):
            cluster = state.cluster
            cluster.outage.begin()
            newly = cluster.failed(sub, anyio.current_time(), (self.backoff_min, self.backoff_max))
            logger.warning(
                "Lost the sharded Pub/Sub connection to Redis Cluster node %s (%r); "
                "re-subscribing its %d topic(s) on the master that serves them now. "
                "Messages published until then are lost.",
                sub.address,
                exc,
                len(newly),
            )
            self._notify_topics(state, set(newly), self.on_disconnect)
            return
        sub.retry_at = 0.0
        sub.delay = 0.0
        sub.outage.begin()
        logger.warning(
            "Lost the Pub/Sub connection to Redis at %s (%r); reconnecting. "
            "Messages published until it is back are lost.",
            sub.describe(),
            exc,
        )
        if not sub.lost_connection:
            sub.lost_connection = True
            self._notify(state, sub.index, self.on_disconnect)

    def _resubscribed(self, state: _LoopState, sub: Subscriber) -> None:
        """Every wanted topic is subscribed again after a lost connection: the
        memberships of this loop in groups on that server work again."""
        if sub.lost_connection:
            sub.lost_connection = False
            restored = sum(
                len(members)
                for group, members in state.groups.items()
                if self._shard_of(group) == sub.index
            )
            logger.warning(
                "Re-subscribed %d topic(s) on Redis at %s: restored %d group membership(s) "
                "of this process",
                len(sub.wanted),
                sub.describe(),
                restored,
            )
            self._notify(state, sub.index, self.on_reconnect)

    def _notify_topics(
        self, state: _LoopState, topics: set[bytes], message_type: str | None
    ) -> None:
        """Queue ``{"type": message_type}`` for every local channel whose
        messages come through one of ``topics`` (its own or a group's)."""
        if not message_type or not topics:
            return
        now = _monotonic()
        groups = self._group_topics
        outer, state.in_reader = state.in_reader, True
        try:
            for rec in list(state.channels.values()):
                if rec.topic in topics or any(groups + g.encode() in topics for g in rec.groups):
                    self._deliver(state, rec, {"type": message_type}, now)
        finally:
            state.in_reader = outer

    def _notify(self, state: _LoopState, index: int, message_type: str | None) -> None:
        """Queue ``{"type": message_type}`` for every local channel whose
        messages come through server ``index`` (its own topic or a group's)."""
        if not message_type:
            return
        now = _monotonic()
        single = self.ring_size == 1
        outer, state.in_reader = state.in_reader, True
        try:
            for rec in list(state.channels.values()):
                if (
                    single
                    or rec.shard == index
                    or any(self._shard_of(g) == index for g in rec.groups)
                ):
                    self._deliver(state, rec, {"type": message_type}, now)
        finally:
            state.in_reader = outer

    async def _subscribed(self, state: _LoopState, index: int, topic: bytes, what: str) -> None:
        """Return once ``topic`` is subscribed on server ``index``: at once if it
        already is, else when Redis has confirmed it. Raises
        :class:`~.core.RedisUnavailable` when Redis stayed unreachable for
        ``retry_budget`` seconds, or gave no confirmation within
        ``retry_budget + socket_timeout``."""
        cluster = state.cluster
        if cluster is not None:
            if cluster.want(topic):
                return
            waiting = cluster.waiters
        else:
            sub = state.subscribers[index]
            if sub.want(topic):
                return
            waiting = sub.waiters
        waiter = _Waiter(None)
        waiter.started = anyio.current_time()
        waiting.setdefault(topic, []).append(waiter)
        self._poke(state)
        limit = self.retry_budget + self.socket_timeout
        try:
            with anyio.move_on_after(limit):
                await self._wait(state, waiter)
        finally:
            if not waiter.done or waiter.error is not None:
                others = waiting.get(topic)
                if others is not None and waiter in others:
                    others.remove(waiter)
                    if not others:
                        del waiting[topic]
        if waiter.done and waiter.error is None:
            return
        if cluster is not None:
            error = waiter.error
            where = f"Redis Cluster {cluster.describe()}"
        else:
            error = waiter.error or sub.last_error
            where = f"Redis at {sub.describe()}"
        reason = (
            f"unreachable for {self.retry_budget:g}s"
            if waiter.error is not None
            else f"no confirmation within {limit:g}s"
        )
        raise RedisUnavailable(
            f"{where} is unavailable for {what}: {error!r} ({reason})"
        ) from error

    async def _place(self, state: _LoopState, cluster: ShardedTopics, now: float) -> None:
        """Put unplaced topics on their masters; callers waiting for one whose
        slot no master serves give up once the budget is spent."""
        await cluster.place(now)
        if cluster.unplaced and cluster.waiters:
            problem = ClusterUnavailable(
                cluster.router.refresh_problem or "no master serves the topic's slot"
            )
            self._expire_waiters(state, cluster.waiters, cluster.unplaced, problem, now)

    # -- groups ---------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Make ``channel`` (received on in this process) a member of ``group``
        here, for ``group_expiry`` seconds (adding again renews it).

        Returns once this process is subscribed to the group, so a
        ``group_send`` from anywhere after that reaches the channel. Membership
        is local: only this process knows it, and it ends with the process.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = self._state()
        now = _monotonic()
        if state.heap and state.heap[0][0] <= now:
            self._sweep(state, now)
        rec = state.channels.get(channel)
        if rec is None:
            rec = self._open(state, channel, now)
        members = state.groups.get(group)
        if members is None:
            members = state.groups[group] = {}
        added = channel not in members
        members[channel] = now + self.group_expiry
        if added:
            state.memberships += 1
            rec.groups.add(group)
        state.group_adds += 1
        if state.group_adds >= max(1024, state.memberships):
            # Amortised over the calls that made them: drop expired memberships
            # of groups that no message comes through any more.
            state.group_adds = 0
            for name, group_members in list(state.groups.items()):
                for member, until in list(group_members.items()):
                    if until <= now:
                        self._leave(state, name, member)
        topic, index = self._group_topic(group)
        try:
            await self._subscribed(state, index, topic, f"group_add to {group!r}")
        except BaseException:
            if added:
                self._leave(state, group, channel)
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` in this process (no error if it is
        not a member). Does not wait for Redis, and so never fails on it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._leave(self._state(), group, channel)

    def _leave(self, state: _LoopState, group: str, channel: str) -> None:
        members = state.groups.get(group)
        if members is None or members.pop(channel, None) is None:
            return
        state.memberships -= 1
        rec = state.channels.get(channel)
        if rec is not None:
            rec.groups.discard(group)
            if not rec.groups and not rec.waiters:
                self._schedule(state, rec, rec.last_active + self.expiry)
        if not members:
            del state.groups[group]
            topic, index = self._group_topic(group)
            self._unwant(state, index, topic)

    # -- readiness and metrics ------------------------------------------------------------

    def metrics_state(self) -> dict[str, float]:
        """Queued messages, groups with local members and outages, for the metrics."""
        states = list(self._states.values())
        return {
            "buffered": sum(state.buffered for state in states),
            "groups": sum(len(state.groups) for state in states),
            **self._outage_metrics(states),
        }

    async def flush(self) -> None:
        """Drop this event loop's queued messages, group memberships and idle
        channels (Redis stores nothing to delete). Receivers already waiting
        keep waiting, and get the next message sent to their channel."""
        self._clear(self._state())

    def _clear(self, state: _LoopState) -> None:
        for group in list(state.groups):
            for channel in list(state.groups.get(group, ())):
                self._leave(state, group, channel)
        for rec in list(state.channels.values()):
            state.buffered -= len(rec.queue)
            rec.queue.clear()
            if not rec.waiters:
                self._drop(state, rec)
        state.heap.clear()
        for rec in state.channels.values():
            rec.scheduled = False
        state.group_adds = 0

    async def close(self) -> None:
        """Flush, and close this event loop's connections. Safe to call more
        than once; the layer stays usable (later calls connect again).
        Receivers still waiting keep their subscriptions, on a new connection."""
        token = anyio.lowlevel.current_token().native_token
        self._reap_dead_loops()
        state = self._states.get(token)
        if state is None:
            return
        self._clear(state)
        self._poke(state)
        for pool in state.pools:
            await pool.close()
        if state.cluster is not None:
            await state.cluster.aclose()
        if state.router is not None:
            await state.router.aclose()
        for sub in state.subscribers:
            await sub.disconnect()
        if not state.waiters:
            self._states.pop(token, None)
            if self._last is state:
                self._last = None
