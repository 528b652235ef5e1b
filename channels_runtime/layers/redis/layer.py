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
* readiness (``ping``) and the outage figures for the metrics.
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
from .connections import FAILURES, Outage, Pool, RedisUnavailable, Transient, loop_is_dead
from .connections import TRANSIENT_REPLIES as _TRANSIENT_REPLIES
from .hosts import ServerTime, describe_all
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
    """What a layer keeps for one event loop: at least a connection pool per server."""

    __slots__ = ("__weakref__", "pools", "token_ref")

    def __init__(self, layer: RedisLayer[Any], token: Any) -> None:
        self.token_ref = weakref.ref(token)
        self.pools = [
            Pool(layer, i, spec, layer.max_connections, layer._clocks[i], layer.connect_timeout)
            for i, spec in enumerate(layer.hosts)
        ]

    def outages(self) -> Iterator[Outage]:
        """The servers as this loop sees them (for the metrics)."""
        for pool in self.pools:
            yield pool.outage

    def abandon(self) -> None:
        """The loop has ended without ``close()``: shut its sockets down."""
        for pool in self.pools:
            pool.abandon()


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
        BaseChannelLayer.__init__(
            self, expiry=expiry, capacity=capacity, channel_capacity=channel_capacity
        )
        self._configure_redis(
            hosts=hosts,
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hosts=[{describe_all(self.hosts)}], prefix={self.prefix!r})"

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

    # -- readiness and metrics --------------------------------------------------------------

    async def ping(self) -> None:
        """``PING`` every server over this event loop's own connections (for
        readiness checks). Raises :class:`RedisUnavailable` naming the server
        that did not answer; see :func:`~.ping.ping_servers`."""
        await ping_servers(
            self._state().pools,
            Pool.lease,
            socket_timeout=self.socket_timeout,
            failures=FAILURES,
            unavailable=RedisUnavailable,
        )

    def _outage_metrics(self, states: list[S]) -> dict[str, float]:
        """How many servers are down as this process's loops see them, and for how long."""
        down = [outage.seconds() for state in states for outage in state.outages() if outage.since]
        return {"redis_unavailable": len(down), "redis_unavailable_seconds": sum(down)}
