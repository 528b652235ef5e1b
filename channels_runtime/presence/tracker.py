"""The presence of one channel layer: joins, leaves, queries, events, and the keeper.

**Who renews the leases.** On Redis a process must keep saying it is alive
(see :mod:`.redis`), and that needs a task that wakes every
``heartbeat_seconds``. The Redis layers have no background task: their work
runs in callers' tasks. Presence follows the same rule with one difference a
heartbeat forces: the task is started in a task group somebody already owns.
Whoever tracks presence registers a *host* (the consumer integration registers
the consumer's own task group for as long as the connection lives;
:meth:`Presence.hosting` opens one for scripts and tests). One host per event
loop runs the keeper; when that host ends, the keeper's ``finally`` hands the
role to another live host, as the layers' readers pass the reader role on. So
the heartbeat always belongs to a live task group, is cancelled with it, and
nothing runs once the last host has gone, at which point the loop holds no
members that need a lease either: every member joined under a host.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ..layers.redis.core import RedisUnavailable
from .memory import MemoryStore
from .model import Member, UserPresence, aggregate_users, event, events_group
from .redis import RedisStore

__all__ = ["Presence"]

logger = logging.getLogger("channels_runtime.presence")

#: Default seconds without a heartbeat before a process's members are dead.
DEFAULT_LEASE_SECONDS = 15.0


class _Loop:
    """Per event loop: the hosts, the keeper's host, the members joined here."""

    def __init__(self) -> None:
        self.hosts: list[anyio.abc.TaskGroup] = []
        self.keeper: anyio.abc.TaskGroup | None = None
        #: (group, channel) -> (member, receives events)
        self.local: dict[tuple[str, str], tuple[Member, bool]] = {}
        self.beats = 0


def _make_store(layer: Any, lease_seconds: float) -> MemoryStore | RedisStore:
    from ..layers.inmemory import InMemoryChannelLayer
    from ..layers.redis.settings import RedisSettings

    if isinstance(layer, InMemoryChannelLayer):
        return MemoryStore()
    if isinstance(layer, RedisSettings):
        if getattr(layer, "cluster", None) is not None:
            # Its scripts name keys built from their arguments (a dead lease's
            # members), which a cluster refuses: say so now, not as CROSSSLOT later.
            raise NotImplementedError(
                "presence does not support a Redis Cluster yet (its scripts touch keys "
                "in several slots): use it with the in-memory layer or a non-cluster "
                "Redis layer (docs/presence.md)"
            )
        return RedisStore(layer, lease_seconds)
    raise TypeError(
        f"presence supports the in-memory and Redis channel layers, not {type(layer).__qualname__}"
    )


