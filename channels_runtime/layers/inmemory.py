"""A channel layer that lives inside one process, for development, tests and
single-process deployments.

It keeps the meaning of Channels' ``InMemoryChannelLayer`` (expiry, capacity,
groups, copy-on-send, at-most-once delivery) but not its costs: Channels scans
every channel and group on each ``receive``/``group_send``, so draining a
10,000-member group is quadratic. Here every operation touches only the channel
or group it names, plus an amortised O(1) share of the expiry bookkeeping:

* each channel is a :class:`_Channel` holding its queued ``(expires_at, message)``
  pairs in arrival order and a FIFO of waiting receivers;
* one time-ordered *timeline* lists channels that need looking at later. Its
  head is checked at the start of every ``receive`` and group operation;
  channels whose turn has come lose their expired messages and, once empty and
  unwatched, are deleted. This sweep is lazy: memory held by abandoned channels
  is given back by the next such operation after it expired, not by a
  background task (there is none, so nothing here belongs to an event loop and
  the layer can outlive one). ``send`` leaves other channels alone, as
  Channels' ``send`` does, so a channel's expired messages stay visible in
  :attr:`~InMemoryChannelLayer.channels` until the next receive, as they do
  there; a send that finds its own channel full drops that channel's expired
  messages before deciding it is full;
* group memberships expire lazily too: when ``group_send`` meets them, and in an
  occasional full pass whose cost is paid for by the ``group_add`` calls that
  created the garbage.

Channels' layer keeps its state in two public dicts, ``channels`` (name to
``asyncio.Queue``) and ``groups`` (group to ``{channel: join time}``), and test
suites read them. Here they are views computed from the tables above when read
(see :class:`ChannelsView` and :class:`GroupsView`): lookup, ``in``, ``len()``,
iteration and ``del`` work as on Channels' dicts. The hot paths keep their own
layout; all they pay for the views is the ``in_flight`` count of :class:`_Channel`.

The layer is not thread-safe: use it from one event loop at a time (``async_to_sync``
called from ``sync_to_async`` code runs on the calling loop, which is fine).
"""

from __future__ import annotations

import random
import string
import time
from collections import deque
from collections.abc import Iterator, Mapping
from copy import deepcopy
from typing import Any

from .. import metrics
from ..compat.wakeup import new_wakeup
from ..exceptions import ChannelFull
from .base import BaseChannelLayer, CapacityPattern, Message

__all__ = ["ChannelsView", "GroupsView", "InMemoryChannelLayer", "QueueView", "copy_message"]

_monotonic = time.monotonic
# Maps each byte to an ASCII letter: ten times cheaper than random.choices.
# 256 isn't a multiple of 52, so 48 letters are 5/4 as likely as the other 4;
# each name still carries over 68 random bits.
_LETTER_TABLE = bytes(ord(string.ascii_letters[i % 52]) for i in range(256))

# Immutable leaf types the fast copy may share instead of copying.
_ATOMIC = frozenset({str, bytes, int, float, bool, type(None)})
# Past this nesting the message is probably cyclic; let deepcopy (which keeps a
# memo) handle it rather than hit the recursion limit.
_MAX_COPY_DEPTH = 100

#: Sweep the groups fully at most once per this many ``group_add`` calls (or per
#: as many as there were live memberships at the last sweep, if more).
_GROUP_SWEEP_MIN = 1024
#: Rebuild the channel dict once it has shrunk to a quarter of its peak, so the
#: table of a burst of abandoned channels is returned too, not just the entries.
_SHRINK_MIN = 4096


class _TooDeep(Exception):
    pass


