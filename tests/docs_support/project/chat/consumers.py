"""Consumers the documentation's routing and test snippets refer to."""

from channels_runtime.consumer import AsyncConsumer
from channels_runtime.generic.http import AsyncHttpConsumer
from channels_runtime.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


ChatConsumer = EchoConsumer


class NotesConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send_json({"year": self.scope["url_route"]["kwargs"]["year"]})


class FeedConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send_json({"format": self.scope["url_route"]["kwargs"]["format"]})


class EventsConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        since = int(self.scope["query_string"].decode().partition("=")[2] or 0)
        await self.send_response(
            200, f"data: {since}\n\n".encode(), headers=[(b"content-type", b"text/event-stream")]
        )


class UploadConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        await self.send_response(200, str(len(body)).encode())


class ThumbnailConsumer(AsyncConsumer):
    async def thumbnail_make(self, message):
        await self.channel_layer.group_send(
            message["reply_group"], {"type": "thumbnail.ready", "path": message["path"]}
        )