class Presence:
    """Presence for one channel layer instance (get it with :func:`presence_for`).

    ``lease_seconds`` bounds how long the members of a process that died
    without leaving stay listed; ``heartbeat_seconds`` (default a third of the
    lease) is how often a live process renews its lease and reaps dead ones.
    """

    def __init__(
        self,
        layer: Any,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float | None = None,
    ) -> None:
        if heartbeat_seconds is None:
            heartbeat_seconds = lease_seconds / 3
        for name, value in (
            ("lease_seconds", lease_seconds),
            ("heartbeat_seconds", heartbeat_seconds),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(f"presence {name} must be a positive number, got {value!r}")
        if heartbeat_seconds >= lease_seconds:
            raise ValueError(
                f"presence heartbeat_seconds ({heartbeat_seconds}) must be shorter than "
                f"lease_seconds ({lease_seconds}), or live processes would expire"
            )
        self.layer = layer
        self.lease_seconds = float(lease_seconds)
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.store = _make_store(layer, self.lease_seconds)
        self._loops: dict[tuple[int, Any], _Loop] = {}

    def _loop(self) -> _Loop:
        key = (os.getpid(), anyio.lowlevel.current_token().native_token)
        loop = self._loops.get(key)
        if loop is None:
            loop = self._loops[key] = _Loop()
        return loop

    # -- membership ------------------------------------------------------------

    async def join(
        self,
        group: str,
        channel: str,
        meta: Any = None,
        *,
        user: str | None = None,
        events: bool = True,
    ) -> Member:
        """Make ``channel`` present in ``group`` with ``meta``; tell the group.

        With ``events`` (the default) ``channel`` also receives the group's
        ``presence.join``/``presence.leave`` messages, its own join included.
        Joining again replaces the meta and keeps the member listed.
        """
        layer = self.layer
        layer.require_valid_group_name(group)
        layer.require_valid_group_name(events_group(group))
        layer.require_valid_channel_name(channel)
        loop = self._loop()
        if self.store.needs_keeper and not loop.hosts:
            raise RuntimeError(
                "presence.join on a Redis layer needs a live host to renew its lease: "
                "use PresenceMixin on the consumer, or `async with presence_for(layer).hosting():`"
            )
        if events:
            await layer.group_add(events_group(group), channel)
        previous = loop.local.get((group, channel))
        member, lost = await self.store.join(
            group, channel, user, meta, previous[0].since if previous else None
        )
        loop.local[(group, channel)] = (member, events)
        if lost:
            await self._rejoin(loop, skip=(group, channel))
        await self._announce(group, event("join", group, member))
        return member

    async def leave(self, group: str, channel: str) -> Member | None:
        """Take ``channel`` out of ``group``'s presence and tell the group.

        Returns the member that left, or ``None`` if it was not present (never
        joined, left already, or reaped after its process was thought dead).
        """
        self.layer.require_valid_group_name(group)
        loop = self._loop()
        entry = loop.local.pop((group, channel), None)
        member = await self.store.leave(group, channel)
        if entry is not None and entry[1]:
            await self.layer.group_discard(events_group(group), channel)
        if member is not None:
            await self._announce(group, event("leave", group, member, "left"))
        return member

    async def members(self, group: str) -> list[Member]:
        """The members of ``group``, earliest first (O(members of the group))."""
        self.layer.require_valid_group_name(group)
        return sorted(await self.store.members(group), key=lambda m: (m.since, m.channel))

    async def count(self, group: str) -> int:
        """How many connections are present in ``group``."""
        self.layer.require_valid_group_name(group)
        return await self.store.count(group)

    async def users(self, group: str) -> list[UserPresence]:
        """The members of ``group`` aggregated per user, earliest first."""
        return aggregate_users(await self.members(group))

    async def _announce(self, group: str, message: dict[str, Any]) -> None:
        await self.layer.group_send(events_group(group), message)

    # -- hosts and the keeper --------------------------------------------------------

    @asynccontextmanager
    async def hosting(self) -> AsyncIterator[None]:
        """Host the keeper in a task group of this block, for code that is not a
        tracked consumer (a script, a test, a long-running worker)."""
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            self.add_host(tg)
            try:
                yield
            except Exception as exc:
                failure = exc  # re-raised below as itself, not in an ExceptionGroup
            finally:
                self.remove_host(tg)
                tg.cancel_scope.cancel()
        if failure is not None:
            try:
                raise failure
            finally:
                failure = None

    def add_host(self, tg: anyio.abc.TaskGroup) -> None:
        """Offer ``tg`` (a task group its owner keeps open) to run the keeper in."""
        loop = self._loop()
        loop.hosts.append(tg)
        self._ensure_keeper(loop)

    def remove_host(self, tg: anyio.abc.TaskGroup) -> None:
        """Withdraw ``tg``; call before cancelling it, so the keeper moves elsewhere."""
        loop = self._loop()
        try:
            loop.hosts.remove(tg)
        except ValueError:
            pass

    def _ensure_keeper(self, loop: _Loop) -> None:
        if self.store.needs_keeper and loop.keeper is None and loop.hosts:
            host = loop.hosts[0]
            loop.keeper = host
            host.start_soon(self._keep, loop, host, name="presence keeper")

    async def _keep(self, loop: _Loop, host: anyio.abc.TaskGroup) -> None:
        try:
            while True:
                try:
                    await self.beat()
                except (RedisUnavailable, OSError) as exc:
                    logger.warning("presence heartbeat failed (%r); retrying", exc)
                await anyio.sleep(self.heartbeat_seconds)
        finally:
            if loop.keeper is host:
                loop.keeper = None
                self._ensure_keeper(loop)

    async def beat(self) -> None:
        """One heartbeat: renew this loop's lease, write members back if Redis
        lost them, and announce the members of dead processes as left."""
        loop = self._loop()
        lost, reaped = await self.store.heartbeat()
        loop.beats += 1
        if lost:
            await self._rejoin(loop)
        for group, member in reaped:
            try:
                await self.layer.group_discard(events_group(group), member.channel)
                await self._announce(group, event("leave", group, member, "expired"))
            except Exception:
                logger.exception(
                    "presence: announcing that %s left %s failed", member.channel, group
                )

    async def _rejoin(self, loop: _Loop, skip: tuple[str, str] | None = None) -> None:
        """Redis forgot this process: write its members back and re-announce them."""
        entries = [(key, value) for key, value in loop.local.items() if key != skip]
        if not entries:
            return
        logger.warning(
            "presence: Redis lost this process's lease; re-announcing %d members", len(entries)
        )
        assert isinstance(self.store, RedisStore)
        await self.store.rejoin([(group, member) for (group, _), (member, _) in entries])
        for (group, channel), (member, events) in entries:
            if events:
                await self.layer.group_add(events_group(group), channel)
            await self._announce(group, event("join", group, member))

    async def close(self) -> None:
        await self.store.close()
