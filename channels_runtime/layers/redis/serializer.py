"""Messages to bytes and back: msgpack, optionally encrypted with Fernet.

msgpack keeps ``bytes`` and ``str`` apart (a WebSocket frame's ``bytes`` stays
``bytes``), which JSON cannot. Encryption is for deployments where Redis is
shared or not trusted with message contents; channel and group names stay in
clear because Redis has to route on them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

from ...exceptions import MessageTooLarge

try:
    import msgpack
except ImportError:  # pragma: no cover - msgpack is a dependency of the redis extra
    msgpack = None

__all__ = ["MessageSerializer"]


def _fernet_key(key: str | bytes) -> bytes:
    """Any secret string becomes a valid Fernet key (32 url-safe base64 bytes)
    by hashing it, so a Django ``SECRET_KEY`` can be used as is."""
    if isinstance(key, str):
        key = key.encode()
    return base64.urlsafe_b64encode(hashlib.sha256(key).digest())


class MessageSerializer:
    """Packs messages with msgpack and, given keys, encrypts them.

    With several keys, the first encrypts and every key can decrypt: to rotate,
    put the new key first and keep the old one until every process runs with the
    new list and messages sealed with the old key have expired.
    """

    def __init__(
        self,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        expiry: float = 60,
        max_message_size: int | None = None,
    ) -> None:
        if msgpack is None:  # pragma: no cover
            raise ImportError(
                "the Redis channel layer needs msgpack: pip install 'channels-runtime[redis]'"
            )
        self.max_message_size = max_message_size
        self._crypter: Any = None
        if symmetric_encryption_keys:
            if isinstance(symmetric_encryption_keys, (str, bytes)):
                raise ValueError(
                    "symmetric_encryption_keys must be a list of keys (newest first), "
                    "not a single key"
                )
            try:
                from cryptography.fernet import Fernet, MultiFernet
            except ImportError:
                raise ImportError(
                    "symmetric_encryption_keys needs the 'cryptography' package: "
                    "pip install cryptography"
                ) from None
            keys = list(symmetric_encryption_keys)
            self._crypter = MultiFernet([Fernet(_fernet_key(k)) for k in keys])
            # Fernet checks the token's age itself; allow for clock skew between hosts.
            self._ttl = int(expiry) + 10

    @property
    def encrypted(self) -> bool:
        return self._crypter is not None

    def dumps(self, message: dict[str, Any], channel: str) -> bytes:
        """The bytes to store for ``message``; ``channel`` only names it in errors.

        Raises :class:`TypeError` for values msgpack cannot encode and
        :class:`~channels_runtime.exceptions.MessageTooLarge` past the limit.
        """
        try:
            data: bytes = msgpack.packb(message, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"cannot serialise the message for {channel!r} with msgpack: {exc}. "
                "Messages may hold dicts, lists, str, bytes, int, float, bool and None."
            ) from exc
        if self._crypter is not None:
            data = self._crypter.encrypt(data)
        limit = self.max_message_size
        if limit is not None and len(data) > limit:
            raise MessageTooLarge(
                f"message for {channel!r} is {len(data)} bytes serialised"
                f"{' and encrypted' if self._crypter is not None else ''}, over the "
                f"layer's max_message_size of {limit} bytes; send a reference to the "
                "data instead, or raise max_message_size in the layer CONFIG"
            )
        return data

    def loads(self, data: bytes | memoryview) -> Any:
        """The message ``data`` holds. Raises ``ValueError`` for undecodable data
        and ``cryptography.fernet.InvalidToken`` for a bad or expired seal."""
        if self._crypter is not None:
            data = self._crypter.decrypt(bytes(data), ttl=self._ttl)
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
