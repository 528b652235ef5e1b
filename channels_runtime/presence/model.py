"""What presence reports: members, per-user aggregates, and the event messages.

Kept apart from the stores so both backends build exactly the same values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Member", "UserPresence", "aggregate_users", "encode_body", "event", "events_group"]

#: Suffix of the group that carries a group's ``presence.join``/``presence.leave``.
EVENTS_SUFFIX = ".presence"


@dataclass(frozen=True)
class Member:
    """One connection present in a group.

    ``since`` is wall-clock seconds (``time.time()``; on Redis the server's
    clock) when it joined; ``user`` is the key connections are aggregated by
    (``None`` for an anonymous connection); ``meta`` is what the joiner gave.
    """

    channel: str
    user: str | None
    meta: Any
    since: float

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "user": self.user, "meta": self.meta, "since": self.since}


@dataclass(frozen=True)
class UserPresence:
    """The connections of one user in a group (two tabs: two members, one user)."""

    user: str | None
    members: list[Member] = field(default_factory=list)

    @property
    def since(self) -> float:
        """When the user's earliest present connection joined."""
        return min(member.since for member in self.members)


def events_group(group: str) -> str:
    """The layer group whose members receive ``group``'s presence events.

    A companion group rather than ``group`` itself, so that a consumer in
    ``group`` that did not ask for presence events never receives a message
    type it has no handler for (which would end it with ``ValueError``).
    """
    return group + EVENTS_SUFFIX


def encode_body(user: str | None, meta: Any) -> str:
    """The stored form of a member's user and meta (JSON, compact).

    Raises ``TypeError`` at join time for a meta JSON cannot carry, rather
    than failing later in some other process that reads it.
    """
    if user is not None and not isinstance(user, str):
        raise TypeError(f"user must be a string or None, got {user!r}")
    try:
        return json.dumps({"u": user, "m": meta}, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"presence meta must be JSON-serialisable: {exc}") from None


def decode_body(channel: str, body: str | bytes, since: float) -> Member:
    data = json.loads(body)
    return Member(channel=channel, user=data["u"], meta=data["m"], since=since)


def event(kind: str, group: str, member: Member, reason: str | None = None) -> dict[str, Any]:
    """A ``presence.join`` or ``presence.leave`` message (``kind`` is "join"/"leave")."""
    message: dict[str, Any] = {"type": f"presence.{kind}", "group": group, **member.as_dict()}
    if reason is not None:
        message["reason"] = reason
    return message


def aggregate_users(members: list[Member]) -> list[UserPresence]:
    """Group ``members`` by user, earliest first; each anonymous member stands alone."""
    by_user: dict[str | None, UserPresence] = {}
    out: list[UserPresence] = []
    for member in sorted(members, key=lambda m: (m.since, m.channel)):
        if member.user is None:
            out.append(UserPresence(None, [member]))
            continue
        entry = by_user.get(member.user)
        if entry is None:
            entry = by_user[member.user] = UserPresence(member.user, [])
            out.append(entry)
        entry.members.append(member)
    return out
