"""Chat messages. A room is just a name: it exists once someone has written in it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

#: Room names: letters, digits, ``-`` and ``_``, up to 50 characters. Shared by
#: the page URL and the WebSocket route, so both accept exactly the same rooms,
#: and safe to embed in a channel layer group name.
ROOM_NAME_PATTERN = r"[-a-zA-Z0-9_]{1,50}"

#: The name shown for messages written without logging in.
ANONYMOUS_NAME = "anonymous"


class Message(models.Model):
    room = models.CharField(max_length=50)
    # Kept when the user is deleted; the message then shows as anonymous.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_messages",
    )
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
        # "The latest N messages of a room" is the query run on every join.
        indexes = [models.Index(fields=["room", "-created"], name="rooms_message_recent")]

    def __str__(self) -> str:
        return f"[{self.room}] {self.author_name}: {self.text[:40]}"

    @property
    def author_name(self) -> str:
        return self.user.get_username() if self.user is not None else ANONYMOUS_NAME

    def as_event(self) -> dict[str, Any]:
        """The JSON object sent to browsers for this message.

        Needs ``user`` loaded (``select_related("user")``) when called from
        async code, where a lazy query is not allowed.
        """
        return {
            "type": "message",
            "id": self.pk,
            "room": self.room,
            "user": self.author_name,
            "text": self.text,
            "created": self.created.isoformat(),
        }


async def recent_messages(room: str, limit: int) -> list[Message]:
    """The last ``limit`` messages of ``room``, oldest first."""
    newest_first = (
        Message.objects.filter(room=room).select_related("user").order_by("-created", "-id")
    )
    messages = [message async for message in newest_first[:limit]]
    messages.reverse()
    return messages
