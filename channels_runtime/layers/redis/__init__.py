"""The Redis channel layer.

``CHANNEL_LAYERS = {"default": {"BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
"CONFIG": {"hosts": ["redis://localhost:6379/0"]}}}``

Needs the ``redis`` extra (``msgpack``); encryption also needs ``cryptography``.
Works with Redis 6.2 or newer (it uses ``LPOP`` with a count and ``LPOS``).
"""

from .core import RedisChannelLayer, RedisUnavailable
from .hosts import HostSpec, TLSConnectionError, decode_hosts
from .protocol import RedisError, ReplyError
from .pubsub import RedisPubSubChannelLayer

__all__ = [
    "HostSpec",
    "RedisChannelLayer",
    "RedisError",
    "RedisPubSubChannelLayer",
    "RedisUnavailable",
    "ReplyError",
    "TLSConnectionError",
    "decode_hosts",
]
