"""Connections to one Redis server from one event loop, shared by both Redis layers.

A :class:`Pool` holds the idle connections to one server, caps how many are
busy with ordinary commands at once, and remembers whether the server is
down (for the "unreachable" and "reachable again" log lines, and the
metrics). Both layers keep one pool per server per event loop: anyio streams
only work in the loop that made them.

Also here: what counts as a failure worth retrying (a broken connection, an
unreachable Sentinel, or an error reply that means "not now"), and
:class:`RedisUnavailable`, which callers get when retrying did not help.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ... import metrics
from .hosts import HostSpec, SentinelError, ServerTime, named_master, open_connection
from .protocol import CONNECTION_ERRORS, Connection, ReplyError

__all__ = [
    "FAILURES",
    "FAILURES_OR_REPLIES",
    "TRANSIENT_REPLIES",
    "Outage",
    "Pool",
    "RedisUnavailable",
    "Transient",
    "loop_is_dead",
]

logger = logging.getLogger("channels_runtime.layers.redis")

_monotonic = time.monotonic

#: Error replies that mean "not now" rather than "wrong": the command was not
#: run, so it is safe to retry, on a fresh connection (a READONLY replica is
#: what a failed-over master looks like before Sentinel has told us, and
#: UNBLOCKED is what a waiting BLPOP gets when its master is made a replica;
#: NOREPLICAS is a master configured with ``min-replicas-to-write`` that has
#: lost its replicas, as an old master has once Sentinel moved them away).
#: The connection that got one is discarded with every idle one to that
#: server, so the retry connects afresh, asking the sentinels again.
TRANSIENT_REPLIES = frozenset(
    {"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "BUSY", "UNBLOCKED", "NOREPLICAS"}
)


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, or the connection broke, within the layer's
    retry budget. The operation may not have happened; a ``send`` that was
    written before the connection broke may or may not have been queued."""


class Transient(Exception):
    """A transient error reply, raised as a connection problem."""


#: What a caller retries (with a fresh connection) rather than reports at once.
FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, SentinelError, Transient)
FAILURES_OR_REPLIES: tuple[type[BaseException], ...] = (*FAILURES, ReplyError)


def loop_is_dead(token: Any) -> bool:
    """Whether the event loop behind an anyio native token has finished.

    Duck-typed so no event-loop library is imported here: an asyncio loop has
    ``is_closed()``; a trio token's ``run_sync_soon`` raises ``RunFinishedError``
    (a ``RuntimeError``) once its run is over.
    """
    is_closed = getattr(token, "is_closed", None)
    if is_closed is not None:
        return bool(is_closed())
    run_sync_soon = getattr(token, "run_sync_soon", None)
    if run_sync_soon is not None:
        try:
            run_sync_soon(lambda: None)
        except RuntimeError:
            return True
    return False


