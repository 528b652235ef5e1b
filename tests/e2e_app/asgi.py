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


# -- Sync consumers for tests/test_sync_slow_client.py -------------------------
#
# * ``ws/sync-echo/``: the sync twin of ``ws/echo/``;
# * ``ws/sync-burst/``: a text frame ``"<frames> <size>"`` is answered by that many
#   text frames of ``size`` characters, each starting with its 8-digit number,
#   then ``"done"``; ``ws/sync-burst-small/`` does the same with a 256 KiB send
#   queue, so a burst to a client that does not read is closed with 1013.
#
# Appended, and added to the routes here rather than in the list above, so other
# additions to this file do not collide with these.

from channels_runtime.generic.websocket import WebsocketConsumer  # noqa: E402
from channels_runtime.sync import async_to_sync  # noqa: E402


class SyncEchoConsumer(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


class SyncBurstConsumer(WebsocketConsumer):
    route = "sync-burst"

    def receive(self, text_data=None, bytes_data=None):
        frames, size = map(int, text_data.split())
        for number in range(frames):
            self.send(text_data=f"{number:08d}".ljust(size, "x"))
        self.send(text_data="done")

    def disconnect(self, code):
        async_to_sync(record)(f"disconnect {self.route} {code}")


class SyncBurstSmallQueueConsumer(SyncBurstConsumer):
    route = "sync-burst-small"
    max_queued_send_bytes = 256 * 1024


routes["websocket"] = URLRouter(
    [
        *routes["websocket"].routes,
        path("ws/sync-echo/", SyncEchoConsumer.as_asgi()),
        path("ws/sync-burst/", SyncBurstConsumer.as_asgi()),
        path("ws/sync-burst-small/", SyncBurstSmallQueueConsumer.as_asgi()),
    ]
)
application = ProtocolTypeRouter(routes)


# -- For tests/test_server_hardening.py ------------------------------------------
#
# * HTTP ``download/?mib=N``: N MiB of response body in 64 KiB chunks, recording
#   ``download done`` or ``download disconnect`` once the response has ended.


class DownloadConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        query = parse_qs(self.scope["query_string"].decode())
        chunk = b"d" * 65536
        await self.send_headers(headers=[(b"content-type", b"application/octet-stream")])
        for _ in range(int(query.get("mib", ["1"])[0]) * 16):
            await self.send_body(chunk, more_body=True)
        await self.send_body(b"")
        await record("download done")

    async def disconnect(self):
        await record("download disconnect")


routes["http"] = URLRouter([*routes["http"].routes, path("download/", DownloadConsumer.as_asgi())])
application = ProtocolTypeRouter(routes)


# -- For tests/test_http_streaming_disconnect.py ---------------------------------
#
# * HTTP ``sse/?tag=T&chunks=N&interval=S``: a server-sent event stream of N events
#   S seconds apart; disconnect() records ``sse T sent=<events> cancelled=<time> at=<time>``
#   (wall-clock seconds; ``cancelled=-`` when handle() was not cancelled);
# * ``sse-unwatched/``: the same stream with Channels 4.2's http_request(), which
#   does not notice a client that leaves while handle() runs;
# * ``poll/<name>/``: a long-poll answered by the next message to group ``room-<name>``
#   (a text frame sent on ``ws/room/<name>/``); disconnect() records
#   ``poll <name> discarded cancelled=<yes|no> at=<time>``.

import time  # noqa: E402

from channels_runtime.exceptions import StopConsumer  # noqa: E402


class SseConsumer(AsyncHttpConsumer):
    kind = "sse"
    sent = 0
    cancelled_at: float | None = None

    async def handle(self, body):
        query = parse_qs(self.scope["query_string"].decode())
        chunks = int(query.get("chunks", ["400"])[0])
        interval = float(query.get("interval", ["0.05"])[0])
        await self.send_headers(
            headers=[(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        )
        try:
            for number in range(chunks):
                await self.send_body(f"data: {number}\n\n".encode(), more_body=True)
                self.sent += 1
                await anyio.sleep(interval)
        except anyio.get_cancelled_exc_class():
            self.cancelled_at = time.time()
            raise
        await self.send_body(b"data: end\n\n")

    async def disconnect(self):
        tag = parse_qs(self.scope["query_string"].decode()).get("tag", ["-"])[0]
        cancelled = "-" if self.cancelled_at is None else f"{self.cancelled_at:.3f}"
        now = time.time()
        await record(f"{self.kind} {tag} sent={self.sent} cancelled={cancelled} at={now:.3f}")


class UnwatchedSseConsumer(SseConsumer):
    """The failure path the watching replaced: handle() runs to its end whatever the client does."""

    kind = "sse-unwatched"

    async def http_request(self, message):
        self.body.append(message.get("body", b""))
        if not message.get("more_body", False):
            try:
                await self.handle(b"".join(self.body))
            finally:
                await self.disconnect()
            raise StopConsumer()


class PollConsumer(AsyncHttpConsumer):
    inbox = None
    cancelled = False

    async def handle(self, body):
        self.name = self.scope["url_route"]["kwargs"]["name"]
        self.inbox = await self.channel_layer.new_channel()
        await self.channel_layer.group_add(f"room-{self.name}", self.inbox)
        await self.send_headers(headers=[(b"content-type", b"text/plain")])
        await self.send_body(b"", more_body=True)  # the headers go out; the response stays open
        try:
            event = await self.channel_layer.receive(self.inbox)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        await self.send_body(event["text"].encode())

    async def disconnect(self):
        if self.inbox is not None:
            await self.channel_layer.group_discard(f"room-{self.name}", self.inbox)
            cancelled = "yes" if self.cancelled else "no"
            now = time.time()
            await record(f"poll {self.name} discarded cancelled={cancelled} at={now:.3f}")


routes["http"] = URLRouter(
    [
        *routes["http"].routes,
        path("sse/", SseConsumer.as_asgi()),
        path("sse-unwatched/", UnwatchedSseConsumer.as_asgi()),
        path("poll/<str:name>/", PollConsumer.as_asgi()),
    ]
)
application = ProtocolTypeRouter(routes)
