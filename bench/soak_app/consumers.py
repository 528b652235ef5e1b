"""The soak's consumers: what real projects do, each counted by :class:`~.diag.Tracked`.

* :class:`EchoConsumer` (``ws/echo/``): sends every frame back; the target of
  the clients that stop reading (the echo is what the server cannot write),
  reset or half-close.
* :class:`RoomConsumer` (``ws/room/<name>/``): a group chat; every text frame
  goes to the whole group. Members that vanish or reset must leave the group.
* :class:`NotesConsumer` (``ws/notes/<room>/``): per message, writes a row
  with the async ORM and counts the room's rows with ``database_sync_to_async``.
* :class:`SyncNotesConsumer` (``ws/sync-notes/<room>/``): the same as a sync
  consumer, whose handlers use the ORM directly in the thread-sensitive thread.
* :class:`StreamConsumer` (HTTP ``stream/``): a server-sent-events stream of
  ``events`` events of ``size`` bytes, ``interval`` seconds apart, for clients
  that leave early or stop reading.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import anyio

from channels_runtime.db import database_sync_to_async
from channels_runtime.generic.http import AsyncHttpConsumer
from channels_runtime.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer

from .diag import Tracked, count
from .models import Note


class EchoConsumer(Tracked, AsyncWebsocketConsumer):
    route = "echo"

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)

    async def disconnect(self, code: int) -> None:
        self.record_disconnect(code)


class RoomConsumer(Tracked, AsyncWebsocketConsumer):
    route = "room"

    async def connect(self) -> None:
        self.room = "soak-room-" + self.scope["url_route"]["kwargs"]["name"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send(text_data="joined")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(self.room, {"type": "room.message", "text": text_data})

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)
        self.record_disconnect(code)


@database_sync_to_async
def notes_in(room: str) -> int:
    return Note.objects.filter(room=room).count()


class NotesConsumer(Tracked, AsyncWebsocketConsumer):
    route = "notes"

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await Note.objects.acreate(room=self.room, text=text_data or "")
        await self.send(text_data=json.dumps({"count": await notes_in(self.room)}))

    async def disconnect(self, code: int) -> None:
        self.record_disconnect(code)


class SyncNotesConsumer(Tracked, WebsocketConsumer):
    route = "sync-notes"

    def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        Note.objects.create(room=self.room, text=text_data or "")
        self.send(text_data=json.dumps({"count": Note.objects.filter(room=self.room).count()}))

    def disconnect(self, code: int) -> None:
        self.record_disconnect(code)


class StreamConsumer(Tracked, AsyncHttpConsumer):
    route = "stream"

    async def handle(self, body: bytes) -> None:
        query = parse_qs(self.scope["query_string"].decode())
        events = int(query.get("events", ["10"])[0])
        payload = "x" * int(query.get("size", ["32"])[0])
        interval = float(query.get("interval", ["0.01"])[0])
        await self.send_headers(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        try:
            for number in range(events):
                await self.send_body(f"id: {number}\ndata: {payload}\n\n".encode(), more_body=True)
                await anyio.sleep(interval)
            await self.send_body(b"event: end\ndata: done\n\n")
            count("stream completed")
        except anyio.get_cancelled_exc_class():
            # The client left and handle() was cancelled: the early-disconnect path.
            count("stream cancelled")
            raise

    async def disconnect(self) -> None:
        self.record_disconnect()