class Outage:
    """Whether one server is down as one event loop sees it, and since when.

    Logs once when an outage starts and once when it ends. The duration
    reported runs from the first failure to the first success, which is when
    a connection to the server was opened (``reached``) and no failure came
    after it: a caller learns that its command succeeded later, sometimes
    much later (a ``BLPOP`` returns when a message comes or its timeout is
    up), and counting to then would report an outage longer than it was.
    """

    __slots__ = ("owner", "since", "up_at", "where")

    def __init__(self, owner: Any, where: str) -> None:
        self.owner = owner  # whose metrics count reconnections
        self.where = where
        #: Monotonic time of the first failure of the current outage, or None.
        self.since: float | None = None
        #: When the server was reached again in this outage, if it was.
        self.up_at: float | None = None

    def failed(self, exc: BaseException) -> None:
        """Note a failure, logging it if it starts an outage."""
        if self.begin():
            self.announce(exc)

    def begin(self) -> bool:
        """Note that the server is down; True if that starts an outage."""
        self.up_at = None  # a success before this failure did not end the outage
        if self.since is not None:
            return False
        self.since = _monotonic()
        return True

    def reached(self) -> None:
        """A connection to the server was just opened."""
        if self.since is not None and self.up_at is None:
            self.up_at = _monotonic()

    def announce(self, exc: BaseException) -> None:
        logger.warning(
            "Redis at %s is unreachable (%r); receivers will keep retrying", self.where, exc
        )

    def ended(self, detail: str = "") -> float | None:
        """Note a success; returns how long the outage lasted (to when the
        server was first reached again), or None if there was none."""
        since = self.since
        if since is None:
            return None
        up_at = self.up_at
        self.since = self.up_at = None
        lasted = max(0.0, (_monotonic() if up_at is None else up_at) - since)
        logger.warning("Redis at %s is reachable again after %.1fs%s", self.where, lasted, detail)
        if metrics.enabled:
            metrics.layers.reconnected(self.owner, lasted)
        return lasted

    def moved_on(self, to: str) -> None:
        """End the outage of a cluster node that is not used any more: its
        slots are served by ``to`` now (a replica took over). Counted as a
        reconnection, after as long as the node's callers were without it."""
        since = self.since
        if since is None:
            return
        self.since = self.up_at = None
        lasted = _monotonic() - since
        logger.warning(
            "Redis at %s has been replaced after %.1fs: its slots are served by %s now",
            self.where,
            lasted,
            to,
        )
        if metrics.enabled:
            metrics.layers.reconnected(self.owner, lasted)

    def seconds(self) -> float:
        return 0.0 if self.since is None else _monotonic() - self.since


