"""The chat itself: one consumer instance per open browser tab.

The protocol is JSON over one WebSocket per room:

* the browser sends ``{"text": "hello"}``;
* right after connecting it receives ``{"type": "welcome", "room", "user",
  "history": [message, ...]}``, where ``user`` is who it is talking as;
* every message written in the room, its own included, arrives as
  ``{"type": "message", "id", "room", "user", "text", "created"}``;
* a message that cannot be accepted is answered with ``{"type": "error", "error"}``;
* the welcome also lists who is in the room, ``"members": [member, ...]``
  with ``member = {"id", "user", "name", "since"}`` (one per connection: two
  tabs are two members of one user). A client that connects with
  ``?presence=1`` (the page does) then gets ``{"type": "presence.join",
  "member"}`` and ``{"type": "presence.leave", "member"}`` as people come and
  go, a closed tab or a crashed server process included (see
  ``docs/presence.md``); clients that did not ask see the protocol above only.
"""

from __future__ import annotations

import logging
from typing import Any

from channels_runtime import presence
from channels_runtime.generic.websocket import AsyncJsonWebsocketConsumer
from channels_runtime.presence import PresenceMixin
from django.conf import settings

from .models import ANONYMOUS_NAME, Message, recent_messages

logger = logging.getLogger(__name__)


def group_name(room: str) -> str:
    """The channel layer group of a room (room names are already group-safe)."""
    return f"chat.{room}"


def member_event(member: presence.Member | dict[str, Any]) -> dict[str, Any]:
    """What the browser sees of a present connection."""
    if isinstance(member, presence.Member):
        member = member.as_dict()
    return {
        "id": member["channel"],
        "user": member["user"],
        "name": (member["meta"] or {}).get("name", ANONYMOUS_NAME),
        "since": member["since"],
    }


class ChatConsumer(PresenceMixin, AsyncJsonWebsocketConsumer):
    room: str
    user: Any
    wants_presence: bool = False

    def presence_meta(self) -> Any:
        """The name the member list shows (PresenceMixin's default is {} for visitors)."""
        return {"name": self.user.get_username() if self.user else ANONYMOUS_NAME}

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        # AuthMiddlewareStack put the session's user here: a User, or an
        # AnonymousUser for visitors who have not logged in.
        user = self.scope.get("user")
        self.user = user if user is not None and user.is_authenticated else None
        self.wants_presence = b"presence=1" in self.scope.get("query_string", b"").split(b"&")
        group = group_name(self.room)
        await self.channel_layer.group_add(group, self.channel_name)
        # Listed in self.groups, so it is left however the connection ends,
        # and PresenceMixin makes this connection present in it on accept.
        self.groups.append(group)
        await self.accept()
        history = await recent_messages(self.room, settings.CHAT_HISTORY_LENGTH)
        members = await presence.members(self.channel_layer, group)
        await self.send_json(
            {
                "type": "welcome",
                "room": self.room,
                "user": self.user.get_username() if self.user else ANONYMOUS_NAME,
                "history": [message.as_event() for message in history],
                "members": [member_event(member) for member in members],
            }
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"type": "error", "error": 'Send {"text": "..."}.'})
            return
        text = text.strip()
        limit = settings.CHAT_MAX_MESSAGE_LENGTH
        if len(text) > limit:
            await self.send_json(
                {"type": "error", "error": f"Messages are limited to {limit} characters."}
            )
            return
        message = await Message.objects.acreate(room=self.room, user=self.user, text=text)
        # The user object is already at hand: attach it so as_event() needs no query.
        message.user = self.user
        await self.channel_layer.group_send(
            group_name(self.room), {"type": "chat.message", "event": message.as_event()}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A message written in this room, by anyone: pass it on to the browser."""
        await self.send_json(event["event"])

    async def presence_join(self, event: dict[str, Any]) -> None:
        """Someone's connection joined the room (PresenceMixin subscribed us)."""
        if self.wants_presence:
            await self.send_json({"type": "presence.join", "member": member_event(event)})

    async def presence_leave(self, event: dict[str, Any]) -> None:
        """A connection left: closed, or its server process stopped answering."""
        if self.wants_presence:
            await self.send_json({"type": "presence.leave", "member": member_event(event)})
