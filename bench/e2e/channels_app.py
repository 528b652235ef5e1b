"""The benchmark consumers written for Django Channels 4.2.

The same consumers as ``runtime_app``, line for line, with Channels' imports
and Channels' in-memory layer. This module is its own Django settings module;
serve it from this folder with ``hypercorn -w 0 channels_app:application`` or
``daphne channels_app:application``.
"""

from __future__ import annotations

import os

SECRET_KEY = "bench"
DEBUG = False
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)
if os.environ.get("BENCH_GC_STATS"):
    import gcstats  # noqa: F401  (diagnostics only)
if os.environ.get("BENCH_TRACEMALLOC"):
    import memtrace  # noqa: F401  (diagnostics only)

import django  # noqa: E402

django.setup()

from channels.generic.websocket import (  # noqa: E402
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

GROUP = "bench"


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)


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
                path("echo", Echo.as_asgi()),
                path("sync", SyncEcho.as_asgi()),
                path("bcast", Member.as_asgi()),
                path("trigger", Trigger.as_asgi()),
            ]
        )
    }
)
