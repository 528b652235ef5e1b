"""The Redis channel layer: the in-memory layer's semantics, shared between
processes and hosts through one or more Redis servers.

How the pieces fit (the *why* of each is in the docstrings below):

* every operation is one round trip: sends and group calls are Lua scripts
  that check and write atomically (``group_send``: one script in all on a single
  shard, else one for the membership and one per shard holding members);
* normal channels are Redis lists; each ``receive`` blocks in ``BLPOP``;
* process-specific channels (``new_channel()``, ``"…!…"``) of one layer share one
  Redis list per layer instance. Whichever ``receive`` call is waiting first
  reads that list for everyone and hands messages to the other waiting
  receivers or buffers them ("receive lock" pattern); when it has its own
  message, or is cancelled, it passes the role to another waiting receiver.
  So there is no background task at all: all work happens inside the callers'
  own tasks, under their cancel scopes, and nothing is left running when they
  stop;
* connections are per event loop (see :class:`_LoopState`), so the layer can be
  used from one ``anyio.run`` after another, and from several loops in threads;
* each event loop remembers the group memberships it made, and adds them again
  when a server turns out to have lost its data (:meth:`RedisChannelLayer._on_open`);
* with a Redis Cluster (``hosts=["redis+cluster://..."]``) every key carries a
  hash tag, so that each script touches one slot (see :mod:`.scripts`), and
  commands go through the loop's :class:`~.cluster.ClusterRouter`:
  ``group_send`` reads the members, then pushes with one script per slot and
  one pipeline per master; ``receive`` blocks on the master that serves the
  channel's slot, and follows ``MOVED`` and failovers.

What both Redis layers share (connections, retries, routing, per-loop state)
is in :mod:`.layer` and :mod:`.connections`.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Unpack

import anyio
import anyio.lowlevel

from ... import metrics
from ...exceptions import ChannelFull
from ..base import CapacityPattern, Message
from . import scripts
from .cluster import (
    ClusterRouter,
    ClusterUnavailable,
    NodeAddress,
    find_cluster,
    key_slot,
    node_slots,
    slot_tag,
)
from .cluster.redirects import RETRY_CODES as _CLUSTER_RETRY_CODES
from .connections import FAILURES as _FAILURES
from .connections import FAILURES_OR_REPLIES as _FAILURES_OR_REPLIES
from .connections import TRANSIENT_REPLIES as _TRANSIENT_REPLIES
from .connections import Pool, RedisUnavailable, Transient, loop_is_dead
from .hosts import HostSpec, ServerTime
from .layer import ConnectionOptions, LoopState, RedisLayer
from .memberships import Memberships
from .protocol import Connection, ReplyError, encode_command
from .queues import pop_live

__all__ = ["RedisChannelLayer", "RedisUnavailable"]

logger = logging.getLogger("channels_runtime.layers.redis")

_monotonic = time.monotonic
_LOST = object()


def _deduplicated(command: tuple[Any, ...], flag: int, maybe_applied: bool) -> tuple[Any, ...]:
    """``command``, with its dedupe flag set if an earlier attempt may have run."""
    return (*command[:flag], b"1", *command[flag + 1 :]) if maybe_applied else command


class _Waiter:
    """One ``receive`` call waiting on a process-specific channel.

    Woken (``event``) either with a message in ``message`` or because it has
    been handed the reader role (the layer's ``reader`` is then this waiter).
    """

    __slots__ = ("channel", "deadline", "event", "message")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.event = anyio.Event()
        self.message: Any = None
        self.deadline = 0.0


class _Local:
    """The process-specific channels of one layer in one event loop: messages
    read from Redis but not yet received (``buffers``, local monotonic
    deadlines), the receivers waiting, and which of them reads Redis.

    Buffers are bounded three ways: each by its channel's capacity, all
    together by ``max_buffered``, and in time by message expiry, swept lazily
    through a heap of (next deadline, seq, channel name). A message for a full
    channel is dropped, as a full channel drops a message in the in-memory
    layer. When the total is reached, the oldest buffered message of any
    channel makes room instead: otherwise channels nobody receives on would
    fill the buffer and starve the live ones until their messages expired.

    Heap entries name a channel rather than hold its buffer, so a buffer that
    is emptied is freed at once; entries whose buffer has gone are skipped,
    and the heap is rebuilt from the live buffers whenever stale entries
    outnumber them, so it stays proportional to what is buffered, not to the
    message rate.
    """

    __slots__ = ("blocked", "buffered", "buffers", "heap", "layer", "reader", "seq", "waiters")

    def __init__(self, layer: Any = None) -> None:
        self.layer = layer  # whose metrics count what is dropped here
        self.buffers: dict[str, deque[tuple[float, Any]]] = {}
        self.waiters: dict[str, deque[_Waiter]] = {}
        self.reader: _Waiter | None = None
        #: Around the reader's ``BLPOP`` while it waits in it: cancelled when a
        #: message is given back to the reader, which would otherwise see it only
        #: when the ``BLPOP`` returns, up to ``blpop_timeout`` later.
        self.blocked: anyio.CancelScope | None = None
        self.heap: list[tuple[float, int, str]] = []
        self.buffered = 0
        self.seq = 0

    def sweep(self, now: float) -> None:
        buffers = self.buffers
        # self.heap is re-read on every turn: _schedule() may rebuild it.
        while self.heap and self.heap[0][0] <= now:
            _, _, name = heapq.heappop(self.heap)
            buf = buffers.get(name)
            if buf is None:
                continue  # emptied since
            while buf and buf[0][0] <= now:
                buf.popleft()
                self.buffered -= 1
                if metrics.enabled:
                    metrics.layers.expired(self.layer)
            if buf:
                self._schedule(name, buf[0][0])
            else:
                del buffers[name]

    def _schedule(self, name: str, deadline: float) -> None:
        """Put ``name``'s next deadline on the heap, rebuilding it if mostly stale."""
        heap = self.heap
        if len(heap) > 2 * len(self.buffers) + 64:
            # Entries for buffers that have been emptied pile up at the message
            # rate; drop them all by rebuilding from the live buffers (O(n),
            # amortised over the n pushes that made them stale).
            entries = []
            for live_name, buf in self.buffers.items():
                self.seq += 1
                entries.append((buf[0][0], self.seq, live_name))
            heapq.heapify(entries)
            self.heap = heap = entries
        self.seq += 1
        heapq.heappush(heap, (deadline, self.seq, name))

    def _evict_oldest(self) -> bool:
        """Drop the oldest buffered message of any channel; False if none is buffered."""
        buffers = self.buffers
        while self.heap:
            deadline, _, name = heapq.heappop(self.heap)
            buf = buffers.get(name)
            if buf is None:
                continue
            if buf[0][0] > deadline:
                # Stale: receivers have taken this entry's message since. Its
                # channel's head is younger, so re-file it by its real age.
                self._schedule(name, buf[0][0])
                continue
            buf.popleft()
            self.buffered -= 1
            logger.debug("Dropped the oldest buffered message, for %r: buffers are full", name)
            if metrics.enabled:
                metrics.layers.evicted(self.layer)
            if buf:
                self._schedule(name, buf[0][0])
            else:
                del buffers[name]
            return True
        return False

    def take(self, channel: str, now: float) -> Any:
        """The oldest live buffered message of ``channel``, or ``None``."""
        buf = self.buffers.get(channel)
        if buf is None:
            return None
        message = pop_live(buf, now, self, self.layer)
        if not buf:
            del self.buffers[channel]
        return message

    def deliver(
        self, channel: str, message: Any, deadline: float, capacity: int, limit: int, front: bool
    ) -> bool:
        """Hand ``message`` to the first receiver waiting on ``channel``, else
        buffer it. ``front`` puts it before the buffered ones (a message given
        back by a cancelled receiver was the oldest). False if dropped."""
        waiters = self.waiters.get(channel)
        if waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self.waiters[channel]
            waiter.message = message
            waiter.deadline = deadline
            waiter.event.set()
            if front and waiter is self.reader and self.blocked is not None:
                # Given back to the reader, blocked in BLPOP: interrupt it (that
                # loses nothing, see ``_pop_blocking``) so that it takes it now.
                self.blocked.cancel()
            return True
        buf = self.buffers.get(channel)
        if not front:
            if buf is not None and len(buf) >= capacity:
                return False
            while self.buffered >= limit and self._evict_oldest():
                buf = self.buffers.get(channel)  # eviction may have emptied it
            if self.buffered >= limit:
                return False  # limit < 1: nothing can be buffered
        if buf is None:
            buf = self.buffers[channel] = deque()
        if front:
            buf.appendleft((deadline, message))
        else:
            buf.append((deadline, message))
        self.buffered += 1
        if len(buf) == 1 or front:
            self._schedule(channel, buf[0][0])
        return True

    def withdraw(self, waiter: _Waiter) -> None:
        waiters = self.waiters.get(waiter.channel)
        if waiters is not None:
            try:
                waiters.remove(waiter)
            except ValueError:
                pass
            if not waiters:
                del self.waiters[waiter.channel]

    def pass_reader_role(self, leaving: _Waiter) -> None:
        """``leaving`` stops reading: make the longest-registered other waiter
        the reader, or nobody if none is waiting."""
        if self.reader is not leaving:
            return
        self.reader = None
        for waiters in self.waiters.values():
            for waiter in waiters:
                if waiter is not leaving:
                    self.reader = waiter
                    waiter.event.set()
                    return

    def clear(self) -> None:
        self.buffers.clear()
        self.heap.clear()
        self.buffered = 0


class _LoopState(LoopState):
    """What the layer keeps for one event loop: a connection pool per server
    (``pools``, in ``hosts`` order) and the process-specific channels' buffers
    and waiting receivers (``local``)."""

    __slots__ = ("local", "memberships")

    def __init__(self, layer: RedisChannelLayer, token: Any) -> None:
        super().__init__(layer, token)
        self.local = _Local(layer)
        #: The group_adds made from this loop, made again if Redis forgets them.
        self.memberships = Memberships()
        for pool in self.pools:
            pool.on_open = partial(layer._on_open, self)


class RedisChannelLayer(RedisLayer[_LoopState]):
    """A channel layer stored in Redis, configured like channels_redis.

    ``CHANNEL_LAYERS = {"default": {"BACKEND":
    "channels_runtime.layers.redis.RedisChannelLayer", "CONFIG": {"hosts":
    ["redis://localhost:6379/0"]}}}``

    Delivery is at most once: a message is handed to at most one receiver, and
    may be lost if Redis loses it (restart without persistence), if the
    connection breaks while a popped message is on its way, or when a
    process-local buffer is full. See ``docs/scaling-out.md``.

    ``random_prefix_length`` is accepted so channels_redis settings carry over,
    and ignored: messages are list elements here, which need no random prefix to
    stay distinct.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    routes_cluster: ClassVar[bool] = True

    #: Seconds a ``BLPOP`` blocks server-side before being re-issued. A reply
    #: that takes longer than this plus ``socket_timeout`` marks the connection dead.
    blpop_timeout: ClassVar[float] = 5.0
    #: How many messages the process reader takes per round trip.
    receive_batch: ClassVar[int] = 100

    def __init__(
        self,
        hosts: Sequence[Any] | None = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        random_prefix_length: int = 12,
        serializer_format: str = "msgpack",
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self.random_prefix_length = random_prefix_length
        self._channel_prefix = f"{prefix}:ch:"
        self._process_prefix = f"{prefix}:pr:"
        self._group_prefix = f"{prefix}:gr:"
        #: In a cluster, the part of a key that picks its slot is put in a hash
        #: tag (``asgi:ch:{name}``), whatever the prefix holds; elsewhere keys
        #: stay as they always were.
        self._open, self._shut = ("{", "}") if find_cluster(hosts) is not None else ("", "")
        if self._open and ("{" in prefix or "}" in prefix):
            # Redis takes the first {...} of a key as its tag: one in the prefix
            # would put every key in one slot.
            raise ValueError(f"prefix must not contain braces with a Redis Cluster: {prefix!r}")
        #: Written once by whichever process connects first, deleted only by
        #: ``flush()``: if it has gone, so has everything else (see ``_on_open``).
        self._epoch_key = f"{prefix}:epoch"
        super().__init__(
            hosts,
            prefix,
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            symmetric_encryption_keys=symmetric_encryption_keys,
            serializer_format=serializer_format,
            **options,
        )
        self._expiry_ms = int(expiry * 1000)
        # Lists live until their newest message's deadline, plus a margin.
        self._ttl_ms = self._expiry_ms + 1000
        self._group_ttl_ms = int(group_expiry * 1000)

    def _token_changed(self) -> None:
        self._process_key = self._process_prefix + self._open + self.client_token + self._shut

    def _new_state(self, token: Any) -> _LoopState:
        return _LoopState(self, token)

    def _node_pool(self, state: _LoopState, index: int, spec: HostSpec) -> Pool:
        pool = super()._node_pool(state, index, spec)
        pool.on_open = partial(self._on_open_node, state)
        return pool

    def _group_key(self, group: str) -> str:
        return self._group_prefix + self._open + group + self._shut

    # -- running commands ---------------------------------------------------------

    async def _cluster_script(
        self, router: ClusterRouter, script: scripts.Script, keys: Sequence[Any],
        args: Sequence[Any], what: str, dedupe_arg: int | None = None, name: str | None = None,
    ) -> Any:  # fmt: skip
        """:meth:`_run_script` on a cluster (``keys`` all in one slot)."""
        return await self._cluster_command(
            router,
            keys[0],
            ("EVALSHA", script.sha, len(keys), *keys, *args),
            what,
            name,
            -1 if dedupe_arg is None else 3 + len(keys) + dedupe_arg,
        )

    async def _cluster_many(
        self, router: ClusterRouter, batch: list[tuple[int, tuple[Any, ...]]], what: str
    ) -> list[Any]:
        """Commands for several slots, one pipeline per master; error replies raised."""
        try:
            replies = await router.execute_many(batch)
        except ClusterUnavailable as exc:
            raise RedisUnavailable(f"Redis Cluster is unavailable for {what}: {exc}") from exc
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        return replies

    async def _simple(self, shard: Pool, args: tuple[Any, ...], what: str) -> Any:
        """Run an idempotent command (safe to repeat as is)."""
        return await self._command(shard, args, what)

    async def _run_script(
        self, shard: Pool, script: scripts.Script, keys: Sequence[Any], args: Sequence[Any],
        what: str, dedupe_arg: int | None = None, name: str | None = None,
    ) -> Any:  # fmt: skip
        """Run ``script``; if ``dedupe_arg`` is given, that argument becomes "1"
        on attempts after one that may have been applied."""
        return await self._command(
            shard,
            ("EVALSHA", script.sha, len(keys), *keys, *args),
            what,
            name,
            -1 if dedupe_arg is None else 3 + len(keys) + dedupe_arg,
        )

    async def _pop_blocking(
        self, shard: Pool, key: str, salvage: Callable[[bytes], Awaitable[None]]
    ) -> bytes | None:
        """One ``BLPOP`` on ``key``: the element, or ``None`` if it timed out.

        Cancellation loses nothing: the pending ``BLPOP`` is interrupted with
        ``CLIENT UNBLOCK`` from another connection, and if Redis had already
        popped an element for us it is read and passed to ``salvage`` (all
        shielded, and bounded by ``socket_timeout``) before the cancellation
        goes on. Connection failures are raised for the caller to retry.
        """
        conn = await shard.lease_blocking()
        try:
            await conn.send(encode_command("BLPOP", key, self.blpop_timeout))
        except BaseException as exc:
            # Cancelled before the command was (fully) written, or the write failed.
            await shard.discard(conn, blocking=True, fault=isinstance(exc, _FAILURES))
            raise
        try:
            with anyio.fail_after(self.blpop_timeout + self.socket_timeout):
                reply = await conn.read_reply()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                reply = await self._withdraw(shard, conn)
                if isinstance(reply, list):
                    with anyio.move_on_after(self.socket_timeout):
                        await salvage(reply[1])
            raise
        except _FAILURES:
            await shard.discard(conn, blocking=True)
            raise
        except BaseException:
            await shard.discard(conn, blocking=True, fault=False)
            raise
        if isinstance(reply, ReplyError) and reply.code in _TRANSIENT_REPLIES:
            # Not released: pooled again, a connection to a demoted master would
            # be picked by every retry, which would never ask Sentinel again.
            await shard.discard(conn, blocking=True)
            raise Transient(str(reply))
        await shard.release(conn, blocking=True)
        if isinstance(reply, ReplyError):
            raise reply
        return None if reply is None else reply[1]

    async def _withdraw(self, shard: Pool, conn: Connection) -> Any:
        """Interrupt the ``BLPOP`` pending on ``conn``; return its reply, or
        ``_LOST`` if that could not be done in time (the connection is closed).

        ``CLIENT UNBLOCK`` answers 0 when the client is not blocked: either the
        reply is already on its way, or our ``BLPOP`` has not been processed
        yet; so wait for a reply briefly, and unblock again if none came.
        """
        try:
            with anyio.move_on_after(self.socket_timeout):
                pause = 0.01
                while True:
                    unblocked = await self._simple(
                        shard, ("CLIENT", "UNBLOCK", conn.client_id), "withdrawing a receive"
                    )
                    if unblocked:
                        reply = await conn.read_reply()
                    else:
                        reply = _LOST
                        with anyio.move_on_after(pause):
                            reply = await conn.read_reply()
                        pause = min(pause * 2, 0.5)
                    if reply is not _LOST:
                        await shard.release(conn, blocking=True)
                        return reply
        except _FAILURES_OR_REPLIES:
            pass
        await shard.discard(conn, blocking=True)
        return _LOST

    async def _pop_batch(self, shard: Pool, key: str) -> list[bytes]:
        """Take up to ``receive_batch`` messages without waiting. The reply is
        read shielded from cancellation: what Redis popped must reach us."""
        conn = await shard.lease()
        try:
            await conn.send(encode_command("LPOP", key, self.receive_batch))
        except BaseException as exc:
            await shard.discard(conn, fault=isinstance(exc, _FAILURES))
            raise
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self.socket_timeout):
                reply = await conn.read_reply()
        except _FAILURES:
            await shard.discard(conn)
            raise
        except BaseException:
            await shard.discard(conn, fault=False)
            raise
        if isinstance(reply, ReplyError) and reply.code in _TRANSIENT_REPLIES:
            await shard.discard(conn)  # as in _pop_blocking: make the retry reconnect
            raise Transient(str(reply))
        await shard.release(conn)
        if isinstance(reply, ReplyError):
            raise reply
        return reply or []

    async def _backoff(self, shard: Pool, exc: BaseException, delay: float) -> float:
        shard.outage.failed(exc)
        await anyio.sleep(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.backoff_max)

    # -- after Redis lost its data -----------------------------------------------

    async def _on_open(self, state: _LoopState, pool: Pool, conn: Connection) -> None:
        """Check on a new connection whether the server has lost its data since
        this loop last looked, and if so add this loop's memberships again.

        The first process to connect writes a random value under the epoch
        key (``SET NX``); every loop remembers the value it saw per server. A
        restart without persistence or a flush takes the key with the groups,
        so a later connection finds none (and writes a new one) or another.
        One round trip per new connection: connections are only opened at
        start-up and after a failure, which is when a restart is noticed.
        A replica (mid-failover) refuses the write; it is left for the retry
        to reconnect to the master.
        """
        with anyio.fail_after(self.socket_timeout):
            wrote, epoch = await conn.pipeline(
                [
                    ("SET", self._epoch_key, random.randbytes(8).hex(), "NX"),
                    ("GET", self._epoch_key),
                ]
            )
        if isinstance(wrote, ReplyError) or not isinstance(epoch, bytes) or epoch == pool.epoch:
            return
        seen, pool.epoch = pool.epoch, epoch
        if seen is not None:
            index = pool.index
            await self._restoring(
                state, pool, conn, lambda group: self._shard_of(group) == index, seen, epoch
            )

    async def _restoring(
        self,
        state: _LoopState,
        pool: Pool,
        conn: Connection,
        wanted: Callable[[str], bool],
        seen: bytes,
        new: bytes,
    ) -> None:
        """:meth:`_restore`, once: the new epoch is recorded first, so that
        connections opened meanwhile do not restore (and log) it again; if the
        restore fails, the old one is put back for the next connection to retry."""
        try:
            await self._restore(state, pool, conn, wanted)
        except BaseException:
            if pool.epoch == new:
                pool.epoch = seen
            raise

    async def _on_open_node(self, state: _LoopState, pool: Pool, conn: Connection) -> None:
        """:meth:`_on_open` for a cluster node: the epoch key is per node, in
        the first slot the node serves now (a key tagged for that slot), and
        what is restored are the groups in the slots it serves.

        The node says which slots it serves (``CLUSTER NODES``, its own line),
        so this works before the router has a slot map. The epoch is recorded
        with its slot: if the node serves another first slot later (slots
        were moved), the new value is recorded, not taken for a loss. A node
        serving no slot (a replica) is left alone.
        """
        with anyio.fail_after(self.socket_timeout):
            described = await conn.request("CLUSTER", "NODES")
        ranges = node_slots(described) if isinstance(described, bytes) else []
        if not ranges:
            return
        slot = ranges[0][0]
        key = f"{self._epoch_key}:{{{slot_tag(slot)}}}"
        with anyio.fail_after(self.socket_timeout):
            wrote, epoch = await conn.pipeline(
                [("SET", key, random.randbytes(8).hex(), "NX"), ("GET", key)]
            )
        if isinstance(wrote, ReplyError) and wrote.code in _CLUSTER_RETRY_CODES:
            # A node just restarted refuses commands (CLUSTERDOWN) until the
            # cluster has it back: whether it lost its data cannot be told yet,
            # so this connection is not used (the caller retries on a new one).
            raise Transient(str(wrote))
        if isinstance(wrote, ReplyError) or not isinstance(epoch, bytes):
            return
        mark = b"%d:%s" % (slot, epoch)
        seen = pool.epoch
        if mark == seen:
            return
        pool.epoch = mark
        if seen is not None and seen.split(b":", 1)[0] == b"%d" % slot:

            def served(group: str) -> bool:
                wanted = key_slot(self._group_key(group))
                return any(start <= wanted <= end for start, end in ranges)

            await self._restoring(state, pool, conn, served, seen, mark)

    async def _restore(
        self,
        state: _LoopState,
        pool: Pool,
        conn: Connection,
        wanted: Callable[[str], bool],
    ) -> None:
        """Add again the memberships this loop made in groups held by ``pool``'s
        server, each with what is left of its ``group_expiry`` (its score is
        its original joining time, in the server's clock), in one pipeline."""
        now = _monotonic()
        server_ms = pool.clock.now_ms()
        expiry = self.group_expiry
        commands: list[tuple[Any, ...]] = []
        restored = 0
        for group, members in state.memberships.live(now, wanted):
            key = self._group_key(group)
            args: list[Any] = []
            for channel, left in members:
                args += (int(server_ms - (expiry - left) * 1000), channel)
            commands.append(("ZADD", key, *args))
            commands.append(("PEXPIRE", key, int(max(left for _, left in members) * 1000) + 1))
            restored += len(members)
        for start in range(0, len(commands), 1000):
            with anyio.fail_after(self.socket_timeout):
                replies = await conn.pipeline(commands[start : start + 1000])
            for reply in replies:
                if isinstance(reply, ReplyError):
                    if reply.code in ("MOVED", "ASK"):
                        continue  # its slot moved meanwhile: that node has it
                    if reply.code in _TRANSIENT_REPLIES or reply.code in _CLUSTER_RETRY_CODES:
                        raise Transient(str(reply))
                    raise reply
        logger.log(
            logging.WARNING if restored else logging.INFO,
            "Redis at %s has lost its data (restarted without persistence, or flushed): "
            "restored %d group membership(s) of this process in %d group(s)",
            pool.spec.describe(),
            restored,
            len(commands) // 2,
        )

    # -- names ------------------------------------------------------------------

    def _route(self, channel: str) -> tuple[str, int, bytes]:
        """Redis key, shard, and body prefix for a message to ``channel``."""
        bang = channel.find("!")
        if bang < 0:
            key = self._channel_prefix + self._open + channel + self._shut
            return key, self._shard_of(channel), b""
        token = channel[:bang].rpartition(".")[2]
        return (
            self._process_prefix + self._open + token + self._shut,
            self._shard_of(token),
            channel.encode() + b"|",
        )

    def _header(self, source: Pool | ServerTime) -> bytes:
        """A new element's ``<deadline>:<nonce>:``, by the clock of ``source``
        (a server's pool, or the cluster's clock)."""
        clock = source.clock if isinstance(source, Pool) else source
        deadline = int(clock.now_ms()) + self._expiry_ms
        return b"%d:%x:" % (deadline, random.getrandbits(64))

    # -- the layer API ------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel`` in one round trip.

        Raises :class:`~channels_runtime.exceptions.ChannelFull` when the channel
        holds ``capacity`` unexpired messages (for a process-specific channel:
        when its process's list does), ``MessageTooLarge`` past
        ``max_message_size``, and :class:`RedisUnavailable` when Redis cannot be
        reached within ``retry_budget`` seconds.
        """
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        self.require_valid_channel_name(channel)
        payload = self._serializer.dumps(message, channel)
        key, index, body = self._route(channel)
        state = self._state()
        if state.router is not None:
            element = self._header(self._cluster_clock) + body + payload
            queued = await self._cluster_script(
                state.router,
                scripts.SEND,
                (key,),
                (self.get_capacity(channel), self._ttl_ms, element, b"0"),
                "send to",
                dedupe_arg=3,
                name=channel,
            )
        else:
            shard = state.pools[index]
            element = self._header(shard.clock) + body + payload
            queued = await self._run_script(
                shard,
                scripts.SEND,
                (key,),
                (self.get_capacity(channel), self._ttl_ms, element, b"0"),
                "send to",
                dedupe_arg=3,
                name=channel,
            )
        if not queued:
            if metrics.enabled:
                metrics.layers.channel_full(self, "send")
            raise ChannelFull(channel)
        if metrics.enabled:
            metrics.layers.sent(self)

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next unexpired message on ``channel``.

        Waits through Redis outages (reconnecting with backoff). Cancelling a
        receive loses no message: one Redis had already handed over is put back
        (normal channels) or kept for the next receiver (specific channels).
        """
        self.require_valid_channel_name(channel)
        if "!" in channel:
            token = channel[: channel.find("!")].rpartition(".")[2]
            if token != self.client_token:
                raise ValueError(
                    f"{channel!r} was not made by this layer's new_channel(); a process can "
                    "only receive on its own process-specific channels"
                )
            message = await self._receive_specific(channel)
        else:
            message = await self._receive_normal(channel)
        if metrics.enabled:
            metrics.layers.received(self)
        return message

    async def _receive_normal(self, channel: str) -> Message:
        key, index, _ = self._route(channel)
        state = self._state()
        router = state.router
        shard: Pool | None = None if router is not None else state.pools[index]
        address: NodeAddress | None = None

        async def put_back(element: bytes) -> None:
            try:
                if router is not None:
                    await self._cluster_script(
                        router, scripts.PUT_BACK, (key,), (element, self._ttl_ms), "put back"
                    )
                else:
                    assert shard is not None
                    await self._run_script(
                        shard, scripts.PUT_BACK, (key,), (element, self._ttl_ms), "put back"
                    )
            except (RedisUnavailable, ReplyError) as exc:
                logger.warning("Lost a message for %r after a cancelled receive: %r", channel, exc)

        delay = self.backoff_min
        failed: Pool | None = None
        while True:
            try:
                if router is not None:
                    address = None
                    address = await router.master_for(key)
                    shard = router.pool(address)
                assert shard is not None
                element = await self._pop_blocking(shard, key, put_back)
            except _FAILURES as exc:
                failed = shard
                delay = await self._recover(router, address, shard, exc, delay)
                continue
            except ReplyError as exc:
                if router is None:
                    raise
                failed = shard
                delay = await self._recover(router, address, shard, exc, delay)
                continue
            if failed is not None and failed is not shard:
                self._replaced(router, failed, address)
            failed = None
            shard.recovered()
            delay = self.backoff_min
            if element is not None:
                message = self._decode(shard, element, channel)
                if message is not None:
                    return message

    async def _recover(
        self,
        router: ClusterRouter | None,
        address: NodeAddress | None,
        shard: Pool | None,
        exc: BaseException,
        delay: float,
    ) -> float:
        """After a read failed: tell the cluster router (if any) what happened,
        wait, and return the next delay. A ``MOVED`` reply is followed at once;
        an error reply that is neither a redirect nor "not now" is raised."""
        if router is not None:
            if isinstance(exc, ReplyError):
                redirect = router.note_redirect(exc, address) if address is not None else None
                if redirect is not None and not redirect.ask:
                    return delay
                if redirect is None and exc.code not in _CLUSTER_RETRY_CODES:
                    raise exc
            elif address is not None:
                router.note_failure(address)
            if shard is None or isinstance(exc, ReplyError):
                # (A node that answers, if only "ask another", is not down.)
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
                return min(delay * 2, self.backoff_max)
        assert shard is not None
        return await self._backoff(shard, exc, delay)

    @staticmethod
    def _replaced(router: ClusterRouter | None, failed: Pool, now: NodeAddress | None) -> None:
        """A receiver that failed on one cluster node reads from another now:
        if the first serves no slot any more (a replica took over), its
        outage is over for this loop."""
        if router is None or now is None or failed.outage.since is None:
            return
        topology = router.topology
        spec = failed.spec
        gone = NodeAddress(spec.host or "localhost", spec.port)
        if topology is not None and gone not in topology.masters:
            failed.outage.moved_on(str(now))

    def _decode(self, shard: Pool, element: bytes, channel: str) -> Any:
        """The message in a normal-channel element, or None if expired or unreadable."""
        try:
            first = element.index(b":")
            second = element.index(b":", first + 1)
            if int(element[:first]) <= shard.clock.now_ms():
                if metrics.enabled:
                    metrics.layers.expired(self)
                return None
            return self._serializer.loads(memoryview(element)[second + 1 :])
        except Exception:
            logger.exception("Dropped an unreadable message on %r", channel)
            return None

    async def _receive_specific(self, channel: str) -> Message:
        state = self._state()
        local = state.local
        now = _monotonic()
        if local.heap and local.heap[0][0] <= now:
            local.sweep(now)
        message = local.take(channel, now)
        if message is not None:
            return message
        waiter = _Waiter(channel)
        waiters = local.waiters.get(channel)
        if waiters is None:
            waiters = local.waiters[channel] = deque()
        waiters.append(waiter)
        try:
            while waiter.message is None:
                if local.reader is None:
                    self._check_single_reader(state)
                    local.reader = waiter
                if local.reader is waiter:
                    await self._read_for_process(state, waiter)
                else:
                    await waiter.event.wait()
                    if waiter.message is None and local.reader is not waiter:
                        waiter.event = anyio.Event()  # pragma: no cover - defensive
        except BaseException:
            local.withdraw(waiter)
            if waiter.message is not None and waiter.deadline > _monotonic():
                # Handed a message but cancelled before taking it: the next
                # receiver gets it, ahead of anything buffered later (at once
                # if that is the reader: ``deliver`` interrupts its BLPOP).
                local.deliver(
                    channel, waiter.message, waiter.deadline, 0, self.max_buffered, front=True
                )
            local.pass_reader_role(waiter)
            raise
        local.pass_reader_role(waiter)
        return waiter.message

    def _check_single_reader(self, state: _LoopState) -> None:
        for token, other in list(self._states.items()):
            if other is not state and other.local.reader is not None and not loop_is_dead(token):
                raise RuntimeError(
                    "Two event loops are receiving on this layer's process-specific channels "
                    "at once; use one layer instance per event loop"
                )

    async def _read_for_process(self, state: _LoopState, me: _Waiter) -> None:
        """Read the process list for every local receiver until ``me`` has a message."""
        router = state.router
        shard: Pool | None = None if router is not None else state.pools[self._process_shard]
        address: NodeAddress | None = None
        key = self._process_key

        async def salvage(element: bytes) -> None:
            assert shard is not None
            self._dispatch(state, shard, element)

        local = state.local
        delay = self.backoff_min
        batch = True
        failed: Pool | None = None
        while me.message is None:
            await anyio.lowlevel.checkpoint_if_cancelled()
            try:
                if router is not None:
                    address = None
                    address = await router.master_for(key)
                    shard = router.pool(address)
                assert shard is not None
                elements = await self._pop_batch(shard, key) if batch else []
                # A cancelled receiver may have given ``me`` a message meanwhile;
                # from here on, giving one back interrupts the BLPOP (``deliver``).
                if not elements and me.message is None:
                    element = None
                    try:
                        with anyio.CancelScope() as local.blocked:
                            element = await self._pop_blocking(shard, key, salvage)
                    finally:
                        local.blocked = None
                    elements = [element] if element is not None else []
                    batch = element is not None
            except _FAILURES as exc:
                failed = shard
                delay = await self._recover(router, address, shard, exc, delay)
                batch = True
                continue
            except ReplyError as exc:
                if router is None:
                    raise
                failed = shard
                delay = await self._recover(router, address, shard, exc, delay)
                batch = True
                continue
            if failed is not None and failed is not shard:
                self._replaced(router, failed, address)
            failed = None
            shard.recovered()
            delay = self.backoff_min
            for element in elements:
                self._dispatch(state, shard, element)

    def _dispatch(self, state: _LoopState, shard: Pool, element: bytes) -> None:
        """Hand one process-list element to its local receivers, or buffer it."""
        local = state.local
        try:
            first = element.index(b":")
            second = element.index(b":", first + 1)
            bar = element.index(b"|", second + 1)
            remaining_ms = int(element[:first]) - shard.clock.now_ms()
            if remaining_ms <= 0:
                if metrics.enabled:
                    metrics.layers.expired(self)
                return
            names = element[second + 1 : bar].decode().split(",")
            serializer = self._serializer
            data = memoryview(element)[bar + 1 :]
            now = _monotonic()
            deadline = now + remaining_ms / 1000.0
            if local.heap and local.heap[0][0] <= now:
                local.sweep(now)
            for name in names:
                message = serializer.loads(data)
                if not local.deliver(
                    name, message, deadline, self.get_capacity(name), self.max_buffered, False
                ):
                    logger.debug("Dropped a message for %r: its local buffer is full", name)
                    if metrics.enabled:
                        metrics.layers.evicted(self)
        except Exception:
            logger.exception("Dropped an unreadable message from %s", self._process_key)

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-specific channel name, ``"<prefix>.<token>!<12 letters>"``.

        ``token`` identifies this layer instance; messages to any of its
        channels travel through one Redis list read by whichever of its
        receivers is waiting.
        """
        return self._new_channel_name(prefix)

    async def flush(self) -> None:
        """Delete every key under this layer's prefix on every shard, and drop
        buffered local messages. Waiting receivers keep waiting."""
        state = self._state()
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + ":*"
        shards = state.pools
        if state.router is not None:
            try:
                topology = await state.router.refresh()
            except ClusterUnavailable as exc:
                raise RedisUnavailable(f"Redis Cluster is unavailable for flush: {exc}") from exc
            for pool in state.router.pools.values():
                pool.epoch = None
            shards = [state.router.pool(address) for address in topology.masters]
        for shard in shards:
            # The epoch key goes too: for this loop, that is a fresh start, not
            # a loss to repair (other processes restore what they had added
            # when they next connect).
            shard.epoch = None
            cursor = b"0"
            while True:
                # SCAN then UNLINK rather than KEYS: never blocks the server for long.
                cursor, keys = await self._simple(
                    shard, ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000), "flush"
                )
                if keys and state.router is not None:
                    # A node holds many slots, and one UNLINK may not span them.
                    by_slot: dict[int, list[bytes]] = {}
                    for key in keys:
                        by_slot.setdefault(key_slot(key), []).append(key)
                    await self._cluster_many(
                        state.router,
                        [(slot, ("UNLINK", *group)) for slot, group in by_slot.items()],
                        "flush",
                    )
                elif keys:
                    await self._simple(shard, ("UNLINK", *keys), "flush")
                if cursor == b"0":
                    break
        state.local.clear()
        state.memberships.clear()

    def metrics_state(self) -> dict[str, float]:
        """Buffered messages and outages of this process, for the metrics."""
        states = list(self._states.values())
        return {
            "buffered": sum(state.local.buffered for state in states),
            **self._outage_metrics(states),
        }

    async def close(self) -> None:
        """Close this event loop's idle connections and drop its buffered messages.

        Connections busy in running calls (a waiting ``receive``) are closed as
        soon as those calls give them back. The layer stays usable: later calls
        open new connections. Safe to call more than once.
        """
        state = self._states.get(anyio.lowlevel.current_token().native_token)
        if state is None:
            return
        for shard in state.pools:
            await shard.close()
        if state.router is not None:
            await state.router.aclose()
        state.local.clear()

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew it) for ``group_expiry`` seconds."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = self._state()
        key = self._group_key(group)
        if state.router is not None:
            await self._cluster_script(
                state.router,
                scripts.GROUP_ADD,
                (key,),
                (channel, self._group_ttl_ms),
                "group_add to",
                name=group,
            )
        else:
            await self._run_script(
                state.pools[self._shard_of(group)],
                scripts.GROUP_ADD,
                (key,),
                (channel, self._group_ttl_ms),
                "group_add to",
                name=group,
            )
        now = _monotonic()
        state.memberships.joined(group, channel, now + self.group_expiry, now)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it is not in it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = self._state()
        state.memberships.left(group, channel)
        key = self._group_key(group)
        what = f"group_discard from {group!r}"
        if state.router is not None:
            await self._cluster_command(state.router, key, ("ZREM", key, channel), what)
        else:
            await self._simple(state.pools[self._shard_of(group)], ("ZREM", key, channel), what)

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every current member of ``group``.

        With one Redis server and no ``channel_capacity`` patterns this is one
        script in one round trip; otherwise one round trip for the membership
        and then one per shard holding members, all shards at once. Members on
        the same process share one stored copy. A full member is skipped
        (at-most-once); the others still get the message.
        """
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        self.require_valid_group_name(group)
        payload = self._serializer.dumps(message, f"group {group}")
        state = self._state()
        group_key = self._group_key(group)
        what = f"group_send to {group!r}"
        if state.router is not None:
            members = await self._cluster_script(
                state.router, scripts.GROUP_MEMBERS, (group_key,), (self._group_ttl_ms,), what
            )
            full = await self._push_by_slot(state.router, members, payload, what)
            reached = len(members)
            if metrics.enabled:
                metrics.layers.group_sent(self, reached - full, full)
            if full:
                logger.info("group_send to %r skipped %d full channel(s)", group, full)
            return
        home = state.pools[self._shard_of(group)]
        if self.ring_size == 1 and not self.channel_capacity:
            full, reached = await self._run_script(
                home,
                scripts.GROUP_SEND,
                (group_key,),
                (
                    self._channel_prefix,
                    self._process_prefix,
                    self._header(home.clock),
                    payload,
                    self.capacity,
                    self._ttl_ms,
                    self._group_ttl_ms,
                    b"0",
                ),
                what,
                dedupe_arg=7,
            )
        else:
            members = await self._run_script(
                home, scripts.GROUP_MEMBERS, (group_key,), (self._group_ttl_ms,), what
            )
            full = await self._push_to_members(state, members, payload, what)
            reached = len(members)
        if metrics.enabled:
            metrics.layers.group_sent(self, reached - full, full)
        if full:
            logger.info("group_send to %r skipped %d full channel(s)", group, full)

    async def _push_by_slot(
        self, router: ClusterRouter, members: list[bytes], payload: bytes, what: str
    ) -> int:
        """A cluster's share of ``group_send``: one ``PUSH_MANY`` per slot that
        holds members (a script may not span slots), sent as one pipeline per
        master, all masters at once. Returns how many members were full."""
        # slot -> key -> [capacity, names for a process list or None]
        plan: dict[int, dict[str, list[Any]]] = {}
        for raw in members:
            name = raw.decode()
            key = self._route(name)[0]
            targets = plan.setdefault(key_slot(key), {})
            entry = targets.get(key)
            if entry is None:
                targets[key] = [self.get_capacity(name), [name] if "!" in name else None]
            elif entry[1] is not None:
                entry[1].append(name)
        if not plan:
            return 0
        header = self._header(self._cluster_clock)
        batch = []
        for slot, targets in plan.items():
            args: list[Any] = [header, payload, self._ttl_ms, b"0"]
            for capacity, names in targets.values():
                args.append(capacity)
                args.append(",".join(names).encode() + b"|" if names else b"")
            command = ("EVALSHA", scripts.PUSH_MANY.sha, len(targets), *targets, *args)
            batch.append((slot, partial(_deduplicated, command, 3 + len(targets) + 3)))
        try:
            replies = await router.execute_many(batch)
        except ClusterUnavailable as exc:
            raise RedisUnavailable(f"Redis Cluster is unavailable for {what}: {exc}") from exc
        full = 0
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
            full += reply
        return full

    async def _push_to_members(
        self, state: _LoopState, members: list[bytes], payload: bytes, what: str
    ) -> int:
        # shard -> key -> [capacity, names for a process list or None]
        plan: dict[int, dict[str, list[Any]]] = {}
        for raw in members:
            name = raw.decode()
            key, index, _ = self._route(name)
            entry = plan.setdefault(index, {}).get(key)
            if entry is None:
                plan[index][key] = [self.get_capacity(name), [name] if "!" in name else None]
            elif entry[1] is not None:
                entry[1].append(name)
        full = 0
        errors: list[BaseException] = []

        async def push(index: int, targets: dict[str, list[Any]]) -> None:
            nonlocal full
            shard = state.pools[index]
            args: list[Any] = [self._header(shard.clock), payload, self._ttl_ms, b"0"]
            for capacity, names in targets.values():
                args.append(capacity)
                args.append(",".join(names).encode() + b"|" if names else b"")
            try:
                full += await self._run_script(
                    shard, scripts.PUSH_MANY, tuple(targets), args, what, dedupe_arg=3
                )
            except Exception as exc:
                errors.append(exc)

        if len(plan) == 1:
            (index, targets), = plan.items()  # fmt: skip
            await push(index, targets)
        elif plan:
            async with anyio.create_task_group() as tg:
                for index, targets in plan.items():
                    tg.start_soon(push, index, targets)
        if errors:
            raise errors[0]
        return full