def _copy_value(value: Any, depth: int) -> Any:
    cls = type(value)
    if cls is dict:
        if depth > _MAX_COPY_DEPTH:
            raise _TooDeep
        depth += 1
        # Copying the whole dict in C and then replacing the few non-leaf values
        # beats building it item by item.
        out = value.copy()
        for k, v in value.items():
            if type(v) not in _ATOMIC:
                out[k] = _copy_value(v, depth)
        return out
    if cls is list or cls is tuple:
        if depth > _MAX_COPY_DEPTH:
            raise _TooDeep
        depth += 1
        items = [v if type(v) in _ATOMIC else _copy_value(v, depth) for v in value]
        return items if cls is list else tuple(items)
    if cls in _ATOMIC:
        return value
    return deepcopy(value)


def copy_message(message: Message) -> Message:
    """Copy ``message`` so that neither the sender nor any other receiver sees a
    receiver's changes to it.

    Messages are almost always JSON-like, and for those a direct recursive copy
    is about four times faster than :func:`copy.deepcopy`. Other types, dict
    subclasses included, go through ``deepcopy``; a nesting deeper than
    ``_MAX_COPY_DEPTH`` (usually a cycle) falls back to ``deepcopy`` of the
    whole message. Unlike ``deepcopy``, one list referenced twice becomes two
    independent lists.
    """
    if type(message) is not dict:
        return deepcopy(message)
    try:
        out = message.copy()
        for k, v in message.items():
            if type(v) not in _ATOMIC:
                out[k] = _copy_value(v, 1)
        return out
    except (_TooDeep, RecursionError):
        return deepcopy(message)


class _Waiter:
    """One blocked ``receive`` call.

    The wake-up is made per call, in the caller's event loop, so no loop-bound
    object survives the call; it is the loop's cheapest one-waiter primitive
    (see :mod:`channels_runtime.compat.wakeup`), not an ``anyio.Event``.
    ``send`` stores the message here before waking the receiver, so a
    receiver that is cancelled after being chosen can give it back.
    """

    __slots__ = ("epoch", "event", "expires_at", "message")

    def __init__(self) -> None:
        self.event = new_wakeup()
        self.message: Message | None = None
        self.expires_at = 0.0
        self.epoch = 0


class _Channel:
    """A channel's queue and waiting receivers.

    Queued messages live in arrival order in a plain list read from ``head``
    onwards (compacted as it is consumed), flattened as ``expires_at, message,
    expires_at, message, ...``: for the common one-message channel this costs a
    fraction of a ``deque``'s 760 bytes, and no tuple per message. Waiting
    receivers are a list too (one is the rule; a list of one is about 90 bytes),
    taken from the front.
    While no receiver is waiting the channel is on the layer's timeline
    (``scheduled``), which is how expired messages and idle channels get
    collected without scanning. ``in_flight`` counts messages handed to a
    receiver that has not resumed yet: in Channels such a message is still in
    the queue, so the ``channels`` view still lists the channel.
    """

    __slots__ = ("capacity", "due", "head", "in_flight", "items", "name", "scheduled", "waiters")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.items: list[Any] = []
        self.head = 0
        self.waiters: list[_Waiter] | None = None
        self.scheduled = False
        self.due = 0.0
        self.in_flight = 0

    def queued(self) -> int:
        """Messages in the queue, expired or not (as a Channels queue's ``qsize``)."""
        return (len(self.items) - self.head) >> 1

    def in_use(self) -> bool:
        """Whether Channels would have this channel in its ``channels`` dict: it
        holds messages (expired ones too, until swept), or a receiver waits on it
        or has been handed a message it has not taken yet."""
        return bool(self.head < len(self.items) or self.waiters or self.in_flight)


class QueueView:
    """A read-only stand-in for the ``asyncio.Queue`` Channels keeps per channel.

    Only the questions tests ask of it: ``qsize()``, ``empty()``, ``full()``
    and ``maxsize``. Counts include messages that have expired but not been
    swept yet, and one handed to a receiver that has not resumed, as a Channels
    queue would hold them.
    """

    __slots__ = ("_channel",)

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    @property
    def maxsize(self) -> int:
        return self._channel.capacity

    def qsize(self) -> int:
        return self._channel.queued() + self._channel.in_flight

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self._channel.capacity

    def __repr__(self) -> str:
        return f"<QueueView {self._channel.name!r} qsize={self.qsize()} maxsize={self.maxsize}>"


