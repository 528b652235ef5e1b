"""Connections to one cluster node, as one event loop sees them.

The same rules as the standalone layers' pools: ordinary commands lease a
connection under a cap (``max_connections``) so a burst waits rather than
opening hundreds of sockets; blocking reads (``BLPOP``, a subscribed
connection) lease outside the cap, so idle receivers cannot starve senders;
after a connection breaks, the pool's generation moves on and every older
connection is closed instead of reused, as it very likely points at the same
dead process. No task runs in the background: a connection belongs to
whichever task leased it.
"""

from __future__ import annotations

from collections import deque

import anyio

from ..hosts import HostSpec, ServerTime, open_connection
from ..protocol import Connection
from .topology import NodeAddress

__all__ = ["NodePool"]


class NodePool:
    """Idle and open connections to the node at ``address``; ``clock`` is that
    node's offset from our clock (measured whenever a connection opens)."""

    __slots__ = (
        "_queue",
        "address",
        "busy",
        "clock",
        "connect_timeout",
        "generation",
        "idle",
        "limit",
        "open",
        "spec",
    )

    def __init__(
        self, address: NodeAddress, spec: HostSpec, limit: int, connect_timeout: float
    ) -> None:
        self.address = address
        self.spec = spec
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.clock = ServerTime()
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()
        self.busy = 0
        self.generation = 0
        self._queue: deque[anyio.Event] = deque()

    def __repr__(self) -> str:
        return f"<NodePool {self.address} busy={self.busy} idle={len(self.idle)}>"

    async def lease(self) -> Connection:
        """A connection for ordinary commands; waits while ``limit`` are busy.
        Give it back with :meth:`release` or :meth:`discard`."""
        while self.busy >= self.limit:
            event = anyio.Event()
            self._queue.append(event)
            try:
                await event.wait()
            except BaseException:
                try:
                    self._queue.remove(event)
                except ValueError:
                    self._wake_next()  # woken while leaving: pass the turn on
                raise
        self.busy += 1
        try:
            return await self._take()
        except BaseException:
            self._done()
            raise

    async def lease_blocking(self) -> Connection:
        """A connection for a blocking read or a subscription, outside the cap
        (release or discard it with ``blocking=True``)."""
        return await self._take()

    async def _take(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if conn.generation == self.generation:
                return conn
            await self._close([conn])
        conn = await open_connection(self.spec, self.generation, self.clock, self.connect_timeout)
        self.open.add(conn)
        return conn

    def _wake_next(self) -> None:
        if self._queue and self.busy < self.limit:
            self._queue.popleft().set()

    def _done(self) -> None:
        self.busy -= 1
        self._wake_next()

    async def release(self, conn: Connection, *, blocking: bool = False) -> None:
        """Take back a connection whose replies were all read."""
        if not blocking:
            self._done()
        if conn.generation == self.generation and len(self.idle) < self.limit:
            self.idle.append(conn)
        else:
            await self._close([conn])

    async def discard(
        self, conn: Connection, *, blocking: bool = False, fault: bool = True
    ) -> None:
        """Close a connection that cannot be reused (cancelled mid-reply, or
        broken). With ``fault`` it broke: retire the idle ones too."""
        if not blocking:
            self._done()
        stale = [conn]
        if fault and conn.generation == self.generation:
            self.generation += 1
            stale += self.idle
            self.idle = []
        await self._close(stale)

    async def _close(self, conns: list[Connection]) -> None:
        # Shielded: a cancellation arriving meanwhile must not leave some open.
        with anyio.CancelScope(shield=True):
            for conn in conns:
                self.open.discard(conn)
                await conn.aclose()

    async def close(self) -> None:
        """Close the idle connections; busy ones are closed when given back."""
        self.generation += 1
        stale, self.idle = self.idle, []
        await self._close(stale)

    def abandon(self) -> None:
        """The event loop has ended without :meth:`close`: shut the sockets
        down so the node drops them now."""
        for conn in self.open:
            conn.abandon()
        self.open.clear()
        self.idle.clear()
