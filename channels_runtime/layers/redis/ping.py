"""``PING`` every Redis server of a layer, for readiness checks.

Both Redis layers answer readiness the same way; only how a connection is
leased differs (the list layer's shards, the pub/sub layer's publishing
pools), so each passes its own ``lease``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

import anyio

from .hosts import HostSpec
from .protocol import Connection, ReplyError

__all__ = ["ping_servers"]


class Pool(Protocol):
    """What :func:`ping_servers` needs of a server's connection pool."""

    @property
    def spec(self) -> HostSpec: ...

    async def release(self, conn: Connection) -> None: ...

    async def discard(self, conn: Connection, *, fault: bool = True) -> None: ...


P = TypeVar("P", bound=Pool)


async def ping_servers(
    pools: Iterable[P],
    lease: Callable[[P], Awaitable[Connection]],
    *,
    socket_timeout: float,
    failures: tuple[type[BaseException], ...],
    unavailable: type[Exception],
) -> None:
    """``PING`` each pool's server; raise ``unavailable`` naming the first that fails.

    A failed attempt is retried once, at once, on a fresh connection: a pooled
    one may predate a Redis restart, which ordinary commands also shrug off.
    There is no backoff and no retry budget; the caller bounds the time
    (``socket_timeout`` bounds each reply).
    """
    for pool in pools:
        error: BaseException | None = None
        for _attempt in range(2):
            try:
                conn = await lease(pool)
            except failures as exc:
                error = exc
                continue
            try:
                with anyio.fail_after(socket_timeout):
                    reply = await conn.request("PING")
            except failures as exc:
                await pool.discard(conn)
                error = exc
                continue
            except BaseException:
                await pool.discard(conn, fault=False)
                raise
            await pool.release(conn)
            if not isinstance(reply, ReplyError):
                error = None
                break
            error = reply
        if error is not None:
            raise unavailable(
                f"Redis at {pool.spec.describe()} did not answer PING: {error!r}"
            ) from error
