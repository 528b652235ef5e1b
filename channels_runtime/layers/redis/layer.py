"""What both Redis layers do the same way, in one base class.

:class:`~.core.RedisChannelLayer` (messages stored in lists) and
:class:`~.pubsub.RedisPubSubChannelLayer` (messages forwarded by Pub/Sub)
differ in how a message travels; everything around that is the same and
lives here:

* the settings (:class:`~.settings.RedisSettings`) and which server serves a
  name (:class:`~.routing.ShardRouter`);
* the process token that names a layer instance's process-specific channels,
  made afresh in a child after ``fork()``;
* one state per event loop (connections, events and the tasks parked on them
  only work in the loop that made them), found from anyio's native loop
  token; the state of a loop that has finished is dropped, and its sockets
  shut down, the next time a state is made;
* running a command with retries on a fresh connection within
  ``retry_budget``;
* readiness (``ping``) and the outage figures for the metrics;
* a Redis Cluster (a ``hosts`` entry such as ``"redis+cluster://h1:p1,h2:p2"``,
  see :mod:`.cluster`): then ``cluster`` holds its settings and each loop
  state a :class:`~.cluster.ClusterRouter` (``router``) instead of a pool
  per server; :meth:`RedisLayer._cluster_command` runs a command through it
  with the same retry budget and the same :class:`RedisUnavailable`.
"""

from __future__ import annotations

import os
import random
import string
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypedDict, TypeVar

import anyio
import anyio.lowlevel

from ..base import BaseChannelLayer, CapacityPattern
from . import scripts
from .cluster import ClusterRouter, ClusterSpec, ClusterUnavailable, Target, find_cluster
from .connections import FAILURES, Outage, Pool, RedisUnavailable, Transient, loop_is_dead
from .connections import TRANSIENT_REPLIES as _TRANSIENT_REPLIES
from .hosts import HostSpec, ServerTime, describe_all
from .ping import ping_servers
from .protocol import Connection, ReplyError
from .routing import ShardRouter
from .settings import RedisSettings, check_positive

__all__ = ["ConnectionOptions", "LayerOptions", "LoopState", "RedisLayer"]

_monotonic = time.monotonic
_LETTER_TABLE = bytes(ord(string.ascii_letters[i % 52]) for i in range(256))


class ConnectionOptions(TypedDict, total=False):
    """The keyword-only settings of both layers (see ``docs/channel-layers.md``)."""

    max_message_size: int | None
    max_connections: int
    connect_timeout: float
    socket_timeout: float
    retry_budget: float
    max_buffered: int


class LayerOptions(ConnectionOptions, total=False):
    """Every setting both layers take, other than ``hosts`` and ``prefix``."""

    expiry: float
    group_expiry: float
    capacity: int
    channel_capacity: Mapping[CapacityPattern, int] | None
    symmetric_encryption_keys: Iterable[str | bytes] | None
    serializer_format: str


class LoopState:
    """What a layer keeps for one event loop: a connection pool per server
    (for a cluster: per seed, unused by a layer that routes through the
    cluster), and for a cluster, if the layer's ``routes_cluster`` says so, a
    :class:`~.cluster.ClusterRouter` (``router``), which keeps a pool per
    node, made by the layer's ``_node_pool``."""

    __slots__ = ("__weakref__", "pools", "router", "token_ref")

    def __init__(self, layer: RedisLayer[Any], token: Any) -> None:
        self.token_ref = weakref.ref(token)
        self.router: ClusterRouter | None = None
        if layer.cluster is not None and layer.routes_cluster:
            self.router = ClusterRouter(
                layer.cluster,
                max_connections=layer.max_connections,
                connect_timeout=layer.connect_timeout,
                socket_timeout=layer.socket_timeout,
                retry_budget=layer.retry_budget,
                script_sources={s.sha: s.source for s in scripts.BY_SHA.values()},
                pool_factory=lambda index, spec: layer._node_pool(self, index, spec),
            )
        self.pools = [
            Pool(layer, i, spec, layer.max_connections, layer._clocks[i], layer.connect_timeout)
            for i, spec in enumerate(layer.hosts)
        ]

    def outages(self) -> Iterator[Outage]:
        """The servers (or cluster nodes) as this loop sees them (for the metrics)."""
        for pool in self.pools:
            yield pool.outage
        if self.router is not None:
            # Only nodes that serve slots: a master replaced by its replica is
            # not an outage any more, whether or not anyone noticed.
            topology = self.router.topology
            serving = set(topology.masters) if topology is not None else None
            for address, pool in self.router.pools.items():
                if serving is None or address in serving:
                    yield pool.outage

    def abandon(self) -> None:
        """The loop has ended without ``close()``: shut its sockets down."""
        for pool in self.pools:
            pool.abandon()
        if self.router is not None:
            self.router.abandon()


S = TypeVar("S", bound=LoopState)


