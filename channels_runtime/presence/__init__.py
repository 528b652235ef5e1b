"""Presence: who is in a group, with ``presence.join``/``presence.leave`` events.

Functions that take the channel layer, next to its ``group_add``/``group_send``::

    from channels_runtime import presence

    await presence.join(self.channel_layer, "room", self.channel_name, {"name": "ann"}, user="7")
    members = await presence.members(self.channel_layer, "room")
    await presence.leave(self.channel_layer, "room", self.channel_name)

Functions rather than layer methods, so that a layer class (ours, Channels',
a third party's) keeps the contract of :class:`~channels_runtime.layers.base.BaseChannelLayer`
and presence stays one optional module on top of it. Each layer instance has
one :class:`Presence` (see :func:`presence_for`), configured from the
``CHANNELS_PRESENCE`` Django setting. ``docs/presence.md`` has the guarantees.
"""

from __future__ import annotations

import weakref
from typing import Any

from .consumer import PresenceMixin, SyncPresenceMixin
from .model import Member, UserPresence, events_group
from .tracker import DEFAULT_LEASE_SECONDS, Presence

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "Member",
    "Presence",
    "PresenceMixin",
    "SyncPresenceMixin",
    "UserPresence",
    "configure",
    "count",
    "events_group",
    "join",
    "leave",
    "members",
    "presence_for",
    "users",
]

_trackers: weakref.WeakKeyDictionary[Any, Presence] = weakref.WeakKeyDictionary()


def _settings() -> dict[str, Any]:
    from django.conf import settings

    if not settings.configured:
        return {}
    value = getattr(settings, "CHANNELS_PRESENCE", None) or {}
    if not isinstance(value, dict):
        raise TypeError(f"CHANNELS_PRESENCE must be a dict, got {value!r}")
    unknown = set(value) - {"lease_seconds", "heartbeat_seconds"}
    if unknown:
        raise ValueError(f"CHANNELS_PRESENCE has unknown keys: {', '.join(sorted(unknown))}")
    return value


def presence_for(layer: Any) -> Presence:
    """The :class:`Presence` of ``layer``, made on first use from ``CHANNELS_PRESENCE``."""
    tracker = _trackers.get(layer)
    if tracker is None:
        tracker = _trackers[layer] = Presence(layer, **_settings())
    return tracker


def configure(
    layer: Any,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    heartbeat_seconds: float | None = None,
) -> Presence:
    """Give ``layer`` a :class:`Presence` with these timings (before it is used)."""
    tracker = _trackers[layer] = Presence(
        layer, lease_seconds=lease_seconds, heartbeat_seconds=heartbeat_seconds
    )
    return tracker


async def join(
    layer: Any,
    group: str,
    channel: str,
    meta: Any = None,
    *,
    user: str | None = None,
    events: bool = True,
) -> Member:
    """Make ``channel`` present in ``group`` (see :meth:`Presence.join`)."""
    return await presence_for(layer).join(group, channel, meta, user=user, events=events)


async def leave(layer: Any, group: str, channel: str) -> Member | None:
    """Take ``channel`` out of ``group``'s presence (see :meth:`Presence.leave`)."""
    return await presence_for(layer).leave(group, channel)


async def members(layer: Any, group: str) -> list[Member]:
    """The members of ``group``, earliest first."""
    return await presence_for(layer).members(group)


async def count(layer: Any, group: str) -> int:
    """How many connections are present in ``group``."""
    return await presence_for(layer).count(group)


async def users(layer: Any, group: str) -> list[UserPresence]:
    """The members of ``group`` aggregated per user (two tabs, one user)."""
    return await presence_for(layer).users(group)
