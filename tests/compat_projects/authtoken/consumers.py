"""Two consumers that tell the client who the middleware says it is."""

from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer


def who(scope: dict) -> str:
    user = scope["user"]
    return user.username if user.is_authenticated else "anonymous"


class WhoAmISocket(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=who(self.scope))


class WhoAmIPage(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(
            200, who(self.scope).encode(), headers=[(b"Content-Type", b"text/plain")]
        )