class RedisLayer(RedisSettings, BaseChannelLayer, Generic[S]):
    """Base class of the Redis layers; a subclass makes its :class:`LoopState`
    (``_new_state``) and, in ``_token_changed``, the names that derive from
    its process token."""

    #: Receivers retry a lost Redis forever, backing off between these bounds.
    #: The cap is low so that a receiver is back within a fraction of a second
    #: of Redis (a refused connection costs the server next to nothing).
    backoff_min: ClassVar[float] = 0.05
    backoff_max: ClassVar[float] = 0.25
    #: Whether each loop state gets a :class:`~.cluster.ClusterRouter` when
    #: ``hosts`` names a cluster (a layer with its own cluster client says no).
    routes_cluster: ClassVar[bool] = False

    def __init__(
        self,
        hosts: Sequence[Any] | None,
        prefix: str,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        max_message_size: int | None = 1024 * 1024,
        max_connections: int = 64,
        connect_timeout: float = 2.0,
        socket_timeout: float = 10.0,
        retry_budget: float = 2.0,
        max_buffered: int = 10_000,
    ) -> None:
        """Check and store the settings, then :meth:`_start`. A subclass sets
        what ``_token_changed`` needs before calling this."""
        check_positive("expiry", expiry)
        #: The Redis Cluster ``hosts`` names, if it names one (then ``hosts``
        #: holds its seeds, for the code that wants a list of servers).
        self.cluster: ClusterSpec | None = find_cluster(hosts)
        BaseChannelLayer.__init__(
            self, expiry=expiry, capacity=capacity, channel_capacity=channel_capacity
        )
        self._configure_redis(
            hosts=None if self.cluster else hosts,
            prefix=prefix,
            expiry=expiry,
            group_expiry=group_expiry,
            symmetric_encryption_keys=symmetric_encryption_keys,
            serializer_format=serializer_format,
            max_message_size=max_message_size,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry_budget=retry_budget,
            max_buffered=max_buffered,
        )
        if self.cluster is not None:
            self.hosts = list(self.cluster.seeds)
            self.ring_size = len(self.hosts)
        self._start()

    _pid: int
    client_token: str
    _process_shard: int
    _states: weakref.WeakKeyDictionary[Any, S]
    _last: S | None

    def _start(self) -> None:
        """Finish ``__init__``, once the settings are stored."""
        self._router = ShardRouter(self.hosts)
        self._shard_of = self._router.index_of
        #: Server clock offsets, per server, shared by every loop's connections.
        self._clocks = [ServerTime() for _ in self.hosts]
        #: A cluster's nodes share one clock offset: their clocks are assumed
        #: to agree (NTP), as a cluster's own failure detection assumes.
        self._cluster_clock = ServerTime()
        self._new_process()

    def _new_process(self) -> None:
        """Start afresh in this process: a new token for its specific channels
        and no connections. Run at creation and again in a child after
        ``fork()`` (a server that preloads the app): sharing the parent's token
        would make both read each other's messages, and its sockets are the
        parent's."""
        self._pid = os.getpid()
        #: Names this instance's specific channels: ``<prefix>.<token>!<local>``.
        self.client_token = random.randbytes(12).translate(_LETTER_TABLE).decode()
        self._process_shard = self._shard_of(self.client_token)
        self._states = weakref.WeakKeyDictionary()
        self._last = None
        self._token_changed()

    def _token_changed(self) -> None:
        """Derive the names that depend on ``client_token`` (a hook)."""

    def _new_state(self, token: Any) -> S:
        raise NotImplementedError

    def _node_pool(self, state: S, index: int, spec: HostSpec) -> Pool:
        """The pool of a cluster node first seen by ``state``'s router (a hook:
        a subclass sets its ``on_open`` here)."""
        return Pool(self, index, spec, self.max_connections, self._cluster_clock,
                    self.connect_timeout)  # fmt: skip

    def __repr__(self) -> str:
        where = self.cluster.describe() if self.cluster else describe_all(self.hosts)
        return f"{type(self).__name__}(hosts=[{where}], prefix={self.prefix!r})"

    # -- per-loop state -------------------------------------------------------------------

    def _state(self) -> S:
        """This event loop's state, made on first use."""
        token = anyio.lowlevel.current_token().native_token
        state = self._last
        if state is not None and state.token_ref() is token:
            return state
        if self._pid != os.getpid():
            self._new_process()
        state = self._states.get(token)
        if state is None:
            self._reap_dead_loops()
            state = self._states[token] = self._new_state(token)
        self._last = state
        return state

    def _reap_dead_loops(self) -> None:
        for other in list(self._states):
            if loop_is_dead(other):
                dead = self._states.pop(other, None)
                if dead is not None:
                    dead.abandon()

    def _new_channel_name(self, prefix: str) -> str:
        """``"<prefix>.<token>!<12 letters>"``, checked."""
        if self._pid != os.getpid():
            self._new_process()
        letters = random.randbytes(12).translate(_LETTER_TABLE).decode()
        name = f"{prefix}.{self.client_token}!{letters}"
        self.require_valid_channel_name(name)
        return name

    # -- running commands -------------------------------------------------------------------

    async def _error_reply(self, conn: Connection, args: tuple[Any, ...], reply: ReplyError) -> Any:
        """What to make of an error reply to ``args``: re-send an ``EVALSHA`` as
        ``EVAL`` if the server has forgotten the script (it restarted), raise
        :class:`Transient` for a "not now", else return the reply."""
        code = reply.code
        if code == "NOSCRIPT" and args[0] == "EVALSHA":
            reply = await conn.request("EVAL", scripts.BY_SHA[args[1]].source, *args[2:])
            if not isinstance(reply, ReplyError):
                return reply
            code = reply.code
        if code in _TRANSIENT_REPLIES:
            raise Transient(str(reply))
        return reply

    async def _command(
        self,
        pool: Pool,
        args: tuple[Any, ...],
        what: str,
        name: str | None = None,
        dedupe: int = -1,
    ) -> Any:
        """Run ``args`` on ``pool``'s server, retrying on a fresh connection
        while the retry budget lasts.

        If ``dedupe`` is an index into ``args``, that argument becomes ``b"1"``
        once an attempt was written before its connection failed, so that it
        may have run: sends then deduplicate server-side. The first retry is
        immediate (the usual failure is a pooled connection left over from
        before a Redis restart), later ones back off. Error replies are raised
        as :class:`~.protocol.ReplyError`; ``what`` (followed by ``name`` if
        given) names the operation in :class:`RedisUnavailable`.
        """
        attempts = 0
        maybe_applied = False
        deadline = 0.0
        delay = self.backoff_min
        while True:
            written = False
            try:
                conn = await pool.lease()
            except FAILURES as exc:
                error: BaseException = exc
            else:
                try:
                    written = True
                    with anyio.fail_after(self.socket_timeout):
                        reply = await conn.request(*args)
                        if type(reply) is ReplyError:
                            reply = await self._error_reply(conn, args, reply)
                except FAILURES as exc:
                    await pool.discard(conn)
                    error = exc
                    if isinstance(exc, Transient):
                        written = False
                except BaseException:
                    # Cancelled (or a bug) mid-command: the connection's state is unknown.
                    await pool.discard(conn, fault=False)
                    raise
                else:
                    await pool.release(conn)
                    if isinstance(reply, ReplyError):
                        raise reply
                    return reply
            if written and dedupe >= 0 and not maybe_applied:
                args = (*args[:dedupe], b"1", *args[dedupe + 1 :])
            maybe_applied = maybe_applied or written
            attempts += 1
            now = _monotonic()
            if attempts == 1:
                deadline = now + self.retry_budget
            if now >= deadline:
                if name is not None:
                    what = f"{what} {name!r}"
                raise RedisUnavailable(
                    f"Redis at {pool.spec.describe()} is unavailable for {what}: {error!r} "
                    f"(gave up after {attempts} attempt(s) in {self.retry_budget:g}s)"
                ) from error
            if attempts > 1:
                await anyio.sleep(min(delay, deadline - now) * random.uniform(0.8, 1.0))
                delay = min(delay * 2, self.backoff_max)

    async def _cluster_command(
        self,
        router: ClusterRouter,
        target: Target,
        args: tuple[Any, ...],
        what: str,
        name: str | None = None,
        dedupe: int = -1,
    ) -> Any:
        """:meth:`_command` for a cluster: run ``args`` on the master serving
        ``target`` (redirects, failovers and retries are the router's, within
        the same ``retry_budget``). ``dedupe`` as for :meth:`_command`; the
        router's :class:`~.cluster.ClusterUnavailable` becomes
        :class:`RedisUnavailable`, error replies are raised."""

        def build(maybe_applied: bool) -> tuple[Any, ...]:
            if maybe_applied and dedupe >= 0:
                return (*args[:dedupe], b"1", *args[dedupe + 1 :])
            return args

        try:
            return await router.execute(target, build)
        except ClusterUnavailable as exc:
            if name is not None:
                what = f"{what} {name!r}"
            raise RedisUnavailable(f"Redis Cluster is unavailable for {what}: {exc}") from exc

    # -- readiness and metrics --------------------------------------------------------------

    async def ping(self) -> None:
        """``PING`` every server (for a cluster: every master) over this event
        loop's own connections (for readiness checks). Raises
        :class:`RedisUnavailable` naming the server that did not answer; see
        :func:`~.ping.ping_servers`."""
        state = self._state()
        pools = state.pools
        if state.router is not None:
            try:
                topology = await state.router.refresh()
            except ClusterUnavailable as exc:
                raise RedisUnavailable(str(exc)) from exc
            pools = [state.router.pool(address) for address in topology.masters]
        await ping_servers(
            pools,
            Pool.lease,
            socket_timeout=self.socket_timeout,
            failures=FAILURES,
            unavailable=RedisUnavailable,
        )

    def _outage_metrics(self, states: list[S]) -> dict[str, float]:
        """How many servers are down as this process's loops see them, and for how long."""
        down = [outage.seconds() for state in states for outage in state.outages() if outage.since]
        return {"redis_unavailable": len(down), "redis_unavailable_seconds": sum(down)}
