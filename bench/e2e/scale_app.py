"""The scale-out benchmark's consumers, for channels_runtime or Django Channels.

A member joins group ``bench`` and forwards every group message to its client;
a trigger turns each frame it receives into one ``group_send`` to that group.
This module is its own Django settings module. The layer and its Redis come
from the environment, so one module serves every variant of
``bench_scale_out.py``: ``BENCH_LAYER`` (``core`` for ``RedisChannelLayer``,
``pubsub`` for ``RedisPubSubChannelLayer``), ``BENCH_REDIS_URL`` and
``BENCH_PREFIX`` (each run gets its own, so no group outlives it), and
``BENCH_IMPL``: ``ours`` (channels_runtime and its layers) or ``channels``
(Django Channels and channels_redis, under Daphne or uvicorn from any Python
that has them: ``bench_scale_out.py --channels-python``). Both run the same
consumers, line for line.
"""

from __future__ import annotations

import os

IMPL = os.environ.get("BENCH_IMPL", "ours")
LAYERS = {
    ("ours", "core"): "channels_runtime.layers.redis.RedisChannelLayer",
    ("ours", "pubsub"): "channels_runtime.layers.redis.RedisPubSubChannelLayer",
    ("channels", "core"): "channels_redis.core.RedisChannelLayer",
    ("channels", "pubsub"): "channels_redis.pubsub.RedisPubSubChannelLayer",
}

SECRET_KEY = "bench"
DEBUG = False
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYERS[IMPL, os.environ.get("BENCH_LAYER", "core")],
        "CONFIG": {
            "hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("BENCH_PREFIX", "bench"),
        },
    }
}

os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)

import django  # noqa: E402

django.setup()

from django.urls import path  # noqa: E402

if IMPL == "channels":
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
else:
    from channels_runtime.generic.websocket import AsyncWebsocketConsumer
    from channels_runtime.routing import ProtocolTypeRouter, URLRouter

GROUP = "bench"


class Member(AsyncWebsocketConsumer):
    groups = [GROUP]

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


class Trigger(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(GROUP, {"type": "bench.message", "text": text_data})


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("member", Member.as_asgi()),
                path("trigger", Trigger.as_asgi()),
            ]
        )
    }
)
