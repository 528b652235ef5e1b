"""Presence for the in-memory layer: a dict per group, in the layer's process.

Everything lives and dies with the process, so there is nothing to lease or
sweep: a member is present from ``join`` until ``leave`` (the consumer
integration leaves on disconnect and on teardown, errors included). Like the
layer it serves, it is meant for one event loop at a time.
"""

from __future__ import annotations

import time
from typing import Any

from .model import Member, decode_body, encode_body

__all__ = ["MemoryStore"]


class MemoryStore:
    """``{group: {channel: Member}}``; every call touches one group only."""

    needs_keeper = False

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, Member]] = {}

    async def join(
        self, group: str, channel: str, user: str | None, meta: Any, since: float | None
    ) -> tuple[Member, bool]:
        # Round-trip through JSON so readers get the copy Redis would give them,
        # and the joiner's later edits to ``meta`` do not show.
        body = encode_body(user, meta)
        member = decode_body(channel, body, time.time() if since is None else since)
        self._groups.setdefault(group, {})[channel] = member
        return member, False

    async def leave(self, group: str, channel: str) -> Member | None:
        members = self._groups.get(group)
        if not members:
            return None
        member = members.pop(channel, None)
        if not members:
            del self._groups[group]
        return member

    async def members(self, group: str) -> list[Member]:
        return list((self._groups.get(group) or {}).values())

    async def count(self, group: str) -> int:
        return len(self._groups.get(group) or ())

    async def heartbeat(self) -> tuple[bool, list[tuple[str, Member]]]:
        return False, []

    async def close(self) -> None:
        """Nothing to release: the dicts go with the store."""
