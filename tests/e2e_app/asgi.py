"""The end-to-end test application: echo, a group chat room, HTTP, a worker channel.

Routes:

* ``ws/echo/``: sends every text or binary frame back unchanged;
* ``ws/room/<name>/``: joins group ``room-<name>``; a text frame is broadcast to
  the group, and ``task:<value>`` is handed to the ``e2e-tasks`` worker channel,
  whose consumer reports ``done <value>`` back to the room;
* ``ws/deny/``: refuses the handshake;
* ``ws/stubborn/``: its disconnect handler takes a minute;
* HTTP ``health/`` (answers ``ok <pid>``) and ``slow/?seconds=N`` (answers after N s).

Disconnect handlers record ``disconnect <route> <code>`` in ``E2E_EVENTS_FILE``.
"""

import os
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e_app.settings")

import django

django.setup()

import anyio  # noqa: E402
from django.urls import path  # noqa: E402

from channels_runtime.consumer import AsyncConsumer  # noqa: E402
from channels_runtime.generic.http import AsyncHttpConsumer  # noqa: E402
from channels_runtime.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels_runtime.routing import (  # noqa: E402
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
)
from tests.e2e_app.events import record  # noqa: E402

TASK_CHANNEL = "e2e-tasks"


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)

    async def disconnect(self, code):
        await record(f"disconnect echo {code}")


class RoomConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room = "room-" + self.scope["url_route"]["kwargs"]["name"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send(text_data="joined")

    async def receive(self, text_data=None, bytes_data=None):
        if text_data and text_data.startswith("task:"):
            await self.channel_layer.send(
                TASK_CHANNEL,
                {"type": "task.run", "value": text_data[5:], "reply_group": self.room},
            )
        else:
            await self.channel_layer.group_send(
                self.room, {"type": "room.message", "text": text_data}
            )

    async def room_message(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)
        await record(f"disconnect room {code} discarded")


class StubbornConsumer(AsyncWebsocketConsumer):
    """Takes a minute to clean up, to check that a second signal cuts shutdown short."""

    async def disconnect(self, code):
        await record(f"disconnect stubborn {code}")
        await anyio.sleep(60)


class DenyConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.close()


class HealthConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        await self.send_response(
            200, f"ok {os.getpid()}".encode(), headers=[(b"content-type", b"text/plain")]
        )


class SlowConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        query = parse_qs(self.scope["query_string"].decode())
        await anyio.sleep(float(query.get("seconds", ["1"])[0]))
        await self.send_response(200, b"slow done", headers=[(b"content-type", b"text/plain")])


class TaskConsumer(AsyncConsumer):
    """Runs in ``channels-runtime worker e2e-tasks``."""

    async def task_run(self, message):
        await record(f"task {message['value']}")
        if message.get("reply_group"):
            await self.channel_layer.group_send(
                message["reply_group"],
                {"type": "room.message", "text": f"done {message['value']}"},
            )


async def failing_lifespan(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "e2e: startup refused on purpose"})


routes = {
    "http": URLRouter(
        [
            path("health/", HealthConsumer.as_asgi()),
            path("slow/", SlowConsumer.as_asgi()),
        ]
    ),
    "websocket": URLRouter(
        [
            path("ws/echo/", EchoConsumer.as_asgi()),
            path("ws/room/<str:name>/", RoomConsumer.as_asgi()),
            path("ws/deny/", DenyConsumer.as_asgi()),
            path("ws/stubborn/", StubbornConsumer.as_asgi()),
        ]
    ),
    "channel": ChannelNameRouter({TASK_CHANNEL: TaskConsumer.as_asgi()}),
}
if os.environ.get("E2E_FAIL_STARTUP"):
    routes["lifespan"] = failing_lifespan

application = ProtocolTypeRouter(routes)