class ChannelsView(Mapping[str, QueueView]):
    """``layer.channels``: Channels' ``{name: queue}`` dict, computed on access.

    Lists the channels Channels' dict would hold (see ``_Channel.in_use``):
    a channel whose last message was received drops out, as it does there.
    Reading one name costs a dict lookup; ``len()`` and iteration walk every
    channel the layer tracks, which is fine for tests and never done by the
    layer itself. ``del view[name]`` drops the channel and its queued
    messages; receivers already waiting on it keep waiting for the next
    message sent to that name (in Channels they would wait forever on the
    discarded queue), so such a channel stays listed.
    """

    __slots__ = ("_layer",)

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        self._layer = layer

    def _get(self, name: object) -> _Channel | None:
        try:
            ch = self._layer._channels.get(name)  # type: ignore[call-overload]
        except TypeError:  # unhashable: certainly not a channel
            return None
        return ch if ch is not None and ch.in_use() else None

    def __getitem__(self, name: str) -> QueueView:
        ch = self._get(name)
        if ch is None:
            raise KeyError(name)
        return QueueView(ch)

    def __contains__(self, name: object) -> bool:
        return self._get(name) is not None

    def __iter__(self) -> Iterator[str]:
        # A snapshot: the test may send, receive or delete while iterating.
        return iter([name for name, ch in self._layer._channels.items() if ch.in_use()])

    def __len__(self) -> int:
        return sum(1 for ch in self._layer._channels.values() if ch.in_use())

    def __delitem__(self, name: str) -> None:
        ch = self._get(name)
        if ch is None:
            raise KeyError(name)
        if ch.waiters:
            ch.items = []
            ch.head = 0
        else:
            # Its timeline entry, if any, is skipped by the sweep from now on.
            del self._layer._channels[name]

    def __repr__(self) -> str:
        return f"<ChannelsView {list(self)!r}>"


class GroupMembersView(Mapping[str, float]):
    """``layer.groups[group]``: ``{channel: join time}`` for the group's live members.

    Join times are wall-clock seconds (``time.time()``), as Channels stores
    them. Memberships past ``group_expiry`` are left out, because a
    ``group_send`` would no longer reach them; here they are only swept
    lazily. ``del members[channel]`` is ``group_discard``.
    """

    __slots__ = ("_group", "_layer")

    def __init__(self, layer: InMemoryChannelLayer, group: str) -> None:
        self._layer = layer
        self._group = group

    def _members(self) -> dict[str, float]:
        return self._layer._groups.get(self._group) or {}

    def __getitem__(self, channel: str) -> float:
        until = self._members()[channel]
        now = _monotonic()
        if until <= now:
            raise KeyError(channel)
        return time.time() - (now - (until - self._layer.group_expiry))

    def __iter__(self) -> Iterator[str]:
        now = _monotonic()
        return iter([channel for channel, until in self._members().items() if until > now])

    def __len__(self) -> int:
        now = _monotonic()
        return sum(1 for until in self._members().values() if until > now)

    def __contains__(self, channel: object) -> bool:
        try:
            until = self._members().get(channel)  # type: ignore[call-overload]
        except TypeError:
            return False
        return until is not None and until > _monotonic()

    def __delitem__(self, channel: str) -> None:
        if channel not in self:
            raise KeyError(channel)
        self._layer._drop_member(self._group, channel)

    def __repr__(self) -> str:
        return f"<GroupMembersView {self._group!r} {list(self)!r}>"


