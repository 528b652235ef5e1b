"""ASGI entry point, as the Channels tutorial writes it."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.compat_projects.dcrf.settings")
django_asgi_app = get_asgi_application()

from .consumers import NoteConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/notes/", NoteConsumer.as_asgi())]),
    }
)
