"""The group memberships one event loop of a process has made, and until when.

Redis holds the list layer's groups, and a Redis that restarts without
persistence (or is flushed) forgets them, while the consumers that joined
stay connected and wait for messages that will never come. So each loop
also remembers what it added, with the local deadline of each membership
(``group_expiry`` after it was last added), and can add it all again with
what is left of each deadline. That is the process's own view: memberships
other processes made are theirs to restore.

Memberships that have expired are dropped in passing, amortised over the
``joined`` calls that made them, so the record stays proportional to the live
memberships, not to every ``group_add`` ever made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["Memberships"]


class Memberships:
    """group -> {channel: monotonic deadline}, for one event loop."""

    __slots__ = ("_adds", "count", "groups")

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, float]] = {}
        self.count = 0
        self._adds = 0

    def joined(self, group: str, channel: str, until: float, now: float) -> None:
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = {}
        if channel not in members:
            self.count += 1
        members[channel] = until
        self._adds += 1
        if self._adds >= max(1024, self.count):
            self._adds = 0
            self._drop_expired(now)

    def left(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is not None and members.pop(channel, None) is not None:
            self.count -= 1
            if not members:
                del self.groups[group]

    def clear(self) -> None:
        self.groups.clear()
        self.count = 0
        self._adds = 0

    def live(
        self, now: float, wanted: Callable[[str], bool]
    ) -> Iterator[tuple[str, list[tuple[str, float]]]]:
        """``(group, [(channel, seconds left), ...])`` for each group ``wanted``
        accepts that still has unexpired members."""
        for group, members in self.groups.items():
            if not wanted(group):
                continue
            left = [(channel, until - now) for channel, until in members.items() if until > now]
            if left:
                yield group, left

    def _drop_expired(self, now: float) -> None:
        for group in list(self.groups):
            for channel, until in list(self.groups[group].items()):
                if until <= now:
                    self.left(group, channel)
