"""The settings both Redis layers share, checked and stored in one place.

``RedisChannelLayer`` and ``RedisPubSubChannelLayer`` take the same
connection, serialisation and buffering settings. :class:`RedisSettings`
validates them (a bad value raises ``ValueError`` naming the setting) and
sets the attributes both layers read, so the two cannot drift apart.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from .hosts import HostSpec, decode_hosts
from .serializer import MessageSerializer

__all__ = ["RedisSettings", "check_positive"]


def check_positive(name: str, value: Any, *, integer: bool = False, zero: bool = False) -> None:
    """Raise ``ValueError`` naming the setting unless ``value`` is a positive
    number (an integer if asked; zero allowed if asked)."""
    kind = numbers.Integral if integer else numbers.Real
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or (value < 0 if zero else value <= 0)
        or (not integer and not math.isfinite(value))
    ):
        what = "integer" if integer else "number"
        bound = "zero or more" if zero else "positive"
        raise ValueError(f"{name} must be a {bound} {what}, got {value!r}")


class RedisSettings:
    """Mixin for the Redis layers: :meth:`_configure_redis` checks and stores
    the settings they have in common."""

    hosts: list[HostSpec]
    ring_size: int
    prefix: str
    group_expiry: float
    max_message_size: int | None
    max_connections: int
    connect_timeout: float
    socket_timeout: float
    retry_budget: float
    max_buffered: int
    _serializer: MessageSerializer

    def _configure_redis(
        self,
        *,
        hosts: Sequence[Any] | None,
        prefix: str,
        expiry: float,
        group_expiry: float,
        symmetric_encryption_keys: Iterable[str | bytes] | None,
        serializer_format: str,
        max_message_size: int | None,
        max_connections: int,
        connect_timeout: float,
        socket_timeout: float,
        retry_budget: float,
        max_buffered: int,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        if serializer_format != "msgpack":
            raise ValueError(
                f"serializer_format {serializer_format!r} is not supported; only 'msgpack' is"
            )
        check_positive("group_expiry", group_expiry)
        check_positive("max_connections", max_connections, integer=True)
        check_positive("max_buffered", max_buffered, integer=True)
        check_positive("connect_timeout", connect_timeout)
        check_positive("socket_timeout", socket_timeout)
        check_positive("retry_budget", retry_budget, zero=True)
        if max_message_size is not None:
            check_positive("max_message_size", max_message_size, integer=True)
        self.hosts = decode_hosts(hosts)
        self.ring_size = len(self.hosts)
        self.prefix = prefix
        self.group_expiry = group_expiry
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.retry_budget = retry_budget
        self.max_buffered = max_buffered
        self._serializer = MessageSerializer(
            symmetric_encryption_keys, expiry=expiry, max_message_size=max_message_size
        )