class Pool:
    """One Redis server as seen from one event loop: its idle connections, the
    cap on connections busy with ordinary commands, and its clock offset.

    Blocking reads (``BLPOP``) get connections outside the cap: each waits for
    as long as its receiver does, so counting them would let idle receivers
    starve senders. After any connection failure the pool's generation moves on
    and every connection of the old generation is closed instead of reused:
    they very likely point at the same dead server process.

    ``on_open``, if set, runs on every new connection before it is used
    (the layers check there whether the server has lost its data).

    **Sentinel.** A connection goes to the master a sentinel named when it
    was opened. After a switchover (``SENTINEL FAILOVER``) the old master
    keeps running, and accepts writes, until Sentinel demotes it seconds
    later: writes in between are lost. So while connections are being taken,
    the pool asks a sentinel at most every ``sentinel_check_interval`` seconds
    which server is the master now (one short connection to the sentinel, in
    the caller's task), and when that is not the one its connections lead to,
    retires them all: idle ones are closed, busy ones shut down (their
    commands fail and are retried, on a connection to the new master).
    """

    #: How often (at most) a Sentinel pool checks that its master is still the one.
    sentinel_check_interval: float = 0.5

    __slots__ = (
        "busy",
        "clock",
        "connect_timeout",
        "epoch",
        "generation",
        "idle",
        "index",
        "limit",
        "master",
        "on_open",
        "open",
        "outage",
        "queue",
        "spec",
        "watch_due",
        "watched",
    )

    def __init__(
        self,
        owner: Any,
        index: int,
        spec: HostSpec,
        limit: int,
        clock: ServerTime,
        connect_timeout: float,
    ) -> None:
        self.index = index
        self.spec = spec
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()
        self.busy = 0
        self.limit = spec.max_connections or limit
        self.queue: deque[anyio.Event] = deque()
        self.generation = 0
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.outage = Outage(owner, spec.describe())
        #: What the server's data was last seen to be (see ``on_open``).
        self.epoch: bytes | None = None
        self.on_open: Callable[[Pool, Connection], Awaitable[None]] | None = None
        #: Sentinel: the master this pool's connections lead to, and when to
        #: check next that it still is the master.
        self.watched = bool(spec.sentinels)
        self.master: tuple[str, int] | None = None
        self.watch_due = 0.0

    async def lease(self) -> Connection:
        """A connection for one ordinary command (waits while the cap is reached)."""
        if self.busy >= self.limit:
            await self._wait_turn()
        self.busy += 1
        idle = self.idle
        if idle and idle[-1].generation == self.generation and not self.watched:
            return idle.pop()  # the usual case, without another coroutine
        try:
            if self.watched and self.watch_due <= _monotonic():
                await self._watch()
            return await self._take()
        except BaseException:
            self._done()
            raise

    async def lease_blocking(self) -> Connection:
        """A connection for a blocking read, not counted against the cap."""
        if self.watched and self.watch_due <= _monotonic():
            await self._watch()
        return await self._take()

    async def _watch(self) -> None:
        """Ask a sentinel which server is the master; retire this pool's
        connections if they lead to another one."""
        self.watch_due = _monotonic() + self.sentinel_check_interval
        master = self.master
        if master is None:
            return  # nothing open: the next connection asks the sentinels anyway
        try:
            named = await named_master(self.spec, self.connect_timeout)
        except FAILURES_OR_REPLIES:
            return  # the sentinels are not answering: the connections will tell
        if named == master or self.master != master:
            return
        logger.warning(
            "Sentinel names %s:%d as master %r now, not %s:%d: leaving the old master",
            *named,
            self.spec.master_name,
            *master,
        )
        self.master = None
        self.generation += 1
        stale, self.idle = self.idle, []
        for conn in self.open:
            if conn.generation < self.generation and conn not in stale:
                conn.shutdown()
        await self._close(stale)

    async def _take(self) -> Connection:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.generation == self.generation:
                return conn
            await self._close([conn])
        conn = await open_connection(self.spec, self.generation, self.clock, self.connect_timeout)
        self.open.add(conn)
        self.outage.reached()
        if conn.address is not None:
            self.master = conn.address
        if self.on_open is not None:
            try:
                await self.on_open(self, conn)
            except BaseException:
                await self._close([conn])
                raise
        return conn

    async def _close(self, conns: list[Connection]) -> None:
        """Close connections without waiting on their peers; shielded, so that a
        cancellation arriving meanwhile cannot leave some of them open."""
        with anyio.CancelScope(shield=True):
            for conn in conns:
                self.open.discard(conn)
                await conn.aclose()

    def abandon(self) -> None:
        """The event loop these connections belong to has ended without
        ``close()``: they cannot be closed the normal way any more, so shut their
        sockets down, which makes the server drop them at once."""
        for conn in self.open:
            conn.abandon()
        self.open.clear()
        self.idle.clear()

    async def _wait_turn(self) -> None:
        while self.busy >= self.limit:
            event = anyio.Event()
            self.queue.append(event)
            try:
                await event.wait()
            except BaseException:
                try:
                    self.queue.remove(event)
                except ValueError:
                    # We were woken and are leaving: wake the next in line instead.
                    self._wake_next()
                raise

    def _wake_next(self) -> None:
        if self.queue and self.busy < self.limit:
            self.queue.popleft().set()

    def _done(self) -> None:
        self.busy -= 1
        self._wake_next()

    async def release(self, conn: Connection, *, blocking: bool = False) -> None:
        """Take back a connection whose last reply was read in full."""
        if not blocking:
            self._done()
        if conn.generation == self.generation and len(self.idle) < self.limit:
            self.idle.append(conn)
        else:
            await self._close([conn])

    async def discard(
        self, conn: Connection, *, blocking: bool = False, fault: bool = True
    ) -> None:
        """Close a connection that cannot be reused. With ``fault``, it broke:
        retire every idle connection of its generation as well."""
        if not blocking:
            self._done()
        stale = [conn]
        if fault and conn.generation == self.generation:
            self.generation += 1
            stale += self.idle
            self.idle = []
        await self._close(stale)

    async def close(self) -> None:
        """Close idle connections; busy ones are closed when they come back."""
        self.generation += 1
        stale, self.idle = self.idle, []
        await self._close(stale)

    def recovered(self) -> None:
        """A command succeeded: end the outage, if any."""
        if self.outage.since is not None:
            self.outage.ended()
