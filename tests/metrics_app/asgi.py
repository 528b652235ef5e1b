"""The metrics test project: every consumer here exists to make one metric move.

WebSocket routes:

* ``ws/echo/``: echoes text; ``close N`` makes the server close with code N;
* ``ws/nested/`` + ``inner/<int:n>/``: the same echo behind a nested router;
* ``ws/room/<str:name>/``: joins the group, says ``joined``; a text frame is
  sent to the group, whose members each forward it to their client;
* ``ws/pid/``: says its worker's pid; its disconnect handler takes
  ``METRICS_SLOW_DISCONNECT`` seconds (0 by default), to hold a shutdown open;
* ``ws/deny/`` refuses the handshake; ``ws/origin/`` only admits the origin
  ``https://allowed.example``; ``ws/auth/`` refuses anonymous users;
* ``ws/boom/``: a text frame makes its handler raise ``ValueError``.

HTTP goes to Django (``urls.py``) through ``channels_runtime.http``.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.metrics_app.settings")

import django

django.setup()

import anyio  # noqa: E402
from django.urls import path  # noqa: E402

from channels_runtime.auth import AuthMiddlewareStack  # noqa: E402
from channels_runtime.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels_runtime.http import get_asgi_application  # noqa: E402
from channels_runtime.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels_runtime.security.websocket import OriginValidator  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data and text_data.startswith("close "):
            await self.close(code=int(text_data[6:]))
        else:
            await self.send(text_data=text_data)


class Room(AsyncWebsocketConsumer):
    async def connect(self):
        self.group = "room-" + self.scope["url_route"]["kwargs"]["name"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(text_data="joined")

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(self.group, {"type": "room.message", "text": text_data})

    async def room_message(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)


class Pid(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send(text_data=str(os.getpid()))

    async def disconnect(self, code):
        await anyio.sleep(float(os.environ.get("METRICS_SLOW_DISCONNECT", "0")))


class Deny(AsyncWebsocketConsumer):
    async def connect(self):
        await self.close()


class AuthRequired(AsyncWebsocketConsumer):
    async def connect(self):
        if self.scope["user"].is_authenticated:
            await self.accept()
        else:
            await self.close()


class Boom(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        raise ValueError("this handler fails on purpose")


application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter(
            [
                path("ws/echo/", Echo.as_asgi()),
                path("ws/nested/", URLRouter([path("inner/<int:n>/", Echo.as_asgi())])),
                path("ws/room/<str:name>/", Room.as_asgi()),
                path("ws/pid/", Pid.as_asgi()),
                path("ws/deny/", Deny.as_asgi()),
                path("ws/origin/", OriginValidator(Echo.as_asgi(), ["https://allowed.example"])),
                path("ws/auth/", AuthMiddlewareStack(AuthRequired.as_asgi())),
                path("ws/boom/", Boom.as_asgi()),
            ]
        ),
    }
)