class GroupsView(Mapping[str, GroupMembersView]):
    """``layer.groups``: Channels' ``{group: {channel: join time}}`` dict, computed on access.

    Lists the groups with at least one live member (see
    :class:`GroupMembersView`); ``del view[group]`` removes every member.
    """

    __slots__ = ("_layer",)

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        self._layer = layer

    def __getitem__(self, group: str) -> GroupMembersView:
        members = GroupMembersView(self._layer, group)
        if not members:
            raise KeyError(group)
        return members

    def __contains__(self, group: object) -> bool:
        return isinstance(group, str) and bool(GroupMembersView(self._layer, group))

    def __iter__(self) -> Iterator[str]:
        return iter([group for group in self._layer._groups if group in self])

    def __len__(self) -> int:
        return sum(1 for group in self._layer._groups if group in self)

    def __delitem__(self, group: str) -> None:
        if group not in self:
            raise KeyError(group)
        for channel in list(self._layer._groups.get(group) or ()):
            self._layer._drop_member(group, channel)

    def __repr__(self) -> str:
        return f"<GroupsView {list(self)!r}>"


class InMemoryChannelLayer(BaseChannelLayer):
    """Channel layer held in this process's memory.

    ``expiry`` (seconds) bounds how long an undelivered message may wait;
    ``group_expiry`` how long a group membership lasts without a renewing
    ``group_add``; ``capacity`` and ``channel_capacity`` how many undelivered
    messages a channel holds before :class:`~channels_runtime.exceptions.ChannelFull`.
    As in Channels, a channel that has a message expire is removed from every
    group: nobody was receiving on it.
    """

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s): "
                + ", ".join(sorted(kwargs))
            )
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        if group_expiry <= 0:
            raise ValueError(
                f"group_expiry must be a positive number of seconds, got {group_expiry!r}"
            )
        self.group_expiry = group_expiry
        self._epoch = 0
        self._reset({})

    @property
    def channels(self) -> ChannelsView:
        """Channels' ``channels`` dict, as a view: see :class:`ChannelsView`."""
        return ChannelsView(self)

    @property
    def groups(self) -> GroupsView:
        """Channels' ``groups`` dict, as a view: see :class:`GroupsView`."""
        return GroupsView(self)

    def _reset(self, keep: dict[str, _Channel]) -> None:
        """Start from empty, except for channels in ``keep`` (which have waiting
        receivers that should go on waiting)."""
        self._epoch += 1
        self._channels: dict[str, _Channel] = keep
        self._channels_peak = len(keep)
        self._timeline: deque[_Channel] = deque()
        self._groups: dict[str, dict[str, float]] = {}
        # channel -> groups it is in, to drop it from them when its messages expire.
        self._member_of: dict[str, set[str]] = {}
        self._group_sweep_countdown = _GROUP_SWEEP_MIN

    # -- bookkeeping ----------------------------------------------------------

    def _schedule(self, ch: _Channel, due: float) -> None:
        # ``due`` is always "now + expiry", which never precedes an earlier
        # entry's due time, so appending keeps the timeline sorted.
        ch.due = due
        ch.scheduled = True
        self._timeline.append(ch)

    def _create(self, name: str, due: float) -> _Channel:
        # The capacity is fixed here, once, for the channel's lifetime.
        ch = _Channel(name, self.get_capacity(name))
        channels = self._channels
        channels[name] = ch
        if len(channels) > self._channels_peak:
            self._channels_peak = len(channels)
        self._schedule(ch, due)
        return ch

    def _lookup(self, name: str, due: float) -> _Channel:
        try:
            ch = self._channels.get(name)
        except TypeError:  # unhashable: let validation name it
            ch = None
        if ch is None:
            # Only names not seen before are validated: a known one was checked
            # when its channel was made.
            self.require_valid_channel_name(name)
            ch = self._create(name, due)
        return ch

    def _sweep(self, now: float) -> None:
        """Deal with every timeline entry that is due: drop expired messages,
        delete channels nobody uses, re-schedule the rest."""
        timeline = self._timeline
        channels = self._channels
        while timeline and timeline[0].due <= now:
            ch = timeline.popleft()
            ch.scheduled = False
            if ch.waiters or channels.get(ch.name) is not ch:
                # Watched channels are re-scheduled when their last waiter leaves.
                continue
            items = ch.items
            head = ch.head
            end = len(items)
            start = head
            while head < end and items[head] <= now:
                head += 2
            if head == end:
                del channels[ch.name]
                items.clear()
                ch.head = 0
            else:
                if head != start:
                    del items[:head]
                    ch.head = 0
                ch.due = max(items[ch.head], timeline[-1].due if timeline else 0.0)
                ch.scheduled = True
                timeline.append(ch)
            if metrics.enabled and head != start:
                metrics.layers.expired(self, (head - start) >> 1)
            for _ in range((head - start) >> 1):
                self._remove_from_groups(ch.name)
        if self._channels_peak > _SHRINK_MIN and len(channels) * 4 < self._channels_peak:
            self._channels = dict(channels)
            self._channels_peak = len(channels)

    def _clean_expired(self) -> None:
        """Channels' expiry pass: called, as there, at the start of every ``receive``
        and ``group_send`` (and nowhere else), so code that wraps it (a test
        suite's lock, a counter) sees the same calls as on Channels.

        The meaning is Channels' too: expired messages go, and a channel that had
        one leaves its groups (:meth:`_remove_from_groups`). The cost is not:
        only the channels whose turn has come on the timeline are looked at
        (see the module docstring), so a message can outlive its expiry by as
        long as its channel waits for its turn — it is never delivered, as the
        receive that would take it drops it. Expired group memberships need no
        pass: nothing reads them (the ``groups`` view and ``group_send`` skip
        them), and they are freed as ``group_send`` and ``group_add`` meet them.
        """
        now = _monotonic()
        timeline = self._timeline
        if timeline and timeline[0].due <= now:
            self._sweep(now)

    def _remove_from_groups(self, channel: str) -> None:
        """Take ``channel`` out of every group: a message on it expired, so
        nobody was receiving on it (Channels' method of the same name and use).

        Called once per expired message, as Channels calls it, wherever a
        message is dropped for its age: the expiry pass, a ``receive`` that
        meets expired messages first, a ``send`` that finds the channel full.
        """
        groups_of = self._member_of.pop(channel, None)
        if groups_of:
            groups = self._groups
            for group in groups_of:
                members = groups.get(group)
                if members is not None:
                    members.pop(channel, None)
                    if not members:
                        del groups[group]

    def _drop_member(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is not None and members.pop(channel, None) is not None:
            if not members:
                del self._groups[group]
            groups_of = self._member_of.get(channel)
            if groups_of is not None:
                groups_of.discard(group)
                if not groups_of:
                    del self._member_of[channel]

    def _sweep_groups(self, now: float) -> None:
        live = 0
        for group, members in list(self._groups.items()):
            for channel in [c for c, until in members.items() if until <= now]:
                self._drop_member(group, channel)
            live += len(members)
        self._group_sweep_countdown = max(_GROUP_SWEEP_MIN, live)

    def _hand_over(self, ch: _Channel, message: Message, expires_at: float, now: float) -> None:
        """Give ``message`` to the longest-waiting receiver of ``ch``.

        ``expires_at`` is kept with the receiver in case it is cancelled and has
        to give the message back."""
        waiters = ch.waiters
        assert waiters
        waiter = waiters.pop(0)
        waiter.message = message
        waiter.expires_at = expires_at
        waiter.epoch = self._epoch
        ch.in_flight += 1
        waiter.event.set()
        if not waiters and not ch.scheduled:
            self._schedule(ch, now + self.expiry)

    def _give_back(self, ch: _Channel, waiter: _Waiter) -> None:
        """A receiver was cancelled: withdraw it, returning any message it had
        been handed to the next receiver or to the front of the queue."""
        now = _monotonic()
        message = waiter.message
        if message is None:
            waiters = ch.waiters
            if waiters is not None:
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass
                if not waiters and not ch.scheduled and self._channels.get(ch.name) is ch:
                    self._schedule(ch, now + self.expiry)
            return
        waiter.message = None
        ch.in_flight -= 1
        if waiter.epoch != self._epoch or waiter.expires_at <= now:
            return  # flushed/closed since it was handed over, or too old to deliver
        current = self._channels.get(ch.name)
        if current is None:
            current = self._create(ch.name, now + self.expiry)
        if current.waiters:
            self._hand_over(current, message, waiter.expires_at, now)
        elif current.head:
            # Oldest message, so it belongs in front (capacity may be exceeded
            # by one rather than lose it).
            head = current.head = current.head - 2
            current.items[head] = waiter.expires_at
            current.items[head + 1] = message
        else:
            current.items[0:0] = (waiter.expires_at, message)

    def _drop_expired(self, ch: _Channel, now: float) -> bool:
        """Drop the expired messages at the front of ``ch``; True if any went.

        Only for a send that found ``ch`` full, so that expired messages never
        make a channel refuse a fresh one. As when the sweep drops them, the
        channel leaves its groups: nobody was receiving on it.
        """
        items = ch.items
        head = start = ch.head
        end = len(items)
        while head < end and items[head] <= now:
            head += 2
        if head == start:
            return False
        del items[:head]
        ch.head = 0
        if metrics.enabled:
            metrics.layers.expired(self, (head - start) >> 1)
        for _ in range((head - start) >> 1):
            self._remove_from_groups(ch.name)
        return True

    # -- the layer API --------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue a copy of ``message`` on ``channel``, or hand it straight to a
        waiting receiver.

        Does not yield to the event loop (nor does Channels' in-memory layer).
        Raises :class:`~channels_runtime.exceptions.ChannelFull` at capacity,
        counting only unexpired messages. Other channels are not swept here
        (see the module docstring).
        """
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        now = _monotonic()
        expires_at = now + self.expiry  # also the due time of a channel made now
        ch = self._lookup(channel, expires_at)
        if ch.waiters:
            self._hand_over(ch, copy_message(message), expires_at, now)
            if metrics.enabled:
                metrics.layers.sent(self)
            return
        items = ch.items
        if (len(items) - ch.head) >> 1 >= ch.capacity and not self._drop_expired(ch, now):
            if metrics.enabled:
                metrics.layers.channel_full(self, "send")
            raise ChannelFull(channel)
        items.append(expires_at)
        items.append(copy_message(message))
        if metrics.enabled:
            metrics.layers.sent(self)

    async def receive(self, channel: str) -> Message:
        """Return the oldest unexpired message on ``channel``, waiting for one if
        need be.

        Concurrent receivers are served in the order they started waiting, each
        with a different message. A receive cancelled after a message was chosen
        for it puts that message back (first in line), so cancellation loses
        nothing. Returns without yielding when a message is already queued.
        """
        self._clean_expired()
        now = _monotonic()
        ch = self._lookup(channel, now + self.expiry)
        items = ch.items
        head = ch.head
        end = len(items)
        if head < end:
            expired = 0
            message = None
            while head < end:
                expires_at = items[head]
                message = items[head + 1]
                items[head] = items[head + 1] = None
                head += 2
                if expires_at > now:
                    break
                expired += 1
                message = None
            if head == end:
                items.clear()
                head = 0
            elif head > 64 and head * 2 > end:
                del items[:head]
                head = 0
            ch.head = head
            if metrics.enabled and expired:
                metrics.layers.expired(self, expired)
            for _ in range(expired):
                self._remove_from_groups(channel)
            if message is not None:
                if metrics.enabled:
                    metrics.layers.received(self)
                return message

        waiter = _Waiter()
        waiters = ch.waiters
        if waiters is None:
            waiters = ch.waiters = []
        waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            self._give_back(ch, waiter)
            raise
        ch.in_flight -= 1
        message = waiter.message
        assert message is not None
        if metrics.enabled:
            metrics.layers.received(self)
        return message

    def message_waiting(self, channel: str) -> bool:
        """Whether ``channel`` holds a message (perhaps an expired one), so that
        :meth:`receive` would return without waiting. For the dispatch loop
        (:class:`~channels_runtime.dispatch.ChannelSource`)."""
        ch = self._channels.get(channel)
        return ch is not None and ch.head < len(ch.items)

    def metrics_state(self) -> dict[str, float]:
        """Messages queued (expired ones not swept yet included) and groups, for the metrics."""
        queued = sum((len(ch.items) - ch.head) >> 1 for ch in list(self._channels.values()))
        return {"buffered": queued, "groups": len(self._groups)}

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return ``"{prefix}.inmemory!"`` plus 12 random letters, unused so far."""
        while True:
            letters = random.randbytes(12).translate(_LETTER_TABLE).decode("ascii")
            name = f"{prefix}.inmemory!{letters}"
            if name not in self._channels:
                break
        self.require_valid_channel_name(name)
        return name

    async def flush(self) -> None:
        """Drop every message, channel and group.

        Receivers already waiting keep waiting, now on the fresh empty state,
        and get the next message sent to their channel; a message already handed
        to a receiver is delivered unless that receiver is cancelled.
        """
        self._reset({name: ch for name, ch in self._channels.items() if ch.waiters})
        for ch in self._channels.values():
            ch.items = []
            ch.head = 0
            ch.scheduled = False

    async def close(self) -> None:
        """Release all messages, channels and groups (as :meth:`flush`).

        Safe to call more than once. The layer stays usable afterwards and
        waiting receivers keep waiting: the server cancels them at shutdown.
        """
        await self.flush()

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` for ``group_expiry`` seconds from now
        (renewing the membership if it is already there)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        now = _monotonic()
        timeline = self._timeline
        if timeline and timeline[0].due <= now:
            self._sweep(now)
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = {}
        members[channel] = now + self.group_expiry
        groups_of = self._member_of.get(channel)
        if groups_of is None:
            self._member_of[channel] = {group}
        else:
            groups_of.add(group)
        self._group_sweep_countdown -= 1
        if self._group_sweep_countdown <= 0:
            self._sweep_groups(now)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it is not in it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        now = _monotonic()
        timeline = self._timeline
        if timeline and timeline[0].due <= now:
            self._sweep(now)
        self._drop_member(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send a copy of ``message`` to every current member of ``group``.

        All members are served in one pass without yielding, so no member waits
        on another; a member at capacity is skipped and the others still get
        the message (at-most-once, as in Channels).
        """
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        self.require_valid_group_name(group)
        self._clean_expired()
        now = _monotonic()
        members = self._groups.get(group)
        if not members:
            if metrics.enabled:
                metrics.layers.group_sent(self, 0)
            return
        expires_at = now + self.expiry
        channels = self._channels
        expired: list[str] | None = None
        full = 0
        for channel, until in members.items():
            if until <= now:
                if expired is None:
                    expired = []
                expired.append(channel)
                continue
            ch = channels.get(channel)
            if ch is None:
                ch = self._create(channel, expires_at)
            if ch.waiters:
                self._hand_over(ch, copy_message(message), expires_at, now)
            elif (len(ch.items) - ch.head) >> 1 < ch.capacity:
                items = ch.items
                items.append(expires_at)
                items.append(copy_message(message))
            else:
                full += 1
        if metrics.enabled:
            metrics.layers.group_sent(self, len(members) - len(expired or ()) - full, full)
        if expired:
            for channel in expired:
                self._drop_member(group, channel)
