"""The contract every channel layer implements, and the helpers layers share.

A channel layer moves messages (dicts) between application instances: point to
point over *channels* and one-to-many over *groups*. This module fixes the
method names, signatures and meanings so that consumers can use any backend
(in-memory, Redis, or one of your own) without knowing which it is.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Mapping
from re import Pattern
from typing import Any, ClassVar

from ..metrics import layers as layer_metrics

Message = dict[str, Any]
CapacityPattern = str | Pattern[str]


def compile_capacities(
    channel_capacity: Mapping[CapacityPattern, int] | None,
) -> list[tuple[Pattern[str], int]]:
    """Turn ``{glob-or-regex: capacity}`` into an ordered list of ``(regex, capacity)``.

    Strings are shell-style globs (``"http.request.*"``); compiled regular
    expressions are used as given. Order is preserved because the first match
    wins in :func:`get_capacity`.
    """
    compiled: list[tuple[Pattern[str], int]] = []
    for pattern, capacity in (channel_capacity or {}).items():
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(
                f"channel_capacity[{pattern!r}] must be a positive integer, got {capacity!r}"
            )
        if isinstance(pattern, str):
            compiled.append((re.compile(fnmatch.translate(pattern)), capacity))
        elif isinstance(pattern, Pattern):
            compiled.append((pattern, capacity))
        else:
            raise TypeError(
                f"channel_capacity keys must be glob strings or compiled regexes, got {pattern!r}"
            )
    return compiled


class BaseChannelLayer:
    """Base class for channel layers.

    Subclasses implement the coroutine methods below. ``send``, ``receive`` and
    ``new_channel`` are the core; ``group_add``, ``group_discard`` and
    ``group_send`` form the *groups* extension and ``flush`` the *flush*
    extension, advertised in :attr:`extensions`. ``close`` releases whatever the
    layer holds (connections, buffers) and is called when the server shuts down.
    """

    MAX_NAME_LENGTH: ClassVar[int] = 100

    #: Optional parts of the layer API this backend supports.
    extensions: ClassVar[list[str]] = []

    channel_name_regex: ClassVar[Pattern[str]] = re.compile(r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$")
    group_name_regex: ClassVar[Pattern[str]] = re.compile(r"^[a-zA-Z\d\-_.]+$")
    #: Channels' template, with its single ``{}`` for "Channel" or "Group": code
    #: written for Channels formats it to know the message to expect. The
    #: rejected name is appended after it (see :meth:`_invalid_name`).
    invalid_name_error: ClassVar[str] = (
        "{} name must be a valid unicode string with length < "
        + str(MAX_NAME_LENGTH)
        + " containing only ASCII alphanumerics, hyphens, underscores, or periods."
    )

    def __init__(
        self,
        expiry: float = 60,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
    ) -> None:
        if expiry <= 0:
            raise ValueError(f"expiry must be a positive number of seconds, got {expiry!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.expiry = expiry
        self.capacity = capacity
        self.channel_capacity = compile_capacities(channel_capacity)
        layer_metrics.track(self)  # its label; the manager names it by alias

    # -- capacity helpers -------------------------------------------------

    def compile_capacities(
        self, channel_capacity: Mapping[CapacityPattern, int] | None
    ) -> list[tuple[Pattern[str], int]]:
        """Method form of :func:`compile_capacities`, as Channels offers it."""
        return compile_capacities(channel_capacity)

    def get_capacity(self, channel: str) -> int:
        """The capacity for ``channel``: the first matching ``channel_capacity``
        pattern's, else the layer's default ``capacity``."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    # -- name validation --------------------------------------------------

    def match_type_and_length(self, name: object) -> bool:
        return isinstance(name, str) and len(name) < self.MAX_NAME_LENGTH

    def _invalid_name(self, kind: str, name: object) -> TypeError:
        """The error for a bad ``kind`` ("Channel" or "Group") name: Channels'
        message, which starts it unchanged, then the name that was refused."""
        return TypeError(f"{self.invalid_name_error.format(kind)} Got {name!r}.")

    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool:
        """Raise ``TypeError`` naming ``name`` unless it is a valid channel name.

        With ``receive=True`` a process-specific name must end at its ``!``
        (layers that receive on full specific names override this).
        """
        # fullmatch, not match: "$" alone would also accept a trailing newline.
        if not self.match_type_and_length(name) or not self.channel_name_regex.fullmatch(name):
            raise self._invalid_name("Channel", name)
        if receive and "!" in name and not name.endswith("!"):
            raise TypeError(f"Specific channel names in receive() must end at the !, not {name!r}")
        return True

    def require_valid_group_name(self, name: str) -> bool:
        """Raise ``TypeError`` naming ``name`` unless it is a valid group name."""
        if not self.match_type_and_length(name) or not self.group_name_regex.fullmatch(name):
            raise self._invalid_name("Group", name)
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        if not isinstance(names, list) or not names:
            raise TypeError(f"names must be a non-empty list, got {names!r}")
        for channel in names:
            self.require_valid_channel_name(channel, receive=receive)
        return True

    def non_local_name(self, name: str) -> str:
        """The part of a process-specific name up to and including ``!``; else the name."""
        bang = name.find("!")
        return name if bang == -1 else name[: bang + 1]

    def valid_channel_name(self, channel_name: str, receive: bool = False) -> bool:
        """Deprecated alias of :meth:`require_valid_channel_name`."""
        warnings.warn(
            "valid_channel_name is deprecated, use require_valid_channel_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_channel_name(channel_name, receive=receive)

    def valid_group_name(self, group_name: str) -> bool:
        """Deprecated alias of :meth:`require_valid_group_name`."""
        warnings.warn(
            "valid_group_name is deprecated, use require_valid_group_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_group_name(group_name)

    # -- the layer API ----------------------------------------------------

    def _missing(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__module__}.{type(self).__qualname__} does not implement {method}()"
        )

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel``.

        Raises :class:`~channels_runtime.exceptions.ChannelFull` when the channel
        holds its capacity of undelivered messages. The layer owns a copy of the
        message from here on: later changes by the sender are not seen.
        """
        raise self._missing("send")

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on ``channel``.

        Several receivers on one channel each get different messages. A receive
        that is cancelled loses no message.
        """
        raise self._missing("receive")

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new, unique channel name that only this process receives on."""
        raise self._missing("new_channel")

    async def flush(self) -> None:
        """Drop every channel, message and group (the *flush* extension)."""
        raise self._missing("flush")

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (the *groups* extension).

        Membership expires after the layer's ``group_expiry``; adding again renews it.
        """
        raise self._missing("group_add")

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; doing so when it is not a member is not an error."""
        raise self._missing("group_discard")

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``.

        Members are sent to in parallel; a full member is skipped without
        failing the others (at-most-once delivery, as with Channels).
        """
        raise self._missing("group_send")

    async def close(self) -> None:
        """Release connections, buffers and background work held by the layer.

        Called once when the server shuts down (lifespan shutdown). The default
        does nothing, for layers that hold nothing; override it otherwise.
        """
