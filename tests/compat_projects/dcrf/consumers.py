"""A model consumer as djangochannelsrestframework's documentation writes one.

``list`` and ``create`` come from the library's mixins; ``subscribe_activity``
subscribes the connection to a model observer (creations anywhere reach it
through the channel layer); ``shout`` is a detached action, which the library
runs with ``asyncio.create_task``.
"""

from typing import Any

from djangochannelsrestframework import permissions
from djangochannelsrestframework.decorators import action
from djangochannelsrestframework.generics import GenericAsyncAPIConsumer
from djangochannelsrestframework.mixins import CreateModelMixin, ListModelMixin
from djangochannelsrestframework.observer import model_observer
from rest_framework import serializers

from .models import Note


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "title"]


class NoteConsumer(ListModelMixin, CreateModelMixin, GenericAsyncAPIConsumer):
    queryset = Note.objects.all()
    serializer_class = NoteSerializer
    permission_classes = (permissions.AllowAny,)

    @model_observer(Note)
    async def note_activity(self, message: dict[str, Any], **kwargs: Any) -> None:
        await self.send_json({"activity": message})

    @note_activity.serializer
    def note_activity(self, instance: Note, action: Any, **kwargs: Any) -> dict[str, Any]:
        return {"action": action.value, "title": instance.title}

    @action()
    async def subscribe_activity(self, request_id: Any, **kwargs: Any) -> tuple[dict, int]:
        await self.note_activity.subscribe(request_id=request_id)
        return {"subscribed": True}, 201

    @action(detached=True)
    async def shout(self, text: str, **kwargs: Any) -> tuple[dict, int]:
        return {"text": text.upper()}, 200
