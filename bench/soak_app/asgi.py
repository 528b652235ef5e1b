"""The soak project's ASGI application (``channels-runtime serve bench.soak_app.asgi``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.soak_app.settings")

import django

django.setup()

from django.urls import path  # noqa: E402

from channels_runtime.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from .consumers import (  # noqa: E402
    EchoConsumer,
    NotesConsumer,
    RoomConsumer,
    StreamConsumer,
    SyncNotesConsumer,
)
from .diag import DiagConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("diag/", DiagConsumer.as_asgi()),
                path("stream/", StreamConsumer.as_asgi()),
            ]
        ),
        "websocket": URLRouter(
            [
                path("ws/echo/", EchoConsumer.as_asgi()),
                path("ws/room/<str:name>/", RoomConsumer.as_asgi()),
                path("ws/notes/<str:room>/", NotesConsumer.as_asgi()),
                path("ws/sync-notes/<str:room>/", SyncNotesConsumer.as_asgi()),
            ]
        ),
    }
)
